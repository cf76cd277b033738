"""A collector process as the harness, the benchmark and the tests run it: start, readiness, memory, stop."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

# How often readiness and exit are polled: a collector opens its FIFO in about 0.5 s, 50 ms adds little to that.
POLL_S = 0.05
# SIGTERM gives a collector this long to drain the pipe and flush before SIGKILL (a large batch on a slow disk).
STOP_TIMEOUT_S = 60.0
# Lines of the collector's log quoted in an error message.
LOG_TAIL_LINES = 15


class CollectorError(RuntimeError):
    """The collector could not be started, did not get ready, or died."""


def has_reader(fifo: str | os.PathLike[str]) -> bool:
    """True when some process holds the FIFO open for reading (a non-blocking write open succeeds)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return False
        raise
    os.close(fd)
    return True


def peak_rss_kib(pid: int) -> int | None:
    """The most resident memory the process ever had (VmHWM), None once it is gone.

    psutil (7.2) has no peak on Linux, only the current RSS, and sampling that misses short peaks such as the
    shutdown flush; the kernel's high-water mark sees them all, so this one line of /proc stays.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


class CollectorProcess:
    """One collector subprocess (argv), reading fifo, its output appended to log_path."""

    def __init__(
        self,
        argv: list[str],
        fifo: str | os.PathLike[str],
        log_path: Path,
        *,
        shown: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = argv
        self.args = argv  # the name the integration tests know
        self.fifo = Path(fifo)
        self.log_path = log_path
        self.shown = shown or " ".join(argv)
        self.cwd = cwd
        self.env = env  # None: the harness's own environment
        self.proc: subprocess.Popen | None = None
        self.peak_rss_kib = 0  # the largest VmHWM of any process started by this object

    def start(self) -> CollectorProcess:
        """Start the process (not waiting for anything); CollectorError when the command cannot run."""
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            try:
                # A session of its own: a Ctrl-C in the terminal signals the whole foreground process group, and
                # the collector must stop when its owner says so (after the drain), not with the load.
                self.proc = subprocess.Popen(
                    self.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise CollectorError(f"cannot run the collector command {self.argv[0]!r}: {exc.strerror}") from exc
        return self

    @property
    def pid(self) -> int | None:
        """The process id once started (also after it exited)."""
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once it exited."""
        return self.proc.poll() if self.proc is not None else None

    def log(self) -> str:
        """Everything the process has logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the log, for an error message."""
        return "\n".join(self.log().splitlines()[-lines:]) or "(no output)"

    def wait_until(self, ready, what: str, timeout: float) -> None:
        """Poll ready() until true; CollectorError (with the log's tail) if the process exits or timeout passes."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive:
                raise CollectorError(
                    f"the collector (pid {self.pid}) exited with status {self.returncode} before "
                    f"{what}; its log {self.log_path}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise CollectorError(
                    f"the collector (pid {self.pid}) did not get to {what} within {timeout:g} s; "
                    f"its log {self.log_path}:\n{self.tail()}"
                )
            time.sleep(POLL_S)

    def wait_until_reading(self, timeout: float) -> None:
        """Wait until something holds the FIFO open for reading."""
        self.wait_until(lambda: has_reader(self.fifo), f"opening {self.fifo}", timeout)

    def wait_for_log(self, text: str, timeout: float) -> None:
        """Wait until the log contains text."""
        self.wait_until(lambda: text in self.log(), f"logging {text!r}", timeout)

    def note_peak_rss(self) -> None:
        """Remember the process's peak resident memory before it exits."""
        if self.alive and self.pid is not None:
            self.peak_rss_kib = max(self.peak_rss_kib, peak_rss_kib(self.pid) or 0)

    def cpu_seconds(self) -> tuple[float, float] | None:
        """CPU time (user + system) used so far: (main thread, all other threads); None once it is gone."""
        if self.pid is None:
            return None
        try:
            threads = psutil.Process(self.pid).threads()
        except psutil.Error:
            return None
        main = sum(t.user_time + t.system_time for t in threads if t.id == self.pid)
        others = sum(t.user_time + t.system_time for t in threads if t.id != self.pid)
        return main, others

    def signal(self, signum: int) -> None:
        """Send signum if the process runs."""
        if self.alive and self.pid is not None:
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; CollectorError if it still runs after timeout."""
        if self.proc is None:
            raise CollectorError("the collector was never started")
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise CollectorError(
                f"the collector (pid {self.pid}) still runs after {timeout:g} s; its log "
                f"{self.log_path}:\n{self.tail()}"
            ) from None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (after SIGCONT: a paused process cannot act on it), SIGKILL after timeout; the exit status."""
        if self.proc is None:
            return None
        self.note_peak_rss()
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            self.note_peak_rss()  # the shutdown flush may be the busiest moment
            time.sleep(POLL_S)
        if self.alive:
            self.kill()
        return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the process if it runs, and reap it."""
        if self.proc is None:
            return
        self.note_peak_rss()
        self.signal(signal.SIGKILL)
        self.proc.wait()
