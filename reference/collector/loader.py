"""One PostgreSQL connection: apply the schema, commit a batch with COPY in one transaction, bisect bad rows."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from reference.collector.copytext import COPY_READ_BYTES, COPY_SQL, RowStream, row_as_event
from reference.collector.model import Batch, LoadResult, Rejection
from reference.collector.retry import Backoff, never
from reference.dsn import DSN_ENV, redact, scrub
from reference.schema import apply_schema

log = logging.getLogger(__name__)

INSERT_REJECTED_SQL = "INSERT INTO logs_rejected (reason, raw) VALUES %s"
# Compare and set: the batch moves the offset from its start to its end, or it does nothing. If an earlier
# COMMIT of the same batch is still in flight on a connection we lost, this waits for its row lock, then finds
# the offset moved and updates nothing: the batch is rolled back instead of loaded twice.
ADVANCE_OFFSET_SQL = """
UPDATE np_collector_offsets SET committed = %(end)s, updated_at = now()
WHERE journal_id = %(id)s AND committed = %(start)s
"""
ENSURE_OFFSET_SQL = """
INSERT INTO np_collector_offsets (journal_id, committed) VALUES (%s, 0) ON CONFLICT (journal_id) DO NOTHING
"""
COMMITTED_SQL = "SELECT committed FROM np_collector_offsets WHERE journal_id = %s"
APPLICATION_NAME = "namedpiper-collector"
# libpq gives up on a server that does not answer a connection attempt after this long.
CONNECT_TIMEOUT_S = 10
# Errors that mean "this data is wrong", not "the server is gone": they are answered by bisection.
# Anything else (permission denied, a missing table) is the same for every row: it stops the collector.
DATA_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError)


class DatabaseConfigError(RuntimeError):
    """The DSN can never work (no such database or role, authentication refused): retrying would not help."""


# Messages that mean the DSN is wrong rather than the server away, when the first connection fails.
PERMANENT_CONNECT_ERRORS = re.compile(
    r'database ".*" does not exist|role ".*" does not exist|password authentication failed|'
    r"no pg_hba\.conf entry|authentication failed")


class Abandoned(Exception):
    """The collector is stopping while the database is unreachable; the caller gives up this batch."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Loader:
    """Owns the database connection: applies the schema, commits batches, survives server restarts."""

    def __init__(self, dsn: str, *, apply_schema_at_start: bool = True, journal_id: str | None = None,
                 backoff: Backoff | None = None) -> None:
        self.dsn = dsn
        self.apply_schema_at_start = apply_schema_at_start
        self.journal_id = journal_id
        self.backoff = backoff or Backoff()
        self.conn: psycopg2.extensions.connection | None = None
        self._ever_connected = False

    def describe(self) -> str:
        """The DSN without its password."""
        return redact(self.dsn) or "libpq defaults"

    def connect(self, give_up: Callable[[], bool] = never) -> psycopg2.extensions.connection:
        """Connect, retrying with capped exponential backoff and one log line per state change.

        Raises Abandoned when give_up() turns true while the database is unreachable.
        """
        self.backoff.reset()
        failing_since = None
        while True:
            try:
                conn = psycopg2.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S,
                                        application_name=APPLICATION_NAME)
                self.conn = conn
                if self.apply_schema_at_start:
                    apply_schema(conn)
                if failing_since is not None:
                    log.warning("database reachable again after %.1f s", time.monotonic() - failing_since)
                self._ever_connected = True
                return conn
            except psycopg2.ProgrammingError as exc:
                # Missing privileges or a broken schema: retrying will not help.
                raise DatabaseConfigError(f"cannot use {self.describe()}: {scrub(str(exc).strip(), self.dsn)}"
                                          ) from exc
            except psycopg2.OperationalError as exc:
                message = first_line(exc)
                if not self._ever_connected and PERMANENT_CONNECT_ERRORS.search(message):
                    raise DatabaseConfigError(f"cannot use {self.describe()}: {scrub(message, self.dsn)}; "
                                              f"fix --dsn (or {DSN_ENV} / PG* variables)") from None
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("database unreachable at %s: %s; retrying every %.1f-%.1f s", self.describe(),
                                scrub(message, self.dsn), self.backoff.first, self.backoff.maximum)
                self.close()  # a connection that failed while applying the schema is of no further use
                if not self.backoff.wait(give_up):
                    raise Abandoned from None

    def close(self) -> None:
        """Close the connection."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def committed_offset(self) -> int:
        """The journal offset whose rows are all committed (0 for a journal the database has not seen)."""
        conn = self.conn or self.connect()
        with conn.cursor() as cur:
            cur.execute(ENSURE_OFFSET_SQL, (self.journal_id,))
            cur.execute(COMMITTED_SQL, (self.journal_id,))
            row = cur.fetchone()
        conn.commit()
        if row is None:
            raise DatabaseConfigError(f"np_collector_offsets has no row for journal {self.journal_id} right after "
                                      "inserting it; check for a trigger or rule on that table")
        return int(row[0])

    def load(self, batch: Batch, give_up: Callable[[], bool] = never) -> LoadResult:
        """Commit every good row and every rejection of batch, whatever the server says about single rows."""
        while True:
            conn = self.conn if self.conn is not None and not self.conn.closed else self.connect(give_up)
            try:
                return self._load_once(conn, batch)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                log.warning("database connection lost while loading (%s); reconnecting",
                            scrub(first_line(exc), self.dsn))
                self.close()

    def _load_once(self, conn: psycopg2.extensions.connection, batch: Batch) -> LoadResult:
        rejections = list(batch.rejections)
        with conn.cursor() as cur:
            # First: it takes the row lock, and a batch already committed costs no COPY.
            if batch.end_offset is not None:
                cur.execute(ADVANCE_OFFSET_SQL, {"id": self.journal_id, "start": batch.start_offset,
                                                 "end": batch.end_offset})
                if cur.rowcount == 0:
                    # The connection broke during a COMMIT that did go through: loading again would duplicate.
                    conn.rollback()
                    log.warning("journal bytes %s..%s were committed before the connection broke; not loading "
                                "them twice", batch.start_offset, batch.end_offset)
                    return LoadResult(rows=0, rejected=0)
            if batch.rows:
                self._copy_isolating(cur, batch.rows, rejections)
            if rejections:
                psycopg2.extras.execute_values(
                    cur, INSERT_REJECTED_SQL, [(r.reason, psycopg2.Binary(r.raw)) for r in rejections])
        conn.commit()
        return LoadResult(rows=len(batch.rows) - (len(rejections) - len(batch.rejections)),
                          rejected=len(rejections))

    def _copy_isolating(self, cur: psycopg2.extensions.cursor, rows: list[bytes],
                        rejections: list[Rejection]) -> None:
        """COPY rows; on a data error, bisect under savepoints until each bad row stands alone and is rejected."""
        cur.execute("SAVEPOINT np_copy")
        try:
            cur.copy_expert(COPY_SQL, RowStream(rows), size=COPY_READ_BYTES)
        except DATA_ERRORS as exc:
            cur.execute("ROLLBACK TO SAVEPOINT np_copy")
            if len(rows) == 1:
                message = first_line(exc) if not exc.pgerror else exc.pgerror.strip().splitlines()[0]
                # Only the row is held (never the line beside it): the line is rebuilt from it.
                rejections.append(Rejection.of(f"PostgreSQL rejected the row: {message}", row_as_event(rows[0])))
                return
            middle = len(rows) // 2
            self._copy_isolating(cur, rows[:middle], rejections)
            self._copy_isolating(cur, rows[middle:], rejections)
            return
        cur.execute("RELEASE SAVEPOINT np_copy")
