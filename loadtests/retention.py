"""Keep the rows of the last N runs: the embedded database must not grow with every run."""

from __future__ import annotations

import logging
from datetime import datetime

from loadtests.window import CLOCK_SKEW_MARGIN, WHOLE_TABLE_SESSION_SQL, WINDOW_SESSION_SQL

log = logging.getLogger("namedpiper")

# The harness's own record of runs: the time window each run wrote in, so old rows are found through the time
# index instead of a scan of data->'_np'->>'run' over every row.
RUNS_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS namedpiper_runs (
    run_id text PRIMARY KEY, started_at timestamptz NOT NULL, ended_at timestamptz NOT NULL
)"""


def record_and_prune(conn, run_id: str, started_at: datetime, ended_at: datetime, keep: int) -> list[str]:
    """Record this run, delete the rows of runs older than the keep most recent; return the pruned run ids."""
    with conn.cursor() as cur:
        cur.execute(RUNS_TABLE_SQL)
        cur.execute(
            "INSERT INTO namedpiper_runs VALUES (%s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
            (run_id, started_at, ended_at),
        )
        if keep <= 0:
            return []
        cur.execute(
            "SELECT run_id, started_at, ended_at FROM namedpiper_runs ORDER BY started_at DESC OFFSET %s", (keep,)
        )
        old = cur.fetchall()
        cur.execute(WINDOW_SESSION_SQL)  # each run's rows through the time index (loadtests/window.py)
        for old_id, started, ended in old:
            # Event times are the writers' clocks: the verdict's margin (loadtests/window.py) on both sides.
            low, high = started - CLOCK_SKEW_MARGIN, ended + CLOCK_SKEW_MARGIN
            cur.execute(
                "DELETE FROM logs WHERE time BETWEEN %s AND %s AND data->'_np'->>'run' = %s", (low, high, old_id)
            )
            landed = cur.rowcount
            # A rejected line has lost its bookkeeping: like the verdict, tie it to a run by its time window.
            cur.execute("DELETE FROM logs_rejected WHERE received_at BETWEEN %s AND %s", (started, ended))
            cur.execute("DELETE FROM namedpiper_runs WHERE run_id = %s", (old_id,))
            log.info(
                "run %s: deleted %d rows and %d rejected lines (--keep-runs %d)", old_id, landed, cur.rowcount, keep
            )
        cur.execute(WHOLE_TABLE_SESSION_SQL)
        return [old_id for old_id, _, _ in old]
