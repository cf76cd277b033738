"""The pipeline benchmark: `python -m loadtests.bench` (or `tox -e bench`) measures every stage on one seeded data set.

One run prints a table and writes JSON: the COPY limit of the server, the reference collector end to end, a naive
collector (readline + one INSERT per line, what the original README's collector did), the collector's peak memory
and emit-to-visible latency, raw FIFO throughput, and how fast EventFactory, the emitter and Locust generate lines.
Targets are shown next to the figures as PASS/MISS; they are informational, never an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import multiprocessing
import os
import platform
import pstats
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from loadtests.database import Database, DatabaseUnavailableError
from loadtests.lifecycle import has_reader
from reference.collector.validate import COLUMNS, parse_line
from reference.events import EventFactory
from reference.fifo import PIPE_BUF, get_pipe_size, set_pipe_size
from reference.framing import frames
from reference.schema import apply_schema
from reference.sizes import SIZE_CLASSES

log = logging.getLogger("namedpiper.bench")

ROOT = Path(__file__).resolve().parent.parent
SIZES = ("small", "medium", "pipe_buf")
PARTS = ("factory", "copy", "collector", "naive", "latency", "fifo", "emitter", "locust")
# 200,000 small lines are ~85 MB and a few seconds of collector time: long enough that start-up and the last
# partial batch are under 5 % of the run, short enough for the whole benchmark to stay under 3 minutes.
DEFAULT_LINES = 200_000
# One INSERT per line runs at a few thousand rows/s here: 10,000 lines take a few seconds.
NAIVE_LINES = 10_000
# The latency run writes at the rate of the target (10k lines/s) for 5 s: 50,000 samples, enough for a p99.
LATENCY_RATE = 10_000
LATENCY_SECONDS = 5.0
# The latency poller asks for the highest visible seq this often: the resolution of every latency sample.
LATENCY_POLL_S = 0.01
# 256 MiB through the pipe in 1 MiB writes: about a second, long enough to swamp process start-up.
FIFO_MIB = 256
FIFO_WRITE_BYTES = 1024 * 1024
EMITTER_SECONDS = 5.0
EMITTER_WRITERS = 2
LOCUST_SECONDS = 10
LOCUST_PROCESSES = 2
LOCUST_USERS = 20
# parse_line is timed on the first 20,000 lines, best of 5 rounds: stable to a few percent on a busy machine.
PARSE_SAMPLE_LINES = 20_000
PARSE_ROUNDS = 5
# copy_expert reads its file in pieces of this size: 1 MiB makes the COPY limit a limit of the server, not of
# 8 KiB Python reads (psycopg2's default).
COPY_READ_BYTES = 1024 * 1024
# How often the end-to-end runs look for their last row (an index lookup on time, so polling is cheap).
VISIBLE_POLL_S = 0.01
VISIBLE_TIMEOUT_S = 300.0
COLLECTOR_READY_TIMEOUT_S = 30.0
COLLECTOR_STOP_TIMEOUT_S = 60.0
SUBPROCESS_TIMEOUT_S = 120.0
# The reference collector's libpq application_name: how the benchmark sees that it has connected.
COLLECTOR_APPLICATION = "namedpiper-collector"

COPY_SQL = f"COPY logs ({', '.join(COLUMNS)}) FROM STDIN"
# Built from the constant column names, never from input.
NAIVE_INSERT_SQL = f"INSERT INTO logs ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"  # noqa: S608
LAST_ROW_SQL = "SELECT 1 FROM logs WHERE time = %s AND trace_id = %s"
# The latency run adds this index in its own database, so that max(seq) is one index probe, not a scan.
SEQ_INDEX_SQL = "CREATE INDEX bench_seq_idx ON logs (((data->'_np'->>'seq')::bigint))"
MAX_SEQ_SQL = "SELECT max((data->'_np'->>'seq')::bigint) FROM logs"

# A collector run under a profiler: `python -c CODE OUTFILE --fifo ...`.
PROFILE_CODE = {
    "cprofile": """
import cProfile, sys
from reference.collector.cli import main
out = sys.argv.pop(1)
profiler = cProfile.Profile()
profiler.enable()
try:
    code = main(sys.argv[1:])
finally:
    profiler.disable()
    profiler.dump_stats(out)
raise SystemExit(code)
""",
    "pyinstrument": """
import sys
from pyinstrument import Profiler
from reference.collector.cli import main
out = sys.argv.pop(1)
profiler = Profiler(interval=0.0005)
profiler.start()
try:
    code = main(sys.argv[1:])
finally:
    profiler.stop()
    with open(out, "w") as f:
        f.write(profiler.output_text(unicode=False, color=False))
raise SystemExit(code)
""",
}


class BenchError(RuntimeError):
    """A measurement could not be made; the message says what was seen and where the logs are."""


# ---------------------------------------------------------------- table, ratios and targets (pure)


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric key, its label and unit, and the decimals shown."""

    key: str
    label: str
    unit: str
    digits: int = 0


ROWS = (
    Row("copy_rows_per_s", "COPY limit: one COPY stream (psycopg2 copy_expert)", "rows/s"),
    Row("collector_rows_per_s", "reference collector: FIFO to visible rows", "rows/s"),
    Row("collector_vs_copy", "  collector / COPY limit", "x", 2),
    Row("naive_rows_per_s", "naive collector: readline + INSERT per line", "rows/s"),
    Row("collector_vs_naive", "  collector / naive", "x", 1),
    Row("collector_peak_rss_mib", "collector peak RSS (VmHWM)", "MiB", 1),
    Row("collector_cpu_us_per_row", "collector CPU per row, all threads", "us/row", 1),
    Row("collector_main_cpu_us_per_row", "  of which the main thread (read, split, parse)", "us/row", 1),
    Row("latency_p50_ms", "emit-to-visible p50 at {rate:,} lines/s", "ms"),
    Row("latency_p99_ms", "emit-to-visible p99 at {rate:,} lines/s", "ms"),
    Row("parse_us_per_line", "parse_line alone, one process (best of 5)", "us/line", 2),
    Row("factory_lines_per_s", "EventFactory, one process", "lines/s"),
    Row("emitter_lines_per_s", "reference emitter --writers 2 into cat", "lines/s"),
    Row("locust_lines_per_s", "Locust --processes 2 -u 20 into cat", "lines/s"),
    Row("fifo_mb_per_s", "raw FIFO: 1 MiB writes, 64 KiB pipe", "MB/s"),
    Row("fifo_big_pipe_mb_per_s", "raw FIFO: 1 MiB writes, 1 MiB pipe", "MB/s"),
)


@dataclass(frozen=True)
class Target:
    """A bound on one metric; sizes limits it to some size classes, rate to one latency-run rate."""

    key: str
    op: str  # ">=" or "<="
    bound: float
    sizes: frozenset[str] | None = None
    rate: int | None = None

    def text(self) -> str:
        """The bound as shown in the table."""
        return f"{self.op} {self.bound:,g}"


TARGETS = (
    Target("collector_vs_copy", ">=", 0.8, sizes=frozenset({"small"})),
    Target("collector_vs_naive", ">=", 30),
    Target("collector_peak_rss_mib", "<=", 100),
    Target("latency_p99_ms", "<=", 250, rate=LATENCY_RATE),
    Target("emitter_lines_per_s", ">=", 150_000, sizes=frozenset({"small"})),
)


@dataclass(frozen=True)
class Check:
    """A target applied to a run: PASS, MISS, n/a (not for this size or rate) or - (not measured)."""

    target: Target
    value: float | None
    result: str


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def derive(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """metrics plus the ratios computed from them (collector / COPY limit, collector / naive)."""
    out = dict(metrics)
    out["collector_vs_copy"] = ratio(metrics.get("collector_rows_per_s"), metrics.get("copy_rows_per_s"))
    out["collector_vs_naive"] = ratio(metrics.get("collector_rows_per_s"), metrics.get("naive_rows_per_s"))
    return out


def check_targets(metrics: dict[str, float | None], size: str, latency_rate: int = LATENCY_RATE,
                  targets: tuple[Target, ...] = TARGETS) -> list[Check]:
    """Each target against the measured value."""
    checks = []
    for t in targets:
        value = metrics.get(t.key)
        if (t.sizes is not None and size not in t.sizes) or (t.rate is not None and latency_rate != t.rate):
            result = "n/a"
        elif value is None:
            result = "-"
        else:
            met = value >= t.bound if t.op == ">=" else value <= t.bound
            result = "PASS" if met else "MISS"
        checks.append(Check(t, value, result))
    return checks


def format_value(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators; "skipped" when it was not measured."""
    if value is None:
        return "skipped"
    return f"{value:,.{digits}f}"


def render_table(metrics: dict[str, float | None], checks: list[Check], *, title: str = "",
                 latency_rate: int = LATENCY_RATE, rows: tuple[Row, ...] = ROWS) -> str:
    """The printed table: measurement, value, unit, target and result, one row per metric."""
    by_key = {c.target.key: c for c in checks}
    table = [("measurement", "value", "unit", "target", "result")]
    for row in rows:
        check = by_key.get(row.key)
        table.append((row.label.format(rate=latency_rate), format_value(metrics.get(row.key), row.digits), row.unit,
                      check.target.text() if check else "", check.result if check else ""))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    lines = [title] if title else []
    for r in table:
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  "
                     f"{r[4]}".rstrip())
        if r is table[0]:
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines)


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0 < q <= 100) of values, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


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


def top_entries(stats: pstats.Stats, count: int) -> list[dict]:
    """The count functions with the most own time, as plain data."""
    total = stats.total_tt or 1e-9
    entries = []
    for func in sorted(stats.stats, key=lambda f: stats.stats[f][2], reverse=True)[:count]:
        _cc, calls, own, cumulative, _callers = stats.stats[func]
        filename, line, name = func
        where = f"{'/'.join(Path(filename).parts[-2:])}:{line}({name})" if filename != "~" else name
        entries.append({"function": where, "calls": calls, "own_s": round(own, 3),
                        "own_pct": round(100 * own / total, 1), "cumulative_s": round(cumulative, 3)})
    return entries


def render_profile(entries: list[dict]) -> str:
    """The top entries as text."""
    lines = [f"{'own s':>7} {'own %':>6} {'cum s':>7} {'calls':>9}  function"]
    lines += [f"{e['own_s']:>7.3f} {e['own_pct']:>6.1f} {e['cumulative_s']:>7.3f} {e['calls']:>9}  {e['function']}"
              for e in entries]
    return "\n".join(lines)


# ---------------------------------------------------------------- the naive baseline collector


def naive_params(line: bytes) -> tuple:
    """One line as the parameters of the naive INSERT: json.loads, the eight columns, data as JSON text."""
    event = json.loads(line)
    data = event.get("data")
    return (*(event[c] for c in COLUMNS[:7]), None if data is None else json.dumps(data))


def naive_collect(fifo: str | os.PathLike[str], insert: Callable[[tuple], None]) -> int:
    """Read the FIFO line by line until every writer closed it, insert each line; return the lines inserted."""
    count = 0
    with open(fifo, "rb") as stream:
        for line in iter(stream.readline, b""):
            if line.strip():
                insert(naive_params(line))
                count += 1
    return count


def _naive_process(fifo: str, dsn: str) -> None:
    conn = psycopg2.connect(dsn, application_name="namedpiper-bench-naive")
    conn.autocommit = True
    with conn.cursor() as cur:
        naive_collect(fifo, lambda params: cur.execute(NAIVE_INSERT_SQL, params))
    conn.close()


# ---------------------------------------------------------------- processes, pipes and the database


class Server:
    """The benchmark's PostgreSQL server, and a fresh database on it for each measurement."""

    def __init__(self, dsn: str | None) -> None:
        self._scratch: Path | None = None
        if dsn is None and Database().embedded is not None:
            # Not the user's .namedpiper/: a temporary data folder, removed when the benchmark ends.
            self._scratch = Path(tempfile.mkdtemp(prefix="namedpiper-bench-pg-"))
            self.database = Database(data_dir=self._scratch / "pgdata")
        else:
            self.database = Database(dsn)

    def start(self) -> str:
        """Start (or reach) the server; return its version string."""
        self.database.start()
        with contextlib.closing(psycopg2.connect(self.database.dsn)) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return cur.fetchone()[0]

    def _admin(self, statement: sql.Composable) -> None:
        with contextlib.closing(psycopg2.connect(self.database.dsn)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)

    @contextlib.contextmanager
    def fresh_database(self, *, schema: bool = True) -> Iterator[str]:
        """A new database (with the schema unless schema=False), dropped WITH (FORCE) afterwards."""
        name = f"np_bench_{secrets.token_hex(4)}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = psycopg2.extensions.make_dsn(self.database.dsn, dbname=name)
        try:
            if schema:
                with contextlib.closing(psycopg2.connect(dsn)) as conn:
                    apply_schema(conn)
            yield dsn
        finally:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def close(self) -> None:
        """Stop an embedded server and remove its data."""
        self.database.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _connect(dsn: str):
    conn = psycopg2.connect(dsn, application_name="namedpiper-bench")
    conn.autocommit = True
    return conn


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class CollectorProcess:
    """`python -m reference.collector` (or main() under a profiler) on one FIFO and database."""

    def __init__(self, fifo: Path, dsn: str, log_path: Path, profile: tuple[str, Path] | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        args = ["--fifo", str(fifo), "--dsn", dsn, "--stats-interval", "60", *extra]
        if profile is None:
            self.argv = [sys.executable, "-m", "reference.collector", *args]
        else:
            self.argv = [sys.executable, "-c", PROFILE_CODE[profile[0]], str(profile[1]), *args]
        self.fifo, self.dsn, self.log_path = fifo, dsn, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> CollectorProcess:
        """Start it and wait until it reads the FIFO and holds an idle database connection (schema applied)."""
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=ROOT)
        deadline = time.monotonic() + COLLECTOR_READY_TIMEOUT_S
        with contextlib.closing(_connect(self.dsn)) as conn, conn.cursor() as cur:
            while True:
                cur.execute("SELECT count(*) > 0 AND to_regclass('logs') IS NOT NULL FROM pg_stat_activity"
                            " WHERE application_name = %s AND state = 'idle' AND datname = current_database()",
                            (COLLECTOR_APPLICATION,))
                if cur.fetchone()[0] and self.fifo.exists() and has_reader(str(self.fifo)):
                    return self
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    status = self.stop()
                    raise BenchError(f"the collector did not get ready (status {status}); its log "
                                     f"{self.log_path}:\n{_tail(self.log_path)}")
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


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out (a blocking pipe write above PIPE_BUF may return early on a signal)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def pack_writes(lines: list[bytes]) -> list[bytes]:
    """Whole lines packed into writes of at most PIPE_BUF bytes (a larger line is a write of its own)."""
    return [b"".join(batch) for batch in frames(lines)]


class _Writer(threading.Thread):
    """Writes pre-packed data into a FIFO from a thread; keeps the first error for the caller."""

    def __init__(self, fifo: Path, writes: list[bytes]) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.fifo, self.writes = fifo, writes
        self.error: BaseException | None = None
        self.finished_at = 0.0

    def run(self) -> None:
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_CLOEXEC)
            try:
                for data in self.writes:
                    write_all(fd, data)
            finally:
                os.close(fd)
            self.finished_at = time.monotonic()
        except OSError as exc:
            self.error = exc


def wait_until_visible(dsn: str, last_line: bytes, expected: int, started: float,
                       alive: Callable[[], bool] = lambda: True) -> float:
    """Poll until the last line's row and `expected` rows are visible; return when the last row was first seen.

    The last row is found through the time index; a writer's rows are committed in order, which the final
    count confirms (if it does not, the time the count completes is returned instead).
    """
    event = orjson.loads(last_line)
    deadline = started + VISIBLE_TIMEOUT_S
    seen_at = None
    with contextlib.closing(_connect(dsn)) as conn, conn.cursor() as cur:
        while True:
            now = time.monotonic()
            if seen_at is None:
                cur.execute(LAST_ROW_SQL, (event["time"], event["trace_id"]))
                if cur.fetchone() is not None:
                    seen_at = now
            if seen_at is not None:
                cur.execute("SELECT count(*) FROM logs")
                visible = cur.fetchone()[0]
                if visible >= expected:
                    return seen_at
                seen_at = now  # rows committed out of order: wait for the count instead
            if now > deadline or not alive():
                if not alive() and seen_at is None:
                    cur.execute(LAST_ROW_SQL, (event["time"], event["trace_id"]))
                    if cur.fetchone() is not None:  # it finished between the two checks
                        continue
                cur.execute("SELECT count(*) FROM logs")
                why = "the consumer exited" if now <= deadline else f"after {VISIBLE_TIMEOUT_S:g} s"
                raise BenchError(f"{cur.fetchone()[0]} of {expected} rows visible; {why}")
            time.sleep(VISIBLE_POLL_S)


def _count(dsn: str, table: str) -> int:
    with contextlib.closing(_connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return cur.fetchone()[0]


# ---------------------------------------------------------------- the measurements


@dataclass
class Bench:
    """One benchmark run: settings, the shared data set, and what was measured."""

    size: str
    lines: int
    naive_lines: int
    seed: int
    latency_rate: int
    latency_seconds: float
    fifo_mib: int
    emitter_seconds: float
    locust_seconds: int
    workdir: Path
    collector_args: tuple[str, ...] = ()
    server: Server | None = None
    data: list[bytes] = field(default_factory=list)
    rows: list[bytes] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def fifo(self, name: str) -> Path:
        """A FIFO path in the work folder (not created)."""
        return self.workdir / f"{name}.fifo"

    def measure_factory(self) -> None:
        """Generate the data set with EventFactory in this process (faker pools built beforehand, not timed)."""
        factory = EventFactory(SIZE_CLASSES[self.size], seed=self.seed, run_id="bench", source="b0")
        started = time.perf_counter()
        self.data = factory.lines(self.lines)
        elapsed = time.perf_counter() - started
        self.metrics["factory_lines_per_s"] = self.lines / elapsed
        self.details["factory"] = {"lines": self.lines, "seconds": round(elapsed, 3),
                                   "bytes": sum(map(len, self.data))}

    def measure_parse(self) -> None:
        """Turn the data set into COPY rows with parse_line; time it alone (the collector's hot path) on a sample."""
        rows = [parse_line(line[:-1])[0] for line in self.data]
        if any(row is None for row in rows):
            raise BenchError("the seeded data set has lines parse_line rejects")
        self.rows = rows
        sample = [line[:-1] for line in self.data[:PARSE_SAMPLE_LINES]]
        best = math.inf
        for _ in range(PARSE_ROUNDS):
            started = time.perf_counter()
            for line in sample:
                parse_line(line)
            best = min(best, time.perf_counter() - started)
        self.metrics["parse_us_per_line"] = best / len(sample) * 1e6

    def measure_copy(self) -> None:
        """The same rows, pre-formatted, in one COPY into a fresh logs table."""
        payload = b"".join(self.rows)
        with self.server.fresh_database() as dsn, contextlib.closing(psycopg2.connect(dsn)) as conn:
            with conn.cursor() as cur:
                started = time.perf_counter()
                cur.copy_expert(COPY_SQL, io.BytesIO(payload), size=COPY_READ_BYTES)
                conn.commit()
                elapsed = time.perf_counter() - started
            loaded = _count(dsn, "logs")
        if loaded != len(self.rows):
            raise BenchError(f"COPY loaded {loaded} of {len(self.rows)} rows")
        self.metrics["copy_rows_per_s"] = len(self.rows) / elapsed
        self.details["copy"] = {"rows": len(self.rows), "bytes": len(payload), "seconds": round(elapsed, 3)}

    def _collector_run(self, name: str, profile: tuple[str, Path] | None = None) -> dict:
        fifo = self.fifo(name)
        log_path = self.workdir / f"{name}.log"
        with self.server.fresh_database(schema=False) as dsn:
            collector = CollectorProcess(fifo, dsn, log_path, profile, self.collector_args).start()
            try:
                writer = _Writer(fifo, pack_writes(self.data))
                started = time.monotonic()
                writer.start()
                try:
                    visible_at = wait_until_visible(dsn, self.data[-1], len(self.data), started,
                                                    alive=lambda: collector.proc.poll() is None)
                except BenchError as exc:
                    raise BenchError(f"{exc}; collector log {log_path}:\n{_tail(log_path)}") from None
                writer.join()
                if writer.error is not None:
                    raise BenchError(f"writing the FIFO failed: {writer.error}")
                rss = collector.peak_rss_kib()
                cpu = collector.cpu_seconds()
            finally:
                status = collector.stop()
            rejected = _count(dsn, "logs_rejected")
        elapsed = visible_at - started
        return {"lines": len(self.data), "seconds": round(elapsed, 3), "rows_per_s": len(self.data) / elapsed,
                "written_s": round(writer.finished_at - started, 3), "rejected": rejected,
                "peak_rss_mib": None if rss is None else rss / 1024, "exit_status": status,
                "cpu_us_per_row": None if cpu is None else sum(cpu) / len(self.data) * 1e6,
                "main_thread_cpu_us_per_row": None if cpu is None else cpu[0] / len(self.data) * 1e6}

    def measure_collector(self) -> None:
        """The reference collector end to end: first write into its FIFO until every row is visible."""
        result = self._collector_run("collector")
        self.metrics["collector_rows_per_s"] = result["rows_per_s"]
        self.metrics["collector_peak_rss_mib"] = result["peak_rss_mib"]
        self.metrics["collector_cpu_us_per_row"] = result["cpu_us_per_row"]
        self.metrics["collector_main_cpu_us_per_row"] = result["main_thread_cpu_us_per_row"]
        self.details["collector"] = result

    def measure_naive(self) -> None:
        """The naive collector (readline, one autocommitted INSERT per line) on the first naive_lines lines."""
        lines = self.data[: self.naive_lines]
        fifo = self.fifo("naive")
        os.mkfifo(fifo, 0o600)
        with self.server.fresh_database() as dsn:
            proc = multiprocessing.get_context("fork").Process(target=_naive_process, args=(str(fifo), dsn),
                                                               daemon=True)
            proc.start()
            try:
                writer = _Writer(fifo, pack_writes(lines))
                started = time.monotonic()
                writer.start()
                visible_at = wait_until_visible(dsn, lines[-1], len(lines), started, alive=proc.is_alive)
                writer.join()
            finally:
                proc.join(COLLECTOR_STOP_TIMEOUT_S)
                if proc.is_alive():
                    proc.kill()
        elapsed = visible_at - started
        self.metrics["naive_rows_per_s"] = len(lines) / elapsed
        self.details["naive"] = {"lines": len(lines), "seconds": round(elapsed, 3)}

    def measure_latency(self) -> None:
        """Write at latency_rate lines/s into the collector; a poller records the highest visible seq every 10 ms."""
        count = min(len(self.data), int(self.latency_rate * self.latency_seconds))
        lines = self.data[:count]
        fifo = self.fifo("latency")
        log_path = self.workdir / "latency.log"
        polls: list[tuple[float, int | None]] = []
        sent_at: list[float] = []
        stop = threading.Event()

        def poll(dsn: str) -> None:
            with contextlib.closing(_connect(dsn)) as conn, conn.cursor() as cur:
                while not stop.is_set():
                    now = time.monotonic()
                    cur.execute(MAX_SEQ_SQL)
                    polls.append((now, cur.fetchone()[0]))
                    time.sleep(max(0.0, now + LATENCY_POLL_S - time.monotonic()))

        with self.server.fresh_database() as dsn:
            with contextlib.closing(_connect(dsn)) as conn, conn.cursor() as cur:
                cur.execute(SEQ_INDEX_SQL)
            collector = CollectorProcess(fifo, dsn, log_path, extra=self.collector_args).start()
            poller = threading.Thread(target=poll, args=(dsn,), name="bench-poller", daemon=True)
            poller.start()
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC)
                started = time.monotonic()
                first = 0
                for batch in frames(lines):
                    due = started + first / self.latency_rate
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
        self.metrics["latency_p50_ms"] = percentile(samples, 50)
        self.metrics["latency_p99_ms"] = percentile(samples, 99)
        self.details["latency"] = {
            "lines": count, "rate_asked": self.latency_rate, "rate_achieved": round(count / written),
            "visible": len(samples), "max_ms": round(max(samples), 1) if samples else None,
            "polls": len(polls), "resolution_ms": LATENCY_POLL_S * 1000,
            "method": "a poller reads max(data._np.seq) every 10 ms (an expression index added for the run); seq n "
                      "is visible at the first poll whose max reaches n; latency = that poll's start - n's write"}

    def measure_fifo(self) -> None:
        """Raw FIFO throughput: one writer (this process), one reader process, 1 MiB writes and reads."""
        for key, pipe_size in (("fifo_mb_per_s", None), ("fifo_big_pipe_mb_per_s", FIFO_WRITE_BYTES)):
            fifo = self.fifo(key)
            os.mkfifo(fifo, 0o600)
            ctx = multiprocessing.get_context("fork")
            results = ctx.Queue()
            reader = ctx.Process(target=_fifo_reader, args=(str(fifo), results), daemon=True)
            reader.start()
            block = b"x" * FIFO_WRITE_BYTES
            fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC)
            if pipe_size:
                set_pipe_size(fd, pipe_size)
            capacity = get_pipe_size(fd)
            started = time.monotonic()
            for _ in range(self.fifo_mib * 1024 * 1024 // FIFO_WRITE_BYTES):
                write_all(fd, block)
            os.close(fd)
            received, finished = results.get(timeout=SUBPROCESS_TIMEOUT_S)
            reader.join()
            self.metrics[key] = received / (finished - started) / 1e6
            self.details[key] = {"bytes": received, "seconds": round(finished - started, 3),
                                 "pipe_capacity": capacity, "write_bytes": FIFO_WRITE_BYTES}

    def measure_emitter(self) -> None:
        """The reference emitter with 2 writer processes for a few seconds into `cat` (which never sees EOF)."""
        fifo = self.fifo("emitter")
        os.mkfifo(fifo, 0o600)
        drain = _start_drain(fifo)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "reference.emitter", "--fifo", str(fifo), "--writers", str(EMITTER_WRITERS),
                 "--duration", str(self.emitter_seconds), "--size", self.size, "--seed", str(self.seed)],
                capture_output=True, timeout=SUBPROCESS_TIMEOUT_S, check=False, cwd=ROOT, stdin=subprocess.DEVNULL)
        finally:
            drain.kill()
            drain.wait()
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")[-800:]
            raise BenchError(f"the emitter exited with {done.returncode}: {stderr}")
        summary = orjson.loads(done.stdout.strip().splitlines()[-1])
        # Per-writer elapsed starts after the faker pools are built: the steady rate, not process start-up.
        busiest = max(s["elapsed_seconds"] for s in summary["sources"])
        self.metrics["emitter_lines_per_s"] = summary["lines_sent"] / busiest
        self.details["emitter"] = {"lines_sent": summary["lines_sent"], "writer_seconds": busiest,
                                   "emitter_reported_lines_per_s": summary.get("lines_per_second")}

    def measure_locust(self) -> None:
        """Locust's rate: the harness's own users writing into `cat`; its verdict fails (nothing lands), by design."""
        report_dir = self.workdir / "locust"
        with self.server.fresh_database() as dsn:
            done = subprocess.run(
                [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "fifo.py"), "--headless",
                 "--processes", str(LOCUST_PROCESSES), "-u", str(LOCUST_USERS), "-r", str(LOCUST_USERS),
                 "--run-time", f"{self.locust_seconds}s", "--size-mix", self.size, "--seed", str(self.seed),
                 "--collector-cmd", 'sh -c "exec cat 0<>{fifo} >/dev/null"', "--dsn", dsn,
                 "--report-dir", str(report_dir), "--drain-timeout", "1"],
                capture_output=True, timeout=SUBPROCESS_TIMEOUT_S + self.locust_seconds, check=False, cwd=ROOT,
                stdin=subprocess.DEVNULL)
        (self.workdir / "locust.log").write_bytes(done.stdout + done.stderr)
        verdicts = sorted(report_dir.glob("*/verdict.json"))
        if verdicts:
            rate = json.loads(verdicts[-1].read_text())["lines_per_s"]
        else:
            match = re.search(rb"throughput: (\d+) lines/s", done.stdout)
            if match is None:
                raise BenchError(f"Locust printed no throughput (exit {done.returncode}):\n"
                                 f"{(done.stdout + done.stderr).decode(errors='replace')[-1500:]}")
            rate = float(match.group(1))
        self.metrics["locust_lines_per_s"] = rate
        self.details["locust"] = {"seconds": self.locust_seconds, "exit_status": done.returncode,
                                  "note": "exit status 1 expected: cat stores nothing, so every line counts as lost"}

    def profile(self, tool: str, top: int) -> dict:
        """One more collector run under cProfile or pyinstrument (main thread: read, split, parse, batch)."""
        out = self.workdir / f"profile.{tool}"
        result = self._collector_run(f"profile-{tool}", profile=(tool, out))
        report: dict = {"tool": tool, "rows_per_s_under_profiler": round(result["rows_per_s"])}
        if tool == "cprofile":
            report["top"] = top_entries(pstats.Stats(str(out)), top)
            report["text"] = render_profile(report["top"])
        else:
            report["text"] = "\n".join(out.read_text().splitlines()[: 12 + 4 * top])
        return report


def _fifo_reader(fifo: str, results) -> None:
    buffer = bytearray(FIFO_WRITE_BYTES)
    received = 0
    with open(fifo, "rb", buffering=0) as stream:
        while n := stream.readinto(buffer):
            received += n
    results.put((received, time.monotonic()))


def _start_drain(fifo: Path) -> subprocess.Popen:
    """`cat` reading the FIFO opened read-write, so it never sees EOF between writers; kill it when done."""
    proc = subprocess.Popen(["sh", "-c", 'exec cat 0<>"$1" >/dev/null', "sh", str(fifo)], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + COLLECTOR_READY_TIMEOUT_S
    while not has_reader(str(fifo)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"cat did not open {fifo} (status {proc.poll()})")
        time.sleep(0.01)
    return proc


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="small", help="size class of the lines (default small)")
    p.add_argument("--lines", type=int, default=DEFAULT_LINES,
                   help=f"lines in the data set (default {DEFAULT_LINES:,})")
    p.add_argument("--naive-lines", type=int, default=NAIVE_LINES,
                   help=f"lines for the naive collector, the first of the data set (default {NAIVE_LINES:,})")
    p.add_argument("--seed", type=int, default=0, help="seed of the data set (default 0)")
    p.add_argument("--dsn", default=None,
                   help="PostgreSQL server to use (default: an embedded one with its data in a temporary folder); "
                        "the benchmark creates and drops one database per measurement on it")
    p.add_argument("--json", type=Path, default=Path("reports") / "bench.json",
                   help="where to write the results (default reports/bench.json)")
    p.add_argument("--skip", action="append", default=[], metavar="NAME",
                   help=f"skip a part; repeat or separate with commas: {', '.join(PARTS)}")
    p.add_argument("--latency-rate", type=int, default=LATENCY_RATE,
                   help=f"lines/s of the latency run (default {LATENCY_RATE:,}; the target applies at that rate)")
    p.add_argument("--latency-seconds", type=float, default=LATENCY_SECONDS,
                   help=f"length of the latency run (default {LATENCY_SECONDS:g} s)")
    p.add_argument("--fifo-mib", type=int, default=FIFO_MIB, help=f"MiB through the raw FIFO (default {FIFO_MIB})")
    p.add_argument("--emitter-seconds", type=float, default=EMITTER_SECONDS,
                   help=f"length of the emitter run (default {EMITTER_SECONDS:g} s)")
    p.add_argument("--locust-seconds", type=int, default=LOCUST_SECONDS,
                   help=f"length of the Locust run (default {LOCUST_SECONDS} s)")
    p.add_argument("--collector-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the reference collector, repeatable: --collector-arg=--pipe-size=1048576")
    p.add_argument("--profile", choices=tuple(PROFILE_CODE), default=None,
                   help="also run the collector once under this profiler and print its top entries "
                        "(pyinstrument must be installed; it is not a dependency)")
    p.add_argument("--profile-top", type=int, default=8, help="entries of the profile shown (default 8)")
    return p


def parse_skip(values: list[str]) -> set[str]:
    """--skip values (repeated and/or comma separated) as a set of part names; unknown names are an error."""
    names = {n.strip() for v in values for n in v.split(",") if n.strip()}
    unknown = names - set(PARTS)
    if unknown:
        raise ValueError(f"--skip {', '.join(sorted(unknown))}: unknown part; choose from {', '.join(PARTS)}")
    return names


def _say(text: str) -> None:
    """The table is the benchmark's output: stdout, for people and CI logs."""
    print(text, flush=True)  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    """Run every part not skipped, print the table, write the JSON; 0 unless a part failed to measure."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench %(asctime)s %(message)s", stream=sys.stderr)
    try:
        skip = parse_skip(args.skip)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.lines < 1 or args.naive_lines < 1 or args.latency_rate < 1:
        print("error: --lines, --naive-lines and --latency-rate must be 1 or more", file=sys.stderr)  # noqa: T201
        return 2
    if args.profile == "pyinstrument":
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            print("error: --profile pyinstrument needs `pip install pyinstrument`; or use --profile cprofile",  # noqa: T201
                  file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="namedpiper-bench-"))
    bench = Bench(args.size, args.lines, min(args.naive_lines, args.lines), args.seed, args.latency_rate,
                  args.latency_seconds, args.fifo_mib, args.emitter_seconds, args.locust_seconds, workdir,
                  tuple(args.collector_arg))
    load_before = os.getloadavg()
    started = time.monotonic()
    needs_db = bool({"copy", "collector", "naive", "latency", "locust"} - skip) or args.profile
    server = Server(args.dsn) if needs_db else None
    version = None
    profile = None
    try:
        if server is not None:
            version = server.start()
            bench.server = server
        steps: list[tuple[str, Callable[[], None]]] = [("factory", bench.measure_factory),
                                                        ("parse", bench.measure_parse)]
        steps += [(name, getattr(bench, f"measure_{name}")) for name in PARTS[1:] if name not in skip]
        for name, step in steps:
            log.info("%s ...", name)
            step_started = time.monotonic()
            try:
                step()
            except (BenchError, OSError, psycopg2.Error, subprocess.SubprocessError) as exc:
                if name in ("factory", "parse"):
                    raise
                log.error("%s failed: %s", name, exc)
                bench.errors[name] = str(exc)
            log.info("%s done in %.1f s", name, time.monotonic() - step_started)
        if args.profile:
            log.info("profile (%s) ...", args.profile)
            profile = bench.profile(args.profile, args.profile_top)
    except DatabaseUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    finally:
        if server is not None:
            server.close()
        if bench.errors:
            log.error("work folder kept for its logs: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    metrics = derive(bench.metrics)
    checks = check_targets(metrics, args.size, args.latency_rate)
    size = SIZE_CLASSES[args.size]
    title = (f"namedpiper benchmark: {args.lines:,} {args.size} lines ({size.low}-{size.high} B), seed {args.seed}, "
             f"PostgreSQL {version or '-'}, {os.cpu_count()} CPUs, load {load_before[0]:.1f}, {elapsed:.0f} s")
    _say(render_table(metrics, checks, title=title, latency_rate=args.latency_rate))
    for name, error in bench.errors.items():
        _say(f"ERROR {name}: {error}")
    if profile is not None:
        _say(f"\nprofile of the collector's main thread ({profile['tool']}, "
             f"{profile['rows_per_s_under_profiler']:,} rows/s under the profiler):\n{profile['text']}")
    report = {
        "benchmark": "namedpiper", "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "dsn"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "postgresql": version, "load_before": load_before, "load_after": os.getloadavg()},
        "seconds": round(elapsed, 1), "metrics": metrics,
        "targets": [{"key": c.target.key, "op": c.target.op, "bound": c.target.bound, "value": c.value,
                     "result": c.result} for c in checks],
        "details": bench.details, "errors": bench.errors, "profile": profile,
        "pipe_buf": PIPE_BUF,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    _say(f"results: {args.json}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
