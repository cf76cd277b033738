"""The verify part's pure side: its options, the sources' counters it expects, and its lines under the table."""

from __future__ import annotations

from pathlib import Path

from loadtests.bench.cli import build_parser
from loadtests.bench.dataset import Bench
from loadtests.bench.verify_scale import DEFAULT_OTHER_ROWS, DEFAULT_RUN_ROWS, RUN_SOURCES, render_verify, source_counts


def bench(**details: object) -> Bench:
    b = Bench("small", 1, 1, 0, 1, 1.0, 1, 1.0, 1, Path("/nonexistent"))
    b.metrics.update(
        verify_alone_s=10.0,
        verify_among_s=13.0,
        verify_ratio=1.3,
        verify_whole_table_alone_s=11.0,
        verify_whole_table_among_s=30.0,
        verify_count_alone_s=1.0,
        verify_count_among_s=1.1,
        verify_whole_table_count_among_s=12.0,
    )
    b.details["verify"] = {
        "run_rows": 1_000_000,
        "other_rows": 10_000_000,
        "fill_rows_per_s": 20_000,
        "alone": {"plan": "Index Scan using logs_time_idx on logs"},
        "among": {"plan": "Index Scan using logs_time_idx on logs"},
        "result": "PASS",
        **details,
    }
    return b


class TestOptions:
    """The run's size and the other runs' size are options, at issue 15's case by default."""

    def test_defaults_and_small(self):
        """Defaults are 1,000,000 among 10,000,000; both can be made small."""
        args = build_parser().parse_args([])
        assert (args.verify_rows, args.verify_other_rows) == (DEFAULT_RUN_ROWS, DEFAULT_OTHER_ROWS)
        args = build_parser().parse_args(["--verify-rows", "1000", "--verify-other-rows", "5000"])
        assert (args.verify_rows, args.verify_other_rows) == (1000, 5000)


class TestSourceCounts:
    """What the generated run's sources sent adds up to the rows generated, spread like FILL_SQL spreads them."""

    def test_counts_add_up(self):
        """g goes to source g % RUN_SOURCES: every row counted once."""
        counts = source_counts(1_003)
        assert len(counts) == RUN_SOURCES
        assert sum(c.generated for c in counts.values()) == 1_003
        assert (counts["p0u0"].generated, counts[f"p0u{RUN_SOURCES - 1}"].generated) == (51, 50)


class TestRender:
    """The part's lines: both times, the ratio against its target, the before figures and the plans."""

    def test_lines(self):
        """The ratio line carries the target and the result; the plans are named."""
        text = render_verify(bench())
        assert "a 1,000,000-row run, alone and among 10,000,000 rows" in text
        ratio = next(line for line in text.splitlines() if "among / alone" in line)
        assert ratio.split()[-5:] == ["1.30", "x", "<=", "1.5", "PASS"]
        assert "30.00" in text  # the whole-table query among the others
        assert "plan among the others: Index Scan using logs_time_idx" in text

    def test_nothing_when_not_run(self):
        """A benchmark that skipped the part prints nothing for it."""
        b = Bench("small", 1, 1, 0, 1, 1.0, 1, 1.0, 1, Path("/nonexistent"))
        assert render_verify(b) == ""
