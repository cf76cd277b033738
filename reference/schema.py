"""Create the logs tables idempotently, as a TimescaleDB hypertable when the extension exists."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg2.extensions

log = logging.getLogger(__name__)

SCHEMA_SQL = resources.files("reference").joinpath("schema.sql").read_text(encoding="utf-8")

# One chunk per day suits log volumes from a few thousand to a few million rows a day.
HYPERTABLE_CHUNK_INTERVAL = "1 day"
# Defined by TimescaleDB's loader, which only runs when the server preloads it (placeholders are not in pg_settings).
PRELOAD_MARKER_SETTING = "timescaledb.max_background_workers"
_fallback_warned = False  # the plain-table fallback is announced once per process, not at every reconnect


def timescaledb_available(conn: psycopg2.extensions.connection) -> bool:
    """True when the server can load the timescaledb extension."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        return cur.fetchone() is not None


def timescaledb_preloaded(conn: psycopg2.extensions.connection) -> bool:
    """True when the server loaded TimescaleDB at start (shared_preload_libraries), as it must for DDL to work.

    Asked through a setting only the preloaded loader defines, which any role can see (shared_preload_libraries
    itself is hidden from roles without pg_read_all_settings).
    """
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_settings WHERE name = %s", (PRELOAD_MARKER_SETTING,))
        return cur.fetchone() is not None


def timescaledb_in_database(conn: psycopg2.extensions.connection) -> bool:
    """True when CREATE EXTENSION timescaledb was run in this database."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        return cur.fetchone() is not None


class TimescaleDBNotPreloadedError(psycopg2.ProgrammingError):
    """TimescaleDB is in the database but the server did not preload it: any DDL would end the session."""

    # object_not_in_prerequisite_state: the SQLSTATE the collector's error classes read (a missing preload is a
    # prerequisite no retry can provide, so the collector stops with exit status 2 instead of retrying).
    pgcode = "55000"


def _use_timescaledb(conn: psycopg2.extensions.connection) -> bool:
    """Whether logs can be a hypertable; a plain table (one warning) when TimescaleDB is installed, not preloaded."""
    global _fallback_warned
    if not timescaledb_available(conn):
        return False
    if timescaledb_preloaded(conn):
        return True
    if timescaledb_in_database(conn):
        raise TimescaleDBNotPreloadedError(
            "the database has the timescaledb extension but the server was started without it in "
            "shared_preload_libraries, so creating or changing a table would end the session; add "
            "shared_preload_libraries = 'timescaledb' to postgresql.conf and restart the server"
        )
    if not _fallback_warned:
        _fallback_warned = True
        log.warning(
            "TimescaleDB is installed on the server but not in shared_preload_libraries: logs is a plain "
            "table. Add shared_preload_libraries = 'timescaledb' to postgresql.conf and restart the server; "
            "the next collector start then turns logs into a hypertable, keeping its rows"
        )
    return False


def apply_schema(conn: psycopg2.extensions.connection) -> bool:
    """Create logs and logs_rejected if missing; return True when logs is a hypertable."""
    hypertable = False
    with conn.cursor() as cur:
        # Two collectors starting at once must not race on CREATE TABLE: serialise on an advisory lock.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('namedpiper.schema'))")
        use_timescaledb = _use_timescaledb(conn)  # first: with TimescaleDB half there, CREATE TABLE ends the session
        cur.execute(SCHEMA_SQL)
        if use_timescaledb:
            cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            cur.execute(
                "SELECT create_hypertable('logs', 'time', chunk_time_interval => %s::interval,"
                " if_not_exists => TRUE, migrate_data => TRUE)",
                (HYPERTABLE_CHUNK_INTERVAL,),
            )
            hypertable = True
    conn.commit()
    log.info("schema ready (logs is %s)", "a TimescaleDB hypertable" if hypertable else "a plain table")
    return hypertable
