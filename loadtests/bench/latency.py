"""Emit-to-visible latency: lines written at a steady rate into the collector, a poller watching the highest seq."""

from __future__ import annotations

import contextlib
import os
import threading
import time

from loadtests.bench.collector import BenchCollector
from loadtests.bench.dataset import Bench
from loadtests.bench.pipes import write_all
from loadtests.bench.report import percentile
from loadtests.bench.server import VISIBLE_TIMEOUT_S, connect
from reference.framing import frames

# The latency poller asks for the highest visible seq this often: the resolution of every latency sample.
LATENCY_POLL_S = 0.01
# The latency run adds this index in its own database, so that max(seq) is one index probe, not a scan.
SEQ_INDEX_SQL = "CREATE INDEX bench_seq_idx ON logs (((data->'_np'->>'seq')::bigint))"
MAX_SEQ_SQL = "SELECT max((data->'_np'->>'seq')::bigint) FROM logs"


def visibility_latencies(sent_at: list[float], polls: list[tuple[float, int | None]]) -> list[float]:
    """Latency in ms of each seq seen: sent_at[k] is when seq k+1 was written, polls are (time, max seq visible).

    A seq counts as visible at the first poll whose max seq reaches it (one writer, rows committed in order).
    """
    out: list[float] = []
    seen = 0
    for when, top in polls:
        top = min(top or 0, len(sent_at))
        while seen < top:
            out.append((when - sent_at[seen]) * 1000)
            seen += 1
    return out


def measure_latency(bench: Bench) -> None:
    """Write at latency_rate lines/s into the collector; a poller records the highest visible seq every 10 ms."""
    count = min(len(bench.data), int(bench.latency_rate * bench.latency_seconds))
    lines = bench.data[:count]
    fifo = bench.fifo("latency")
    log_path = bench.workdir / "latency.log"
    polls: list[tuple[float, int | None]] = []
    sent_at: list[float] = []
    stop = threading.Event()

    def poll(dsn: str) -> None:
        with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
            while not stop.is_set():
                now = time.monotonic()
                cur.execute(MAX_SEQ_SQL)
                polls.append((now, cur.fetchone()[0]))
                time.sleep(max(0.0, now + LATENCY_POLL_S - time.monotonic()))

    with bench.database().fresh_database() as dsn:
        with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute(SEQ_INDEX_SQL)
        collector = BenchCollector(fifo, dsn, log_path, extra=bench.collector_args).start()
        poller = threading.Thread(target=poll, args=(dsn,), name="bench-poller", daemon=True)
        poller.start()
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC)
            started = time.monotonic()
            first = 0
            for batch in frames(lines):
                due = started + first / bench.latency_rate
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                now = time.monotonic()
                sent_at.extend([now] * len(batch))
                write_all(fd, b"".join(batch))
                first += len(batch)
            written = time.monotonic() - started
            os.close(fd)
            deadline = time.monotonic() + VISIBLE_TIMEOUT_S
            while (not polls or (polls[-1][1] or 0) < count) and time.monotonic() < deadline:
                time.sleep(LATENCY_POLL_S)
        finally:
            stop.set()
            poller.join()
            collector.stop()
    samples = visibility_latencies(sent_at, polls)
    bench.metrics["latency_p50_ms"] = percentile(samples, 50)
    bench.metrics["latency_p99_ms"] = percentile(samples, 99)
    bench.details["latency"] = {
        "lines": count,
        "rate_asked": bench.latency_rate,
        "rate_achieved": round(count / written),
        "visible": len(samples),
        "max_ms": round(max(samples), 1) if samples else None,
        "polls": len(polls),
        "resolution_ms": LATENCY_POLL_S * 1000,
        "method": "a poller reads max(data._np.seq) every 10 ms (an expression index added for the run); seq n "
        "is visible at the first poll whose max reaches n; latency = that poll's start - n's write",
    }
