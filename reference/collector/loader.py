"""Load batches with COPY in one transaction each; a row PostgreSQL rejects is isolated by bisection."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extras

from reference.collector.validate import COLUMNS, Rejection
from reference.dsn import redact, scrub
from reference.schema import apply_schema

log = logging.getLogger(__name__)

COPY_SQL = f"COPY logs ({', '.join(COLUMNS)}) FROM STDIN"
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
# psycopg2 reads the COPY data in pieces of this size and takes the GIL back after each: with its default
# of 8 KiB the parsing thread slowed a 10k-row COPY from 0.10 s to 0.35-0.40 s; with 1 MiB, 0.16-0.28 s, and
# the collector went from 65.3k to 74.2k rows/s end to end (4 interleaved runs, loadtests/bench).
COPY_READ_BYTES = 1024 * 1024
# Reconnect backoff: quick first retries for a restart, capped so an outage costs one attempt per 5 s.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# Errors that mean "this data is wrong", not "the server is gone": they are answered by bisection.
# Anything else (permission denied, a missing table) is the same for every row: it stops the collector.
DATA_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError)


@dataclass
class Batch:
    """Rows to COPY, the raw line behind each row (for rejection), and lines already rejected."""

    rows: list[bytes] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    bytes: int = 0
    # With a journal: the stream offsets of the batch's first byte and just past its last line; the database's
    # committed offset moves from the one to the other in the batch's transaction.
    start_offset: int | None = None
    end_offset: int | None = None

    def __len__(self) -> int:
        return len(self.rows) + len(self.rejections)


@dataclass
class LoadResult:
    """What one batch did to the database."""

    rows: int
    rejected: int


class DatabaseConfigError(RuntimeError):
    """The DSN can never work (no such database or role, authentication refused): retrying would not help."""


# Messages that mean the DSN is wrong rather than the server away, when the first connection fails.
PERMANENT_CONNECT_ERRORS = re.compile(
    r'database ".*" does not exist|role ".*" does not exist|password authentication failed|'
    r"no pg_hba\.conf entry|authentication failed")


class Abandoned(Exception):
    """The collector is stopping while the database is unreachable; the caller gives up this batch."""


def never() -> bool:
    """Default give-up test: keep trying."""
    return False


class Loader:
    """Owns the database connection: applies the schema, commits batches, survives server restarts."""

    def __init__(self, dsn: str, *, apply_schema_at_start: bool = True, journal_id: str | None = None) -> None:
        self.dsn = dsn
        self.apply_schema_at_start = apply_schema_at_start
        self.journal_id = journal_id
        self.conn = None
        self._ever_connected = False

    def connect(self, give_up: Callable[[], bool] = never) -> None:
        """Connect, retrying with capped exponential backoff and one log line per state change.

        Raises Abandoned when give_up() turns true while the database is unreachable.
        """
        delay = RETRY_FIRST_S
        failing_since = None
        while True:
            if failing_since is not None and give_up():
                raise Abandoned
            try:
                self.conn = psycopg2.connect(self.dsn, connect_timeout=10,
                                             application_name="namedpiper-collector")
                if self.apply_schema_at_start:
                    apply_schema(self.conn)
                if failing_since is not None:
                    log.warning("database reachable again after %.1f s", time.monotonic() - failing_since)
                self._ever_connected = True
                return
            except psycopg2.ProgrammingError as exc:
                # Missing privileges or a broken schema: retrying will not help.
                raise DatabaseConfigError(f"cannot use {redact(self.dsn)}: {scrub(str(exc).strip(), self.dsn)}"
                                          ) from exc
            except psycopg2.OperationalError as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if not self._ever_connected and PERMANENT_CONNECT_ERRORS.search(first_line):
                    raise DatabaseConfigError(f"cannot use {redact(self.dsn)}: {scrub(first_line, self.dsn)}; "
                                              "fix --dsn (or NAMEDPIPER_DSN / PG* variables)") from None
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("database unreachable at %s: %s; retrying every %.1f-%.1f s", redact(self.dsn),
                                scrub(first_line, self.dsn), RETRY_FIRST_S, RETRY_MAX_S)
                self.close()  # a connection that failed while applying the schema is of no further use
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not give_up():
                    time.sleep(min(RETRY_FIRST_S, delay))
                delay = min(delay * 2, RETRY_MAX_S)

    def close(self) -> None:
        """Close the connection."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def committed_offset(self) -> int:
        """The journal offset whose rows are all committed (0 for a journal the database has not seen)."""
        with self.conn.cursor() as cur:
            cur.execute(ENSURE_OFFSET_SQL, (self.journal_id,))
            cur.execute(COMMITTED_SQL, (self.journal_id,))
            row = cur.fetchone()
        self.conn.commit()
        return row[0]

    def load(self, batch: Batch, give_up: Callable[[], bool] = never) -> LoadResult:
        """Commit every good row and every rejection of batch, whatever the server says about single rows."""
        while True:
            if self.conn is None or self.conn.closed:
                self.connect(give_up)
            try:
                return self._load_once(batch)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                log.warning("database connection lost while loading (%s); reconnecting",
                            scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                                  self.dsn))
                self.close()

    def _load_once(self, batch: Batch) -> LoadResult:
        rejections = list(batch.rejections)
        with self.conn.cursor() as cur:
            # First: it takes the row lock, and a batch already committed costs no COPY.
            if batch.end_offset is not None:
                cur.execute(ADVANCE_OFFSET_SQL, {"id": self.journal_id, "start": batch.start_offset,
                                                 "end": batch.end_offset})
                if cur.rowcount == 0:
                    # The connection broke during a COMMIT that did go through: loading again would duplicate.
                    self.conn.rollback()
                    log.warning("journal bytes %d..%d were committed before the connection broke; not loading "
                                "them twice", batch.start_offset, batch.end_offset)
                    return LoadResult(rows=0, rejected=0)
            if batch.rows:
                self._copy_isolating(cur, batch.rows, batch.raws, rejections)
            if rejections:
                psycopg2.extras.execute_values(
                    cur, INSERT_REJECTED_SQL, [(r.reason, psycopg2.Binary(r.raw)) for r in rejections])
        self.conn.commit()
        return LoadResult(rows=len(batch.rows) - (len(rejections) - len(batch.rejections)),
                          rejected=len(rejections))

    def _copy_isolating(self, cur, rows: list[bytes], raws: list[bytes], rejections: list[Rejection]) -> None:
        """COPY rows; on a data error, bisect under savepoints until each bad row stands alone and is rejected."""
        cur.execute("SAVEPOINT np_copy")
        try:
            cur.copy_expert(COPY_SQL, io.BytesIO(b"".join(rows)), size=COPY_READ_BYTES)
        except DATA_ERRORS as exc:
            cur.execute("ROLLBACK TO SAVEPOINT np_copy")
            if len(rows) == 1:
                message = (exc.pgerror or str(exc)).strip().splitlines()[0]
                rejections.append(Rejection(f"PostgreSQL rejected the row: {message}", raws[0]))
                return
            middle = len(rows) // 2
            self._copy_isolating(cur, rows[:middle], raws[:middle], rejections)
            self._copy_isolating(cur, rows[middle:], raws[middle:], rejections)
            return
        cur.execute("RELEASE SAVEPOINT np_copy")
