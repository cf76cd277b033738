"""Run the real harness (`locust`) as a subprocess for the integration tests, and watch its output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
# A shortened scenario still needs time for Locust to start its workers and for the drain after the stop.
LOCUST_TIMEOUT_S = 240
# Output is polled this often while a test waits for a phase of the run.
POLL_S = 0.05


def locust_path() -> str:
    """The locust of this interpreter's environment."""
    return shutil.which("locust", path=os.path.dirname(sys.executable)) or "locust"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without NAMEDPIPER_* settings (the tests pass what they mean), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAMEDPIPER_")}
    env.update(extra)
    return env


def master_port_args() -> list[str]:
    """A free master port for --processes runs: Locust's default 5557 is shared by every Locust on the machine,
    and workers of one run would join another run's master."""
    port = str(free_port())
    return ["--master-bind-port", port, "--master-port", port]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Harness:
    """One `locust ...` process with its output in a file; stopped and reaped by stop(), by pid."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._out = log_path.open("w")
        # Its own session: the test signals it by pid, never pytest's process group.
        self.proc = subprocess.Popen(
            [locust_path(), *args],
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env or clean_env(),
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def output(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Wait until the output contains text; AssertionError with the output if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, (
                f"locust exited ({self.proc.returncode}) before {text!r}:\n{self.output()[-4000:]}"
            )
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.output()[-4000:]}"
            time.sleep(POLL_S)

    def descendants(self) -> list[psutil.Process]:
        """Every process it started that still runs."""
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal(self, signum: int) -> None:
        """Send signum to the locust process alone."""
        os.kill(self.pid, signum)

    def wait(self, timeout: float = LOCUST_TIMEOUT_S) -> int:
        """Wait for it to exit; its exit status."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def stop(self) -> None:
        """Kill it and everything it started, if still running (test clean-up, by pid)."""
        procs = [*self.descendants(), psutil.Process(self.pid)] if self.proc.poll() is None else self.descendants()
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        self.proc.wait(10)
        self._out.close()


def latest_verdict(report_dir: Path) -> dict | None:
    """The newest verdict.json under report_dir, None when there is none."""
    reports = sorted(report_dir.glob("*/verdict.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(reports[-1].read_text()) if reports else None
