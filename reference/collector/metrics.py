"""The collector's Prometheus metrics (`--metrics-port`): its own counters, read at scrape time."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector as RegistryCollector

from reference.collector.collector import Collector
from reference.collector.model import Batch
from reference.collector.source import JournaledSource

log = logging.getLogger("reference.collector")

PREFIX = "namedpiper_collector"
# Loopback only by default: the numbers tell an observer how busy the pipeline is, nobody else needs them.
DEFAULT_METRICS_HOST = "127.0.0.1"
# COPY seconds buckets: a 10,000-row batch commits in ~50-150 ms here; seconds mean a slow or locked database.
COPY_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A rejection's reason text, first match wins, to a label with few values (a label per reason text would let
# hostile input create a time series per distinct error message).
REASON_CLASSES = (
    ("encoding", re.compile(r"invalid UTF-8|byte order mark|NUL byte|\\u0000")),
    ("too_long", re.compile(r"exceeds --max-line-bytes")),
    ("framing", re.compile(r"^unfinished line|^fragment of|ends with CR")),
    ("database", re.compile(r"^PostgreSQL rejected")),
    ("json", re.compile(r"invalid JSON|blank line|appears twice|nested \d+ levels deep")),
    ("schema", re.compile(r"field|expected a JSON object")),
)
OTHER_REASON = "other"


def reason_class(reason: str) -> str:
    """The label value of a rejection reason: one of REASON_CLASSES' names, else 'other'."""
    for name, pattern in REASON_CLASSES:
        if pattern.search(reason):
            return name
    return OTHER_REASON


class CollectorMetrics(RegistryCollector):
    """Reads a running Collector's counters when Prometheus scrapes; counts rejections and COPY times at commit."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.registry = CollectorRegistry(auto_describe=True)
        self.copy_seconds = Histogram(
            f"{PREFIX}_copy_seconds",
            "Seconds per committed batch (COPY and commit, retries included)",
            buckets=COPY_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.rejected: Counter[str] = Counter({name: 0 for name, _ in REASON_CLASSES} | {OTHER_REASON: 0})
        self.last_commit: float | None = None
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total
        collector.sink.on_commit = self.committed  # type: ignore[attr-defined]

    def committed(self, batch: Batch, rejected: int, seconds: float) -> None:
        """Called by the sink's writer thread after each commit."""
        self.copy_seconds.observe(seconds)
        for r in batch.rejections:
            self.rejected[reason_class(r.reason)] += 1
        # Rows PostgreSQL refused in the COPY are rejections the batch did not carry yet.
        self.rejected["database"] += max(0, rejected - len(batch.rejections))
        self.last_commit = time.time()

    def collect(self) -> Iterator[Metric]:
        """The current values (runs in the HTTP server's thread: only reads)."""
        c, sink, source = self.collector, self.collector.sink, self.collector.source
        yield _counter("lines_read", "Lines read from the FIFO (or the journal)", c.lines_read)
        yield _counter("read_bytes", "Bytes taken from the FIFO", source.taken)
        yield _counter("rows_written", "Rows committed to the logs table", sink.counters.rows_written)
        yield _counter("batches", "Batches committed", sink.counters.batches)
        rejected = CounterMetricFamily(
            f"{PREFIX}_rejected_lines", "Lines committed to logs_rejected, by reason class", labels=["reason"]
        )
        for name, count in sorted(self.rejected.items()):
            rejected.add_metric([name], count)
        yield rejected
        yield _gauge("pipe_waiting_bytes", "Bytes written into the FIFO and not read yet (FIONREAD)", _safe_waiting(c))
        yield _gauge("pipe_capacity_bytes", "Capacity of the pipe (F_GETPIPE_SZ)", source.capacity)
        yield _gauge("queued_batches", "Batches waiting for the database writer", sink.queued)
        if isinstance(source, JournaledSource):
            journal = source.journal
            yield _gauge("journal_bytes", "Bytes the journal's segment files hold on disk", journal.disk_bytes)
            committed = sink.committed
            lag = journal.end - committed if committed is not None else journal.end - journal.start
            yield _gauge(
                "journal_uncommitted_bytes",
                "Journaled bytes past the committed offset (the backlog the database still has to take)",
                max(0, lag),
            )
        yield _gauge(
            "database_up",
            "1 while the database takes batches, 0 while the collector retries",
            1 if sink.taking and sink.ready else 0,
        )
        if self.last_commit is not None:
            yield _gauge("last_commit_timestamp_seconds", "Unix time of the last committed batch", self.last_commit)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _safe_waiting(c: Collector) -> int:
    """Bytes in the pipe; 0 when the FIFO was closed under us (the stop closes it in the main thread)."""
    try:
        return c.source.waiting
    except OSError:
        return 0


def serve(collector: Collector, port: int, host: str = DEFAULT_METRICS_HOST) -> CollectorMetrics:
    """Serve the collector's metrics at http://host:port/metrics from a daemon thread; OSError if it cannot bind."""
    metrics = CollectorMetrics(collector)
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics at http://%s:%d/metrics", host, server.server_port)
    return metrics
