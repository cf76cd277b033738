"""Read a FIFO in large chunks without ever seeing EOF when writers come and go."""

from __future__ import annotations

import contextlib
import errno
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
    exchange_paths,
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
# A stopping collector waits this long for the writers that have the FIFO open to close it, reading on, while
# writers that open the path meanwhile meet a stand-in FIFO and wait for the next collector: an open-write-close
# writer (`echo line > fifo`) holds the FIFO for micro- to milliseconds, so a second covers one descheduled on a
# loaded machine; a writer that keeps the FIFO open costs a stop at most this much. 0 turns the wait off.
WRITERS_GRACE_S = 1.0


class FifoBusyError(FifoPathError):
    """Another collector reads this FIFO already."""


def stand_in_path(fifo: str | os.PathLike[str]) -> Path:
    """Where a stopping collector parks a FIFO beside the real one (see FifoReader.close_door)."""
    fifo = Path(fifo)
    return fifo.with_name(f".{fifo.name}.stand-in")


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
    parked: Path | None = None  # a stand-in taken over at start: removed from this path once read to the end
    parked_inode: tuple[int, int] | None = None


class FifoReader:
    """The read end of the FIFO, plus a write end of our own.

    Holding a write end means read() never returns EOF when the last writer closes, so short-lived writers
    cannot make the collector miss lines between a close and a reopen (syslog-ng opens its pipe source
    O_RDWR for the same reason). When the path stops leading to this FIFO (removed, or replaced), a new FIFO
    is created there and the old one is read on until its writers have closed it.

    At a stop, close_door swaps a stand-in FIFO (no reader) in at the path, so that only the writers that have
    this FIFO open still reach it; it reports EOF once they have closed it, and only then is it closed: no write
    that succeeded is freed with the pipe. A stand-in left beside the path is read first by the next collector.
    """

    def __init__(self, path: str, *, mode: int, pipe_size: int | None = None) -> None:
        self.path = str(path)
        self.mode = mode
        self.pipe_size = pipe_size
        try:
            self._lock = acquire(lock_path(self.path), f"the FIFO {self.path}")
        except LockHeldError as exc:
            raise FifoBusyError(str(exc)) from None
        self._retired: list[_Retired] = []
        self._stand_in: Path | None = None  # where this FIFO is parked while a stop waits for its writers
        self._door_closed = False
        try:
            self._take_over_stand_in()
            # O_NONBLOCK on the read open: it returns at once instead of waiting for a writer.
            fd = open_fifo_for_reading(self.path, mode)
        except BaseException:
            for r in self._retired:
                os.close(r.fd)
            release(self._lock)
            raise
        self._give_back = b""
        self._primary_aligned = True  # the last byte handed out from the current FIFO ended a line
        self._next_check = time.monotonic() + PATH_CHECK_S
        self._reported: tuple[int, int] | None = None  # the foreign file at the path already logged
        self._adopt(fd)

    def _take_over_stand_in(self) -> None:
        """Read the stand-in FIFO the last stop left beside the path, before the path's own FIFO.

        Writers that opened it during that stop wait in open() until it has a reader: opening it lets them go on,
        and their lines are read like a retired FIFO's. It is removed only once read to the end, so a start that
        fails after this point leaves it (and the bytes in it) for the next one.
        """
        parked = stand_in_path(self.path)
        if not os.path.lexists(parked):
            return
        try:
            fd = open_fifo_for_reading(parked, self.mode)
        except (FifoPathError, OSError) as exc:
            log.error("%s is not a stand-in this collector can read; it is left alone (%s)", parked, exc)
            return
        st = os.fstat(fd)
        self._retired.append(_Retired(fd, parked=parked, parked_inode=(st.st_dev, st.st_ino)))
        log.info("reading %s, the stand-in of the last stop, until its last writer closes it", parked)

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
        if now < self._next_check or self._door_closed:
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
            if r.parked is None:
                log.warning("the old FIFO of %s has no writers left and is closed", self.path)
            else:
                _remove_if_same(r.parked, r.parked_inode)
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
        # A retired FIFO is looked at even without an event: one that never had a writer since we opened it (a
        # stand-in nobody used) reports no POLLHUP, only a read says it is at its end.
        if not self.wait(timeout_s) and not self._retired:
            return b""
        retired = self.take_retired(aligned=self._primary_aligned)
        if retired or self.fd < 0:
            return retired
        try:
            chunk = os.read(self.fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return b""
        if chunk:
            self._primary_aligned = chunk.endswith(b"\n")
        return chunk

    def read_available(self) -> bytes:
        """Return what the pipe holds right now without waiting (used to drain at shutdown)."""
        chunks = []
        remaining = self.waiting()
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
        """Unread bytes in the pipe (FIONREAD); 0 once a stop closed it."""
        return bytes_waiting(self.fd) if self.fd >= 0 else 0

    def close_door(self) -> bool:
        """Let only the writers that have this FIFO open reach it from now on; False when that cannot be done.

        A stand-in FIFO with this one's owner and mode takes its place at the path in one step (renameat2), so a
        writer opening the path meets either FIFO, never nothing (`echo line > fifo` would create a regular
        file); with no reader, the stand-in makes writers wait (or fail with ENXIO) as when no collector runs.
        """
        try:
            st: os.stat_result | None = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == self._inode:
            parked = stand_in_path(self.path)
            try:
                _make_stand_in(parked, self.fd, st)
            except OSError as exc:
                log.warning(
                    "cannot prepare a stand-in FIFO at %s (%s): writes that arrive between the final read and "
                    "the close can be lost",
                    parked,
                    exc.strerror,
                )
                return False
            try:
                exchange_paths(parked, self.path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(parked)
                log.warning(
                    "cannot swap a stand-in FIFO in at %s (%s): writes that arrive between the final read and "
                    "the close can be lost",
                    self.path,
                    exc.strerror,
                )
                return False
            self._stand_in = parked
        # Else the FIFO was removed or replaced already: no new writer reaches it either.
        os.close(self._keepalive)  # from now on EOF comes once the writers that have it open are done
        self._keepalive = -1
        self._door_closed = True
        return True

    def writers_gone(self) -> bool:
        """True once the door is closed, every writer has closed this FIFO and nothing is left to read."""
        if self.fd < 0:
            return True
        if not self._door_closed or self._retired or self._give_back:
            return False
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        hung_up = any(events & select.POLLHUP for _, events in poller.poll(0))
        return hung_up and bytes_waiting(self.fd) == 0  # in this order: bytes written before the last close

    def open_door(self) -> None:
        """End a stop's wait: the FIFO goes back to the path, the stand-in beside it, for the next collector.

        A drained FIFO is closed first, so it is back with no reader (writers wait, as for any stopped collector)
        and nothing can be written into it and freed. One that writers still hold stays open for the caller's
        final read: what they write after it waits in the pipe while one of them keeps it open (the harness's
        client and the emitter do), for the next collector. The inode never changes for good, so hard links, bind
        mounts and ACLs of the FIFO keep working; the stand-in is read by the next collector (writers that
        opened it during the stop wait in open() until then).
        """
        parked, self._stand_in = self._stand_in, None
        if parked is None:
            return
        if self.writers_gone():
            self._poller.unregister(self.fd)
            os.close(self.fd)
            self.fd = -1
        try:
            exchange_paths(parked, self.path)
        except OSError as exc:
            log.warning(
                "cannot put the FIFO back at %s (%s): it stays at %s, where the next collector reads it first",
                self.path,
                exc.strerror,
                parked,
            )

    def close(self) -> None:
        """Close both ends, any retired FIFO, and release the lock."""
        self.open_door()
        for fd in (self.fd, self._keepalive, *(r.fd for r in self._retired)):
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                log.debug("fd %d already closed", fd)
        self._keepalive = -1
        release(self._lock)


def _remove_if_same(path: Path, inode: tuple[int, int] | None) -> None:
    """Remove path if it is still the file with inode (not one put there since)."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == inode:
            os.unlink(path)
    except OSError as exc:
        log.warning("cannot remove %s (%s); the next collector reads it first", path, exc.strerror)


def _make_stand_in(parked: Path, like_fd: int, like: os.stat_result) -> None:
    """Create a FIFO at parked with the owner, mode and ACLs of like, set through its descriptor (no path race)."""
    os.mkfifo(parked, 0o600)
    try:
        fd = os.open(parked, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            if (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, like.st_uid, like.st_gid)
                except PermissionError:
                    raise PermissionError(
                        errno.EPERM,
                        f"the FIFO belongs to uid {like.st_uid} gid {like.st_gid}, and only root may give a new "
                        "FIFO to another user or a group it is not in",
                    ) from None
            os.fchmod(fd, stat.S_IMODE(like.st_mode))
            _copy_acls(like_fd, fd)
        finally:
            os.close(fd)  # before the swap: the stand-in must have no reader, so writers wait instead of writing
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(parked)
        raise


def _copy_acls(source_fd: int, target_fd: int) -> None:
    """Give target the POSIX ACLs of source, so the writers an ACL admits meet the same rights on the stand-in."""
    try:
        names = os.listxattr(source_fd)
    except OSError:
        return  # a file system without extended attributes has no ACLs either
    for name in names:
        if name.startswith("system.posix_acl"):
            os.setxattr(target_fd, name, os.getxattr(source_fd, name))
