"""Create the logs tables idempotently, as a TimescaleDB hypertable when the extension exists."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg2.extensions

log = logging.getLogger(__name__)

SCHEMA_SQL = resources.files("reference").joinpath("schema.sql").read_text(encoding="utf-8")

# One chunk per day suits log volumes from a few thousand to a few million rows a day.
HYPERTABLE_CHUNK_INTERVAL = "1 day"


def timescaledb_available(conn: psycopg2.extensions.connection) -> bool:
    """True when the server can load the timescaledb extension."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        return cur.fetchone() is not None


def apply_schema(conn: psycopg2.extensions.connection) -> bool:
    """Create logs and logs_rejected if missing; return True when logs is a hypertable."""
    hypertable = False
    with conn.cursor() as cur:
        # Two collectors starting at once must not race on CREATE TABLE: serialise on an advisory lock.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('namedpiper.schema'))")
        cur.execute(SCHEMA_SQL)
        if timescaledb_available(conn):
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
