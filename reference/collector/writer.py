"""The PostgreSQL COPY sink: a writer thread fed through a bounded queue, so parsing overlaps with a COPY."""

from __future__ import annotations

import logging
import queue
import threading

from reference.collector.loader import Abandoned, DatabaseConfigError, Loader
from reference.collector.model import Batch
from reference.collector.sink import SinkCounters
from reference.collector.stop import StopRequest

log = logging.getLogger(__name__)

# Batches waiting for the writer: two keep the database busy while the reader parses the next one; more
# would only add memory (each batch holds up to BATCH_MAX_BYTES) and latency.
QUEUE_BATCHES = 2
# How often a blocked submit or close looks again whether the writer thread failed or ended.
QUEUE_POLL_S = 0.5
_STOP = object()


class CopySink:
    """Runs Loader.load in a thread; the first error it meets is re-raised in the producer's next call.

    With a durable source (a journal), a batch the database cannot take at shutdown may be abandoned: its bytes
    stay in the journal and are loaded at the next start. Without one, the writer keeps trying, since giving up
    would lose lines, until a second stop request says to give up.
    """

    def __init__(self, loader: Loader, *, durable: bool, stop: StopRequest | None = None) -> None:
        self.loader = loader
        self.durable = durable
        self.stop = stop or StopRequest()
        self.counters = SinkCounters()
        self._committed: int | None = None  # journal offset committed so far, known once connected
        self._ready = threading.Event()
        self._releasing = threading.Event()  # shutdown: give up on a database that does not answer
        self._closing = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_BATCHES)
        self._error: BaseException | None = None
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
                    return  # gave up at shutdown: the journal keeps the bytes, or the second signal said so

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
                continue
        self._thread.join()
        self.raise_if_failed()

    def abort(self) -> None:
        """Stop waiting for the database and close the connection; what is queued is not loaded."""
        self._releasing.set()
        self._closing.set()
        if not self._thread.is_alive():
            self.loader.close()

    def raise_if_failed(self) -> None:
        """Re-raise the writer thread's error, if it met one (a DatabaseConfigError as it is)."""
        if self._error is not None:
            if isinstance(self._error, DatabaseConfigError):
                raise self._error
            raise RuntimeError(f"the database writer stopped: {self._error}") from self._error

    def _nothing_queued(self) -> bool:
        with self._queue.mutex:
            return all(item is _STOP for item in self._queue.queue)

    def _stopping(self) -> bool:
        return self._releasing.is_set() or self._closing.is_set() or self.stop.insistent

    def _give_up(self) -> bool:
        """While loading: give up on an unreachable database when stopping and no line is lost by it."""
        return self._stopping() and (self.durable or self.stop.insistent)

    def _give_up_connecting(self) -> bool:
        """Before the first load only queued batches can be lost: give up if there are none (or all journaled)."""
        return self._give_up() or (self._stopping() and self._nothing_queued())

    def _run(self) -> None:
        try:
            self.loader.connect(give_up=self._give_up_connecting)
            if self.durable:
                self._committed = self.loader.committed_offset()
            self._ready.set()
            while True:
                batch = self._queue.get()
                if not isinstance(batch, Batch):
                    return
                result = self.loader.load(batch, give_up=self._give_up)
                self.counters.rows_written += result.rows
                self.counters.rejected += result.rejected
                self.counters.batches += 1
                if batch.end_offset is not None:
                    self._committed = batch.end_offset
        except Abandoned:
            if self.durable:
                log.warning("stopping while the database is unreachable: uncommitted lines stay in the journal")
            elif self.stop.insistent:
                waiting = sum(len(b) for b in list(self._queue.queue) if isinstance(b, Batch))
                log.error("stopping on a second request while the database is unreachable: about %d lines read "
                          "were not stored (run with --journal to keep them)", waiting + 1)
            else:
                log.warning("stopping before the database answered; nothing was loaded")
        except DatabaseConfigError as exc:
            self._error = exc  # a plain message for the user, not a traceback
        except BaseException as exc:  # handed to the producer, never swallowed
            log.exception("database writer failed")
            self._error = exc
        finally:
            self.loader.close()
