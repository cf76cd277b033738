"""The verdict lists every expectation with threshold, observed value and ✓/✗, and gives the exit status."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg2.extensions import parse_dsn

from loadtests.fifo_client import SourceCounts
from loadtests.options import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS
from loadtests.provenance import recorded_options, utc_now
from loadtests.verdict import Latency, Verdict, check, render, unexplained_bytes, write_report
from loadtests.verify import ByteAccount, SourceResult, Totals, source_order

PASSING = Totals(generated=1000, sent=990, dropped=10, landed=990, missing=10)


def options(**overrides) -> argparse.Namespace:
    """The expectations of a scenario such as steady, with overrides."""
    base = {
        "max_lost": 0,
        "max_duplicated": 0,
        "max_torn": 0,
        "min_torn": 0,
        "min_rows_per_s": 0,
        "max_unaccounted_bytes": -1,
        "max_collector_rss_mib": -1,
        "hostile_every": 0,
        "max_unexplained_rejections": None,
        "max_bad_accepted": None,
    }
    return argparse.Namespace(**{**base, **overrides})


def verdict(totals: Totals = PASSING, **fields) -> Verdict:
    v = Verdict(
        run_id="r1",
        scenario="steady",
        totals=totals,
        sources=[SourceResult("p0u0", 1000, 990, 10, 0, landed=990, rows=990)],
        latency=Latency(p50_ms=1.0, p99_ms=9.0, max_ms=20.0, blocked_s=0.5),
        rows_per_s=5000.0,
        lines_per_s=6000.0,
        duration_s=2.0,
        collector_exit=0,
        collector_peak_rss_mib=40.0,
    )
    return replace(v, **fields)


def judged(v: Verdict, **opts) -> Verdict:
    v.expectations = check(v, options(**opts))
    return v


class TestCheck:
    """Each option that sets a limit becomes one expectation, passing or not."""

    def test_a_clean_run_passes_and_lists_what_it_checked(self):
        """A run within every limit passes, and every checked expectation is listed, not only failures."""
        v = judged(verdict())
        assert v.passed
        assert [e.name for e in v.expectations] == ["max_lost", "max_duplicated", "max_torn", "sent", "collector_exit"]

    @pytest.mark.parametrize(
        ("totals", "opts", "name"),
        [
            ({"lost": 3}, {}, "max_lost: lost lines 3, expected <= 0 (--max-lost)"),
            ({"duplicated": 1}, {}, "max_duplicated: duplicated lines 1, expected <= 0"),
            ({"torn_or_rejected": 2}, {}, "max_torn: torn or rejected lines 2, expected <= 0"),
            ({}, {"min_torn": 5, "max_torn": -1}, "min_torn: torn or rejected lines 0, expected >= 5"),
            ({"sent": 0}, {}, "sent: lines sent"),
        ],
    )
    def test_each_broken_expectation_names_itself(self, totals, opts, name):
        """A value past its limit gives one failure naming the expectation, both numbers and its option."""
        failures = judged(verdict(replace(PASSING, **totals)), **opts).failures
        assert len(failures) == 1
        assert name in failures[0]

    def test_minus_one_means_no_limit(self):
        """-1 turns an expectation off: it is not listed at all."""
        v = judged(verdict(replace(PASSING, lost=9, torn_or_rejected=9)), max_lost=-1, max_torn=-1)
        assert v.passed
        assert "max_lost" not in [e.name for e in v.expectations]

    def test_speed_memory_and_collector_exit_are_judged(self):
        """Rows per second, the collector's peak memory and its exit status are expectations too."""
        v = judged(
            verdict(collector_exit=1, collector_peak_rss_mib=150.0), min_rows_per_s=10_000, max_collector_rss_mib=100
        )
        assert [f.split(":")[0] for f in v.failures] == ["min_rows_per_s", "max_collector_rss_mib", "collector_exit"]


class TestCollectorExitMeaning:
    """A failed collector_exit says what the status means, when the adapter knows."""

    def test_the_meaning_is_in_the_failure(self):
        """The report's exit text (with its meaning) is part of the expectation's line."""
        report = {"exit": "exit status 4 (lines read were not stored)"}
        v = judged(verdict(collector_exit=4, collector=report))
        (failure,) = v.failures
        assert failure.startswith("collector_exit: collector exit status after SIGTERM: exit status 4 (lines read")

    def test_a_clean_exit_says_nothing_more(self):
        """Status 0: the plain description."""
        v = judged(verdict(collector_exit=0, collector={"exit": "exit status 0"}))
        assert [e.what for e in v.expectations if e.name == "collector_exit"] == ["collector exit status after SIGTERM"]


class TestExitStatus:
    """0 pass, 1 fail, 3 interrupted (whatever the expectations say)."""

    def test_pass_fail_and_interrupted(self):
        """The status and exit code follow the expectations, and an interruption overrides both."""
        assert judged(verdict()).exit_code == EXIT_PASS
        assert judged(verdict(replace(PASSING, lost=1))).exit_code == EXIT_FAIL
        interrupted = judged(verdict(interrupted="SIGINT"))
        assert (interrupted.status, interrupted.exit_code) == ("INTERRUPTED", EXIT_INTERRUPTED)


class TestRender:
    """The printed verdict lists every expectation with its mark, and ends with the outcome."""

    def test_every_expectation_has_a_line_with_its_mark(self):
        """✓ for a held expectation, ✗ for a broken one, each with observed and threshold."""
        text = render(judged(verdict(replace(PASSING, lost=4))))
        assert re.search(r"✗ max_lost +4 <= 0 +lost lines", text)
        assert re.search(r"✓ max_duplicated +0 <= 0 +duplicated lines", text)
        assert text.splitlines()[-1].startswith("FAIL: max_lost")

    def test_a_pass_ends_with_pass(self):
        """A passing verdict's last line says so."""
        assert render(judged(verdict())).splitlines()[-1] == "PASS: every expectation holds"

    def test_an_interrupted_run_says_what_landed_of_what_was_sent(self):
        """The header and the last line say INTERRUPTED, with landed of sent."""
        text = render(judged(verdict(interrupted="SIGTERM", drain_skipped=True)))
        assert "INTERRUPTED by SIGTERM" in text.splitlines()[0]
        assert text.splitlines()[-1].startswith("INTERRUPTED by SIGTERM: 990 of 990 sent lines landed; the drain")


class TestReport:
    """verdict.json holds what the table shows, the expectations, options, times and versions."""

    def test_the_json_report_holds_totals_sources_expectations_and_the_outcome(self, tmp_path):
        """Totals, per-source results with missing, every expectation with passed, and the status."""
        v = judged(verdict(started_at=utc_now(), ended_at=utc_now()))
        data = json.loads(write_report(v, tmp_path / "r1").read_text())
        assert (data["passed"], data["status"], data["exit_code"]) == (True, "PASS", 0)
        assert data["totals"]["landed"] == 990
        assert data["sources"][0]["missing"] == 10
        assert data["expectations"][0] == {
            "name": "max_lost",
            "what": "lost lines",
            "op": "<=",
            "threshold": 0,
            "observed": 0,
            "passed": True,
        }
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["started_at"])

    @given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
    def test_floats_are_rounded(self, value):
        """No float in verdict.json carries more than 3 decimals."""
        data = judged(verdict(rows_per_s=value, duration_s=value)).as_dict()
        for number in (data["rows_per_s"], data["duration_s"]):
            assert round(number, 3) == number

    def test_the_password_of_the_dsn_never_appears(self):
        """The DSN is recorded masked, and its password is scrubbed from every other option too."""
        o = argparse.Namespace(
            dsn="postgresql://np:s3cret@db/np", collector_cmd="my-shipper --pw s3cret {fifo}", num_users=5
        )
        recorded = recorded_options(o, {"dsn", "collector_cmd"})
        assert "s3cret" not in json.dumps(recorded)
        assert parse_dsn(recorded["dsn"]) == {"user": "np", "password": "***", "host": "db", "dbname": "np"}
        assert recorded["num_users"] == 5


class TestByteAccounting:
    """Unaccounted bytes beyond what corrupt rows can hide fail the run."""

    def with_bytes(self, unaccounted: int, corrupt: int = 0, in_corrupt_rows: int = 0) -> Totals:
        return replace(
            PASSING,
            corrupt=corrupt,
            torn_or_rejected=corrupt,
            bytes=ByteAccount(sent_big=1000 + unaccounted, accounted=1000, in_corrupt_rows=in_corrupt_rows),
        )

    def test_bytes_missing_without_corrupt_rows_fail(self):
        """With no corrupt row, every unaccounted byte counts."""
        v = judged(verdict(self.with_bytes(3)), max_unaccounted_bytes=0)
        assert v.failures == ["max_unaccounted_bytes: bytes unaccounted for 3, expected <= 0 (--max-unaccounted-bytes)"]

    def test_corrupt_rows_may_hide_up_to_what_they_store(self):
        """A corrupt row of 8,192 bytes may hide 15 bytes of escapes plus its own size (keys jsonb dropped)."""
        assert judged(verdict(self.with_bytes(15 + 8192, 1, 8192)), max_torn=-1, max_unaccounted_bytes=0).passed
        v = judged(verdict(self.with_bytes(16 + 8192, 1, 8192)), max_torn=-1, max_unaccounted_bytes=0)
        assert [f.split(",")[0] for f in v.failures] == ["max_unaccounted_bytes: bytes unaccounted for 1"]

    def test_more_bytes_accounted_than_sent_fail(self):
        """Accounting more bytes than were sent is never explained away."""
        t = self.with_bytes(-2, 5, 99_999)
        assert unexplained_bytes(t) == -2
        assert not judged(verdict(t), max_torn=-1, max_unaccounted_bytes=0).passed


class TestTypedCounts:
    """Counters cross the Locust message boundary as dicts and come back as the same dataclass."""

    @given(
        st.integers(0, 10**9),
        st.integers(0, 10**6),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(4097, 10**7)), max_size=5),
    )
    def test_round_trip(self, sent, dropped, big):
        """as_dict then from_dict (with msgpack's lists for tuples) gives back equal counters."""
        counts = SourceCounts(generated=sent + dropped, sent=sent, dropped=dropped, big_lines=big)
        wire = counts.as_dict()
        wire["big_lines"] = [list(pair) for pair in wire["big_lines"]]
        assert SourceCounts.from_dict(wire) == counts


class TestSourceOrder:
    """Sources sort by their numbers, so two runs' tables compare line by line."""

    def test_numbers_sort_as_numbers(self):
        """p0u2 comes before p0u10, and p1u0 after both."""
        assert sorted(["p0u10", "p1u0", "p0u2"], key=source_order) == ["p0u2", "p0u10", "p1u0"]
