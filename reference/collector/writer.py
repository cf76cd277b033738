"""A database writer thread fed through a bounded queue, so parsing overlaps with a COPY in flight."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from reference.collector.loader import Abandoned, Batch, DatabaseConfigError, Loader

log = logging.getLogger(__name__)

# Batches waiting for the writer: two keep the database busy while the reader parses the next one; more
# would only add memory (each batch holds up to BATCH_MAX_BYTES) and latency.
QUEUE_BATCHES = 2
_STOP = object()


@dataclass
class WriterCounters:
    """Totals of what reached the database."""

    rows_written: int = 0
    rejected: int = 0
    batches: int = 0


class BatchWriter:
    """Runs Loader.load in a thread; the first error it meets is re-raised in the producer's next call.

    With a journal, a batch the database cannot take at shutdown may be abandoned: its bytes stay in the
    journal and are loaded at the next start. Without one, the writer keeps trying, since giving up would
    lose lines.
    """

    def __init__(self, loader: Loader, *, journaled: bool) -> None:
        self.loader = loader
        self.journaled = journaled
        self.counters = WriterCounters()
        self.committed: int | None = None  # journal offset committed so far, known once connected
        self.connected = threading.Event()
        self.stopping = False
        self.abandon = False  # a second stop request: give up on a database that does not answer, even unjournaled
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)
        self._thread.start()

    @property
    def has_room(self) -> bool:
        """True when a batch can be queued without waiting."""
        return not self._queue.full()

    def submit(self, batch: Batch) -> None:
        """Queue batch for loading; blocks while the queue is full (back-pressure on the reader)."""
        self.raise_if_failed()
        while True:
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                self.raise_if_failed()
                if not self._thread.is_alive():
                    return  # abandoned at shutdown: the journal keeps the bytes

    def close(self) -> None:
        """Load everything queued (or abandon it to the journal when stopping with no database), then stop."""
        self.stopping = True
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.5)
                break
            except queue.Full:
                continue
        self._thread.join()
        self.raise_if_failed()

    @property
    def queued(self) -> int:
        """Batches waiting."""
        return self._queue.qsize()

    def raise_if_failed(self) -> None:
        """Re-raise the writer thread's error, if it met one (a DatabaseConfigError as it is)."""
        if self._error is not None:
            if isinstance(self._error, DatabaseConfigError):
                raise self._error
            raise RuntimeError(f"the database writer stopped: {self._error}") from self._error

    def _nothing_queued(self) -> bool:
        with self._queue.mutex:
            return all(item is _STOP for item in self._queue.queue)

    @property
    def alive(self) -> bool:
        """True while the writer thread runs (it ends when stopped, or when it gave up on the database)."""
        return self._thread.is_alive()

    def _give_up(self) -> bool:
        return self.stopping and (self.journaled or self.abandon)

    def _run(self) -> None:
        try:
            # Before the first load only queued batches can be lost: give up only if none (or all journaled).
            self.loader.connect(give_up=lambda: self.stopping and (self.journaled or self.abandon
                                                                   or self._nothing_queued()))
            if self.journaled:
                self.committed = self.loader.committed_offset()
            self.connected.set()
            while True:
                batch = self._queue.get()
                if batch is _STOP:
                    return
                result = self.loader.load(batch, give_up=self._give_up)
                self.counters.rows_written += result.rows
                self.counters.rejected += result.rejected
                self.counters.batches += 1
                if batch.end_offset is not None:
                    self.committed = batch.end_offset
        except Abandoned:
            if self.journaled:
                log.warning("stopping while the database is unreachable: uncommitted lines stay in the journal")
            elif self.abandon:
                waiting = sum(len(b) for b in list(self._queue.queue) if b is not _STOP)
                log.error("stopping on a second request while the database is unreachable: about %d lines read "
                          "were not stored (run with --journal to keep them)", waiting + 1)
            else:
                log.warning("stopping before the database answered; nothing was loaded")
        except DatabaseConfigError as exc:
            self._error = exc  # a plain message for the user, not a traceback
        except BaseException as exc:  # handed to the producer, never swallowed
            log.exception("database writer failed")
            self._error = exc
