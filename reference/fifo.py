"""Linux FIFO primitives shared by the emitter, the collector and the harness."""

from __future__ import annotations

import array
import fcntl
import os
import select
import stat
import termios
from pathlib import Path

# Values from <linux/fcntl.h>; Python's fcntl module exposes them since 3.10, the fallback keeps older builds honest.
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)

# Largest write POSIX guarantees to be atomic on a pipe: 4,096 on Linux (see docs/fifo-facts.md).
PIPE_BUF = select.PIPE_BUF

# A new pipe holds 16 pages: 65,536 bytes on x86_64 and arm64 with 4 KiB pages.
DEFAULT_PIPE_CAPACITY = 65_536

PIPE_MAX_SIZE_PATH = Path("/proc/sys/fs/pipe-max-size")

# Owner and group may read and write; others get nothing: whoever can write the FIFO can write log rows.
DEFAULT_FIFO_MODE = 0o660


class NotAFifoError(FileExistsError):
    """A path that should be a FIFO exists but is something else."""


class FifoPathError(OSError):
    """The FIFO cannot be created where it was asked for."""


def describe_kind(mode: int) -> str:
    """Name the file type of an lstat mode in words a user recognises."""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a FIFO"


def ensure_fifo(path: str | os.PathLike[str], mode: int = DEFAULT_FIFO_MODE) -> Path:
    """Create the FIFO at path with mode, or accept an existing FIFO; refuse anything else."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            os.mkfifo(path, mode)
        except FileNotFoundError:
            raise FifoPathError(f"cannot create the FIFO {path}: the folder {path.parent} does not exist; "
                                "create it or choose another path") from None
        except PermissionError:
            raise FifoPathError(f"cannot create the FIFO {path}: no permission to write in {path.parent}; "
                                "choose another path or run as a user who may") from None
        # mkfifo applies the umask; chmod makes the mode exactly what was asked for.
        os.chmod(path, mode)
        return path
    if not stat.S_ISFIFO(st.st_mode):
        raise NotAFifoError(
            f"{path} exists and is {describe_kind(st.st_mode)}, not a FIFO; "
            f"remove it or choose another path (a FIFO is created there when the path is free)"
        )
    return path


def pipe_max_size() -> int:
    """The ceiling an unprivileged F_SETPIPE_SZ may ask for (/proc/sys/fs/pipe-max-size)."""
    try:
        return int(PIPE_MAX_SIZE_PATH.read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_PIPE_CAPACITY


def get_pipe_size(fd: int) -> int:
    """The capacity in bytes of the pipe behind fd."""
    return fcntl.fcntl(fd, F_GETPIPE_SZ)


def set_pipe_size(fd: int, size: int) -> int:
    """Ask the kernel for a pipe capacity of size bytes; return what it granted (it rounds up to pages)."""
    return fcntl.fcntl(fd, F_SETPIPE_SZ, size)


def bytes_waiting(fd: int) -> int:
    """How many unread bytes the pipe behind fd holds (FIONREAD)."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return buf[0]
