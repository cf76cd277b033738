"""A gevent-cooperative FIFO writer that reports every write to Locust as a request."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import gevent
import gevent.event
import gevent.lock
import gevent.os
import gevent.socket

from reference.fifo import PIPE_BUF, write_whole
from reference.fifo_writer import open_fifo_for_writing

# Pause between non-blocking open attempts while the FIFO has no reader (ENXIO): short enough to start
# writing within ~20 ms of the collector opening, long enough not to spin a core.
OPEN_RETRY_S = 0.02
# An open that finds no reader for this long is reported as a failed request, and the user tries again.
OPEN_TIMEOUT_S = 10.0


class FifoOpenTimeout(ConnectionError):
    """No reader opened the FIFO in time."""


class FifoFull(BlockingIOError):
    """A drop-mode write found the pipe full (EAGAIN) and was dropped."""


@dataclass
class SourceCounts:
    """What one source (one Locust user) generated, delivered and dropped; cumulative, sent to the master."""

    generated: int = 0
    sent: int = 0
    dropped: int = 0
    # Hostile lines (scenarios/corpus/) that reached the pipe, whole or cut short by the stop: each comes out as
    # exactly one rejected line. They are not in generated or sent, which count good lines only.
    bad_sent: int = 0
    # Lines whose write was cut short (EPIPE or the end of the run after part of it was in the pipe).
    interrupted: int = 0
    bytes_sent: int = 0
    # Bytes of interrupted writes that did reach the pipe (they come out as a fragment or a torn line).
    partial_bytes: int = 0
    epipe: int = 0
    eagain: int = 0
    blocked_s: float = 0.0
    # (seq, length) of lines above PIPE_BUF, recorded when byte accounting is on: they are the ones that tear.
    big_lines: list[tuple[int, int]] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain data for a Locust message."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SourceCounts:
        """Back from a Locust message (msgpack turns the (seq, length) pairs into lists)."""
        counts = cls(**{k: v for k, v in data.items() if k != "big_lines"})
        counts.big_lines = [(int(seq), int(length)) for seq, length in data.get("big_lines", ())]
        return counts


class WriteGate:
    """Shared by the users of one process: ordinary writes run together, a write above PIPE_BUF runs alone.

    A write above PIPE_BUF is not atomic: the writes of others would land between its pieces and glue onto
    it. With the gate, the hostile over-limit line reaches the pipe in one piece (as far as this process goes),
    so each bad line stays exactly one rejected line. A long write cut short by the stop leaves an unfinished
    line in the pipe: the gate then stays shut, since anything written after it would be glued onto it.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Open the gate for a new run."""
        self._open = gevent.event.Event()
        self._open.set()
        self._idle = gevent.event.Event()
        self._idle.set()
        self._active = 0
        self._alone = gevent.lock.Semaphore()

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Around a write of at most PIPE_BUF: waits while a long write runs."""
        self._open.wait()
        self._active += 1  # no yield between the wait and this: a long write cannot slip in between
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """Around a write above PIPE_BUF: waits for the writes in flight, holds new ones back until done."""
        with self._alone:
            self._open.clear()
            stopped = False
            try:
                self._idle.wait()
                yield
            except gevent.GreenletExit:
                stopped = True  # the stop cut the write short: the gate stays shut, see the class docstring
                raise
            finally:
                if not stopped:
                    self._open.set()


class FifoClient:
    """Write end of a FIFO for one Locust user; never blocks other greenlets, never raises out of a task."""

    def __init__(
        self,
        environment,
        path: str,
        counts: SourceCounts,
        *,
        drop_when_full: bool = False,
        reopen_per_write: bool = False,
        gate: WriteGate | None = None,
    ) -> None:
        self.environment = environment
        self.path = path
        self.counts = counts
        self.drop_when_full = drop_when_full
        self.reopen_per_write = reopen_per_write
        self.gate = gate
        self.fd: int | None = None
        self._broken = False  # EPIPE seen: reopen before the next write, keeping this fd meanwhile
        self._progress = 0

    def _open(self) -> None:
        """Open with O_NONBLOCK, retrying ENXIO (no reader yet) with a cooperative sleep.

        After EPIPE the old descriptor stays open until the new one is there: while any write end is open,
        the kernel keeps the bytes the dead reader left in the pipe, and the next reader gets them.
        """
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while True:
            try:
                fd = open_fifo_for_writing(self.path)  # refuses a path that is no FIFO anymore
                self.close()
                self.fd, self._broken = fd, False
                return
            except OSError as exc:
                if exc.errno not in (errno.ENXIO, errno.ENOENT) or time.monotonic() >= deadline:
                    if exc.errno in (errno.ENXIO, errno.ENOENT):
                        raise FifoOpenTimeout(
                            f"no reader opened {self.path} within {OPEN_TIMEOUT_S:.0f} s (is the collector running?)"
                        ) from exc
                    raise
                gevent.sleep(OPEN_RETRY_S)

    def close(self) -> None:
        """Close the write end."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def write(self, lines: list[bytes], name: str, *, bad: int = 0) -> bool:
        """Write lines as one write and fire one Locust request per attempt; True when they are in the pipe.

        A blocking-mode user that meets EPIPE (no reader) reports it, waits for a reader and sends the same
        lines again, so nothing is lost; a drop-mode user counts them as dropped. The first `bad` lines are
        hostile input: counted as bad_sent, never as sent, dropped or interrupted.
        """
        data = b"".join(lines)
        self._progress = 0  # a stop while waiting at the gate finds nothing of this write in the pipe
        gate = nullcontext() if self.gate is None else self.gate.alone() if len(data) > PIPE_BUF else self.gate.shared()
        try:
            with gate:
                while True:
                    delivered, exception, elapsed_ms = self._attempt(data, len(lines) - bad)
                    self.environment.events.request.fire(
                        request_type="fifo",
                        name=name,
                        response_time=elapsed_ms,
                        response_length=len(data) if delivered else 0,
                        exception=exception,
                        context={"lines": len(lines)},
                    )
                    if delivered or self.drop_when_full:
                        break
        except gevent.GreenletExit:
            # The run is stopping while this write waits: a write cut in the middle leaves a fragment that
            # the collector rejects; one that never started is simply not sent.
            self._count_undelivered(len(lines) - bad, bad)
            raise
        finally:
            if self.reopen_per_write:
                self.close()
        if delivered:
            self.counts.sent += len(lines) - bad
            self.counts.bad_sent += bad
            self.counts.bytes_sent += len(data)
        else:
            self._count_undelivered(len(lines) - bad, bad)
        return delivered

    def _count_undelivered(self, line_count: int, bad: int = 0) -> None:
        if self._progress:
            self.counts.interrupted += line_count
            self.counts.partial_bytes += self._progress
            self.counts.bad_sent += bad  # a bad line cut short is still one rejected (unfinished) line
        else:
            self.counts.dropped += line_count

    def _attempt(self, data: bytes, line_count: int) -> tuple[bool, BaseException | None, float]:
        started = time.perf_counter()
        exception: BaseException | None = None
        delivered = False
        self._progress = 0
        try:
            if self.fd is None or self._broken:
                self._open()
            delivered = self._write_all(data)
            if not delivered:
                exception = FifoFull(f"pipe full: {line_count} line(s) dropped")
        except BrokenPipeError as exc:
            self.counts.epipe += 1
            exception = exc
            self.counts.partial_bytes += self._progress  # a cut large write leaves its first bytes behind
            self._broken = True  # the next attempt reopens, which waits for a new reader
        except (FifoOpenTimeout, OSError) as exc:
            exception = exc
            if not self._broken:  # after EPIPE the old descriptor keeps the pipe's unread bytes alive: keep it
                self.close()
        return delivered, exception, (time.perf_counter() - started) * 1000

    def _write_all(self, data: bytes) -> bool:
        """Write every byte, yielding to other greenlets while the pipe is full; False if dropped whole."""
        fd = self.fd
        if fd is None:
            raise OSError(errno.EBADF, "the FIFO is not open")
        return write_whole(
            fd,
            data,
            wait=self._park,
            drop_when_full=self.drop_when_full,
            on_eagain=self._count_eagain,
            written=self._count_written,
        )

    def _park(self, fd: int) -> bool:
        """Park only this greenlet until the pipe has room (the hub polls the fd for us)."""
        waited = time.perf_counter()
        gevent.socket.wait_write(fd)
        self.counts.blocked_s += time.perf_counter() - waited
        if self.fd != fd:  # closed (or reopened) by another greenlet meanwhile
            raise OSError(errno.EBADF, "the FIFO is not open")
        return True

    def _count_eagain(self) -> None:
        self.counts.eagain += 1

    def _count_written(self, n: int) -> None:
        self._progress += n
