"""The reference collector as the benchmark runs it: its process, one end-to-end run, and its measurement."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from loadtests.bench.dataset import COLLECTOR_READY_TIMEOUT_S, COLLECTOR_STOP_TIMEOUT_S, ROOT, Bench, BenchError
from loadtests.bench.pipes import Writer, pack_writes
from loadtests.bench.server import connect, count_rows, wait_until_visible
from loadtests.lifecycle import has_reader

# The reference collector's libpq application_name: how the benchmark sees that it has connected.
COLLECTOR_APPLICATION = "namedpiper-collector"


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class CollectorProcess:
    """`python -m reference.collector` (or main() under a profiler: launcher) on one FIFO and database."""

    def __init__(self, fifo: Path, dsn: str, log_path: Path, launcher: list[str] | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        args = ["--fifo", str(fifo), "--dsn", dsn, "--stats-interval", "60", *extra]
        self.argv = [*(launcher or [sys.executable, "-m", "reference.collector"]), *args]
        self.fifo, self.dsn, self.log_path = fifo, dsn, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> CollectorProcess:
        """Start it and wait until it reads the FIFO and holds an idle database connection (schema applied)."""
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=ROOT)
        deadline = time.monotonic() + COLLECTOR_READY_TIMEOUT_S
        with contextlib.closing(connect(self.dsn)) as conn, conn.cursor() as cur:
            while True:
                cur.execute("SELECT count(*) > 0 AND to_regclass('logs') IS NOT NULL FROM pg_stat_activity"
                            " WHERE application_name = %s AND state = 'idle' AND datname = current_database()",
                            (COLLECTOR_APPLICATION,))
                if cur.fetchone()[0] and self.fifo.exists() and has_reader(str(self.fifo)):
                    return self
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    status = self.stop()
                    raise BenchError(f"the collector did not get ready (status {status}); its log "
                                     f"{self.log_path}:\n{tail(self.log_path)}")
                time.sleep(0.02)

    def peak_rss_kib(self) -> int | None:
        """VmHWM of the collector process: the most resident memory it ever had."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) if match else None

    def cpu_seconds(self) -> tuple[float, float] | None:
        """CPU time (user + system) the collector has used so far: (main thread, all other threads)."""
        main = others = 0.0
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)
                if task.name == str(self.proc.pid):
                    main += used
                else:
                    others += used
        except (OSError, IndexError, ValueError):
            return None
        return main, others

    def stop(self) -> int | None:
        """SIGTERM (the collector drains and flushes), wait, SIGKILL after the timeout; return the status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(COLLECTOR_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def run_collector(bench: Bench, name: str, launcher: list[str] | None = None) -> dict:
    """The whole data set through a fresh collector: write its FIFO, wait for every row; what was seen."""
    fifo = bench.fifo(name)
    log_path = bench.workdir / f"{name}.log"
    with bench.server.fresh_database(schema=False) as dsn:
        collector = CollectorProcess(fifo, dsn, log_path, launcher, bench.collector_args).start()
        try:
            writer = Writer(fifo, pack_writes(bench.data))
            started = time.monotonic()
            writer.start()
            try:
                visible_at = wait_until_visible(dsn, bench.data[-1], len(bench.data), started,
                                                alive=lambda: collector.proc.poll() is None)
            except BenchError as exc:
                raise BenchError(f"{exc}; collector log {log_path}:\n{tail(log_path)}") from None
            writer.join()
            if writer.error is not None:
                raise BenchError(f"writing the FIFO failed: {writer.error}")
            rss = collector.peak_rss_kib()
            cpu = collector.cpu_seconds()
        finally:
            status = collector.stop()
        rejected = count_rows(dsn, "logs_rejected")
    elapsed = visible_at - started
    return {"lines": len(bench.data), "seconds": round(elapsed, 3), "rows_per_s": len(bench.data) / elapsed,
            "written_s": round(writer.finished_at - started, 3), "rejected": rejected,
            "peak_rss_mib": None if rss is None else rss / 1024, "exit_status": status,
            "cpu_us_per_row": None if cpu is None else sum(cpu) / len(bench.data) * 1e6,
            "main_thread_cpu_us_per_row": None if cpu is None else cpu[0] / len(bench.data) * 1e6}


def measure_collector(bench: Bench) -> None:
    """The reference collector end to end: first write into its FIFO until every row is visible."""
    result = run_collector(bench, "collector")
    bench.metrics["collector_rows_per_s"] = result["rows_per_s"]
    bench.metrics["collector_peak_rss_mib"] = result["peak_rss_mib"]
    bench.metrics["collector_cpu_us_per_row"] = result["cpu_us_per_row"]
    bench.metrics["collector_main_cpu_us_per_row"] = result["main_thread_cpu_us_per_row"]
    bench.details["collector"] = result
