"""The benchmark's PostgreSQL: a server with a fresh database per measurement, and waiting for rows to be visible."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from loadtests.bench.dataset import BenchError
from loadtests.database import Database
from reference.schema import apply_schema

# How often the end-to-end runs look for their last row (an index lookup on time, so polling is cheap).
VISIBLE_POLL_S = 0.01
# How long a run's rows may take to become visible before the run counts as failed.
VISIBLE_TIMEOUT_S = 300.0
LAST_ROW_SQL = "SELECT 1 FROM logs WHERE time = %s AND trace_id = %s"


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
            (version,) = cur.fetchone() or ("unknown",)
            return str(version)

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


def connect(dsn: str):
    """An autocommit connection named namedpiper-bench."""
    conn = psycopg2.connect(dsn, application_name="namedpiper-bench")
    conn.autocommit = True
    return conn


def count_rows(dsn: str, table: str) -> int:
    """The number of rows in table."""
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return cur.fetchone()[0]


def wait_until_visible(
    dsn: str, last_line: bytes, expected: int, started: float, alive: Callable[[], bool] = lambda: True
) -> float:
    """Poll until the last line's row and `expected` rows are visible; return when the last row was first seen.

    The last row is found through the time index; a writer's rows are committed in order, which the final
    count confirms (if it does not, the time the count completes is returned instead).
    """
    event = orjson.loads(last_line)
    deadline = started + VISIBLE_TIMEOUT_S
    seen_at = None
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
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
