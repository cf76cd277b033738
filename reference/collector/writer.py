"""The PostgreSQL COPY sink: a writer thread fed through a bounded queue, so parsing overlaps with a COPY."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from reference.collector.loader import Abandoned, DatabaseConfigError, DatabaseRefused, Loader
from reference.collector.model import Batch
from reference.collector.sink import SinkCounters
from reference.collector.stop import StopRequest

log = logging.getLogger(__name__)

# Batches waiting for the writer: two keep the database busy while the reader parses the next one; more
# would only add memory (each batch holds up to BATCH_MAX_BYTES) and latency.
QUEUE_BATCHES = 2
# How often a blocked submit or close looks again whether the writer thread failed or ended, or the stop grace
# ran out: a stop is honoured within this long of the grace's end.
QUEUE_POLL_S = 0.1
# Without a journal, a stop waits this long for a database that cannot take the lines read (a lost connection,
# a statement timeout, a lock) before giving them up and saying how many: long enough to ride out a server
# restart, short enough to finish before a container runtime's SIGKILL (Docker waits 10 s).
STOP_GRACE_S = 5.0
_STOP = object()


class CopySink:
    """Runs Loader.load in a thread; the first error it meets is re-raised in the producer's next call.

    With a durable source (a journal), a batch the database cannot take at shutdown may be abandoned: its bytes
    stay in the journal and are loaded at the next start. Without one, the writer keeps trying, since giving up
    would lose lines, until a second stop request says to give up.
    """

    def __init__(
        self, loader: Loader, *, durable: bool, stop: StopRequest | None = None, stop_grace: float = STOP_GRACE_S
    ) -> None:
        self.loader = loader
        self.durable = durable
        self.stop = stop or StopRequest()
        self.stop_grace = stop_grace
        self._cancelled = False
        self.counters = SinkCounters()
        self._committed: int | None = None  # journal offset committed so far, known once connected
        self._ready = threading.Event()
        self._releasing = threading.Event()  # shutdown: give up on a database that does not answer
        self._closing = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_BATCHES)
        self._error: BaseException | None = None
        # Told (batch, rejected lines committed, seconds) after each commit, in the writer thread: the metrics.
        self.on_commit: Callable[[Batch, int, float], None] | None = None
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)
        self._thread.start()

    def describe(self) -> str:
        """The database, without its password."""
        return self.loader.describe()

    @property
    def has_room(self) -> bool:
        """True when a batch can be queued without waiting."""
        return not self._queue.full()

    @property
    def taking(self) -> bool:
        """False while the database fails (between a failed attempt and the next success)."""
        return not self.loader.in_trouble

    @property
    def ready(self) -> bool:
        """True once connected (and, with a journal, once the committed offset is known)."""
        return self._ready.is_set()

    @property
    def committed(self) -> int | None:
        """The journal offset committed so far (None without a journal or before connecting)."""
        return self._committed

    @property
    def queued(self) -> int:
        """Batches waiting."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        """True while the writer thread runs (it ends when stopped, or when it gave up on the database)."""
        return self._thread.is_alive()

    def submit(self, batch: Batch) -> None:
        """Queue batch for loading; blocks while the queue is full (back-pressure on the reader)."""
        self.raise_if_failed()
        while True:
            try:
                self._queue.put(batch, timeout=QUEUE_POLL_S)
                return
            except queue.Full:
                self.raise_if_failed()
                if not self._thread.is_alive():
                    return  # gave up at shutdown: the journal keeps the bytes, or the stop said so
                self._cancel_if_overdue()

    def release(self) -> None:
        """Give up on a database that does not answer from now on (a durable source keeps what is unloaded)."""
        self._releasing.set()

    def close(self) -> None:
        """Load everything queued (or give it up when release() or a second stop allows), then stop the thread."""
        self._closing.set()
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=QUEUE_POLL_S)
                break
            except queue.Full:
                self._cancel_if_overdue()
        while self._thread.is_alive():
            self._thread.join(QUEUE_POLL_S)
            self._cancel_if_overdue()
        self.raise_if_failed()

    def _cancel_if_overdue(self) -> None:
        """Once the stop's grace ran out, cancel the statement in flight (a lock or a slow server), once."""
        if not self._cancelled and (self.stop.insistent or self.stop.older_than(self.stop_grace)):
            self._cancelled = True
            self.loader.cancel()

    def abort(self) -> None:
        """Stop waiting for the database and close the connection; what is queued is not loaded."""
        self._releasing.set()
        self._closing.set()
        if not self._thread.is_alive():
            self.loader.close()

    def raise_if_failed(self) -> None:
        """Re-raise the writer thread's error, if it met one (a DatabaseConfigError or a refusal as it is)."""
        if self._error is not None:
            if isinstance(self._error, DatabaseConfigError | DatabaseRefused):
                raise self._error
            raise RuntimeError(f"the database writer stopped: {self._error}") from self._error

    def _nothing_queued(self) -> bool:
        with self._queue.mutex:
            return all(item is _STOP for item in self._queue.queue)

    def _stopping(self) -> bool:
        return self._releasing.is_set() or self._closing.is_set() or self.stop.insistent

    def _give_up(self) -> bool:
        """While retrying: give up when stopping and the journal keeps the lines, or the stop's grace ran out."""
        if self.durable:
            return self._stopping()
        return self.stop.insistent or self.stop.older_than(self.stop_grace)

    def _give_up_connecting(self) -> bool:
        """Before the first load only queued batches can be lost: give up if there are none (or all journaled)."""
        return self._give_up() or (self._stopping() and self._nothing_queued())

    def _run(self) -> None:
        try:
            self.loader.connect(give_up=self._give_up_connecting)
            if self.durable:
                self._committed = self.loader.committed_offset(give_up=self._give_up_connecting)
            self._ready.set()
            while True:
                batch = self._queue.get()
                if not isinstance(batch, Batch):
                    return
                began = time.monotonic()
                result = self.loader.load(batch, give_up=self._give_up)
                if self.on_commit is not None:
                    self.on_commit(batch, result.rejected, time.monotonic() - began)
                self.counters.rows_written += result.rows
                self.counters.rejected += result.rejected
                self.counters.batches += 1
                self.counters.lines_stored += batch.lines
                if batch.end_offset is not None:
                    self._committed = batch.end_offset
        except Abandoned:
            if self.durable:
                log.warning("stopping while the database cannot take the lines: uncommitted lines stay in the journal")
            elif self._ready.is_set() or not self._nothing_queued():
                log.warning(
                    "stopping: the database could not take the lines read within the stop's grace of %g s",
                    self.stop_grace,
                )
            else:
                log.warning("stopping before the database answered; nothing was loaded")
        except (DatabaseConfigError, DatabaseRefused) as exc:
            self._error = exc  # a plain message for the user, not a traceback
        except BaseException as exc:  # handed to the producer, never swallowed
            log.exception("database writer failed")
            self._error = exc
        finally:
            self.loader.close()
