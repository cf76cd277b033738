"""The time window a run's rows lie in: the harness finds them through the index on time, not by scanning logs."""

from __future__ import annotations

from datetime import timedelta

# A row's time is stamped by its writer's clock when the line is generated; the window is the database's clock
# from the run's start until the query, widened by this much on both sides. One minute covers a writer host
# whose clock is off by up to a minute (NTP keeps hosts within milliseconds; an unsynchronised VM drifts
# seconds a day) and lines generated just before the database read the start. Wider costs speed only: each
# side scans the rows of runs that wrote within the margin. It never costs exactness, because a run whose rows
# do not all show up inside the window is verified again over the whole table (see loadtests/verify.py).
CLOCK_SKEW_MARGIN = timedelta(minutes=1)

# The window as SQL over logs.time: its lower bound is the run's start (the database's now() then), its upper
# bound the database's now() at the query, both widened by the margin. A sargable range the planner serves from
# logs_time_idx (or, on a hypertable, by excluding chunks) before it looks at data->'_np'->>'run'.
WINDOW_SQL = "time BETWEEN %(since)s::timestamptz - %(margin)s::interval AND now() + %(margin)s::interval"
# logs_rejected.received_at is the database's own now() at the insert (the column's default), no writer's
# clock: no margin, and the upper bound is the query's own now().
REJECTED_WINDOW_SQL = "received_at >= %(since)s"


# The planner prices a bitmap scan of the window as if its rows were scattered over the whole table: among ten
# million earlier rows it chose a parallel scan of every row for a window holding a tenth of them (measured with
# loadtests.bench's verify part). A run's rows are written in one burst, so they sit together in time and on
# disk; the harness's sessions forbid the scan of every row while they look at a window, which leaves the
# planner the index scan or the bitmap scan, whichever it prices lower. Alone in its table, the run costs the
# same either way (the bitmap scan then reads every page in order, as a sequential scan would).
WINDOW_SESSION_SQL = "SET enable_seqscan = off"
WHOLE_TABLE_SESSION_SQL = "RESET enable_seqscan"


def scoped(sql: str, whole_table: bool = False) -> str:
    """sql with {window} replaced by the run's time window, or by TRUE to look at every row."""
    return sql.replace("{window}", "TRUE" if whole_table else WINDOW_SQL)
