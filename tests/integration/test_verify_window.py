"""Verification finds a run's rows through the time index among other runs' rows, and its numbers stay exact."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import psycopg2
import pytest

from loadtests.adapters.readiness import PROBE_SQL
from loadtests.bench.verify_scale import RUN_SOURCES, fill, source_counts
from loadtests.fleet_host import HOST_LANDED_SQL
from loadtests.verify import (
    LANDED_COUNT_SQL,
    LANDED_SEQS_SQL,
    PER_SOURCE_SQL,
    REJECTED_COUNT_SQL,
    REJECTED_SQL,
    landed_count,
    verify_run,
)
from loadtests.window import CLOCK_SKEW_MARGIN, WINDOW_SESSION_SQL, scoped

RUN = "run00001"
# Enough rows of earlier runs that a scan of every row costs the planner far more than the index: 50,000
# fill in about a second here.
OTHER_ROWS = 50_000
RUN_ROWS = 2_000
RUN_SECONDS = 20
# Earlier rejected lines: enough that the planner prefers the index on received_at.
OTHER_REJECTED = 50_000
# Independent of loadtests/verify.py: what the run's rows are, counted over the whole table.
INDEPENDENT_SQL = """
SELECT data->'_np'->>'src', count(*), count(DISTINCT data->'_np'->>'seq')
FROM logs WHERE data->'_np'->>'run' = %s GROUP BY 1
"""


def connect(dsn: str):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


@pytest.fixture
def run_db(dsn):
    """(dsn, since): OTHER_ROWS rows of earlier runs ending 10 minutes before the run, then RUN_ROWS of the run."""
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
        since = now - timedelta(seconds=RUN_SECONDS + 1)
        fill(
            cur,
            OTHER_ROWS,
            since - timedelta(minutes=10, seconds=OTHER_ROWS // 1000),
            timedelta(milliseconds=1),
            None,
            "other",
        )
        fill(cur, RUN_ROWS, since + timedelta(seconds=1), timedelta(seconds=RUN_SECONDS / RUN_ROWS), RUN, "run")
        cur.execute(
            "INSERT INTO logs_rejected (received_at, reason, raw) SELECT %s::timestamptz - g * interval '1 ms', "
            "'invalid JSON', 'x' FROM generate_series(1, %s) AS g",
            (since - timedelta(minutes=10), OTHER_REJECTED),
        )
        cur.execute("ANALYZE logs")
        cur.execute("ANALYZE logs_rejected")
    return dsn, since


def plan(dsn: str, sql: str, params) -> str:
    """The query's plan in a session set up as the harness sets up its own for a window."""
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(WINDOW_SESSION_SQL)
        cur.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cur.fetchall())


def independent(dsn: str) -> dict[str, tuple[int, int]]:
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(INDEPENDENT_SQL, (RUN,))
        return {src: (rows, distinct) for src, rows, distinct in cur.fetchall()}


class TestPlans:
    """Every query over a run's rows reaches them through an index on time, not a scan of every run's rows."""

    def test_logs_queries_use_the_time_index(self, run_db):
        """The per-source, drain-count, byte-accounting and probe queries read logs through logs_time_idx."""
        dsn, since = run_db
        params = {"run": RUN, "since": since, "margin": CLOCK_SKEW_MARGIN, "sources": ["p0u1"], "prefixes": ["p0u%"]}
        for name, sql in {
            "per source": scoped(PER_SOURCE_SQL),
            "drain count": LANDED_COUNT_SQL,
            "fleet host's drain count": HOST_LANDED_SQL,
            "byte accounting": scoped(LANDED_SEQS_SQL),
        }.items():
            text = plan(dsn, sql, params)
            assert "logs_time_idx" in text, f"{name}:\n{text}"
            assert "Seq Scan on logs" not in text, f"{name}:\n{text}"
        text = plan(dsn, PROBE_SQL, (since, "probe-x"))
        assert "logs_time_idx" in text, text

    def test_rejected_queries_use_the_received_at_index(self, run_db):
        """Rejections are tied to the run by received_at, through its index."""
        dsn, since = run_db
        for sql in (REJECTED_SQL.replace("{length}", "octet_length(raw)"), REJECTED_COUNT_SQL):
            text = plan(dsn, sql, {"since": since})
            assert "logs_rejected_received_at_idx" in text, text


class TestExact:
    """The verdict's numbers equal independent SQL over the whole table, wherever the run's rows are stamped."""

    def test_rows_in_the_window(self, run_db):
        """Every row inside the window: found through the index, counted exactly, no second pass."""
        dsn, since = run_db
        sources, totals = verify_run(dsn, RUN, since, source_counts(RUN_ROWS))
        truth = independent(dsn)
        assert {s.source: (s.rows, s.landed) for s in sources} == truth
        assert (totals.landed, totals.lost, totals.rejected) == (RUN_ROWS, 0, 0)
        assert not totals.whole_table
        assert landed_count(dsn, RUN, since) == (RUN_ROWS, 0)

    def test_a_writer_clock_inside_the_margin(self, run_db):
        """Rows stamped up to the margin ahead of the database's clock are inside the window."""
        dsn, since = run_db
        with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute("SELECT now()")
            ahead = cur.fetchone()[0] + CLOCK_SKEW_MARGIN - timedelta(seconds=5)
            fill(cur, RUN_SOURCES, ahead, timedelta(milliseconds=1), RUN, "ahead", offset=RUN_ROWS)
        _sources, totals = verify_run(dsn, RUN, since, source_counts(RUN_ROWS + RUN_SOURCES))
        assert (totals.landed, totals.lost) == (RUN_ROWS + RUN_SOURCES, 0)
        assert not totals.whole_table

    def test_a_writer_clock_an_hour_behind(self, run_db):
        """A host stamping an hour in the past: its rows are outside the window, and still counted (whole table)."""
        dsn, since = run_db
        with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
            fill(
                cur,
                3 * RUN_SOURCES,
                since - timedelta(hours=1),
                timedelta(milliseconds=1),
                RUN,
                "late",
                offset=RUN_ROWS,
            )
        total = RUN_ROWS + 3 * RUN_SOURCES
        assert landed_count(dsn, RUN, since) == (RUN_ROWS, 0)  # the drain's progress sees the window only
        sources, totals = verify_run(dsn, RUN, since, source_counts(total))
        assert {s.source: (s.rows, s.landed) for s in sources} == independent(dsn)
        assert (totals.landed, totals.lost) == (total, 0)
        assert totals.whole_table

    def test_a_corrupt_row_spliced_a_year_away(self, run_db):
        """A torn row whose time splices two stamps across a year boundary lands a year off: still counted."""
        dsn, since = run_db
        with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
            # Two lines of p0u3 torn into one row that parsed: the content check fails, the time is a year off.
            # Deleted and inserted again, not updated: a hypertable cannot move a row to another chunk by UPDATE.
            cur.execute(
                "WITH torn AS (DELETE FROM logs WHERE data->'_np'->>'run' = %s AND data->'_np'->>'src' = 'p0u3' "
                "AND data->'_np'->>'seq' = '7' RETURNING *) "
                "INSERT INTO logs SELECT time - interval '1 year', application_name, environment_name, log_event, "
                "trace_id, file_path, host_ip, jsonb_set(data, '{message}', '\"torn\"') FROM torn",
                (RUN,),
            )
            assert cur.rowcount == 1
            cur.execute(
                "DELETE FROM logs WHERE data->'_np'->>'run' = %s AND data->'_np'->>'src' = 'p0u3' "
                "AND data->'_np'->>'seq' = '8'",
                (RUN,),
            )
        sources, totals = verify_run(dsn, RUN, since, source_counts(RUN_ROWS))
        p0u3 = next(s for s in sources if s.source == "p0u3")
        assert p0u3.corrupt == 1
        assert p0u3.landed == RUN_ROWS // RUN_SOURCES - 2
        assert (totals.corrupt, totals.lost) == (1, 0)
        assert totals.whole_table

    def test_rejections_of_the_run_only(self, run_db):
        """Rejected lines since the run started count; the earlier runs' do not."""
        dsn, since = run_db
        with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO logs_rejected (reason, raw) VALUES ('invalid JSON', 'y'), ('fragment', 'z')")
        _sources, totals = verify_run(dsn, RUN, since, source_counts(RUN_ROWS))
        assert totals.rejected == 2
