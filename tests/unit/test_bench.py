"""The benchmark's pure parts: ratios, targets, the table, latency arithmetic, packing and the naive collector."""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import threading

import pytest

from loadtests.bench.baselines import NAIVE_INSERT_SQL, naive_collect, naive_params
from loadtests.bench.cli import PARTS, build_parser, parse_skip
from loadtests.bench.latency import visibility_latencies
from loadtests.bench.pipes import pack_writes
from loadtests.bench.profile import render_profile, top_entries
from loadtests.bench.report import (
    ROWS,
    TARGETS,
    Target,
    check_targets,
    derive,
    format_value,
    percentile,
    ratio,
    render_table,
)
from reference.collector.validate import COLUMNS
from reference.events import EventFactory
from reference.fifo import PIPE_BUF
from reference.sizes import SIZE_CLASSES


def lines(count: int, size: str = "small") -> list[bytes]:
    """count seeded event lines, newline included."""
    return EventFactory(SIZE_CLASSES[size], seed=0, run_id="t", source="s0").lines(count)


MEASURED = {
    "copy_rows_per_s": 200_000.0,
    "collector_rows_per_s": 180_000.0,
    "naive_rows_per_s": 2_000.0,
    "collector_cpu_us_per_row": 3.2,
    "collector_main_cpu_us_per_row": 3.4,
    "ind_copy_rows_per_s": 200_000.0,
    "ind_collector_rows_per_s": 170_000.0,
    "ind_collector_cpu_us_per_row": 3.0,
    "ind_collector_main_cpu_us_per_row": 2.5,
    "collector_peak_rss_mib": 48.5,
    "latency_p50_ms": 80.0,
    "latency_p99_ms": 300.0,
    "emitter_lines_per_s": 160_000.0,
}


class TestRatios:
    def test_ratio(self):
        """A ratio is the quotient of two measured values."""
        assert ratio(170.0, 200.0) == pytest.approx(0.85)

    @pytest.mark.parametrize(("numerator", "denominator"), [(None, 1.0), (1.0, None), (1.0, 0.0), (None, None)])
    def test_ratio_of_missing_values(self, numerator, denominator):
        """A ratio with a missing value or a zero denominator is None, not an error."""
        assert ratio(numerator, denominator) is None

    def test_derive_adds_the_ratios(self):
        """derive adds collector / COPY limit (both data sets) and collector / naive, and keeps the measured values."""
        metrics = derive(MEASURED)
        assert metrics["collector_vs_copy"] == pytest.approx(0.9)
        assert metrics["ind_collector_vs_copy"] == pytest.approx(0.85)
        assert metrics["collector_vs_naive"] == pytest.approx(90.0)
        assert metrics["copy_rows_per_s"] == MEASURED["copy_rows_per_s"]

    def test_derive_with_a_skipped_part(self):
        """Without a naive run, its ratio is None."""
        measured = {k: v for k, v in MEASURED.items() if k != "naive_rows_per_s"}
        assert derive(measured)["collector_vs_naive"] is None


class TestTargets:
    def results(self, metrics: dict, size: str = "small", rate: int = 10_000) -> dict[str, str]:
        return {c.target.key: c.result for c in check_targets(derive(metrics), size, rate)}

    def test_pass_and_miss(self):
        """Each target is PASS when its bound holds and MISS when it does not."""
        assert self.results(MEASURED) == {
            "collector_vs_copy": "PASS",  # 0.9 >= 0.9
            "collector_cpu_us_per_row": "PASS",  # 3.2 <= 3.5
            "collector_main_cpu_us_per_row": "MISS",  # 3.4 > 3.0
            "ind_collector_vs_copy": "MISS",  # 0.85 < 0.9
            "ind_collector_cpu_us_per_row": "PASS",  # 3.0 <= 3.5
            "ind_collector_main_cpu_us_per_row": "PASS",  # 2.5 <= 3.0
            "collector_vs_naive": "PASS",  # 90 >= 30
            "collector_peak_rss_mib": "PASS",  # 48.5 <= 100
            "latency_p99_ms": "MISS",  # 300 > 250
            "emitter_lines_per_s": "PASS",  # 160k >= 150k
        }

    def test_bounds_are_inclusive(self):
        """A value equal to its bound passes."""
        target = Target("x", "<=", 100)
        assert check_targets({"x": 100.0}, "small", targets=(target,))[0].result == "PASS"
        assert check_targets({"x": 100.1}, "small", targets=(target,))[0].result == "MISS"

    def test_small_only_targets_do_not_apply_to_other_sizes(self):
        """The COPY-ratio and emitter targets are for small lines: n/a for medium ones."""
        results = self.results(MEASURED, size="medium")
        assert results["collector_vs_copy"] == "n/a"
        assert results["emitter_lines_per_s"] == "n/a"
        assert results["collector_peak_rss_mib"] == "PASS"

    def test_latency_target_only_at_its_rate(self):
        """The p99 target holds at 10k lines/s; at another rate it is n/a."""
        assert self.results(MEASURED, rate=5_000)["latency_p99_ms"] == "n/a"

    def test_not_measured(self):
        """A target whose metric was skipped shows -."""
        assert self.results({})["collector_peak_rss_mib"] == "-"

    def test_every_target_has_a_row(self):
        """Every target's metric appears in the table."""
        assert {t.key for t in TARGETS} <= {r.key for r in ROWS}


class TestTable:
    def test_rows_values_and_results(self):
        """The table has a header, one row per metric with its value, unit, target and result."""
        metrics = derive(MEASURED)
        text = render_table(metrics, check_targets(metrics, "small"), title="run 1")
        lines = text.splitlines()
        assert lines[0] == "run 1"
        assert lines[1].split() == ["measurement", "value", "unit", "target", "result"]
        assert set(lines[2]) == {"-"}
        assert len(lines) == 3 + len(ROWS)
        copy_row = next(line for line in lines if line.startswith("COPY limit"))
        assert copy_row.split()[-2:] == ["200,000", "rows/s"]
        ratio_row = next(line for line in lines if "collector / COPY limit" in line)
        assert ratio_row.split()[-5:] == ["0.90", "x", ">=", "0.9", "PASS"]
        assert next(line for line in lines if "p99" in line).rstrip().endswith("MISS")

    def test_columns_line_up(self):
        """Values are right-aligned in one column."""
        metrics = derive(MEASURED)
        lines = render_table(metrics, check_targets(metrics, "small")).splitlines()
        ends = {line.index("rows/s") for line in lines if "rows/s" in line}
        assert len(ends) == 1

    def test_skipped_metric(self):
        """A metric that was not measured reads "skipped"."""
        text = render_table({}, [])
        assert next(line for line in text.splitlines() if line.startswith("Locust")).split()[-2] == "skipped"

    def test_latency_label_names_the_rate(self):
        """The latency rows name the rate of the run."""
        assert "p99 at 5,000 lines/s" in render_table({}, [], latency_rate=5_000)

    @pytest.mark.parametrize(
        ("value", "digits", "shown"), [(1234567.8, 0, "1,234,568"), (0.8512, 2, "0.85"), (None, 0, "skipped")]
    )
    def test_format_value(self, value, digits, shown):
        """Values get thousands separators and the row's decimals."""
        assert format_value(value, digits) == shown


class TestLatencyArithmetic:
    def test_percentile_nearest_rank(self):
        """Percentiles are nearest-rank: p50 of 1..100 is 50, p99 is 99, p100 is 100."""
        values = [float(v) for v in range(100, 0, -1)]
        assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)

    def test_percentile_of_nothing(self):
        """No samples give no percentile."""
        assert percentile([], 99) is None

    def test_each_seq_is_visible_at_the_first_poll_that_reaches_it(self):
        """A seq's latency runs from its write to the first poll whose max seq reaches it."""
        sent_at = [0.000, 0.001, 0.002, 0.003]
        polls = [(0.010, None), (0.020, 2), (0.030, 2), (0.040, 4)]
        assert visibility_latencies(sent_at, polls) == pytest.approx([20.0, 19.0, 38.0, 37.0])

    def test_unseen_seqs_have_no_sample(self):
        """Seqs no poll reached give no sample; a max beyond what was sent is capped."""
        assert len(visibility_latencies([0.0, 0.0, 0.0], [(0.01, 1)])) == 1
        assert len(visibility_latencies([0.0], [(0.01, 7)])) == 1


class TestPacking:
    def test_writes_hold_whole_lines_within_pipe_buf(self):
        """Packed writes are at most PIPE_BUF, end on a newline, and carry every line once in order."""
        data = lines(300)
        writes = pack_writes(data)
        assert all(len(w) <= PIPE_BUF and w.endswith(b"\n") for w in writes)
        assert b"".join(writes) == b"".join(data)
        assert len(writes) < len(data)

    def test_pipe_buf_lines_go_one_per_write(self):
        """Lines of exactly PIPE_BUF bytes travel one per write."""
        data = lines(5, "pipe_buf")
        assert pack_writes(data) == data


class TestNaiveCollector:
    def test_params(self):
        """A line becomes the eight INSERT parameters in column order, data as JSON text."""
        line = lines(1)[0]
        params = naive_params(line)
        event = json.loads(line)
        assert params[:7] == tuple(event[c] for c in COLUMNS[:7])
        assert json.loads(params[7]) == event["data"]
        assert NAIVE_INSERT_SQL.count("%s") == len(params)

    def test_null_data(self):
        """data null is passed as SQL NULL."""
        event = json.loads(lines(1)[0])
        event["data"] = None
        assert naive_params(json.dumps(event).encode())[7] is None

    def test_reads_a_real_fifo_line_by_line(self, tmp_path):
        """Lines written into a FIFO in packed writes are inserted one by one, blank lines skipped, until EOF."""
        fifo = tmp_path / "naive.fifo"
        os.mkfifo(fifo)
        data = lines(25)

        def write() -> None:
            fd = os.open(fifo, os.O_WRONLY)
            for chunk in [*pack_writes(data[:20]), b"\n", *pack_writes(data[20:])]:
                os.write(fd, chunk)
            os.close(fd)

        writer = threading.Thread(target=write)
        writer.start()
        inserted: list[tuple] = []
        assert naive_collect(fifo, inserted.append) == 25
        writer.join()
        assert [p[4] for p in inserted] == [json.loads(line)["trace_id"] for line in data]


class TestCommandLine:
    def test_defaults(self):
        """By default: small lines, 200,000 of them, 10,000 for the naive run, embedded database, nothing skipped."""
        args = build_parser().parse_args([])
        assert (args.size, args.lines, args.naive_lines, args.dsn, args.skip, args.profile) == (
            "small",
            200_000,
            10_000,
            None,
            [],
            None,
        )

    def test_skip_repeated_and_comma_separated(self):
        """--skip takes repeated and comma-separated part names."""
        assert parse_skip(["locust,naive", "fifo"]) == {"locust", "naive", "fifo"}

    def test_skip_unknown_part(self):
        """An unknown part name is an error that lists the known ones."""
        with pytest.raises(ValueError, match="unknown part") as info:
            parse_skip(["colector"])
        assert all(p in str(info.value) for p in PARTS)


class TestProfile:
    def test_top_entries(self, tmp_path):
        """The top entries are the functions with the most own time, at most the number asked for."""

        def busy() -> int:
            return sum(i * i for i in range(20_000))

        profiler = cProfile.Profile()
        profiler.enable()
        busy()
        profiler.disable()
        stats = pstats.Stats(profiler)
        entries = top_entries(stats, 3)
        assert 0 < len(entries) <= 3
        assert [e["own_s"] for e in entries] == sorted((e["own_s"] for e in entries), reverse=True)
        assert any("genexpr" in e["function"] or "busy" in e["function"] for e in entries)
        assert render_profile(entries).splitlines()[0].split() == [
            "own",
            "s",
            "own",
            "%",
            "cum",
            "s",
            "calls",
            "function",
        ]
