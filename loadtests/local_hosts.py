"""A fleet on one machine: the master starts N worker "hosts", each `python -m loadtests.fleet` (its own namespace)."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from reference.dsn import DSN_ENV

log = logging.getLogger("namedpiper")

# Local hosts are named host1, host2, ... (--local-host-args refers to them by these names).
HOST_NAME = "host{}"
# After Locust's quit message a worker ends within a second or two; then its namespace is killed by pid.
QUIT_WAIT_S = 10.0
# Environment a local host must not inherit from the master: NAMEDPIPER_* would configure every host alike (a host
# is configured by --local-host-args), LOCUST_* would make the worker a master or headless.
NOT_INHERITED = ("NAMEDPIPER_", "LOCUST_")


def parse_host_args(text: str, names: list[str]) -> dict[str, list[str]]:
    """'host2: --kill-collector-at 4; host1: --collector syslog-ng' -> extra worker options per host name."""
    out: dict[str, list[str]] = {}
    for entry in filter(None, (e.strip() for e in (text or "").split(";"))):
        name, colon, args = entry.partition(":")
        name = name.strip()
        if not colon or name not in names:
            raise ValueError(
                f"--local-host-args {entry!r}: give 'HOST: OPTIONS' entries separated by ';', HOST one of "
                f"{', '.join(names)}"
            )
        try:
            out.setdefault(name, []).extend(shlex.split(args))
        except ValueError as exc:
            raise ValueError(f"--local-host-args {entry!r}: {exc}") from None
    return out


class LocalHosts:
    """The worker hosts this master started; stopped (and their namespaces killed) by pid."""

    def __init__(self, procs: dict[str, subprocess.Popen], logs: list) -> None:
        self.procs = procs
        self._logs = logs

    @classmethod
    def start(cls, options, count: int, dsn: str = "") -> LocalHosts:
        """Start count hosts as Locust workers of this master (127.0.0.1, its --master-bind-port).

        They get the database's DSN in their environment (NAMEDPIPER_DSN, readable by this user and root only),
        never in Locust's spawn message, which any client of the master port receives.
        """
        names = [HOST_NAME.format(i + 1) for i in range(count)]
        extra = parse_host_args(getattr(options, "local_host_args", ""), names)
        report_dir = Path(getattr(options, "report_dir", "") or "reports").resolve()
        log_dir = report_dir / "local-hosts"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
        if dsn:
            env[DSN_ENV] = dsn
        port = str(getattr(options, "master_bind_port", 5557) or 5557)
        procs: dict[str, subprocess.Popen] = {}
        logs = []
        for name in names:
            out = (log_dir / f"{name}.log").open("ab")
            logs.append(out)
            argv = [
                sys.executable,
                "-m",
                "loadtests.fleet",
                "--host-id",
                name,
                "--master-port",
                port,
                "--",
                "--report-dir",
                str(report_dir),
                *extra.get(name, []),
            ]
            # A session of its own: a Ctrl-C in the terminal reaches the master, which stops its workers itself.
            procs[name] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
            log.info("local fleet host %s: pid %d, log %s", name, procs[name].pid, log_dir / f"{name}.log")
        return cls(procs, logs)

    def exited(self) -> list[str]:
        """'NAME (exit status N): last line of its log' for every host whose process has ended."""
        out = []
        for name, proc in self.procs.items():
            status = proc.poll()
            if status is not None:
                out.append(f"{name} (exit status {status}): {self.last_line(name)}")
        return out

    def last_line(self, name: str) -> str:
        """The last line a host logged (why it ended, usually)."""
        out = next((f for f in self._logs if Path(f.name).stem == name), None)
        if out is None:
            return ""
        try:
            lines = Path(out.name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self) -> None:
        """Wait a little for the workers to quit as Locust told them, then SIGKILL what is left (by pid)."""
        for name, proc in self.procs.items():
            try:
                proc.wait(QUIT_WAIT_S)
            except subprocess.TimeoutExpired:
                log.warning("local fleet host %s (pid %d) did not quit; killing it", name, proc.pid)
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(proc.pid).children(recursive=True):
                        child.send_signal(signal.SIGKILL)
                proc.kill()
                proc.wait()
        for out in self._logs:
            out.close()
