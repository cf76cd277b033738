"""Integration fixtures: one PostgreSQL per session, an empty database per test, real collector and emitter processes.

Fixtures, for any test under tests/integration:

- ``database``: the session's server (``loadtests.database.Database``): NAMEDPIPER_DSN (or libpq's PG* variables)
  when set, else an embedded PostgreSQL whose data lives in a temporary directory removed after the session.
- ``dsn``: the DSN of a fresh database with the schema applied, dropped after the test.
- ``fifo_path``: where the test's FIFO goes (not created: the collector creates it).
- ``collector``: ``start(fifo, dsn, *extra_args, ready="reading") -> CollectorProcess``.
- ``run_emitter``: ``run_emitter(fifo, *args) -> dict``, the emitter's JSON summary.
- ``query``: ``query(dsn, sql, params=None) -> list[tuple]``.
- ``wait_for_rows``: ``wait_for_rows(dsn, predicate_sql, expected, timeout, *, table="logs", params=None) -> int``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from loadtests.collector_process import CollectorProcess as BaseCollectorProcess
from loadtests.database import Database
from reference.schema import apply_schema

# A collector is up (schema applied, FIFO open) in about 0.5 s here; 20 s only matters on a loaded CI machine.
COLLECTOR_READY_TIMEOUT_S = 20.0
# SIGTERM to exit takes one wake-up (0.2 s) plus the final flush; 30 s covers a large batch on a slow disk.
COLLECTOR_STOP_TIMEOUT_S = 30.0
# The emitter writes ~15,000 small lines/s into a collector here; 120 s bounds any run a test should make.
EMITTER_TIMEOUT_S = 120.0
# Rows reach the table within one flush interval (0.1 s) of being read; 30 s is a generous bound.
ROWS_TIMEOUT_S = 30.0
# How often log files and row counts are polled: fast enough not to slow a test, slow enough not to spin.
POLL_INTERVAL_S = 0.05
# What the reference collector logs once its FIFO is open and its database connection is ready.
COLLECTOR_READY_TEXT = "reading"


def collector_command(fifo: str | os.PathLike[str], dsn: str, *extra_args: str) -> list[str]:
    """The argument list that runs the reference collector with this interpreter."""
    return [sys.executable, "-m", "reference.collector", "--fifo", str(fifo), "--dsn", dsn, *extra_args]


def emitter_command(fifo: str | os.PathLike[str], *args: str) -> list[str]:
    """The argument list that runs the reference emitter with this interpreter."""
    return [sys.executable, "-m", "reference.emitter", "--fifo", str(fifo), *args]


class CollectorProcess(BaseCollectorProcess):
    """One running `python -m reference.collector` with the tests' timeouts; its output goes to log_path."""

    def wait_for_log(self, text: str, timeout: float = COLLECTOR_READY_TIMEOUT_S) -> None:
        """Wait until the log contains text (and, for the ready text, the FIFO exists)."""
        self.wait_until(
            lambda: text in self.log() and (text != COLLECTOR_READY_TEXT or _is_fifo(self.fifo)),
            f"logging {text!r}",
            timeout,
        )

    def wait(self, timeout: float = COLLECTOR_STOP_TIMEOUT_S) -> int:
        """Wait for the process to exit on its own and return its exit status."""
        return super().wait(timeout)

    def stop(self, timeout: float = COLLECTOR_STOP_TIMEOUT_S) -> int:
        """SIGTERM (the collector drains the pipe and flushes), SIGKILL after timeout; the exit status."""
        status = super().stop(timeout)
        assert status is not None
        return status


def _is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def run_query(dsn: str, statement: str, params: tuple | dict | None = None) -> list[tuple]:
    """Run one statement in its own committed transaction; return its rows ([] for a statement without rows)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description is not None else []
    finally:
        conn.close()


def count_rows(
    dsn: str, predicate_sql: str = "TRUE", *, table: str = "logs", params: tuple | dict | None = None
) -> int:
    """SELECT count(*) FROM table WHERE predicate_sql."""
    return run_query(dsn, f"SELECT count(*) FROM {table} WHERE {predicate_sql}", params)[0][0]


def wait_until_rows(
    dsn: str,
    predicate_sql: str,
    expected: int,
    timeout: float = ROWS_TIMEOUT_S,
    *,
    table: str = "logs",
    params: tuple | dict | None = None,
) -> int:
    """Poll until count(*) of table WHERE predicate_sql equals expected; fail with the last count seen.

    The log tables only grow, so a count above expected fails at once instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = count_rows(dsn, predicate_sql, table=table, params=params)
        if seen == expected:
            return seen
        if seen > expected:
            pytest.fail(f"{table} WHERE {predicate_sql} has {seen} rows, more than the {expected} expected")
        if time.monotonic() >= deadline:
            pytest.fail(f"{table} WHERE {predicate_sql} has {seen} rows after {timeout:g} s; expected {expected}")
        time.sleep(POLL_INTERVAL_S)


def run_emitter_process(fifo: str | os.PathLike[str], *args: str, timeout: float = EMITTER_TIMEOUT_S) -> dict:
    """Run `python -m reference.emitter --fifo FIFO ARGS...` to completion and return its JSON summary."""
    command = emitter_command(fifo, *args)
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:  # subprocess.run has already killed and reaped the emitter
        pytest.fail(
            f"the emitter {args} did not finish within {timeout:g} s; stderr:\n"
            f"{(exc.stderr or b'').decode(errors='replace')}"
        )
    stderr = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        pytest.fail(f"the emitter {args} exited with status {done.returncode}; stderr:\n{stderr}")
    lines = done.stdout.decode().strip().splitlines()
    if not lines:
        pytest.fail(f"the emitter {args} printed no summary; stderr:\n{stderr}")
    return orjson.loads(lines[-1])


@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    """The session's PostgreSQL: NAMEDPIPER_DSN (or libpq's PG* variables), else an embedded server in a temp dir.

    The embedded server's data lives in a fresh temporary directory, never in a user's .namedpiper/, and both
    are removed at the end of the session (a configured server is left running and untouched). The directory
    is not under pytest's basetemp: run as root, the server runs as another user, and every pytest start
    resets /tmp/pytest-of-root to mode 0700, which cuts a running server off from its data (it PANICs at
    its next checkpoint) whenever a second pytest session starts on the same machine.
    """
    scratch = Path(tempfile.mkdtemp(prefix="namedpiper-it-"))
    db = Database(data_dir=scratch / "pgdata")
    try:
        db.start()
        yield db
    finally:
        db.close()
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def dsn(database: Database) -> Iterator[str]:
    """The DSN of a new, empty database with the namedpiper schema, dropped (WITH FORCE) after the test."""
    name = f"np_test_{secrets.token_hex(4)}"
    _on_server(database, "CREATE DATABASE {}", name)
    # make_dsn parses URIs and key=value strings alike and returns key=value with dbname replaced.
    test_dsn = psycopg2.extensions.make_dsn(database.dsn, dbname=name)
    conn = psycopg2.connect(test_dsn)
    try:
        apply_schema(conn)
    finally:
        conn.close()
    yield test_dsn
    _on_server(database, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def _on_server(database: Database, statement: str, name: str) -> None:
    """Run a CREATE/DROP DATABASE statement for name on the session's server (outside a transaction)."""
    admin = psycopg2.connect(database.dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL(statement).format(sql.Identifier(name)))
    finally:
        admin.close()


@pytest.fixture
def fifo_path(tmp_path: Path) -> Path:
    """A path for the test's FIFO, not created yet: the collector creates it."""
    return tmp_path / "logs.fifo"


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Callable[..., CollectorProcess]]:
    """Start reference collectors: start(fifo, dsn, *extra_args, ready="reading", timeout=20) -> CollectorProcess.

    start() returns once the collector has logged `ready` (and, for "reading", the FIFO exists); ready=None
    returns at once (for a collector expected to fail). Each collector logs to its own file in tmp_path.
    Any collector still running at teardown is killed by pid.
    """
    started: list[CollectorProcess] = []

    def start(
        fifo: str | os.PathLike[str],
        dsn: str,
        *extra_args: str,
        ready: str | None = COLLECTOR_READY_TEXT,
        timeout: float = COLLECTOR_READY_TIMEOUT_S,
    ) -> CollectorProcess:
        handle = CollectorProcess(
            collector_command(fifo, dsn, *extra_args), fifo, tmp_path / f"collector-{len(started)}.log"
        )
        handle.start()
        started.append(handle)
        if ready is not None:
            handle.wait_for_log(ready, timeout)
        return handle

    yield start
    for handle in started:
        handle.kill()


@pytest.fixture
def run_emitter() -> Callable[..., dict]:
    """run_emitter(fifo, *args, timeout=120) -> dict: run the reference emitter to completion, return its summary.

    Thread-safe: call it from a thread pool to run several emitter processes at once.
    """
    return run_emitter_process


@pytest.fixture
def query() -> Callable[..., list[tuple]]:
    """query(dsn, sql, params=None) -> list[tuple]: run one statement, committed, and return its rows."""
    return run_query


@pytest.fixture
def wait_for_rows() -> Callable[..., int]:
    """wait_for_rows(dsn, predicate_sql, expected, timeout=30, *, table="logs", params=None) -> int.

    Polls SELECT count(*) FROM table WHERE predicate_sql until it equals expected; fails with the last count.
    """
    return wait_until_rows


@pytest.fixture
def private_database() -> Iterator[Database]:
    """An embedded PostgreSQL of this test's own, which the test may stop and start (a database outage)."""
    folder = tempfile.mkdtemp(prefix="namedpiper-private-db-")
    db = Database(data_dir=Path(folder) / "pgdata")
    if db.embedded is None:
        pytest.skip("a database outage needs the embedded PostgreSQL (NAMEDPIPER_DSN / PG* point elsewhere)")
    db.start()
    with psycopg2.connect(db.dsn) as conn:
        apply_schema(conn)
    yield db
    db.embedded.stop()
    shutil.rmtree(folder, ignore_errors=True)
