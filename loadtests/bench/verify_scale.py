"""Verification at scale: one run's verdict in a database that holds ten times its rows of earlier runs, vs alone."""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from datetime import datetime, timedelta

from loadtests.bench.dataset import Bench, BenchError
from loadtests.bench.server import connect
from loadtests.fifo_client import SourceCounts
from loadtests.verify import LANDED_COUNT_TEMPLATE, PER_SOURCE_SQL, verify_run
from loadtests.window import CLOCK_SKEW_MARGIN, WINDOW_SESSION_SQL, scoped

log = logging.getLogger("namedpiper.bench")

# Issue 15's case: a 1,000,000-row run among 10,000,000 rows of other runs.
DEFAULT_RUN_ROWS = 1_000_000
DEFAULT_OTHER_ROWS = 10_000_000
# The verdict among the other runs may take at most this many times as long as alone (issue 15).
RATIO_TARGET = 1.5
# The run's rows: this many sources (Locust users), written over this long, ending when the benchmark fills them.
RUN_SOURCES = 20
RUN_SECONDS = 60.0
# Earlier runs: this many rows each, one row a millisecond (2.8 hours for 10 million rows), the newest ending
# this long before the run starts: a gap wider than the margin, as between two runs a few minutes apart.
OTHER_RUN_ROWS = 100_000
OTHER_ROW_STEP = timedelta(milliseconds=1)
OTHER_RUNS_GAP = timedelta(minutes=10)
# Rows are generated inside PostgreSQL in statements of this many: a progress line each, and no one
# transaction of 10 million rows.
FILL_BATCH_ROWS = 1_000_000
# The scoped verdict is timed this many times, best taken (the first pass also reads pages into the cache);
# the whole-table query, which takes ten times as long among the other runs, once.
VERIFY_ROUNDS = 3
# Rows shaped like the harness's: the eight columns, a ~200-character message, data._np with run, src, seq and
# the chk that loadtests/verify.py recomputes (so every row counts as intact). Built from constants only.
FILL_SQL = """
INSERT INTO logs (time, application_name, environment_name, log_event, trace_id, file_path, host_ip, data)
SELECT t, app, env, ev, trace, path, ip,
       jsonb_build_object('user', 'Ann Example', 'age', 33, 'message', msg, '_np', jsonb_build_object(
           'run', run, 'src', 'p0u' || (g %% %(sources)s), 'seq', g / %(sources)s,
           'chk', left(trace, 6) || '-' || left(md5(concat_ws('|', app, env, ev, path, ip, msg)), 6)))
FROM (
    SELECT g, %(start)s::timestamptz + (g - %(offset)s) * %(step)s::interval AS t,
           (ARRAY['WebApp', 'AuthService', 'Search', 'Inventory'])[1 + g %% 4] AS app, 'production' AS env,
           'login' AS ev, '/usr/src/app/login.py' AS path, '192.168.1.' || (g %% 250) AS ip,
           md5(%(salt)s || g)::uuid::text AS trace, left(repeat(md5(g::text), 7), 200) AS msg,
           coalesce(%(run)s, left(md5('other' || (g / %(per_run)s)), 8)) AS run
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
) AS rows
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The case's size options."""
    p.add_argument(
        "--verify-rows",
        type=int,
        default=DEFAULT_RUN_ROWS,
        help=f"verify part: rows of the run verified (default {DEFAULT_RUN_ROWS:,})",
    )
    p.add_argument(
        "--verify-other-rows",
        type=int,
        default=DEFAULT_OTHER_ROWS,
        help=f"verify part: rows of earlier runs beside it (default {DEFAULT_OTHER_ROWS:,}; the target applies at "
        f"the defaults)",
    )


def fill(cur, count: int, start: datetime, step: timedelta, run: str | None, salt: str, offset: int = 0) -> None:
    """count rows from start, step apart, generated inside PostgreSQL; run None: earlier runs of OTHER_RUN_ROWS.

    Row g (from offset) goes to source p0u{g % RUN_SOURCES} with seq g // RUN_SOURCES.
    """
    for first in range(offset, offset + count, FILL_BATCH_ROWS):
        last = min(offset + count, first + FILL_BATCH_ROWS) - 1
        cur.execute(
            FILL_SQL,
            {
                "sources": RUN_SOURCES,
                "start": start,
                "step": step,
                "salt": salt,
                "run": run,
                "per_run": OTHER_RUN_ROWS,
                "offset": offset,
                "first": first,
                "last": last,
            },
        )
        log.info("verify: %s rows: %d of %d", run or "other runs'", last + 1 - offset, count)


def source_counts(rows: int) -> dict[str, SourceCounts]:
    """What the run's sources sent: the rows FILL_SQL gave each."""
    counts = {}
    for k in range(RUN_SOURCES):
        n = len(range(k, rows, RUN_SOURCES))
        counts[f"p0u{k}"] = SourceCounts(generated=n, sent=n)
    return counts


def _time_verdict(dsn: str, run_id: str, since: datetime, rows: int) -> float:
    """Best of VERIFY_ROUNDS of verify_run, which must find every row, in the window; seconds."""
    counts = source_counts(rows)
    best = float("inf")
    for _ in range(VERIFY_ROUNDS):
        started = time.perf_counter()
        _sources, totals = verify_run(dsn, run_id, since, counts)
        best = min(best, time.perf_counter() - started)
        if totals.landed != rows or totals.lost or totals.duplicated or totals.whole_table:
            raise BenchError(
                f"verify: the verdict found {totals.landed} of {rows} rows (lost {totals.lost}, duplicated "
                f"{totals.duplicated}, whole table {totals.whole_table})"
            )
    return best


def _time_query(dsn: str, sql: str, params: dict, window: bool) -> float:
    """Seconds one query takes, its rows fetched; window: in a session set up as the harness's for a window."""
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        if window:
            cur.execute(WINDOW_SESSION_SQL)
        started = time.perf_counter()
        cur.execute(sql, params)
        cur.fetchall()
        return time.perf_counter() - started


def _plan(dsn: str, params: dict) -> str:
    """The scoped per-source query's plan, its scan nodes only (which index, if any)."""
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(WINDOW_SESSION_SQL)
        cur.execute("EXPLAIN " + scoped(PER_SOURCE_SQL), params)
        nodes = [row[0].strip(" ->") for row in cur.fetchall() if " on logs" in row[0]]
        return "; ".join(node.split("  (cost")[0] for node in nodes)


def _measure(dsn: str, label: str, run_id: str, since: datetime, rows: int) -> dict[str, float | str]:
    """The verdict (scoped), and the per-source and drain-count queries over the whole table (before issue 15)."""
    params = {"run": run_id, "since": since, "margin": CLOCK_SKEW_MARGIN}
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("VACUUM (ANALYZE) logs")  # what autovacuum does to a table that has sat a while
    out: dict[str, float | str] = {"plan": _plan(dsn, params)}
    log.info("verify %s: plan %s", label, out["plan"])
    out["verify_s"] = _time_verdict(dsn, run_id, since, rows)
    out["count_s"] = _time_query(dsn, scoped(LANDED_COUNT_TEMPLATE), params, window=True)
    out["whole_table_count_s"] = _time_query(dsn, scoped(LANDED_COUNT_TEMPLATE, whole_table=True), params, False)
    out["whole_table_verify_s"] = _time_query(dsn, scoped(PER_SOURCE_SQL, whole_table=True), params, False)
    log.info("verify %s: %s", label, {k: round(v, 2) for k, v in out.items() if isinstance(v, float)})
    return out


def measure_verify(bench: Bench) -> None:
    """The run's verdict alone, then among bench.verify_other_rows rows of earlier runs: seconds and ratio.

    Two databases, each laid out as the harness leaves it: the run alone, and the earlier runs' rows first with
    the run's appended after them (a run writes its rows in one burst, after the runs before it).
    """
    rows, others = bench.verify_rows, bench.verify_other_rows
    if rows < RUN_SOURCES or others < 0:
        raise BenchError(f"verify: --verify-rows must be {RUN_SOURCES} or more and --verify-other-rows 0 or more")
    run_id = "benchrun"
    server = bench.database()
    with server.fresh_database() as dsn, contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
        run_start = now - timedelta(seconds=RUN_SECONDS)
        since = run_start - timedelta(seconds=1)  # the harness reads the start before any user writes
        step = timedelta(seconds=RUN_SECONDS / rows)
        started = time.perf_counter()
        fill(cur, rows, run_start, step, run_id, "run")
        fill_s = time.perf_counter() - started
        alone = _measure(dsn, "alone", run_id, since, rows)
    with server.fresh_database() as dsn, contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        fill(cur, others, since - OTHER_RUNS_GAP - others * OTHER_ROW_STEP, OTHER_ROW_STEP, None, "other")
        fill(cur, rows, run_start, step, run_id, "run")
        fill_s += time.perf_counter() - started
        among = _measure(dsn, "among others", run_id, since, rows)
    ratio = float(among["verify_s"]) / float(alone["verify_s"])
    full_size = rows == DEFAULT_RUN_ROWS and others == DEFAULT_OTHER_ROWS
    bench.metrics.update(
        {
            "verify_alone_s": float(alone["verify_s"]),
            "verify_among_s": float(among["verify_s"]),
            "verify_ratio": ratio,
            "verify_whole_table_alone_s": float(alone["whole_table_verify_s"]),
            "verify_whole_table_among_s": float(among["whole_table_verify_s"]),
            "verify_count_alone_s": float(alone["count_s"]),
            "verify_count_among_s": float(among["count_s"]),
            "verify_whole_table_count_among_s": float(among["whole_table_count_s"]),
        }
    )
    bench.details["verify"] = {
        "run_rows": rows,
        "other_rows": others,
        "fill_rows_per_s": round((2 * rows + others) / max(1e-9, fill_s)),
        "alone": alone,
        "among": among,
        "target": f"verify_ratio <= {RATIO_TARGET}",
        "result": ("PASS" if ratio <= RATIO_TARGET else "MISS") if full_size else "n/a (not at the default size)",
    }


def render_verify(bench: Bench) -> str:
    """The case's lines under the benchmark's table ("" when it did not run)."""
    d = bench.details.get("verify")
    m = bench.metrics
    if not d:
        return ""
    alone, among = d["alone"], d["among"]
    rows = [
        ("verdict, run alone (best of 3)", m["verify_alone_s"], "s", ""),
        ("verdict, run among the other runs (best of 3)", m["verify_among_s"], "s", ""),
        ("  among / alone", m["verify_ratio"], "x", f"<= {RATIO_TARGET}  {d['result']}"),
        ("before: per-source query over the whole table, alone", m["verify_whole_table_alone_s"], "s", ""),
        ("before: the same among the other runs", m["verify_whole_table_among_s"], "s", ""),
        ("drain poll (count of the run's rows), among others", m["verify_count_among_s"], "s", ""),
        ("before: the same over the whole table", m["verify_whole_table_count_among_s"], "s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"\nverification at scale: a {d['run_rows']:,}-row run, alone and among {d['other_rows']:,} rows of "
        f"earlier runs (rows generated in PostgreSQL at {d['fill_rows_per_s']:,} rows/s)"
    ]
    lines += [f"{label:<{width}}  {value:>8.2f}  {unit:<2}  {target}".rstrip() for label, value, unit, target in rows]
    lines.append(f"plan among the others: {among['plan']}")
    lines.append(f"plan alone: {alone['plan']}")
    return "\n".join(lines)
