"""Read a FIFO in large chunks without ever seeing EOF when writers come and go."""

from __future__ import annotations

import logging
import os
import select

from reference.fifo import bytes_waiting, ensure_fifo, get_pipe_size, pipe_max_size, set_pipe_size

log = logging.getLogger(__name__)

# One read takes at most this much: larger than any pipe capacity up to pipe-max-size (1 MiB), so a full
# pipe is emptied in one system call.
READ_CHUNK_BYTES = 1024 * 1024


class FifoReader:
    """The read end of the FIFO, plus a write end of our own.

    Holding a write end means read() never returns EOF when the last writer closes, so short-lived writers
    cannot make the collector miss lines between a close and a reopen (syslog-ng opens its pipe source
    O_RDWR for the same reason).
    """

    def __init__(self, path: str, *, mode: int, pipe_size: int | None = None) -> None:
        self.path = str(ensure_fifo(path, mode))
        # O_NONBLOCK on the read open: it returns at once instead of waiting for a writer.
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._keepalive = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if pipe_size:
            self._resize(pipe_size)
        self.capacity = get_pipe_size(self.fd)
        self._poller = select.poll()
        self._poller.register(self.fd, select.POLLIN)

    def _resize(self, size: int) -> None:
        try:
            granted = set_pipe_size(self.fd, size)
        except PermissionError:
            ceiling = pipe_max_size()
            log.warning("pipe size %d exceeds pipe-max-size %d for this user; using %d", size, ceiling, ceiling)
            granted = set_pipe_size(self.fd, ceiling)
        log.info("pipe capacity set to %d bytes", granted)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for data; True when some is there."""
        return bool(self._poller.poll(max(0, int(timeout_s * 1000))))

    def read(self, timeout_s: float) -> bytes:
        """Wait up to timeout_s for data and return what is there (b"" when nothing came)."""
        if not self.wait(timeout_s):
            return b""
        try:
            return os.read(self.fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return b""

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
        return b"".join(chunks)

    def waiting(self) -> int:
        """Unread bytes in the pipe (FIONREAD)."""
        return bytes_waiting(self.fd)

    def close(self) -> None:
        """Close both ends."""
        for fd in (self.fd, self._keepalive):
            try:
                os.close(fd)
            except OSError:
                log.debug("fd %d already closed", fd)
