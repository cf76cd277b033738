"""Read a FIFO in large chunks without ever seeing EOF when writers come and go."""

from __future__ import annotations

import logging
import os
import select
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from reference.fifo import (
    FifoPathError,
    bytes_waiting,
    describe_kind,
    get_pipe_size,
    open_fifo_for_reading,
    pipe_max_size,
    set_pipe_size,
)
from reference.lockfile import LockHeldError, acquire, release

log = logging.getLogger(__name__)

# One read takes at most this much: larger than any pipe capacity up to pipe-max-size (1 MiB), so a full
# pipe is emptied in one system call.
READ_CHUNK_BYTES = 1024 * 1024
# How often the reader checks that the FIFO's path still leads to the FIFO it reads: a removed or replaced
# FIFO is noticed within this long, for the cost of one lstat a second.
PATH_CHECK_S = 1.0
# A FIFO that was removed or replaced is read until its last writer closes it; lines are handed over whole,
# and at most this much is held back waiting for a newline (a longer unfinished line is cut here).
RETIRED_BUFFER_BYTES = READ_CHUNK_BYTES


class FifoBusyError(FifoPathError):
    """Another collector reads this FIFO already."""


def lock_path(fifo: str | os.PathLike[str]) -> Path:
    """The lock file beside the FIFO: one reader per FIFO, since two would split lines between them."""
    fifo = Path(fifo)
    return fifo.with_name(fifo.name + ".lock")


@dataclass
class _Retired:
    """A FIFO no longer at the path, read until its last writer is gone."""

    fd: int
    buffer: bytearray = field(default_factory=bytearray)
    eof: bool = False


class FifoReader:
    """The read end of the FIFO, plus a write end of our own.

    Holding a write end means read() never returns EOF when the last writer closes, so short-lived writers
    cannot make the collector miss lines between a close and a reopen (syslog-ng opens its pipe source
    O_RDWR for the same reason). When the path stops leading to this FIFO (removed, or replaced), a new FIFO
    is created there and the old one is read on until its writers have closed it.
    """

    def __init__(self, path: str, *, mode: int, pipe_size: int | None = None) -> None:
        self.path = str(path)
        self.mode = mode
        self.pipe_size = pipe_size
        # O_NONBLOCK on the read open: it returns at once instead of waiting for a writer.
        self.fd = open_fifo_for_reading(self.path, mode)
        try:
            self._lock = acquire(lock_path(self.path), f"the FIFO {self.path}")
        except LockHeldError as exc:
            os.close(self.fd)
            raise FifoBusyError(str(exc)) from None
        self._retired: list[_Retired] = []
        self._give_back = b""
        self._primary_aligned = True  # the last byte handed out from the current FIFO ended a line
        self._next_check = time.monotonic() + PATH_CHECK_S
        self._reported: tuple[int, int] | None = None  # the foreign file at the path already logged
        self._adopt(self.fd)

    def _adopt(self, fd: int) -> None:
        """Make fd the FIFO read from now on, with a write end of our own on the very same inode."""
        self.fd = fd
        # Through /proc/self/fd, not the path: the path may lead elsewhere by now.
        self._keepalive = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if self.pipe_size:
            self._resize(self.pipe_size)
        self.capacity = get_pipe_size(self.fd)
        st = os.fstat(fd)
        self._inode = (st.st_dev, st.st_ino)
        self._poller = select.poll()
        for f in (self.fd, *(r.fd for r in self._retired)):
            self._poller.register(f, select.POLLIN)

    def _resize(self, size: int) -> None:
        try:
            granted = set_pipe_size(self.fd, size)
        except PermissionError:
            ceiling = pipe_max_size()
            log.warning("pipe size %d exceeds pipe-max-size %d for this user; using %d", size, ceiling, ceiling)
            granted = set_pipe_size(self.fd, ceiling)
        log.info("pipe capacity set to %d bytes", granted)

    def check_path(self) -> None:
        """At most every PATH_CHECK_S: if the path no longer leads to our FIFO, recreate it and retire the old one."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + PATH_CHECK_S
        try:
            st: os.stat_result | None = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == self._inode:
            return
        if st is not None and not stat.S_ISFIFO(st.st_mode):
            if self._reported != (st.st_dev, st.st_ino):
                self._reported = (st.st_dev, st.st_ino)
                log.error(
                    "%s was replaced by %s: writers that open the path now write there, not to the collector; "
                    "remove it and the collector creates the FIFO again (it reads the old one meanwhile)",
                    self.path,
                    describe_kind(st.st_mode),
                )
            return
        what = "removed" if st is None else "replaced by another FIFO"
        try:
            fd = open_fifo_for_reading(self.path, self.mode)
        except (FifoPathError, OSError) as exc:
            if self._reported != (0, 0):
                self._reported = (0, 0)
                log.error("the FIFO %s was %s and cannot be taken over: %s", self.path, what, exc)
            return
        self._reported = None
        log.warning(
            "the FIFO %s was %s while being read: reading the FIFO now at the path, and the old one until "
            "its last writer closes it",
            self.path,
            what,
        )
        os.close(self._keepalive)  # from now on the old FIFO reports EOF once its writers are gone
        self._retired.append(_Retired(self.fd))
        self._adopt(fd)
        self._primary_aligned = True  # a new FIFO starts at a line boundary

    def _fill_retired(self) -> None:
        for r in self._retired:
            while not r.eof and len(r.buffer) < RETIRED_BUFFER_BYTES:
                try:
                    chunk = os.read(r.fd, RETIRED_BUFFER_BYTES - len(r.buffer))
                except BlockingIOError:
                    break
                if not chunk:
                    r.eof = True
                r.buffer += chunk

    def take_retired(self, *, aligned: bool = True) -> bytes:
        """Whole lines read from retired FIFOs, to be handed on only where a line ends (aligned)."""
        if self._give_back:
            data, self._give_back = self._give_back, b""
            return data
        if not self._retired or not aligned:
            return b""
        self._fill_retired()
        r = self._retired[0]
        end = len(r.buffer) if r.eof or len(r.buffer) >= RETIRED_BUFFER_BYTES else r.buffer.rfind(b"\n") + 1
        data = bytes(r.buffer[:end])
        del r.buffer[:end]
        if data and not data.endswith(b"\n"):
            data += b"\n"  # an unfinished line stays one (rejected) line instead of gluing onto the next
        if r.eof and not r.buffer:
            self._poller.unregister(r.fd)
            os.close(r.fd)
            self._retired.pop(0)
            log.warning("the old FIFO of %s has no writers left and is closed", self.path)
        return data

    @property
    def retiring(self) -> bool:
        """True while a removed or replaced FIFO is still read."""
        return bool(self._retired or self._give_back)

    def give_back(self, data: bytes) -> None:
        """Return bytes take_retired handed out but the caller could not keep (a full journal)."""
        self._give_back = data + self._give_back

    def wait(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for data; True when some is there."""
        self.check_path()
        return bool(self._poller.poll(max(0, int(timeout_s * 1000))))

    def read(self, timeout_s: float) -> bytes:
        """Wait up to timeout_s for data and return what is there (b"" when nothing came)."""
        if not self.wait(timeout_s):
            return b""
        retired = self.take_retired(aligned=self._primary_aligned)
        if retired:
            return retired
        # Ask for what the pipe holds (FIONREAD), not READ_CHUNK_BYTES: os.read allocates the size asked for, and
        # 1 MiB is served by mmap, faulted in, shrunk (mremap) and unmapped on every read. Reading a full 64 KiB
        # pipe cost 119 us of CPU that way and 54 us with the size asked for (one ioctl more), 0.8 -> 0.36 us a
        # 430-byte line.
        try:
            chunk = os.read(self.fd, min(max(bytes_waiting(self.fd), 1), READ_CHUNK_BYTES))
        except BlockingIOError:
            return b""
        if chunk:
            self._primary_aligned = chunk.endswith(b"\n")
        return chunk

    def read_available(self) -> bytes:
        """Return what the pipe holds right now without waiting (used to drain at shutdown)."""
        chunks = []
        remaining = bytes_waiting(self.fd)
        while remaining > 0:
            try:
                chunk = os.read(self.fd, min(remaining, READ_CHUNK_BYTES))
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if data:
            self._primary_aligned = data.endswith(b"\n")
        return data + self.take_retired(aligned=self._primary_aligned)

    def waiting(self) -> int:
        """Unread bytes in the pipe (FIONREAD)."""
        return bytes_waiting(self.fd)

    def close(self) -> None:
        """Close both ends, any retired FIFO, and release the lock."""
        for fd in (self.fd, self._keepalive, *(r.fd for r in self._retired)):
            try:
                os.close(fd)
            except OSError:
                log.debug("fd %d already closed", fd)
        release(self._lock)
