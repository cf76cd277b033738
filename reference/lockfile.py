"""An exclusive flock on a small file that holds the holder's pid, so a second process can name the first."""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

# Only the owner reads or writes a lock file: another user must not be able to hold it open (and with it the lock).
LOCK_FILE_MODE = 0o600
# A pid and a newline fit in this many bytes.
PID_BYTES = 32


class LockHeldError(RuntimeError):
    """Another process holds the lock, or the lock file cannot be used."""


def acquire(path: str | os.PathLike[str], what: str) -> int:
    """Lock path (created 0600, never through a symlink) for `what`; return the descriptor that holds the lock.

    The lock lasts as long as the descriptor is open, so a crash (even SIGKILL) releases it: no stale locks.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, LOCK_FILE_MODE)
    except OSError as exc:
        raise LockHeldError(
            f"cannot open the lock file {path} for {what}: {exc.strerror}; "
            "remove it if it is a symbolic link, or check the folder's permissions"
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise LockHeldError(
            f"the lock file {path} for {what} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}): someone else may be holding it; remove it"
        )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, PID_BYTES, 0).decode(errors="replace").strip() or "unknown (it is just starting)"
        os.close(fd)
        raise LockHeldError(
            f"{what} is in use by another collector (pid {holder}; lock file {path}); stop that "
            "collector first, or give this one its own"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # a full disk: the lock holds anyway, only the pid in the message is missing
        log.debug("cannot write the pid into %s: %s", path, exc)
    return fd


def release(fd: int) -> None:
    """Give the lock up (closing the descriptor releases it)."""
    os.close(fd)
