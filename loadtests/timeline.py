"""The run's timeline: one sample of the whole pipeline per interval, from the start to the end of verification."""

from __future__ import annotations

import csv
import errno
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import gevent
import psutil
from prometheus_client.parser import text_string_to_metric_families

from reference.fifo import bytes_waiting, get_pipe_size

log = logging.getLogger("namedpiper")

# One sample a second: the k6/Gatling grain; a 20 s run gets 20 points, a 2-minute drain 120.
DEFAULT_INTERVAL_S = 1.0
# A scrape that takes longer than this is skipped (the sample keeps the harness's own view): the sampler must not
# lag behind its clock because a stopped collector (SIGSTOP) cannot answer. A collector replaying its journal at
# full speed answered in 0.5-0.8 s at times (its HTTP thread waits for the GIL), so 0.5 s left gaps.
SCRAPE_TIMEOUT_S = 0.9
# Columns of timeline.csv, in order: every key of a sample.
COLUMNS = (
    "t_s",
    "phase",
    "lines_written",
    "lines_dropped",
    "written_per_s",
    "rows_landed",
    "landed_per_s",
    "rejected",
    "pipe_bytes",
    "pipe_capacity",
    "writes",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "blocked_s",
    "collector_rss_mib",
    "collector_cpu_percent",
    "journal_bytes",
    "journal_lag_bytes",
    "database_up",
    "landed_from",
    "marks",
)
MIB = 1024 * 1024
# Rates are taken over at least this fraction of the interval (see Rate).
MIN_RATE_SPAN = 0.75


@dataclass
class CollectorView:
    """What the collector's /metrics says (the reference collector with --metrics-port)."""

    lines_read: float
    rows_written: float
    rejected: float
    pipe_bytes: float | None
    pipe_capacity: float | None
    journal_bytes: float | None
    journal_lag_bytes: float | None
    database_up: float | None
    process_start: float | None  # process_start_time_seconds: tells a restarted collector from the last one


def scrape_metrics(url: str, timeout: float = SCRAPE_TIMEOUT_S) -> CollectorView | None:
    """The collector's counters from its Prometheus endpoint, None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the harness's own URL)
            text = response.read().decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value  # labels summed (rejected by reason)
    if "namedpiper_collector_rows_written_total" not in values:
        return None
    p = "namedpiper_collector_"
    return CollectorView(
        lines_read=values.get(p + "lines_read_total", 0.0),
        rows_written=values[p + "rows_written_total"],
        rejected=values.get(p + "rejected_lines_total", 0.0),
        pipe_bytes=values.get(p + "pipe_waiting_bytes"),
        pipe_capacity=values.get(p + "pipe_capacity_bytes"),
        journal_bytes=values.get(p + "journal_bytes"),
        journal_lag_bytes=values.get(p + "journal_uncommitted_bytes"),
        database_up=values.get(p + "database_up"),
        process_start=values.get("process_start_time_seconds"),
    )


def pipe_fill(fifo: str) -> tuple[int, int] | None:
    """(bytes waiting, capacity) of the FIFO's pipe, None when nothing reads it.

    A write end held for a moment, never written: a read end of ours would make the harness a reader (a dead
    collector's writers would block instead of getting EPIPE).
    """
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return None
        raise
    try:
        return bytes_waiting(fd), get_pipe_size(fd)
    finally:
        os.close(fd)


def folder_bytes(folder: Path) -> int | None:
    """Bytes a folder's files hold on disk (punched holes not counted), None when it does not exist."""
    try:
        return sum(e.stat().st_blocks * 512 for e in os.scandir(folder) if e.is_file())
    except OSError:
        return None


class Counters:
    """The total of a counter over the processes that count it (a collector restarted by a fault starts from 0)."""

    def __init__(self) -> None:
        self.base = 0.0
        self.last = 0.0
        self.instance: object = None

    def add(self, value: float, instance: object = None) -> float:
        """The running total after this reading of the process instance (its start time; None: unknown)."""
        if value < self.last or (instance is not None and self.instance is not None and instance != self.instance):
            self.base += self.last  # a new process: what the old one counted stays counted
        self.last = value
        self.instance = instance if instance is not None else self.instance
        return self.base + value


class Rate:
    """Per-second rate of a running total, over at least min_span seconds.

    Rows land in batches (10,000 at a commit): two samples a few milliseconds apart (the sampler catching up
    after a slow scrape) turned one commit into a rate of 600,000 rows/s.
    """

    def __init__(self, min_span: float) -> None:
        self.min_span = min_span
        self.readings: list[tuple[float, float]] = []

    def add(self, t: float, total: float) -> float | None:
        """The rate since the newest reading at least min_span old (None before there is one)."""
        old = [r for r in self.readings if r[0] <= t - self.min_span]
        self.readings = [*old[-1:], *(r for r in self.readings if r[0] > t - self.min_span), (t, total)]
        if not old:
            return None
        t0, v0 = old[-1]
        return round((total - v0) / (t - t0), 1)


class Latencies:
    """Write latency percentiles of one interval, from the difference of Locust's cumulative histogram."""

    def __init__(self) -> None:
        self.previous: dict[int, int] = {}

    def take(self, cumulative: Mapping[int, int]) -> tuple[int, float | None, float | None, float | None]:
        """(writes, p50, p99, max) of the writes since the last call, in milliseconds (None without writes)."""
        delta = {ms: n - self.previous.get(ms, 0) for ms, n in cumulative.items() if n > self.previous.get(ms, 0)}
        self.previous = dict(cumulative)
        total = sum(delta.values())
        if not total:
            return 0, None, None, None
        ordered = sorted(delta.items())

        def percentile(fraction: float) -> float:
            seen = 0
            for ms, n in ordered:
                seen += n
                if seen >= fraction * total:
                    return float(ms)
            return float(ordered[-1][0])

        return total, percentile(0.5), percentile(0.99), float(ordered[-1][0])


@dataclass
class Probes:
    """Where a sample's numbers come from; each is read once per sample."""

    fifo: str
    writers: Callable[[], Mapping[str, float]]  # sent, dropped, blocked_s summed over every user (all workers)
    response_times: Callable[[], Mapping[int, int]]  # Locust's cumulative histogram: rounded ms -> writes
    collector_pid: Callable[[], int | None]
    metrics_url: str | None
    journal: Path | None
    marks: list  # (monotonic time, "start" | "end" | "at", text), appended by the fault injector


class Sampler:
    """Samples the pipeline every interval in a greenlet, until stop(); the samples are the timeline."""

    def __init__(self, probes: Probes, started: float, interval: float = DEFAULT_INTERVAL_S) -> None:
        self.probes = probes
        self.started = started
        self.interval = interval
        self.phase = "load"
        self.samples: list[dict] = []
        self.spans: list[dict] = []  # faults: {"fault", "start_s", "end_s"}
        self._marks_seen = 0
        self._latencies = Latencies()
        self._landed, self._rejected = Counters(), Counters()
        self._process: psutil.Process | None = None
        self._previous: dict | None = None
        self._written_rate = Rate(MIN_RATE_SPAN * interval)
        self._landed_rate = Rate(MIN_RATE_SPAN * interval)  # fed by answered scrapes only: a skip is a gap
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        """Sample from now on, once per interval."""
        self._greenlet = gevent.spawn(self._loop)

    def sample_now(self) -> None:
        """An extra sample at once (before the collector stops: its counters go with it)."""
        if self._greenlet is not None:
            self._sample()

    def stop(self, landed: int | None = None, rejected: int | None = None) -> list[dict]:
        """End sampling after one last sample; the timeline. The verification's counts, when given, are the last
        sample's landed and rejected lines (the collector's final flush happens after its last scrape)."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            self._greenlet = None
            self._sample()
            last = self.samples[-1] if self.samples else None
            if last is not None and landed is not None:
                # No rate for it: the difference to the scraped counts is not one second's work but what no scrape
                # saw (a killed collector's last commits, the final flush): 122,944 rows/s in a collector_crash run.
                last.update(rows_landed=landed, rejected=rejected, landed_from="verification", landed_per_s=None)
        for span in self.spans:
            if span["end_s"] is None:
                span["end_s"] = self.samples[-1]["t_s"] if self.samples else 0.0
        return self.samples

    def _loop(self) -> None:
        tick = 0
        while True:
            self._sample()
            # The next tick of the clock still ahead: after a stall, missed ticks are skipped, not caught up on in
            # a burst of samples milliseconds apart.
            tick = max(tick + 1, math.ceil((time.monotonic() - self.started) / self.interval))
            gevent.sleep(max(0.0, self.started + tick * self.interval - time.monotonic()))

    def _sample(self) -> None:
        try:
            self.samples.append(self.sample())
        except (OSError, psutil.Error) as exc:  # a probe that fails once must not end the timeline
            log.debug("timeline: sample skipped: %s", exc)

    def sample(self) -> dict:
        """One sample of everything, now."""
        p = self.probes
        marks = self._new_marks()  # they carry their own times
        # The scrape first: it yields to other greenlets and may come back late (a busy or paused collector, a
        # master busy elsewhere); the sample's time and the other probes follow its answer.
        view = scrape_metrics(p.metrics_url) if p.metrics_url else None
        t = round(time.monotonic() - self.started, 3)
        writers = p.writers()
        writes, p50, p99, most = self._latencies.take(p.response_times())
        fill = pipe_fill(p.fifo)
        rss, cpu = self._collector_usage()
        s: dict = {
            "t_s": t,
            "phase": self.phase,
            "lines_written": int(writers.get("sent", 0)),
            "lines_dropped": int(writers.get("dropped", 0)),
            "written_per_s": None,
            "rows_landed": None,
            "landed_per_s": None,
            "rejected": None,
            "pipe_bytes": fill[0] if fill else None,
            "pipe_capacity": fill[1] if fill else None,
            "writes": writes,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "latency_max_ms": most,
            "blocked_s": None,
            "collector_rss_mib": rss,
            "collector_cpu_percent": cpu,
            "journal_bytes": folder_bytes(p.journal) if p.journal is not None else None,
            "journal_lag_bytes": None,
            "database_up": None,
            "landed_from": None,
            "marks": marks,
        }
        prev = self._previous
        if view is not None:
            s.update(
                rows_landed=int(self._landed.add(view.rows_written, view.process_start)),
                rejected=int(self._rejected.add(view.rejected, view.process_start)),
                landed_from="collector metrics",
                journal_lag_bytes=view.journal_lag_bytes,
                database_up=view.database_up,
            )
            if view.journal_bytes is not None:
                s["journal_bytes"] = view.journal_bytes
        elif prev is not None:  # no answer this time (paused, restarting, stopped): the totals stand
            s.update(rows_landed=prev["rows_landed"], rejected=prev["rejected"])
        s["written_per_s"] = self._written_rate.add(t, s["lines_written"])
        if view is not None:
            s["landed_per_s"] = self._landed_rate.add(t, s["rows_landed"])
        if prev is not None:
            s["blocked_s"] = round(max(0.0, writers.get("blocked_s", 0.0) - prev["_blocked_total"]), 3)
        self._previous = {**s, "_blocked_total": writers.get("blocked_s", 0.0)}
        return s

    def _new_marks(self) -> list[str]:
        """Fault markers since the last sample, and the spans they open and close."""
        fresh = self.probes.marks[self._marks_seen :]
        self._marks_seen += len(fresh)
        out = []
        for when, edge, text in fresh:
            at = round(when - self.started, 3)
            out.append(f"{edge}: {text}")
            if edge == "start":
                self.spans.append({"fault": text, "start_s": at, "end_s": None})
            elif edge == "end":
                open_spans = [sp for sp in self.spans if sp["end_s"] is None and sp["fault"] == text]
                if open_spans:
                    open_spans[-1]["end_s"] = at
            else:
                self.spans.append({"fault": text, "start_s": at, "end_s": at})
        return out

    def _collector_usage(self) -> tuple[float | None, float | None]:
        """(RSS in MiB, CPU % since the last sample) of the collector; None while there is none."""
        pid = self.probes.collector_pid()
        if pid is None:
            self._process = None
            return None, None
        try:
            if self._process is None or self._process.pid != pid:
                self._process = psutil.Process(pid)
                self._process.cpu_percent(None)  # the first call only starts the measurement
            with self._process.oneshot():
                return round(self._process.memory_info().rss / MIB, 1), self._process.cpu_percent(None)
        except psutil.Error:
            self._process = None
            return None, None


def write_csv(samples: list[dict], path: Path) -> Path:
    """timeline.csv: one row per sample, the markers joined with '; '."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for s in samples:
            writer.writerow({**s, "marks": "; ".join(s.get("marks") or [])})
    return path


# What the workers add to Locust's periodic report to the master (every few seconds), under this key.
REPORT_KEY = "np_writers"
WRITER_KEYS = ("sent", "dropped", "blocked_s")


def writer_totals(counts: Mapping) -> dict[str, float]:
    """sent, dropped and blocked_s summed over the users' SourceCounts."""
    return {key: sum(getattr(c, key) for c in list(counts.values())) for key in WRITER_KEYS}


class WriterTotals:
    """The users' counters summed over every process: this one's own, plus each worker's latest report."""

    def __init__(self) -> None:
        self.local: Mapping = {}  # the SourceCounts of this process's users (local runner)
        self.workers: dict[str, dict[str, float]] = {}

    def reset(self) -> None:
        """A new run: forget the workers' reports of the last one."""
        self.workers = {}

    def worker_report(self, client_id: str, data: Mapping) -> None:
        """Master: a worker's periodic report (Locust's worker_report event)."""
        if REPORT_KEY in data:
            self.workers[client_id] = dict(data[REPORT_KEY])

    def __call__(self) -> dict[str, float]:
        """The totals now."""
        parts = [writer_totals(self.local), *self.workers.values()]
        return {key: sum(p.get(key, 0.0) for p in parts) for key in WRITER_KEYS}
