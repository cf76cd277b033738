"""The verdict turns totals into failures: one line per expectation that does not hold, and the exit code."""

from __future__ import annotations

import argparse
import json

import pytest

from loadtests.verdict import Verdict, check, render, write_report
from loadtests.verify import SourceResult

PASSING_TOTALS = {
    "generated": 1000, "sent": 990, "dropped": 10, "interrupted": 0, "landed": 990, "duplicated": 0,
    "out_of_order": 0, "corrupt": 0, "missing": 10, "rejected": 0, "torn_or_rejected": 0, "lost": 0,
    "bad_sent": 0, "unexplained_rejections": 0, "bad_accepted": 0,
}


def options(**overrides) -> argparse.Namespace:
    """The expectations of a scenario such as steady, with overrides."""
    base = {"max_lost": 0, "max_duplicated": 0, "max_torn": 0, "min_torn": 0, "min_rows_per_s": 0,
            "max_unaccounted_bytes": -1, "max_collector_rss_mib": -1, "hostile_every": 0,
            "max_unexplained_rejections": None, "max_bad_accepted": None}
    return argparse.Namespace(**{**base, **overrides})


def verdict(**totals) -> Verdict:
    return Verdict(run_id="r1", scenario="steady", totals={**PASSING_TOTALS, **totals},
                   sources=[SourceResult("p0u0", 1000, 990, 10, 0, landed=990, rows=990)],
                   latency_ms={"p50": 1.0, "p99": 9.0, "max": 20.0, "blocked_s": 0.5}, rows_per_s=5000.0,
                   lines_per_s=6000.0, duration_s=2.0, collector_exit=0, collector_peak_rss_mib=40.0)


class TestCheck:
    def test_a_clean_run_passes(self):
        """A run within every limit has no failures."""
        assert check(verdict(), options()) == []

    @pytest.mark.parametrize(("totals", "opts", "names"), [
        ({"lost": 3}, {}, "max_lost: 3 > 0"),
        ({"duplicated": 1}, {}, "max_duplicated: 1 > 0"),
        ({"torn_or_rejected": 2}, {}, "max_torn: 2 > 0"),
        ({}, {"min_torn": 5, "max_torn": -1}, "min_torn: 0 torn or rejected lines < 5"),
        ({"unaccounted_bytes": 17}, {"max_unaccounted_bytes": 0}, "max_unaccounted_bytes: 17 > 0"),
        ({"sent": 0}, {}, "nothing was sent"),
    ])
    def test_each_broken_expectation_names_itself(self, totals, opts, names):
        """A value past its limit gives one failure line naming the expectation and both numbers."""
        failures = check(verdict(**totals), options(**opts))
        assert len(failures) == 1
        assert names in failures[0]

    def test_minus_one_means_no_limit(self):
        """-1 turns an expectation off."""
        assert check(verdict(lost=9, torn_or_rejected=9), options(max_lost=-1, max_torn=-1)) == []

    def test_speed_memory_and_collector_exit_are_judged(self):
        """Rows per second, the collector's peak memory and its exit status are expectations too."""
        v = verdict()
        v.collector_exit = 1
        v.collector_peak_rss_mib = 150.0
        failures = check(v, options(min_rows_per_s=10_000, max_collector_rss_mib=100))
        assert [f.split(":")[0] for f in failures] == ["min_rows_per_s", "max_collector_rss_mib",
                                                        "the collector exited with status 1 (expected 0 after SIGTERM)"]


class TestReport:
    def test_the_table_ends_with_pass_or_the_failures(self):
        """The printed verdict ends with PASS, or with one FAIL line per failure."""
        good = verdict()
        assert render(good).splitlines()[-1] == "PASS: every expectation holds"
        bad = verdict(lost=4)
        bad.failures = check(bad, options())
        assert render(bad).splitlines()[-1].startswith("FAIL: max_lost")

    def test_the_json_report_holds_totals_sources_and_the_outcome(self, tmp_path):
        """verdict.json carries everything the table shows, per source, and whether the run passed."""
        path = write_report(verdict(), tmp_path / "r1")
        data = json.loads(path.read_text())
        assert data["passed"] is True
        assert data["totals"]["landed"] == 990
        assert data["sources"][0]["missing"] == 10


class TestByteAccounting:
    def test_bytes_missing_without_corrupt_rows_fail(self):
        """With no corrupt row, every unaccounted byte counts."""
        t = {**PASSING_TOTALS, "unaccounted_bytes": 3, "bytes_in_corrupt_rows": 0}
        assert check(verdict(**t), options(max_unaccounted_bytes=0)) == ["max_unaccounted_bytes: 3 > 0 allowed "
                                                                           "(--max-unaccounted-bytes)"]

    def test_corrupt_rows_may_hide_a_few_bytes_per_page(self):
        """A corrupt row of two pages may read back up to 5 bytes shorter per splice; more is still a failure."""
        base = {**PASSING_TOTALS, "corrupt": 1, "torn_or_rejected": 1, "bytes_in_corrupt_rows": 8192}
        assert check(verdict(**base, unaccounted_bytes=15), options(max_torn=-1, max_unaccounted_bytes=0)) == []
        failures = check(verdict(**base, unaccounted_bytes=16), options(max_torn=-1, max_unaccounted_bytes=0))
        assert failures == ["max_unaccounted_bytes: 1 > 0 allowed (--max-unaccounted-bytes)"]

    def test_more_bytes_accounted_than_sent_fail(self):
        """Accounting more bytes than were sent is never explained away."""
        t = {**PASSING_TOTALS, "corrupt": 5, "unaccounted_bytes": -2, "bytes_in_corrupt_rows": 99_999}
        assert check(verdict(**t), options(max_torn=-1, max_unaccounted_bytes=0)) != []
