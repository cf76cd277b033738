"""The collector's main loop: take bytes from a source, split and validate lines, batch them into a sink."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass

from reference.collector.journal import DEFAULT_MAX_BYTES
from reference.collector.lines import LineSplitter, Oversized
from reference.collector.model import Batch, BatchLimits, Rejection
from reference.collector.reader import WRITERS_GRACE_S
from reference.collector.sink import Sink, SinkRefused
from reference.collector.source import Chunk, Source
from reference.collector.stop import StopRequest
from reference.collector.validate import COMPILED, STALE, parse_block, parse_lines
from reference.collector.writer import STOP_GRACE_S
from reference.fifo import DEFAULT_FIFO_MODE
from reference.sizes import MAX_LINE_BYTES

log = logging.getLogger("reference.collector")

# Rows per COPY: past ~5,000 rows the per-batch cost (a round trip, a commit) is under 2 % of the load.
# Rejected lines count as rows. A batch is cut between reads, so it may exceed this by one read's lines (1 MiB).
BATCH_ROWS = 10_000
# Bytes per batch, rows and rejected lines together: bounds memory when lines are large (over_capacity lines
# reach 1 MiB each) or when a flood of them is rejected.
BATCH_MAX_BYTES = 4 * 1024 * 1024
# A partly filled batch is sent after this long, so a quiet writer's lines are visible within ~0.1 s.
FLUSH_INTERVAL_S = 0.1
# The main loop wakes at least this often to notice a stop request and to print stats.
IDLE_WAKE_S = 0.2
STATS_INTERVAL_S = 10.0
# With a backlog and the writer's queue full, look again this often: replaying 200,000 journaled lines ran at
# 16k rows/s when it waited IDLE_WAKE_S for the writer, and this costs about 100 wake-ups a second.
BACKLOG_WAKE_S = 0.01

# Exit statuses of a run (2, for a collector that cannot start, is the command line's).
EXIT_OK = 0  # stopped on request; every line read is stored (or, with a journal, kept there for the next start)
EXIT_REFUSED = 3  # the database refuses the writes (privileges, schema): one error line with cause, fix and count
EXIT_UNSTORED = 4  # stopped on request without a journal while the database could not take every line read
# logs_rejected keeps this much of a rejected line, beside its full length and SHA-256: enough to identify the
# writer and the event, while a flood of 1 MiB garbage lines cannot fill the database (or the batches in memory).
REJECT_KEEP_BYTES = 64 * 1024

# A rejected line at least this long makes the collector collect young garbage cycles after the read: a parser
# that raises keeps the line alive in a cycle (exception, traceback, frame) until the cyclic GC runs, and the GC
# counts objects, not bytes: 200 garbage lines of 1 MiB peaked at 137 MiB RSS without this, 10 MiB-ish cycles
# at a time. A young-generation collection costs microseconds, once per read.
LARGE_REJECTION_BYTES = 64 * 1024


@dataclass(frozen=True)
class CollectorConfig:
    """Settings of one collector run (the main loop reads the batching ones; pipeline.py the rest)."""

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
    reject_keep_bytes: int = REJECT_KEEP_BYTES
    stop_grace: float = STOP_GRACE_S
    writers_grace: float = WRITERS_GRACE_S

    @property
    def limits(self) -> BatchLimits:
        """When a batch is full."""
        return BatchLimits(items=self.batch_rows, size=self.batch_bytes)


class Collector:
    """Moves lines from a source into a sink until asked to stop, then loads everything it took in.

    With a plain FIFO source, a slow or absent database slows the reading down (back-pressure onto the writers).
    With a durable one (a journal), the FIFO is always drained and parsing follows at the sink's pace.
    """

    def __init__(
        self,
        config: CollectorConfig,
        source: Source,
        sink: Sink,
        stop: StopRequest | None = None,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.source = source
        self.sink = sink
        self.stop = stop or StopRequest()
        self.lines_read = 0
        self.splitter = LineSplitter(config.max_line_bytes)
        self.batch = Batch()
        self.batch_started = time.monotonic()
        self.batch_start_offset: int | None = None  # stream offset where the next batch starts (journal only)

    def run(self) -> int:
        """The main loop; returns the process exit status."""
        log.info(
            "reading %s (capacity %d bytes) into %s%s",
            self.source.path,
            self.source.capacity,
            self.sink.describe(),
            self.source.describe(),
        )
        if STALE:
            log.warning("the compiled line parser is not used, every line takes the Python path: %s", STALE)
        elif not COMPILED:
            log.warning(
                "the compiled line parser is not built (no C compiler when namedpiper was installed): every line "
                "takes the Python path, same results for four to six times the CPU a line; install gcc and the "
                "Python headers, then install namedpiper again (pip install -e . in a checkout, else pip install)"
            )
        next_stats = time.monotonic() + self.config.stats_interval
        finished = False
        try:
            while not self.stop.requested:
                self.sink.raise_if_failed()
                self._step()
                now = time.monotonic()
                if now >= next_stats:
                    log.info("stats %s", self._stats_text())
                    next_stats = now + self.config.stats_interval
            self._let_writers_finish()
            self._shutdown()
            finished = True
        except SinkRefused as exc:
            kept = (
                "; they stay in the journal and load when the collector starts again after the fix"
                if self.source.durable
                else " (with --journal they would have been kept)"
            )
            log.error("%s; %d lines read were not stored%s", exc, self.unstored, kept)
            return EXIT_REFUSED
        finally:
            if not finished:
                self.sink.abort()
            self.source.close()
            log.info("final %s", self._stats_text())
        if self.unstored and not self.source.durable:
            log.error(
                "stopping: %d lines read were not stored; the database could not take them within %g s of "
                "the stop (run with --journal to keep them)",
                self.unstored,
                self.config.stop_grace,
            )
            return EXIT_UNSTORED
        return EXIT_OK

    @property
    def unstored(self) -> int:
        """Lines read whose rows and rejections are not committed (with a journal, they are still there)."""
        return self.lines_read - self.sink.counters.lines_stored

    def _step(self) -> None:
        """Wait for bytes (a journal takes them in), then parse one read's worth if the sink keeps up."""
        source, sink = self.source, self.sink
        if not source.ready and sink.ready:
            committed = sink.committed
            source.start_at(committed if committed is not None else 0)
            self.batch_start_offset = source.start
        behind = source.ready and source.backlog > 0
        full = self.batch.full(self.limits)
        if behind and not full:
            timeout = 0.0  # a backlog to parse: only look at the pipe
        elif self.batch and sink.has_room:
            timeout = self._wait_time()
        elif behind or self.batch:
            timeout = BACKLOG_WAKE_S  # waiting for the sink to take a batch
        else:
            timeout = IDLE_WAKE_S
        source.wait(timeout)
        if source.ready and not full:
            chunk = source.next_chunk()
            if chunk is not None:
                self._consume(chunk)
        # Without a journal the pipe is the only buffer: wait for the sink (back-pressure onto the writers).
        self._flush_if_due(block=not source.durable)
        if sink.committed is not None:
            source.committed(sink.committed)

    def _let_writers_finish(self) -> None:
        """Read on while the writers that have the FIFO open finish, new ones being sent to a stand-in (reader.py).

        Bounded by writers_grace and by a second stop request. Without a journal it ends as soon as the database
        takes no batches: lines read then could only be given up, while in the pipe a writer that keeps the FIFO
        open saves them for the next collector.
        """
        source, sink = self.source, self.sink
        if self.config.writers_grace <= 0 or not self._database_keeps_up() or not source.close_door():
            return
        deadline = time.monotonic() + self.config.writers_grace
        while not source.writers_gone:
            if self.stop.insistent or time.monotonic() >= deadline or not self._database_keeps_up():
                why = (
                    "a second stop request"
                    if self.stop.insistent
                    else "the database takes no batches"
                    if not self._database_keeps_up()
                    else f"{self.config.writers_grace:g} s"
                )
                log.info("writers still have the FIFO open after %s; closing it after a final read", why)
                return
            sink.raise_if_failed()
            self._step()

    def _database_keeps_up(self) -> bool:
        # A full queue is a slow database, which back-pressure handles; a failing one is what gives lines up.
        return self.source.durable or self.sink.taking

    def _wait_time(self) -> float:
        if not self.batch:
            return IDLE_WAKE_S
        return min(IDLE_WAKE_S, max(0.0, self.batch_started + self.config.flush_interval - time.monotonic()))

    def _flush_if_due(self, *, block: bool) -> None:
        if not self.batch:
            self.batch_started = time.monotonic()
            return
        due = self.batch.full(self.limits) or time.monotonic() >= self.batch_started + self.config.flush_interval
        if due and (block or self.sink.has_room):
            self._flush()

    def _consume(self, chunk: Chunk) -> None:
        batch = self.batch
        if chunk.end is not None and batch.start_offset is None:
            batch.start_offset = self.batch_start_offset
        whole = self.splitter.feed_block(chunk.data)
        if whole is not None:
            block, read = whole
            rows, rejections = parse_block(block) if read else ([], [])
        else:
            lines, oversized = self.splitter.feed(chunk.data)
            for too_long in oversized:
                self._reject_partial(too_long)
            rows, rejections = parse_lines(lines)
            read = len(lines) + len(oversized)
        batch.add_rows(rows)
        keep = self.config.reject_keep_bytes
        large_rejections = False
        for rejected in rejections:
            batch.add_rejection(Rejection.of(rejected.reason, rejected.raw, keep))
            large_rejections = large_rejections or len(rejected.raw) >= LARGE_REJECTION_BYTES
        self.lines_read += read
        batch.lines += read
        if large_rejections:
            del rejections
            gc.collect(1)
        if chunk.end is not None:
            batch.end_offset = chunk.end - self.splitter.pending

    def _shutdown(self) -> None:
        """Take in what the pipe holds and close it, load everything taken in, and stop the sink."""
        source, sink = self.source, self.sink
        source.seal()
        if source.durable:
            # From here a database that does not answer is not waited for: the journal keeps what is unloaded.
            sink.release()
        if source.ready:
            # Without a journal the sealed bytes are parsed even when the sink gave up, so that the lines given up
            # are counted; with one they stay in the journal.
            while (sink.alive or not source.durable) and (chunk := source.next_chunk()) is not None:
                self._consume(chunk)
                if self.batch.full(self.limits):
                    self._flush()
        if not source.durable:
            partial = self.splitter.take_partial()
            if partial is not None:
                self._reject_partial(partial)
        # With a journal an unfinished last line stays there: its end may still be in the pipe for the next run.
        self._flush()
        sink.close()
        if sink.committed is not None:
            source.committed(sink.committed)

    def _reject_partial(self, partial: bytes | Oversized) -> None:
        if isinstance(partial, Oversized):
            what = "line" if partial.complete else "unfinished line"
            kept = partial.prefix[: self.config.reject_keep_bytes]
            reason = (
                f"{what} of {partial.length} bytes exceeds --max-line-bytes {self.config.max_line_bytes}; "
                f"its first {len(kept)} bytes are kept"
            )
            # The line was never whole in memory: its length is exact, its hash unknown.
            self.batch.add_rejection(Rejection(reason, kept, partial.length, None))
        else:
            self.batch.add_rejection(
                Rejection.of(
                    f"unfinished line of {len(partial)} bytes (no newline) when the collector stopped",
                    partial,
                    self.config.reject_keep_bytes,
                )
            )
            self.lines_read += 1
            self.batch.lines += 1

    def _flush(self) -> None:
        if self.batch:
            self.sink.submit(self.batch)
            if self.batch.end_offset is not None:
                self.batch_start_offset = self.batch.end_offset
        self.batch = Batch()
        self.batch_started = time.monotonic()

    def _stats_text(self) -> str:
        c = self.sink.counters
        text = (
            f"lines_read={self.lines_read} bytes_read={self.source.taken} rows_written={c.rows_written} "
            f"rejected={c.rejected} batches={c.batches} queued_batches={self.sink.queued} "
            f"pipe_waiting_bytes={self.source.waiting} pending_bytes={self.splitter.pending}"
        )
        text += self.source.stats()
        if self.source.durable:
            text += f" committed_offset={self.sink.committed}"
        return text
