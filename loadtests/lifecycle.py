"""The system under test for one run: the FIFO, the collector process, the database, and scheduled faults."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gevent

from loadtests.database import Database
from reference.dsn import redact
from reference.fifo import ensure_fifo

log = logging.getLogger(__name__)

# A collector gets this long to open the FIFO after it starts (the reference one needs ~0.5 s).
COLLECTOR_READY_TIMEOUT_S = 30.0
# SIGTERM gives the collector this long to drain and flush before it is killed.
COLLECTOR_STOP_TIMEOUT_S = 60.0
READY_POLL_S = 0.05


class CollectorError(RuntimeError):
    """The collector could not be started or died."""


def has_reader(fifo: str) -> bool:
    """True when some process holds the FIFO open for reading (a non-blocking write open succeeds)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return False
        raise
    os.close(fd)
    return True


class CollectorProcess:
    """The collector as a subprocess built from a command template with {fifo}, {dsn} and {python}."""

    def __init__(self, template: str, fifo: str, dsn: str, log_path: Path) -> None:
        journal = str(log_path.parent / "journal")
        self.argv = [part.format(fifo=fifo, dsn=dsn, python=sys.executable, journal=journal)
                     for part in shlex.split(template)]
        self.shown = " ".join(shlex.quote(redact(a)) for a in self.argv)
        if "{dsn}" in template and redact(dsn) != dsn:
            log.warning("--collector-cmd puts a DSN with a password on the collector's command line, where every "
                        "local user can read it; drop {dsn}: the collector gets it in NAMEDPIPER_DSN")
        self.fifo = fifo
        self.env = {**os.environ, "NAMEDPIPER_DSN": dsn}  # the DSN in the environment, never on the command line
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.peak_rss_kib = 0  # the largest VmHWM of any collector process of this run

    def start(self) -> None:
        """Start the collector and wait until it reads the FIFO."""
        log.info("starting collector: %s", self.shown)
        with open(self.log_path, "ab") as out:
            try:
                self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=self.env)
            except OSError as exc:
                raise CollectorError(f"cannot run the collector command {self.argv[0]!r}: {exc.strerror} "
                                     "(check --collector-cmd)") from exc
        deadline = time.monotonic() + COLLECTOR_READY_TIMEOUT_S
        while not has_reader(self.fifo):
            if self.proc.poll() is not None:
                raise CollectorError(f"the collector exited with status {self.proc.returncode} before reading "
                                     f"{self.fifo}; its output is in {self.log_path}")
            if time.monotonic() > deadline:
                raise CollectorError(f"the collector did not open {self.fifo} within {COLLECTOR_READY_TIMEOUT_S} s;"
                                     f" see {self.log_path}")
            gevent.sleep(READY_POLL_S)

    @property
    def pid(self) -> int | None:
        """The collector's pid while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def signal(self, signum: int) -> None:
        """Send signum to the collector if it runs."""
        if self.pid is not None:
            os.kill(self.pid, signum)

    def _note_peak_rss(self) -> None:
        """Remember the collector's peak resident memory (VmHWM) before it exits."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except (OSError, TypeError):
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))

    def kill_and_restart(self) -> None:
        """SIGKILL the collector (a crash), then start a new one on the same FIFO."""
        self._note_peak_rss()
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        self.restarts += 1
        log.warning("collector killed (SIGKILL); restart %d", self.restarts)
        self.start()

    def stop(self) -> int | None:
        """SIGTERM, wait for the drain and flush, SIGKILL after COLLECTOR_STOP_TIMEOUT_S; return the status."""
        if self.proc is None:
            return None
        self._note_peak_rss()
        self.signal(signal.SIGCONT)  # a paused collector cannot honour SIGTERM
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + COLLECTOR_STOP_TIMEOUT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._note_peak_rss()  # the shutdown flush may be the collector's busiest moment
            gevent.sleep(READY_POLL_S)
        if self.proc.poll() is None:
            log.error("collector ignored SIGTERM for %s s; killing it", COLLECTOR_STOP_TIMEOUT_S)
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


class SystemUnderTest:
    """Everything a run needs besides the Locust users, created on test start and torn down on test stop."""

    def __init__(self, options, run_dir: Path, database: Database) -> None:
        self.options = options
        self.run_dir = run_dir
        self.database = database
        self._tmp = None
        if options.fifo:
            self.fifo = str(Path(options.fifo).resolve())
        else:
            self._tmp = tempfile.mkdtemp(prefix="namedpiper-")
            self.fifo = os.path.join(self._tmp, "logs.fifo")
        self.collector: CollectorProcess | None = None
        self._faults: list[gevent.Greenlet] = []
        self.fault_log: list[str] = []

    def start(self) -> None:
        """Create the FIFO and start the collector (unless an external one reads it)."""
        ensure_fifo(self.fifo)
        template = self.options.collector_cmd.strip()
        if template.lower() == "none":
            if not has_reader(self.fifo):
                log.warning("--collector-cmd none: nothing reads %s yet; users wait for a reader", self.fifo)
            return
        if self.options.pipe_size and "reference.collector" in template:
            template += f" --pipe-size {int(self.options.pipe_size)}"
        self.collector = CollectorProcess(template, self.fifo, self.database.dsn, self.run_dir / "collector.log")
        self.collector.start()

    def schedule_faults(self, started: float) -> None:
        """Start greenlets that inject the faults the options ask for, at seconds from started."""
        o = self.options
        if o.pause_collector_at >= 0 and o.pause_collector_for > 0:
            self._at(started, o.pause_collector_at, self._pause, o.pause_collector_for)
        for second in filter(None, (s.strip() for s in o.kill_collector_at.split(","))):
            self._at(started, float(second), self._kill)
        if o.restart_collector_at >= 0:
            self._at(started, o.restart_collector_at, self._restart, o.restart_gap)
        if o.db_outage_at >= 0 and o.db_outage_for > 0:
            self._at(started, o.db_outage_at, self._outage, o.db_outage_for)

    def _at(self, started: float, second: float, action, *args) -> None:
        self._faults.append(gevent.spawn_later(max(0.0, started + second - time.monotonic()), action, *args))

    def _note(self, text: str) -> None:
        log.warning("fault: %s", text)
        self.fault_log.append(text)

    def _pause(self, seconds: float) -> None:
        if self.collector is None:
            return
        self._note(f"collector paused (SIGSTOP) for {seconds} s")
        self.collector.signal(signal.SIGSTOP)
        try:
            gevent.sleep(seconds)
        finally:
            self.collector.signal(signal.SIGCONT)
            self._note("collector resumed (SIGCONT)")

    def _kill(self) -> None:
        if self.collector is None:
            return
        self._note("collector killed (SIGKILL) and restarted")
        self.collector.kill_and_restart()

    def _restart(self, gap: float) -> None:
        if self.collector is None:
            return
        status = self.collector.stop()
        self._note(f"collector stopped (SIGTERM, exit {status}); no reader for {gap} s")
        gevent.sleep(gap)
        self.collector.restarts += 1
        self.collector.start()
        self._note("collector started again")

    def _outage(self, seconds: float) -> None:
        if self.database.embedded is None:
            self._note("database outage skipped: only the embedded database can be stopped by the harness")
            return
        self._note(f"database stopped for {seconds} s")
        self.database.embedded.stop()
        try:
            gevent.sleep(seconds)
        finally:  # also when the run ends during the outage: the verdict needs the database
            self.database.start()
            self._note("database started again")

    def cancel_faults(self) -> None:
        """End the fault schedule (a fault under way finishes its clean-up, e.g. restarting the database)."""
        for g in self._faults:
            g.kill(block=True)
        self._faults.clear()

    def stop(self) -> int | None:
        """Cancel pending faults and stop the collector; return its exit status."""
        self.cancel_faults()
        status = self.collector.stop() if self.collector is not None else None
        if self._tmp is not None:
            try:
                # The reference collector's lock file lies beside the FIFO (reference/collector/reader.py).
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.fifo + ".lock")
                os.unlink(self.fifo)
                os.rmdir(self._tmp)
            except OSError as exc:
                log.debug("temporary FIFO folder left behind: %s", exc)
        return status
