"""One PostgreSQL connection: apply the schema, commit a batch with COPY in one transaction, bisect bad rows."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from reference.collector.copytext import COPY_READ_BYTES, COPY_SQL, RowStream, row_as_event
from reference.collector.model import Batch, LoadResult, Rejection
from reference.collector.pgerrors import Failure, Kind, classify, first_line
from reference.collector.retry import Backoff, never
from reference.collector.sink import SinkRefused
from reference.dsn import DSN_ENV, redact, scrub
from reference.schema import apply_schema

log = logging.getLogger(__name__)

INSERT_REJECTED_SQL = "INSERT INTO logs_rejected (reason, raw, raw_length, raw_sha256) VALUES %s"
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


class DatabaseConfigError(RuntimeError):
    """The DSN can never work (no such database or role, authentication refused): retrying would not help."""


class DatabaseRefused(SinkRefused):
    """The database refuses the collector's writes mid-run (privileges, schema, a read-only server)."""

    def __init__(self, failure: Failure, dsn: str) -> None:
        self.failure = failure
        super().__init__(
            f"the database refuses the collector's writes: {scrub(failure.message, dsn)} "
            f"({failure.code_text}); to fix: {failure.fix}"
        )


# Messages that mean the DSN is wrong rather than the server away, when the first connection fails.
PERMANENT_CONNECT_ERRORS = re.compile(
    r'database ".*" does not exist|role ".*" does not exist|password authentication failed|'
    r"no pg_hba\.conf entry|authentication failed"
)


class Abandoned(Exception):
    """The collector is stopping while the database cannot take the batch; the caller gives it up."""


class _ConnectFailed(Exception):
    """psycopg2.connect itself failed (as opposed to a statement on a session we had)."""

    def __init__(self, error: psycopg2.Error) -> None:
        super().__init__(str(error))
        self.error = error


T = TypeVar("T")


class Loader:
    """Owns the database connection: applies the schema, commits batches, retries what retrying can fix.

    Every error is judged by its SQLSTATE (pgerrors.classify): a lost session is reconnected, a cancelled
    statement (statement_timeout, lock_timeout) is retried on the same session, a full disk or another
    transient failure is retried, each after the next backoff delay; a data error is bisected; a refusal
    (privileges, schema) raises DatabaseRefused, since retrying cannot fix it.
    """

    def __init__(
        self,
        dsn: str,
        *,
        apply_schema_at_start: bool = True,
        journal_id: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.dsn = dsn
        self.apply_schema_at_start = apply_schema_at_start
        self.journal_id = journal_id
        self.backoff = backoff or Backoff()
        self.conn: psycopg2.extensions.connection | None = None
        self._schema_ready = False  # the schema was applied on self.conn
        self._ever_connected = False
        self.in_trouble = False  # between a failed attempt and the next success (the metrics' database_up)

    def describe(self) -> str:
        """The DSN without its password."""
        return redact(self.dsn) or "libpq defaults"

    def connect(self, give_up: Callable[[], bool] = never) -> None:
        """Connect (and apply the schema), retrying with backoff and one log line per state change.

        Raises Abandoned when give_up() turns true while the database cannot be used.
        """
        self._retrying(lambda conn: None, give_up)

    def committed_offset(self, give_up: Callable[[], bool] = never) -> int:
        """The journal offset whose rows are all committed (0 for a journal the database has not seen)."""
        return self._retrying(self._committed_offset_once, give_up)

    def load(self, batch: Batch, give_up: Callable[[], bool] = never) -> LoadResult:
        """Commit every good row and every rejection of batch, whatever the server says about single rows."""
        return self._retrying(lambda conn: self._load_once(conn, batch), give_up)

    def cancel(self) -> None:
        """Cancel the statement in flight, from another thread (a stop that cannot wait any longer)."""
        conn = self.conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel()
            except psycopg2.Error as exc:
                log.debug("cancel failed: %s", first_line(exc))

    def close(self) -> None:
        """Close the connection."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _session(self) -> psycopg2.extensions.connection:
        """The open connection, or a new one; the schema applied on it (again after a failed attempt)."""
        conn = self.conn
        if conn is None or conn.closed:
            try:
                conn = psycopg2.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME)
            except psycopg2.Error as exc:
                raise _ConnectFailed(exc) from exc
            self.conn, self._schema_ready = conn, False
        if self.apply_schema_at_start and not self._schema_ready:
            apply_schema(conn)
            self._schema_ready = True
        self._ever_connected = True
        return conn

    def _retrying(self, operation: Callable[[psycopg2.extensions.connection], T], give_up: Callable[[], bool]) -> T:
        """Run operation on a session until it succeeds; between failures, wait the next backoff delay."""
        self.backoff.reset()
        state: tuple[Kind, bool] | None = None  # the trouble logged last: its kind, and whether connect failed
        since = 0.0
        while True:
            try:
                result = operation(self._session())
            except (psycopg2.Error, _ConnectFailed) as exc:
                connecting = isinstance(exc, _ConnectFailed)
                self.in_trouble = True
                failure = self._judge(exc.error if isinstance(exc, _ConnectFailed) else exc, connecting)
                if failure.kind is Kind.CANCELLED and give_up():
                    raise Abandoned from None  # the stop cancelled it (cancel()): not a timeout worth a warning
                if (failure.kind, connecting) != state:
                    self._log_trouble(failure, connecting)
                    state, since = (failure.kind, connecting), since or time.monotonic()
                if not self.backoff.wait(give_up):
                    raise Abandoned from None
                continue
            self.in_trouble = False
            if state is not None:
                what = "reachable" if state[0] is Kind.CONNECTION else "taking batches"
                log.warning("database %s again after %.1f s", what, time.monotonic() - since)
            return result

    def _judge(self, exc: psycopg2.Error, connecting: bool) -> Failure:
        """Classify exc, raise when retrying cannot help, and leave the session ready for a retry."""
        failure = classify(exc)
        if connecting and not self._ever_connected and PERMANENT_CONNECT_ERRORS.search(failure.message):
            raise DatabaseConfigError(
                f"cannot use {self.describe()}: {scrub(failure.message, self.dsn)}; "
                f"fix --dsn (or {DSN_ENV} / PG* variables)"
            ) from None
        if failure.kind is Kind.REFUSED:
            self._rollback()
            if not self._ever_connected:
                raise DatabaseConfigError(
                    f"cannot use {self.describe()}: {scrub(failure.message, self.dsn)} "
                    f"({failure.code_text}); to fix: {failure.fix}"
                ) from None
            raise DatabaseRefused(failure, self.dsn) from None
        if failure.kind is Kind.CONNECTION or failure.kind is Kind.DATA or self.backoff.saturated:
            # DATA here means a statement outside the bisected COPY failed: start over on a fresh session. And a
            # trouble that outlasted the backoff's growth gets a fresh session per retry (one per 5 s at most), so
            # that a corrected role setting (ALTER ROLE ... RESET statement_timeout) takes effect.
            self.close()
        else:
            self._rollback()
        return failure

    def _rollback(self) -> None:
        """Roll back the failed transaction so the session can be used again (or drop a broken session)."""
        if self.conn is None or self.conn.closed:
            return
        try:
            self.conn.rollback()
        except psycopg2.Error:
            self.close()

    def _log_trouble(self, failure: Failure, connecting: bool) -> None:
        """One warning per state change, naming the cause and what the collector does about it."""
        retry = f"retrying every {self.backoff.first:g}-{self.backoff.maximum:g} s"
        message = scrub(failure.message, self.dsn)
        if connecting:
            log.warning("database unreachable at %s: %s; %s", self.describe(), message, retry)
        elif failure.kind is Kind.CONNECTION:
            log.warning("database connection lost (%s); reconnecting, %s", message, retry)
        elif failure.kind is Kind.CANCELLED:
            log.warning(
                "the database cancelled the statement (%s: %s): a statement_timeout or lock_timeout shorter "
                "than one batch, or an operator's cancel; check ALTER ROLE ... SET statement_timeout and "
                "the locks held on logs; %s on the same connection",
                failure.code_text,
                message,
                retry,
            )
        elif failure.kind is Kind.RESOURCES:
            log.warning(
                "the database server is short of resources (%s: %s): free disk space or memory on the "
                "server, or raise max_connections; %s",
                failure.code_text,
                message,
                retry,
            )
        else:
            log.warning("the database failed the batch (%s: %s); %s", failure.code_text, message, retry)

    def _committed_offset_once(self, conn: psycopg2.extensions.connection) -> int:
        with conn.cursor() as cur:
            cur.execute(ENSURE_OFFSET_SQL, (self.journal_id,))
            cur.execute(COMMITTED_SQL, (self.journal_id,))
            row = cur.fetchone()
        conn.commit()
        if row is None:
            raise DatabaseConfigError(
                f"np_collector_offsets has no row for journal {self.journal_id} right after "
                "inserting it; check for a trigger or rule on that table"
            )
        return int(row[0])

    def _load_once(self, conn: psycopg2.extensions.connection, batch: Batch) -> LoadResult:
        rejections = list(batch.rejections)
        with conn.cursor() as cur:
            # First: it takes the row lock, and a batch already committed costs no COPY.
            if batch.end_offset is not None:
                cur.execute(
                    ADVANCE_OFFSET_SQL, {"id": self.journal_id, "start": batch.start_offset, "end": batch.end_offset}
                )
                if cur.rowcount == 0:
                    # The connection broke during a COMMIT that did go through: loading again would duplicate.
                    conn.rollback()
                    log.warning(
                        "journal bytes %s..%s were committed before the connection broke; not loading them twice",
                        batch.start_offset,
                        batch.end_offset,
                    )
                    return LoadResult(rows=0, rejected=0)
            if batch.rows:
                self._copy_isolating(cur, batch.rows, rejections, batch.cuts)
            if rejections:
                psycopg2.extras.execute_values(
                    cur,
                    INSERT_REJECTED_SQL,
                    [
                        (
                            r.reason,
                            psycopg2.Binary(r.raw),
                            r.length,
                            psycopg2.Binary(r.digest) if r.digest is not None else None,
                        )
                        for r in rejections
                    ],
                )
        conn.commit()
        return LoadResult(rows=len(batch.rows) - (len(rejections) - len(batch.rejections)), rejected=len(rejections))

    def _copy_isolating(
        self,
        cur: psycopg2.extensions.cursor,
        rows: list[bytes],
        rejections: list[Rejection],
        cuts: list[tuple[int, int]] | None = None,
    ) -> None:
        """COPY rows; on a data error, bisect under savepoints until each bad row stands alone and is rejected.

        cuts: the batch's read boundaries (Batch.cuts), where COPY's pieces end; the halves are cut after any row.
        """
        cur.execute("SAVEPOINT np_copy")
        try:
            cur.copy_expert(COPY_SQL, RowStream(rows, cuts), size=COPY_READ_BYTES)
        except psycopg2.Error as exc:
            # Only a data error ("this row is wrong") is answered by bisection; anything else is the same for
            # every row and goes to the retry logic.
            if classify(exc).kind is not Kind.DATA:
                raise
            cur.execute("ROLLBACK TO SAVEPOINT np_copy")
            if len(rows) == 1:
                message = classify(exc).message
                # Only the row is held (never the line beside it): the line is rebuilt from it.
                rejections.append(Rejection.of(f"PostgreSQL rejected the row: {message}", row_as_event(rows[0])))
                return
            middle = len(rows) // 2
            self._copy_isolating(cur, rows[:middle], rejections)
            self._copy_isolating(cur, rows[middle:], rejections)
            return
        cur.execute("RELEASE SAVEPOINT np_copy")


def quiet_psycopg2_reports() -> None:
    """Keep psycopg2's own printout of a session ended mid-COPY out of the log; the error itself is handled.

    psycopg2 2.9, reading the COPY source when the server ends the session (pg_terminate_backend, a restart),
    prints a SystemError ("<function decode> returned a result with an exception set") caused by the server's
    error through sys.excepthook from C, then raises the error as usual: the retry logic logs it once as a lost
    connection. Anything else still reaches the default hook.
    """
    default = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if isinstance(value, SystemError) and isinstance(value.__cause__, psycopg2.Error):
            log.debug("psycopg2 reported %s", first_line(value.__cause__))
            return
        default(kind, value, traceback)

    sys.excepthook = hook
