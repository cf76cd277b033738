"""An append-only journal of the raw bytes read from the FIFO, in segment files, trimmed once committed."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import stat
import time
import uuid
from pathlib import Path

from reference.lockfile import LockHeldError, acquire, release

log = logging.getLogger(__name__)

# A segment is removed once every byte in it is committed: 64 MiB keeps the number of files small at
# 100k lines/s (about one new segment every 1.5 s) while bounding the disk a committed backlog keeps.
SEGMENT_BYTES = 64 * 1024 * 1024
# With --journal-max-bytes, a segment is at most a quarter of the limit, so committed segments can be removed
# while the newest is still loading: the journal keeps taking bytes instead of stopping until all is loaded.
SEGMENTS_PER_LIMIT = 4
# ... but never smaller than this, so a small limit does not create a file per read.
MIN_SEGMENT_BYTES = 64 * 1024
# Default --journal-max-bytes: a 30 s database outage at the collector's measured peak (75k rows/s of ~450 B)
# takes about 1 GiB; four times that, and never the whole of a small disk unnoticed (ENOSPC is handled too).
DEFAULT_MAX_BYTES = 4 * 1024**3
# After ENOSPC the disk is tried again this often even when no trim freed space: another process may free some.
FULL_RETRY_S = 1.0
# A limit reached again and again (stop-and-go at full load) is logged at most this often.
FULL_LOG_EVERY_S = 10.0
SEGMENT_NAME = re.compile(r"^segment-(\d{20})\.log$")
ID_FILE = "journal-id"
LOCK_FILE = "lock"
# Logged lines live in the journal: only the collector's user may list, read or write it.
FOLDER_MODE = 0o700
FILE_MODE = 0o600
# Open flags of every file the journal creates: never through a symlink someone planted, never inherited.
CREATE_FLAGS = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# fallocate(2) modes from <linux/falloc.h>: free the blocks of a range, keeping the file's size and offsets.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
# Holes are punched in whole pages: a partial page would not free a block anyway.
HOLE_ALIGN = 4096
_libc = ctypes.CDLL(None, use_errno=True)


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free the disk blocks of [offset, offset+length) in fd; False where the filesystem cannot."""
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) == 0:
        return True
    log.debug("cannot punch a hole in the journal: %s", os.strerror(ctypes.get_errno()))
    return False


class JournalError(RuntimeError):
    """The journal folder is unusable."""


def private_folder(folder: Path) -> None:
    """Create folder with mode 0700 (its parents as usual), or check an existing one: ours, nobody else writes it."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, FOLDER_MODE)  # the umask can only take bits away: never more open than 0700
        st = os.stat(folder)
    except OSError as exc:
        raise JournalError(f"cannot create the journal folder {folder}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise JournalError(f"cannot create the journal folder {folder}: it exists and is not a folder")
    if st.st_uid != os.geteuid():
        raise JournalError(
            f"the journal folder {folder} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}): its owner can read and change the journal; use a folder of your own"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise JournalError(
            f"the journal folder {folder} has mode {mode:04o}: other users can add, replace or remove "
            f"its files; run `chmod 700 {folder}` (a new folder is created 0700)"
        )
    if mode & 0o055:
        log.warning(
            "the journal folder %s has mode %04o: other users can list or read logged lines; run `chmod 700 %s`",
            folder,
            mode,
            folder,
        )


def _write_new_file(path: Path, data: bytes) -> None:
    """Write data to a new file of mode 0600, atomically (a crash leaves the old state or the whole file)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | CREATE_FLAGS, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


class Journal:
    """Bytes at stream offsets 0, 1, 2...; each segment file is named after the offset of its first byte.

    Offsets keep growing across restarts: the database stores the offset up to which rows are committed,
    and on start the collector replays the journal from there. One collector at a time: the folder is locked.
    The journal takes no bytes while its disk is full or max_bytes are on disk (room() is 0): the bytes then
    wait in the pipe, and writers wait for room, until committed segments are trimmed.
    """

    def __init__(
        self, folder: str | os.PathLike[str], *, fsync: bool = False, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.folder = Path(folder)
        self.fsync = fsync
        self.max_bytes = max_bytes  # 0: no limit but the disk
        self.segment_bytes = SEGMENT_BYTES
        if max_bytes:
            self.segment_bytes = min(SEGMENT_BYTES, max(max_bytes // SEGMENTS_PER_LIMIT, MIN_SEGMENT_BYTES))
        private_folder(self.folder)
        try:
            self._lock_fd = acquire(self.folder / LOCK_FILE, f"the journal folder {self.folder}")
        except LockHeldError as exc:
            raise JournalError(str(exc)) from None
        self._full_since: float | None = None  # when the disk or the limit stopped the journal
        self._retry_at = 0.0
        self._last_full_log = -FULL_LOG_EVERY_S
        self._full_logged = False
        try:
            self._open_segments()
        except OSError as exc:
            release(self._lock_fd)
            raise JournalError(f"cannot open the journal in {self.folder}: {exc}") from exc

    def _open_segments(self) -> None:
        id_path = self.folder / ID_FILE
        if not id_path.exists():
            _write_new_file(id_path, (uuid.uuid4().hex + "\n").encode())
        self.id = id_path.read_text().strip()
        self._segments = sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := SEGMENT_NAME.match(p.name)))
        if not self._segments:
            self._segments = [0]
        last = self._segments[-1]
        self._fd = os.open(self._path(last), os.O_WRONLY | CREATE_FLAGS, FILE_MODE)
        self._segment_size = os.fstat(self._fd).st_size
        self._hole = 0  # bytes at the start of the open segment whose blocks were freed (unknown after a restart)
        self.end = last + self._segment_size

    @property
    def start(self) -> int:
        """Offset of the first byte still on disk."""
        return self._segments[0]

    @property
    def disk_bytes(self) -> int:
        """Bytes the segment files hold (the committed start of the open segment, punched out, not counted)."""
        return self.end - self.start - self._hole

    @property
    def full(self) -> bool:
        """True while the disk is full or max_bytes are on disk."""
        return self._full_since is not None

    def _path(self, offset: int) -> Path:
        return self.folder / f"segment-{offset:020d}.log"

    def room(self) -> int:
        """Bytes the journal takes now: 0 while the disk is full (until a trim or a retry) or at max_bytes."""
        if self._full_since is not None and time.monotonic() < self._retry_at:
            return 0
        if not self.max_bytes:
            return self.segment_bytes
        room = max(0, self.max_bytes - self.disk_bytes)
        if room == 0:
            self._stop(f"it holds {self.disk_bytes} bytes, --journal-max-bytes {self.max_bytes}")
        return room

    def _stop(self, why: str) -> None:
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
            self._full_logged = now >= self._last_full_log + FULL_LOG_EVERY_S
            if self._full_logged:
                self._last_full_log = now
                log.warning(
                    "journal %s is full (%s): not reading the FIFO, so writers wait; loading and trimming "
                    "go on, reading resumes when there is room",
                    self.folder,
                    why,
                )
        self._retry_at = now + FULL_RETRY_S

    def _resume(self) -> None:
        if self._full_since is not None:
            waited = time.monotonic() - self._full_since
            self._full_since = None
            if self._full_logged:
                log.warning("journal %s has room again after %.1f s: reading the FIFO", self.folder, waited)

    def splice_from(self, fifo_fd: int, max_bytes: int) -> int:
        """Move up to max_bytes from the pipe straight into the journal; return how many (0: none waiting, or full).

        splice(2) moves the bytes inside the kernel: at every instant they are either still in the pipe or
        already in the file, so a SIGKILL between reading and journaling cannot lose them. A full disk moves
        nothing (the kernel takes from the pipe only what it wrote): the bytes stay in the pipe.
        """
        want = min(max_bytes, self.room())
        if want <= 0:
            return 0
        try:
            self._rotate_if_full()
            want = min(want, self.segment_bytes - self._segment_size)
            n = os.splice(
                fifo_fd, self._fd, want, offset_dst=self._segment_size, flags=os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE
            )
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            self._stop(f"{os.strerror(exc.errno)} on its disk")
            return 0
        self._wrote(n)
        return n

    def append(self, data: bytes) -> int:
        """Append bytes that were already read; return how many were written (fewer when the disk is full)."""
        written = 0
        while written < len(data) and self.room() > 0:
            try:
                self._rotate_if_full()
                size = min(self.room(), self.segment_bytes - self._segment_size)
                n = os.pwrite(self._fd, data[written : written + size], self._segment_size)
            except OSError as exc:
                if exc.errno not in DISK_FULL_ERRNOS:
                    raise
                self._stop(f"{os.strerror(exc.errno)} on its disk")
                break
            self._wrote(n)
            written += n
        return written

    def _wrote(self, n: int) -> None:
        self._segment_size += n
        self.end += n
        if n:
            self._resume()
            if self.fsync:
                os.fdatasync(self._fd)

    def _rotate_if_full(self) -> None:
        if self._segment_size >= self.segment_bytes:
            self._new_segment()

    def _new_segment(self) -> None:
        """Start an empty segment at the end offset (the new file exists before the old one is let go)."""
        fd = os.open(self._path(self.end), os.O_WRONLY | os.O_EXCL | CREATE_FLAGS, FILE_MODE)
        os.close(self._fd)
        self._fd = fd
        self._segments.append(self.end)
        self._segment_size = 0
        self._hole = 0
        if self.fsync:
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the new file's name must survive a power loss too
            finally:
                os.close(dir_fd)

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Up to max_bytes from offset, never across a segment boundary (b"" at the end)."""
        if offset < self.start:
            raise JournalError(f"offset {offset} was trimmed already (the journal starts at {self.start})")
        index = max(i for i, s in enumerate(self._segments) if s <= offset)
        segment = self._segments[index]
        limit = (self._segments[index + 1] if index + 1 < len(self._segments) else self.end) - offset
        if limit <= 0:
            return b""
        with open(self._path(segment), "rb") as f:
            f.seek(offset - segment)
            return f.read(min(max_bytes, limit))

    def ends_with_newline(self) -> bool:
        """True when the journal is empty or its last byte is a newline (no unfinished line at its end)."""
        if self.end == self.start:
            return True
        return self.read(self.end - 1, 1) == b"\n"

    def trim(self, committed: int) -> None:
        """Remove segments whose every byte lies below the committed offset.

        While the journal is full, the committed part of the open segment goes too (a hole is punched, or a new,
        empty segment takes its place once all of it is committed), so a journal smaller than one segment does
        not stay full for good.
        """
        trimmed = False
        while len(self._segments) > 1 and self._segments[1] <= committed:
            self._path(self._segments.pop(0)).unlink(missing_ok=True)
            trimmed = True
        # At the limit but not yet marked full (the write that reached it asked for room before it): the same, or a
        # journal filled to the byte and then all committed would wait for a trim that no commit brings.
        full = self.full or 0 < self.max_bytes <= self.disk_bytes
        if full and committed >= self.end and self._segment_size > 0:
            try:
                self._new_segment()
            except OSError as exc:  # no inode left for the new file: the next trim tries again
                log.debug("cannot start a new journal segment: %s", exc)
            else:
                self._path(self._segments.pop(0)).unlink(missing_ok=True)
                trimmed = True
        elif full and len(self._segments) == 1:
            # A line cut by the full disk keeps the open segment from being committed to its end: free its
            # committed start instead (offsets do not move; a restart replays from the committed offset).
            hole = (committed - self.start) // HOLE_ALIGN * HOLE_ALIGN
            if hole > self._hole and punch_hole(self._fd, 0, hole):
                self._hole = hole
                trimmed = True
        if trimmed and self.full:
            self._retry_at = 0.0  # there may be room now: try at once

    def close(self) -> None:
        """Close the open segment and release the folder's lock."""
        os.close(self._fd)
        release(self._lock_fd)
