"""A database writer thread fed through a bounded queue, so parsing overlaps with a COPY in flight."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from reference.collector.loader import Batch, Loader

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
    """Runs Loader.load in a thread; the first error it meets is re-raised in the producer's next call."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.counters = WriterCounters()
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        """Queue batch for loading; blocks while the queue is full (back-pressure on the reader)."""
        self._raise_if_failed()
        while True:
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self) -> None:
        """Load everything queued, stop the thread, and re-raise its error if it had one."""
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.5)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise_if_failed()

    @property
    def queued(self) -> int:
        """Batches waiting."""
        return self._queue.qsize()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the database writer stopped: {self._error}") from self._error

    def _run(self) -> None:
        try:
            while True:
                batch = self._queue.get()
                if batch is _STOP:
                    return
                result = self.loader.load(batch)
                self.counters.rows_written += result.rows
                self.counters.rejected += result.rejected
                self.counters.batches += 1
        except BaseException as exc:
            log.exception("database writer failed")
            self._error = exc
