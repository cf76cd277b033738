"""The reference collector as the benchmark runs it: its process, one end-to-end run, and its measurement."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from loadtests.bench.dataset import COLLECTOR_READY_TIMEOUT_S, COLLECTOR_STOP_TIMEOUT_S, ROOT, Bench, BenchError
from loadtests.bench.pipes import Writer, pack_writes
from loadtests.bench.server import connect, count_rows, wait_until_visible
from loadtests.collector_process import CollectorError, CollectorProcess, has_reader

# The reference collector's libpq application_name: how the benchmark sees that it has connected.
COLLECTOR_APPLICATION = "namedpiper-collector"


class BenchCollector(CollectorProcess):
    """`python -m reference.collector` (or main() under a profiler: launcher) on one FIFO and database."""

    def __init__(
        self, fifo: Path, dsn: str, log_path: Path, launcher: list[str] | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        args = ["--fifo", str(fifo), "--dsn", dsn, "--stats-interval", "60", *extra]
        super().__init__(
            [*(launcher or [sys.executable, "-m", "reference.collector"]), *args], fifo, log_path, cwd=ROOT
        )
        self.dsn = dsn

    def start(self) -> BenchCollector:
        """Start it and wait until it reads the FIFO and holds an idle database connection (schema applied)."""
        super().start()
        with contextlib.closing(connect(self.dsn)) as conn, conn.cursor() as cur:

            def ready() -> bool:
                cur.execute(
                    "SELECT count(*) > 0 AND to_regclass('logs') IS NOT NULL FROM pg_stat_activity"
                    " WHERE application_name = %s AND state = 'idle' AND datname = current_database()",
                    (COLLECTOR_APPLICATION,),
                )
                return bool(cur.fetchone()[0]) and self.fifo.exists() and has_reader(self.fifo)

            try:
                self.wait_until(ready, "reading with its schema applied", COLLECTOR_READY_TIMEOUT_S)
            except CollectorError as exc:
                self.stop(COLLECTOR_STOP_TIMEOUT_S)
                raise BenchError(str(exc)) from None
        return self


def run_collector(bench: Bench, name: str, launcher: list[str] | None = None) -> dict:
    """The whole data set through a fresh collector: write its FIFO, wait for every row; what was seen."""
    fifo = bench.fifo(name)
    log_path = bench.workdir / f"{name}.log"
    if bench.server is None:
        raise BenchError("the benchmark's database server is not started")
    with bench.database().fresh_database(schema=False) as dsn:
        collector = BenchCollector(fifo, dsn, log_path, launcher, bench.collector_args).start()
        # Start-up (imports, connecting, the schema) costs 0.3-0.4 s of CPU once per process: counted apart, since
        # spread over the rows it would make CPU per row depend on --lines (1.5-2 us a row at 200,000 lines).
        startup = collector.cpu_seconds() or (0.0, 0.0)
        try:
            writer = Writer(fifo, pack_writes(bench.data))
            started = time.monotonic()
            writer.start()
            try:
                visible_at = wait_until_visible(
                    dsn, bench.data[-1], len(bench.data), started, alive=lambda: collector.alive
                )
            except BenchError as exc:
                raise BenchError(f"{exc}; collector log {log_path}:\n{collector.tail()}") from None
            writer.join()
            if writer.error is not None:
                raise BenchError(f"writing the FIFO failed: {writer.error}")
            collector.note_peak_rss()
            rss = collector.peak_rss_kib or None
            total = collector.cpu_seconds()
            cpu = None if total is None else (total[0] - startup[0], total[1] - startup[1])
        finally:
            status = collector.stop(COLLECTOR_STOP_TIMEOUT_S)
        rejected = count_rows(dsn, "logs_rejected")
    elapsed = visible_at - started
    return {
        "lines": len(bench.data),
        "seconds": round(elapsed, 3),
        "rows_per_s": len(bench.data) / elapsed,
        "written_s": round(writer.finished_at - started, 3),
        "rejected": rejected,
        "peak_rss_mib": None if rss is None else rss / 1024,
        "exit_status": status,
        "startup_cpu_ms": sum(startup) * 1e3,
        "cpu_us_per_row": None if cpu is None else sum(cpu) / len(bench.data) * 1e6,
        "main_thread_cpu_us_per_row": None if cpu is None else cpu[0] / len(bench.data) * 1e6,
    }


def measure_collector(bench: Bench) -> None:
    """The reference collector end to end: first write into its FIFO until every row is visible."""
    result = run_collector(bench, "collector")
    bench.metrics["collector_rows_per_s"] = result["rows_per_s"]
    bench.metrics["collector_peak_rss_mib"] = result["peak_rss_mib"]
    bench.metrics["collector_cpu_us_per_row"] = result["cpu_us_per_row"]
    bench.metrics["collector_main_cpu_us_per_row"] = result["main_thread_cpu_us_per_row"]
    bench.metrics["collector_startup_cpu_ms"] = result["startup_cpu_ms"]
    bench.details["collector"] = result
