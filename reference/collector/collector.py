"""The collector's main loop: read (into the journal), split, validate, batch, hand to the writer thread."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from reference.collector.journal import DEFAULT_MAX_BYTES, Journal, JournalError
from reference.collector.lines import LineSplitter, Oversized
from reference.collector.loader import Batch, Loader
from reference.collector.reader import READ_CHUNK_BYTES, FifoReader
from reference.collector.validate import Rejection, parse_line
from reference.collector.writer import BatchWriter
from reference.dsn import redact
from reference.fifo import DEFAULT_FIFO_MODE
from reference.sizes import MAX_LINE_BYTES

log = logging.getLogger("reference.collector")

# Rows per COPY: past ~5,000 rows the per-batch cost (a round trip, a commit) is under 2 % of the load.
# A batch is cut between reads, so it may exceed this by one read's lines (1 MiB).
BATCH_ROWS = 10_000
# Bytes per COPY: bounds memory when lines are large (over_capacity lines reach 1 MiB each).
BATCH_MAX_BYTES = 4 * 1024 * 1024
# A partly filled batch is sent after this long, so a quiet writer's lines are visible within ~0.1 s.
FLUSH_INTERVAL_S = 0.1
# The main loop wakes at least this often to notice a stop request and to print stats.
IDLE_WAKE_S = 0.2
STATS_INTERVAL_S = 10.0
# With a backlog and the writer's queue full, look again this often: replaying 200,000 journaled lines ran at
# 16k rows/s when it waited IDLE_WAKE_S for the writer, and this costs about 100 wake-ups a second.
BACKLOG_WAKE_S = 0.01
# With the journal full, look this often whether loading has freed room (20 wake-ups a second while stopped).
JOURNAL_FULL_WAKE_S = 0.05


@dataclass(frozen=True)
class CollectorConfig:
    """Settings of one collector run."""

    fifo: str
    dsn: str
    batch_rows: int = BATCH_ROWS
    batch_bytes: int = BATCH_MAX_BYTES
    flush_interval: float = FLUSH_INTERVAL_S
    max_line_bytes: int = MAX_LINE_BYTES
    pipe_size: int | None = None
    fifo_mode: int = DEFAULT_FIFO_MODE
    apply_schema: bool = True
    stats_interval: float = STATS_INTERVAL_S
    journal: str | None = None
    fsync: bool = False
    journal_max_bytes: int = DEFAULT_MAX_BYTES


class Collector:
    """Moves lines from the FIFO into PostgreSQL until asked to stop, then flushes everything it read.

    Without a journal, a slow or absent database slows the reading down (back-pressure onto the writers).
    With one, the FIFO is always drained into the journal and parsing follows at the database's pace.
    """

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.stop_requested = False
        self.lines_read = 0
        self.bytes_read = 0
        self.splitter = LineSplitter(config.max_line_bytes)
        self.batch = Batch()
        self.batch_started = time.monotonic()
        self.journal: Journal | None = None
        self.parsed_to: int | None = None  # journal offset fed to the splitter; known once connected
        self.batch_start_offset = 0  # journal offset where the next batch starts

    def request_stop(self, signum: int = 0, frame: object = None) -> None:
        """Signal handler: finish the current step, drain the pipe, flush, exit; a second signal gives up waiting."""
        if self.stop_requested and getattr(self, "writer", None) is not None:
            self.writer.stopping = self.writer.abandon = True
        self.stop_requested = True

    def run(self) -> int:
        """The main loop; returns the process exit status."""
        cfg = self.config
        reader = FifoReader(cfg.fifo, mode=cfg.fifo_mode, pipe_size=cfg.pipe_size)
        self.journal = Journal(cfg.journal, fsync=cfg.fsync, max_bytes=cfg.journal_max_bytes) if cfg.journal else None
        loader = Loader(cfg.dsn, apply_schema_at_start=cfg.apply_schema,
                        journal_id=self.journal.id if self.journal else None)
        self.writer = BatchWriter(loader, journaled=self.journal is not None)
        log.info("reading %s (capacity %d bytes) into %s%s", reader.path, reader.capacity,
                 redact(cfg.dsn) or "libpq defaults",
                 f", journal {cfg.journal} at offset {self.journal.end}" if self.journal else "")
        next_stats = time.monotonic() + cfg.stats_interval
        try:
            while not self.stop_requested:
                self.writer.raise_if_failed()
                if self.journal is not None:
                    self._step_journaled(reader)
                else:
                    chunk = reader.read(self._wait_time())
                    if chunk:
                        self._consume(chunk)
                    self._flush_if_due(block=True)
                now = time.monotonic()
                if now >= next_stats:
                    log.info("stats %s", self._stats_text(reader.waiting()))
                    next_stats = now + cfg.stats_interval
            self._shutdown(reader)
        finally:
            reader.close()
            loader.close()
            if self.journal is not None:
                self.journal.close()
        log.info("final %s", self._stats_text(0))
        return 0

    def _wait_time(self) -> float:
        if not self.batch:
            return IDLE_WAKE_S
        return min(IDLE_WAKE_S, max(0.0, self.batch_started + self.config.flush_interval - time.monotonic()))

    def _step_journaled(self, reader: FifoReader) -> None:
        """Move what the pipe holds into the journal, then parse one read's worth if the database keeps up."""
        journal = self.journal
        behind = self.parsed_to is not None and self.parsed_to < journal.end
        if behind and not self._batch_full():
            timeout = 0.0  # a backlog to parse: only look at the pipe
        elif self.batch and self.writer.has_room:
            timeout = self._wait_time()
        elif behind or self.batch:
            timeout = BACKLOG_WAKE_S  # waiting for the writer thread to take a batch
        else:
            timeout = IDLE_WAKE_S
        if journal.room() == 0:  # disk full or at --journal-max-bytes: the bytes wait in the pipe (back-pressure)
            time.sleep(min(timeout, JOURNAL_FULL_WAKE_S))
        elif reader.wait(timeout):
            self.bytes_read += journal.splice_from(reader.fd, READ_CHUNK_BYTES)
        if reader.retiring and journal.room():  # lines of a FIFO that was removed or replaced (reader.py)
            extra = reader.take_retired(aligned=journal.ends_with_newline())
            written = journal.append(extra) if extra else 0
            reader.give_back(extra[written:])
            self.bytes_read += written
        if self.parsed_to is None and self.writer.connected.is_set():
            self.parsed_to = self.batch_start_offset = self._replay_start()
        if self.parsed_to is not None and not self._batch_full() and self.parsed_to < journal.end:
            self._consume_journal()
        self._flush_if_due(block=False)
        if self.writer.committed is not None:
            journal.trim(self.writer.committed)

    def _replay_start(self) -> int:
        journal, committed = self.journal, self.writer.committed
        if committed > journal.end or committed < journal.start:
            raise JournalError(
                f"the database has journal {journal.id} committed up to offset {committed}, but {journal.folder} "
                f"holds {journal.start}..{journal.end}: the folder was replaced or the database restored. Give an "
                "empty --journal folder to start afresh (its unloaded bytes are then not loaded), or use the "
                "database and folder that belong together")
        if committed < journal.end:
            log.warning("replaying %d journaled bytes not yet committed (offset %d..%d)", journal.end - committed,
                        committed, journal.end)
        return committed

    def _consume_journal(self) -> None:
        if self.batch.start_offset is None:
            self.batch.start_offset = self.batch_start_offset
        data = self.journal.read(self.parsed_to, READ_CHUNK_BYTES)
        self.parsed_to += len(data)
        self._consume(data)
        self.batch.end_offset = self.parsed_to - self.splitter.pending

    def _batch_full(self) -> bool:
        return len(self.batch.rows) >= self.config.batch_rows or self.batch.bytes >= self.config.batch_bytes

    def _flush_if_due(self, *, block: bool) -> None:
        if not self.batch:
            self.batch_started = time.monotonic()
            return
        due = self._batch_full() or time.monotonic() >= self.batch_started + self.config.flush_interval
        if due and (block or self.writer.has_room):
            self._flush()

    def _consume(self, chunk: bytes) -> None:
        if self.journal is None:
            self.bytes_read += len(chunk)
        lines, oversized = self.splitter.feed(chunk)
        batch = self.batch
        for too_long in oversized:
            self._reject_partial(too_long)
        for raw in lines:
            row, rejections = parse_line(raw)
            if row is not None:
                batch.rows.append(row)
                batch.raws.append(raw)
                batch.bytes += len(row)
            if rejections:
                batch.rejections.extend(rejections)
        self.lines_read += len(lines) + len(oversized)

    def _shutdown(self, reader: FifoReader) -> None:
        """Take what the pipe holds now, load everything read, and stop the writer."""
        if self.journal is None:
            self._consume(reader.read_available())
            partial = self.splitter.take_partial()
            if partial is not None:
                self._reject_partial(partial)
            self._flush()
            self.writer.close()
            return
        while reader.waiting() > 0 and self.journal.splice_from(reader.fd, READ_CHUNK_BYTES):
            pass
        # From here a database that does not answer is not waited for: the journal keeps what is unloaded.
        self.writer.stopping = True
        if self.parsed_to is not None:
            while self.parsed_to < self.journal.end and self.writer.alive:
                self._consume_journal()
                if self._batch_full():
                    self._flush()
            # An unfinished last line stays in the journal: its end may still be in the pipe for the next run.
            self._flush()
        self.writer.close()
        if self.writer.committed is not None:
            self.journal.trim(self.writer.committed)

    def _reject_partial(self, partial: bytes | Oversized) -> None:
        if isinstance(partial, Oversized):
            what = "line" if partial.complete else "unfinished line"
            reason = (f"{what} of {partial.length} bytes exceeds --max-line-bytes {self.config.max_line_bytes}; "
                      f"its first {len(partial.prefix)} bytes are kept")
            self.batch.rejections.append(Rejection(reason, partial.prefix))
        else:
            self.batch.rejections.append(
                Rejection(f"unfinished line of {len(partial)} bytes (no newline) when the collector stopped",
                          partial))
            self.lines_read += 1

    def _flush(self) -> None:
        if self.batch:
            self.writer.submit(self.batch)
            if self.batch.end_offset is not None:
                self.batch_start_offset = self.batch.end_offset
        self.batch = Batch()
        self.batch_started = time.monotonic()

    def _stats_text(self, waiting: int) -> str:
        c = self.writer.counters
        text = (f"lines_read={self.lines_read} bytes_read={self.bytes_read} rows_written={c.rows_written} "
                f"rejected={c.rejected} batches={c.batches} queued_batches={self.writer.queued} "
                f"pipe_waiting_bytes={waiting} pending_bytes={self.splitter.pending}")
        if self.journal is not None:
            backlog = self.journal.end - (self.parsed_to if self.parsed_to is not None else self.journal.start)
            text += f" journal_backlog_bytes={backlog} committed_offset={self.writer.committed}"
        return text
