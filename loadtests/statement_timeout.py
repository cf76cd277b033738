"""The --statement-timeout fault: a role of the collector's own whose statement_timeout the harness sets and resets."""

from __future__ import annotations

import secrets

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from reference.collector.loader import APPLICATION_NAME

# The login role the collector connects as when this fault is asked for: ALTER ROLE on the harness's own role
# (the embedded server's superuser) would cancel the harness's verification queries as well.
COLLECTOR_ROLE = "np_collector"
# A statement_timeout no batch can meet: every COPY and every offset update is cancelled (SQLSTATE 57014).
FAULT_TIMEOUT = "1ms"
# Tables the collector reads and writes (reference/schema.sql); the harness creates them before the collector.
COLLECTOR_TABLES = ("logs", "logs_rejected", "np_collector_offsets")
# Seconds the harness's own statements may take: they are few and small.
ADMIN_CONNECT_TIMEOUT_S = 10


def _connect(dsn: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn, connect_timeout=ADMIN_CONNECT_TIMEOUT_S)
    conn.autocommit = True
    return conn


def prepare_role(dsn: str) -> str:
    """Create (or refresh) the collector's role with a new password and its grants; return its DSN."""
    password = secrets.token_urlsafe(24)
    role = sql.Identifier(COLLECTOR_ROLE)
    with _connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (COLLECTOR_ROLE,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(role), (password,))
        cur.execute(sql.SQL("ALTER ROLE {} RESET statement_timeout").format(role))  # an earlier run cut short
        cur.execute("SELECT current_database()")
        row = cur.fetchone()
        if row is None:
            raise psycopg2.ProgrammingError("current_database() returned no row")
        cur.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(row[0]), role))
        cur.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(role))
        for table in COLLECTOR_TABLES:
            # The collector's CREATE INDEX IF NOT EXISTS needs the owner even when the index exists; the harness
            # (superuser on the embedded server) keeps reading them for its verdict.
            cur.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), role))
    conn.close()
    return psycopg2.extensions.make_dsn(dsn, user=COLLECTOR_ROLE, password=password)


def set_timeout(dsn: str, value: str | None) -> None:
    """ALTER ROLE np_collector SET statement_timeout = value (None: RESET); new sessions get it."""
    role = sql.Identifier(COLLECTOR_ROLE)
    with _connect(dsn) as conn, conn.cursor() as cur:
        if value is None:
            cur.execute(sql.SQL("ALTER ROLE {} RESET statement_timeout").format(role))
        else:
            cur.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(role, sql.Literal(value)))
    conn.close()


def collector_sessions(dsn: str) -> set[int]:
    """Backend pids of the collector's sessions right now (its role and application_name)."""
    with _connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = %s AND application_name = %s",
            (COLLECTOR_ROLE, APPLICATION_NAME),
        )
        pids = {int(r[0]) for r in cur.fetchall()}
    conn.close()
    return pids


def terminate_sessions(dsn: str) -> set[int]:
    """pg_terminate_backend every session of the collector's role (so that it reconnects with the role's settings)."""
    with _connect(dsn) as conn, conn.cursor() as cur:
        # Two statements: in one WHERE clause PostgreSQL may call pg_terminate_backend before the usename test.
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()", (COLLECTOR_ROLE,)
        )
        pids = {int(r[0]) for r in cur.fetchall()}
        for pid in pids:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    conn.close()
    return pids
