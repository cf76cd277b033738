"""The timeline's arithmetic and probes, the report's page, and the collector metrics' reason classes."""

from __future__ import annotations

import csv
import errno
import json
import os
import time

import gevent
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtests.corpus import load_corpus
from loadtests.report import CHARTS, build, build_compare, figure, load_verdict, main
from loadtests.timeline import COLUMNS, Counters, Latencies, Probes, Rate, Sampler, WriterTotals, pipe_fill, write_csv
from reference.collector.metrics import OTHER_REASON, reason_class
from reference.collector.validate import parse_line
from reference.fifo import PIPE_BUF


def nearest_rank(values: list[int], fraction: float) -> float:
    """The percentile by its definition: the smallest value with at least fraction of all values at or below it."""
    ordered = sorted(values)
    for i, v in enumerate(ordered, 1):
        if i >= fraction * len(ordered):
            return float(v)
    return float(ordered[-1])


class TestLatencies:
    """Each interval's percentiles come from the writes of that interval only."""

    @given(st.lists(st.lists(st.integers(0, 500), max_size=60), min_size=1, max_size=6))
    def test_percentiles_of_each_interval(self, intervals):
        """Differential: against the sorted list of the interval's own latencies."""
        latencies = Latencies()
        cumulative: dict[int, int] = {}
        for values in intervals:
            for v in values:
                cumulative[v] = cumulative.get(v, 0) + 1
            writes, p50, p99, most = latencies.take(dict(cumulative))
            assert writes == len(values)
            if values:
                assert (p50, p99, most) == (nearest_rank(values, 0.5), nearest_rank(values, 0.99), max(values))
            else:
                assert (p50, p99, most) == (None, None, None)


class TestRate:
    """A rate is taken over at least its minimum span, so batch-sized steps make no spikes."""

    def test_close_samples_do_not_spike(self):
        """A commit of 10,000 rows seen 10 ms after the last sample is averaged over the last full second."""
        rate = Rate(0.75)
        assert rate.add(0.0, 0) is None
        assert rate.add(1.0, 10_000) == 10_000
        assert rate.add(1.01, 20_000) == pytest.approx(20_000 / 1.01, rel=0.01)
        assert rate.add(2.0, 20_000) == 0  # since t=1.01, the newest reading at least 0.75 s old

    @given(st.lists(st.tuples(st.floats(0.001, 2.0), st.integers(0, 10_000)), min_size=1, max_size=30))
    def test_never_faster_than_the_steps_allow(self, steps):
        """No rate exceeds the largest step divided by the minimum span."""
        rate, t, total = Rate(0.75), 0.0, 0
        rate.add(t, total)
        biggest = max(n for _, n in steps)
        for dt, n in steps:
            t, total = t + dt, total + n
            r = rate.add(t, total)
            if r is not None:
                assert r <= (total / 0.75) + 1e-6
                assert r >= 0
        assert biggest >= 0


class TestCounters:
    """A counter read from processes that restart adds up what every process counted."""

    @given(st.lists(st.lists(st.integers(1, 1000), min_size=1, max_size=5), min_size=1, max_size=5))
    def test_restarts_keep_the_total(self, processes):
        """Each process counts up from 0 (its readings are running sums); the total is the sum of their lasts."""
        c = Counters()
        total = 0.0
        for number, steps in enumerate(processes):
            running = 0
            for step in steps:
                running += step
                total_now = c.add(running, instance=number)
            total += running
            assert total_now == total


class TestPipeFill:
    """FIONREAD and F_GETPIPE_SZ on a FIFO, checked against what the kernel holds."""

    def test_bytes_waiting_and_capacity(self, tmp_path):
        """Bytes written and not read are the bytes waiting; the capacity is the pipe's."""
        fifo = tmp_path / "f"
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer = os.open(fifo, os.O_WRONLY)
        try:
            assert pipe_fill(str(fifo)) == (0, 65536)
            os.write(writer, b"x" * (3 * PIPE_BUF + 5))
            assert pipe_fill(str(fifo)) == (3 * PIPE_BUF + 5, 65536)
            os.read(reader, PIPE_BUF)
            assert pipe_fill(str(fifo)) == (2 * PIPE_BUF + 5, 65536)
        finally:
            os.close(writer)
            os.close(reader)

    def test_no_reader_no_fill(self, tmp_path):
        """Without a reader (or without the FIFO) there is no pipe to measure."""
        fifo = tmp_path / "f"
        assert pipe_fill(str(fifo)) is None
        os.mkfifo(fifo)
        assert pipe_fill(str(fifo)) is None

    def test_not_a_fifo_is_an_error(self, tmp_path):
        """A folder where the FIFO should be is not silently ignored."""
        with pytest.raises(IsADirectoryError) as caught:
            pipe_fill(str(tmp_path))
        assert caught.value.errno == errno.EISDIR


class TestSampler:
    """Samples carry the writers' counters, rates, and fault spans from the injector's marks."""

    def test_rates_marks_and_spans(self, tmp_path):
        """Written/s from two samples; a start and an end mark make one span; an instant makes a point."""
        writers = WriterTotals()
        writers.workers["w1"] = {"sent": 0.0, "dropped": 0.0, "blocked_s": 0.0}
        marks: list = []
        started = time.monotonic()
        sampler = Sampler(
            Probes(
                fifo=str(tmp_path / "none"),
                writers=writers,
                response_times=dict,
                collector_pid=lambda: os.getpid(),
                metrics_url=None,
                journal=tmp_path,
                marks=marks,
            ),
            started,
            interval=0.04,
        )
        first = sampler.sample()
        writers.workers["w1"] = {"sent": 500.0, "dropped": 3.0, "blocked_s": 0.25}
        marks.append((time.monotonic(), "start", "database outage"))
        marks.append((time.monotonic(), "at", "collector killed"))
        time.sleep(0.05)
        second = sampler.sample()
        marks.append((time.monotonic(), "end", "database outage"))
        third = sampler.sample()
        assert first["written_per_s"] is None
        assert second["lines_written"] == 500
        assert second["lines_dropped"] == 3
        assert second["written_per_s"] == pytest.approx(500 / (second["t_s"] - first["t_s"]), rel=0.01)
        assert second["blocked_s"] == 0.25
        assert second["marks"] == ["start: database outage", "at: collector killed"]
        assert third["marks"] == ["end: database outage"]
        assert [s["fault"] for s in sampler.spans] == ["database outage", "collector killed"]
        outage, kill = sampler.spans
        assert outage["start_s"] < outage["end_s"]
        assert kill["start_s"] == kill["end_s"]
        assert second["collector_rss_mib"] > 0  # this process stands in as "the collector": psutil reads it
        assert second["journal_bytes"] == 0
        assert set(second) == set(COLUMNS)

    def test_verification_counts_close_the_timeline(self, tmp_path):
        """stop(landed, rejected) puts the verified counts into the last sample."""
        sampler = Sampler(
            Probes(
                fifo=str(tmp_path / "none"),
                writers=WriterTotals(),
                response_times=dict,
                collector_pid=lambda: None,
                metrics_url=None,
                journal=None,
                marks=[],
            ),
            time.monotonic(),
            interval=0.05,
        )
        sampler.start()
        gevent.sleep(0.2)
        samples = sampler.stop(landed=42, rejected=1)
        assert len(samples) >= 3
        assert samples[-1]["rows_landed"] == 42
        assert samples[-1]["landed_from"] == "verification"


class TestCsv:
    """timeline.csv holds every sample in COLUMNS order."""

    def test_round_trip(self, tmp_path):
        """Values and joined marks read back as written."""
        samples = [dict.fromkeys(COLUMNS) | {"t_s": 1.0, "lines_written": 5, "marks": ["start: x", "end: x"]}]
        path = write_csv(samples, tmp_path / "timeline.csv")
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == list(COLUMNS)
        assert rows[0]["lines_written"] == "5"
        assert rows[0]["marks"] == "start: x; end: x"


def verdict_with_outage(run_id: str = "r1") -> dict:
    """A verdict dict with a short timeline and a database outage span."""
    timeline = [
        dict.fromkeys(COLUMNS)
        | {
            "t_s": float(t),
            "phase": "load" if t < 5 else "drain",
            "written_per_s": 100.0,
            "landed_per_s": 0.0 if 2 <= t <= 3 else 100.0,
            "pipe_bytes": 1024,
            "pipe_capacity": 65536,
            "marks": [],
        }
        for t in range(8)
    ]
    return {
        "run_id": run_id,
        "scenario": "db_outage",
        "status": "PASS",
        "timeline": timeline,
        "fault_spans": [{"fault": "database outage", "start_s": 2.0, "end_s": 3.5}],
        "sources": [{"source": "p0u0", "generated": 10, "sent": 10}],
        "failures": [],
        "expectations": [],
    }


class TestReport:
    """report.html has the verdict on top, a chart per measured quantity with faults shaded, then the sources."""

    def test_outage_is_a_shaded_span_on_every_chart(self):
        """Each chart that has data shades the outage."""
        v = verdict_with_outage()
        for chart in CHARTS:
            fig = figure(chart, [("run", v)])
            if fig.data:
                assert [s.type for s in fig.layout.shapes][:1] == ["rect"], chart.key
                assert fig.layout.shapes[0].x0 == 2.0
                assert fig.layout.shapes[0].x1 == 3.5

    def test_page_holds_plotly_the_charts_and_the_sources(self):
        """One page: plotly.js inline, a section per chart with data, the per-source table."""
        page = build(verdict_with_outage())
        assert page.count('<section class="chart"') == 2  # rate and pipe: the only quantities in this timeline
        assert "Plotly.newPlot" in page
        assert "<td>p0u0</td>" in page
        assert "<script src" not in page

    def test_compare_puts_both_runs_on_the_same_axes(self):
        """Two runs: traces of both in one chart, dashed for the second."""
        a, b = verdict_with_outage("aaaa"), verdict_with_outage("bbbb")
        fig = figure(CHARTS[0], [("A aaaa", a), ("B bbbb", b)])
        assert {t.name.split(":")[0] for t in fig.data} == {"A aaaa", "B bbbb"}
        assert {t.line.dash for t in fig.data} == {"solid", "dash"}
        page = build_compare(a, b)
        assert "aaaa" in page
        assert "bbbb" in page

    def test_a_verdict_is_escaped(self):
        """A source name with markup is shown, not run."""
        v = verdict_with_outage()
        v["sources"][0]["source"] = "<img src=x onerror=alert(1)>"
        assert "<img src=x" not in build(v)


class TestReportCommand:
    """The command rebuilds a page from verdict.json and names what is wrong otherwise."""

    def test_rebuild(self, tmp_path, capsys):
        """RUN_DIR/report.html is written from RUN_DIR/verdict.json."""
        (tmp_path / "verdict.json").write_text(json.dumps(verdict_with_outage()))
        assert main([str(tmp_path)]) == 0
        assert (tmp_path / "report.html").stat().st_size > 1_000_000  # plotly.js is in it
        assert capsys.readouterr().out.strip() == str(tmp_path / "report.html")

    @pytest.mark.parametrize(
        ("content", "message"), [(None, "cannot read"), ("{", "is not JSON"), ("[]", "is not a namedpiper verdict")]
    )
    def test_bad_folder(self, tmp_path, content, message):
        """Missing, broken or foreign verdict.json: a ValueError naming the file."""
        if content is not None:
            (tmp_path / "verdict.json").write_text(content)
        with pytest.raises(ValueError, match=message):
            load_verdict(tmp_path)


class TestReasonClasses:
    """Every rejection the collector's validator gives for the hostile corpus falls in a named class."""

    def test_corpus_reasons_are_classified(self):
        """Differential: the real validator's reasons, not hand-written samples."""
        seen = set()
        for bad in load_corpus():
            if len(bad.raw) > 100_000 or b"\n" in bad.raw:
                continue
            _row, rejections = parse_line(bad.raw)
            for r in rejections:
                cls = reason_class(r.reason)
                assert cls != OTHER_REASON, r.reason
                seen.add(cls)
        assert {"json", "encoding", "schema", "framing"} <= seen

    def test_a_restart_without_a_lower_reading_is_seen(self):
        """A new process whose first reading equals the old one's last still adds up (told by its start time)."""
        c = Counters()
        assert c.add(5, instance=100.0) == 5
        assert c.add(5, instance=200.0) == 10
        assert c.add(7, instance=200.0) == 12


class TestFinalSample:
    """The verification's counts close the timeline without inventing a rate."""

    def test_no_rate_for_the_verified_total(self, tmp_path):
        """Rows no scrape saw (a killed collector's last commits) do not show as a spike at the end."""
        sampler = Sampler(
            Probes(
                fifo=str(tmp_path / "none"),
                writers=WriterTotals(),
                response_times=dict,
                collector_pid=lambda: None,
                metrics_url=None,
                journal=None,
                marks=[],
            ),
            time.monotonic(),
            interval=0.05,
        )
        sampler.start()
        gevent.sleep(0.12)
        last = sampler.stop(landed=1_000_000, rejected=0)[-1]
        assert last["rows_landed"] == 1_000_000
        assert last["landed_per_s"] is None
