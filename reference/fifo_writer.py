"""Write whole lines into a FIFO, waiting out a full pipe or a missing reader, and count what happened."""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import time
from dataclasses import asdict, dataclass

from reference.fifo import NotAFifoError, describe_kind, write_whole

log = logging.getLogger(__name__)


def open_fifo_for_writing(path: str) -> int:
    """A non-blocking write descriptor of the FIFO at path; refuses a path that is no FIFO (anymore).

    Checked on the open descriptor, at every (re)open: a FIFO replaced by a regular file would otherwise take
    the lines into that file, with every write reported as delivered.
    """
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISFIFO(mode):
        os.close(fd)
        raise NotAFifoError(
            f"{path} is {describe_kind(mode)}, not a FIFO (was the FIFO removed or replaced?); "
            "nothing was written to it: point --fifo at the collector's FIFO"
        )
    return fd


# How often a writer with no reader checks whether one has appeared: a blocking writer sleeps in between,
# a non-blocking one drops (and counts) its lines in between. Either way no busy loop.
NO_READER_RECHECK_S = 0.05


@dataclass
class WriterStats:
    """What one writer did: lines and bytes delivered into the pipe, lines dropped, pipe events."""

    lines_sent: int = 0
    bytes_sent: int = 0
    lines_dropped: int = 0
    writes: int = 0
    epipe: int = 0
    eagain: int = 0
    blocked_seconds: float = 0.0

    def as_dict(self) -> dict:
        """The counters as a plain dict, times rounded to milliseconds."""
        out = asdict(self)
        out["blocked_seconds"] = round(self.blocked_seconds, 3)
        return out


class FifoWriter:
    """One write end of a FIFO.

    The descriptor is non-blocking so that the time spent waiting on a full pipe can be measured; in
    blocking mode the writer then waits with poll(), which is what a blocking write does inside the kernel.
    """

    def __init__(self, path: str, *, nonblocking: bool = False, should_stop=lambda: False) -> None:
        self.path = path
        self.nonblocking = nonblocking
        self.should_stop = should_stop
        self.stats = WriterStats()
        self.fd: int | None = None
        self._next_reader_check = 0.0

    def open(self) -> bool:
        """Open for writing; in blocking mode wait for a reader (or a stop request). False if none."""
        started = time.monotonic()
        waiting = False
        while True:
            try:
                fd = open_fifo_for_writing(self.path)
                break
            except OSError as exc:
                # ENOENT: the collector is recreating a removed FIFO; wait for it as for a reader.
                if exc.errno not in (errno.ENXIO, errno.ENOENT):
                    raise
            if self.nonblocking or self.should_stop():
                return False
            if not waiting:
                log.warning("waiting for a reader on %s (start the collector)", self.path)
                waiting = True
            # A non-blocking open polled every 50 ms, not a blocking open: that one cannot be interrupted
            # by SIGTERM or Ctrl-C (Python retries it after the handler runs).
            time.sleep(NO_READER_RECHECK_S)
        if waiting:
            self.stats.blocked_seconds += time.monotonic() - started
            log.warning("a reader opened %s; writing", self.path)
        # The old descriptor is closed only now: while any write end stays open, the pipe keeps the bytes
        # nobody has read yet, and a new reader gets them.
        self.close()
        self.fd = fd
        return True

    def close(self) -> None:
        """Close the descriptor if open."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def write_lines(self, lines: list[bytes]) -> bool:
        """Deliver lines as one write; True when they are in the pipe, False when they were dropped."""
        data = b"".join(lines) if len(lines) > 1 else lines[0]
        while True:
            if self.fd is None and not self._reopen():
                self.stats.lines_dropped += len(lines)
                return False
            try:
                delivered = self._write_all(data)
            except BrokenPipeError:
                self.stats.epipe += 1
                if self.nonblocking:
                    self.stats.lines_dropped += len(lines)
                    self._reopen()
                    return False
                # Blocking mode: wait for the next reader and send the same lines again, whole.
                if not self.open():
                    self.stats.lines_dropped += len(lines)  # stopped while no reader was there
                    return False
                continue
            if not delivered:
                self.stats.lines_dropped += len(lines)
                return False
            self.stats.writes += 1
            self.stats.lines_sent += len(lines)
            self.stats.bytes_sent += len(data)
            return True

    def _reopen(self) -> bool:
        """Try to get a write end again; a non-blocking writer checks at most every NO_READER_RECHECK_S."""
        if not self.nonblocking:
            return self.open()
        now = time.monotonic()
        if now < self._next_reader_check:
            return False
        self._next_reader_check = now + NO_READER_RECHECK_S
        return self.open()

    def _write_all(self, data: bytes) -> bool:
        """Write every byte of data; False only when a non-blocking writer found the pipe full before any byte."""
        fd = self.fd
        if fd is None:
            return False  # closed by a stop request: nothing of this write is sent
        # Blocking mode, or a large write already partly in the pipe, waits for room; a stop ends the wait.
        return write_whole(
            fd,
            data,
            wait=lambda _fd: self._wait_writable(),
            drop_when_full=self.nonblocking,
            on_eagain=self._count_eagain,
        )

    def _count_eagain(self) -> None:
        self.stats.eagain += 1

    def _wait_writable(self) -> bool:
        """Sleep in poll() until the pipe has room (True) or a stop is requested (False), counting the time."""
        if self.fd is None:
            return False
        started = time.monotonic()
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        try:
            while not poller.poll(int(NO_READER_RECHECK_S * 1000)):
                if self.should_stop():
                    return False
            return True
        finally:
            self.stats.blocked_seconds += time.monotonic() - started
