"""An append-only journal of the raw bytes read from the FIFO, in segment files, trimmed once committed."""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

# A segment is removed once every byte in it is committed: 64 MiB keeps the number of files small at
# 100k lines/s (about one new segment every 1.5 s) while bounding the disk a committed backlog keeps.
SEGMENT_BYTES = 64 * 1024 * 1024
SEGMENT_NAME = re.compile(r"^segment-(\d{20})\.log$")
ID_FILE = "journal-id"


class JournalError(RuntimeError):
    """The journal folder is unusable."""


class Journal:
    """Bytes at stream offsets 0, 1, 2...; each segment file is named after the offset of its first byte.

    Offsets keep growing across restarts: the database stores the offset up to which rows are committed,
    and on start the collector replays the journal from there.
    """

    def __init__(self, folder: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.folder = Path(folder)
        self.fsync = fsync
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the journal folder {self.folder}: {exc}") from exc
        id_path = self.folder / ID_FILE
        if not id_path.exists():
            id_path.write_text(uuid.uuid4().hex + "\n")
        self.id = id_path.read_text().strip()
        self._segments = sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := SEGMENT_NAME.match(p.name)))
        if not self._segments:
            self._segments = [0]
            self._path(0).touch()
        last = self._segments[-1]
        self._fd = os.open(self._path(last), os.O_WRONLY | os.O_CLOEXEC)
        self._segment_size = os.fstat(self._fd).st_size
        self.end = last + self._segment_size

    @property
    def start(self) -> int:
        """Offset of the first byte still on disk."""
        return self._segments[0]

    def _path(self, offset: int) -> Path:
        return self.folder / f"segment-{offset:020d}.log"

    def splice_from(self, fifo_fd: int, max_bytes: int) -> int:
        """Move up to max_bytes from the pipe straight into the journal; return how many (0: none waiting).

        splice(2) moves the bytes inside the kernel: at every instant they are either still in the pipe or
        already in the file, so a SIGKILL between reading and journaling cannot lose them.
        """
        self._rotate_if_full()
        try:
            n = os.splice(fifo_fd, self._fd, max_bytes, offset_dst=self._segment_size,
                          flags=os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE)
        except BlockingIOError:
            return 0
        self._segment_size += n
        self.end += n
        if n and self.fsync:
            os.fdatasync(self._fd)
        return n

    def append(self, data: bytes) -> None:
        """Append bytes that were already read (used by tests and by readers that cannot splice)."""
        self._rotate_if_full()
        os.pwrite(self._fd, data, self._segment_size)
        self._segment_size += len(data)
        self.end += len(data)
        if self.fsync:
            os.fdatasync(self._fd)

    def _rotate_if_full(self) -> None:
        if self._segment_size < SEGMENT_BYTES:
            return
        os.close(self._fd)
        self._segments.append(self.end)
        self._fd = os.open(self._path(self.end), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._segment_size = 0
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

    def trim(self, committed: int) -> None:
        """Remove segments whose every byte lies below the committed offset."""
        while len(self._segments) > 1 and self._segments[1] <= committed:
            self._path(self._segments.pop(0)).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the open segment."""
        os.close(self._fd)
