"""Linux FIFO primitives shared by the emitter, the collector and the harness."""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import os
import select
import stat
import termios
from collections.abc import Callable
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


# renameat2(2) flag from <linux/fs.h>: swap two paths in one step (Linux 3.15, glibc 2.28; tmpfs, ext4, xfs, btrfs).
RENAME_EXCHANGE = 1 << 1
AT_FDCWD = -100


class NotAFifoError(FileExistsError):
    """A path that should be a FIFO exists but is something else."""


class FifoPathError(OSError):
    """The FIFO cannot be created where it was asked for."""


class FifoPermissionError(FifoPathError):
    """An existing FIFO belongs to another user or lets more users in than --fifo-mode."""


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


def _create(path: Path, mode: int) -> bool:
    """mkfifo path unless something is there already; True when this call created it."""
    try:
        os.lstat(path)
        return False
    except FileNotFoundError:
        pass
    try:
        os.mkfifo(path, mode)
    except FileExistsError:
        return False  # someone else made it in between: checked like any existing FIFO
    except FileNotFoundError:
        raise FifoPathError(
            f"cannot create the FIFO {path}: the folder {path.parent} does not exist; create it or choose another path"
        ) from None
    except PermissionError:
        raise FifoPathError(
            f"cannot create the FIFO {path}: no permission to write in {path.parent}; "
            "choose another path or run as a user who may"
        ) from None
    return True


def _open_checked(path: Path) -> tuple[int, os.stat_result]:
    """Open path for reading without following a symlink and without waiting for a writer; refuse a non-FIFO.

    The path is looked at first (opening a device can have side effects), then the open descriptor is checked
    again: whatever replaced the path in between is what was opened, and it is what gets refused.
    """
    st = os.lstat(path)
    if stat.S_ISFIFO(st.st_mode):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise FifoPathError(f"cannot open the FIFO {path}: {exc.strerror}") from None
        st = os.fstat(fd)
        if stat.S_ISFIFO(st.st_mode):
            return fd, st
        os.close(fd)
    raise NotAFifoError(
        f"{path} exists and is {describe_kind(st.st_mode)}, not a FIFO; "
        f"remove it or choose another path (a FIFO is created there when the path is free)"
    )


def ensure_fifo(path: str | os.PathLike[str], mode: int = DEFAULT_FIFO_MODE) -> Path:
    """Create the FIFO at path with mode, or accept an existing FIFO; refuse anything else."""
    path = Path(path)
    created = _create(path, mode)
    fd, _ = _open_checked(path)
    try:
        if created:
            os.fchmod(fd, mode)  # mkfifo applied the umask; through the descriptor, never the path (symlink race)
    finally:
        os.close(fd)
    return path


def open_fifo_for_reading(path: str | os.PathLike[str], mode: int = DEFAULT_FIFO_MODE) -> int:
    """A non-blocking read descriptor of the FIFO at path, created with exactly mode when missing.

    An existing FIFO must belong to this user (or root) and allow no more than mode: a FIFO another user
    planted (in a shared folder, say) would let that user read the lines or forge rows.
    """
    path = Path(path)
    created = _create(path, mode)
    fd, st = _open_checked(path)
    try:
        if created and st.st_uid == os.geteuid():
            os.fchmod(fd, mode)
            st = os.fstat(fd)
        check_fifo_access(path, st, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_fifo_access(path: str | os.PathLike[str], st: os.stat_result, mode: int) -> None:
    """Refuse a FIFO owned by another user (root is fine) or with more permissions than mode."""
    if st.st_uid not in (os.geteuid(), 0):
        raise FifoPermissionError(
            f"the FIFO {path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}) or root: its owner "
            "can read the lines or give others access; remove it and let the collector create it"
        )
    extra = stat.S_IMODE(st.st_mode) & ~mode
    if extra:
        raise FifoPermissionError(
            f"the FIFO {path} has mode {stat.S_IMODE(st.st_mode):04o}, more than --fifo-mode {mode:04o} allows "
            f"(extra {extra:04o}): those users could read lines or forge rows; run `chmod {mode:o} {path}` or "
            "pass the --fifo-mode you mean"
        )


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


def write_whole(
    fd: int,
    data: bytes,
    *,
    wait: Callable[[int], bool],
    drop_when_full: bool = False,
    on_eagain: Callable[[], None] | None = None,
    written: Callable[[int], None] | None = None,
) -> bool:
    """Write every byte of data to a pipe; the one write loop of the emitter, the Locust client and the benchmark.

    On a full pipe (EAGAIN on a non-blocking descriptor: on_eagain is told) it calls wait(fd), which returns once
    the pipe has room
    (True) or gives up (False: the rest is not sent). With drop_when_full, a write of which no byte fitted is
    dropped whole instead. Returns False when data was dropped or given up, True when every byte is in the pipe.
    A write already partly in the pipe is always finished: a fragment left behind would glue onto the next line.
    """
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            if on_eagain is not None:
                on_eagain()
            if drop_when_full and len(view) == len(data):
                return False
            if not wait(fd):
                return False
            continue
        view = view[n:]
        if written is not None:
            written(n)
    return True


def exchange_paths(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> None:
    """Swap what two paths lead to in one step (renameat2 RENAME_EXCHANGE): neither path is ever missing.

    Python's os module has no renameat2; raises OSError (ENOSYS, EINVAL on a file system without it) like os.rename.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not in this C library", str(first))
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))
