"""The system under test for one run: the FIFO, the collector process, the database, and scheduled faults."""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import gevent

from loadtests.collector_process import CollectorError, CollectorProcess, has_reader
from loadtests.database import Database
from reference.dsn import DSN_ENV, redact
from reference.fifo import ensure_fifo

log = logging.getLogger(__name__)

# A collector gets this long to open the FIFO after it starts (the reference one needs ~0.5 s).
COLLECTOR_READY_TIMEOUT_S = 30.0
# After a second signal the collector gets this long to flush what it holds before SIGKILL: the user asked to
# stop now, but a collector killed mid-COPY would turn lines it had already read into "lost".
COLLECTOR_HURRY_TIMEOUT_S = 5.0
# A --metrics-port in --collector-cmd: the harness scrapes that port instead of adding one.
METRICS_PORT = re.compile(r"--metrics-port[= ]+(\d+)")

__all__ = ["CollectorError", "HarnessCollector", "SystemUnderTest", "has_reader"]


def free_port() -> int:
    """A loopback TCP port free right now (the kernel's pick), for the collector's metrics."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics_url(template: str) -> str | None:
    """The metrics URL a collector command line asks for (--metrics-port N), None when it asks for none."""
    found = METRICS_PORT.search(template)
    if found is None or not int(found.group(1)):
        return None
    return f"http://127.0.0.1:{int(found.group(1))}/metrics"


def collector_argv(template: str, fifo: str, dsn: str, journal: str) -> list[str]:
    """The collector's argument list from a template with {fifo}, {dsn}, {journal} and {python}."""
    return [part.format(fifo=fifo, dsn=dsn, python=sys.executable, journal=journal) for part in shlex.split(template)]


class HarnessCollector(CollectorProcess):
    """The collector of a run: started from --collector-cmd, restarted after faults, ready once it reads the FIFO."""

    def __init__(self, template: str, fifo: str, dsn: str, log_path: Path) -> None:
        argv = collector_argv(template, fifo, dsn, str(log_path.parent / "journal"))
        if "{dsn}" in template and redact(dsn) != dsn:
            log.warning("--collector-cmd puts a DSN with a password on the collector's command line, where every "
                        "local user can read it; drop {dsn}: the collector gets it in NAMEDPIPER_DSN")
        # The DSN travels in the environment, never on the command line (/proc/PID/cmdline is world-readable).
        super().__init__(argv, fifo, log_path, shown=" ".join(shlex.quote(redact(a)) for a in argv),
                         env={**os.environ, DSN_ENV: dsn})
        self.restarts = 0

    def start(self) -> HarnessCollector:
        """Start the collector and wait until it reads the FIFO."""
        log.info("starting collector: %s", self.shown)
        try:
            super().start()
        except CollectorError as exc:
            raise CollectorError(f"{exc} (check --collector-cmd)") from None
        self.wait_until_reading(COLLECTOR_READY_TIMEOUT_S)
        return self

    def kill_and_restart(self) -> None:
        """SIGKILL the collector (a crash), then start a new one on the same FIFO."""
        self.kill()
        self.restarts += 1
        log.warning("collector killed (SIGKILL); restart %d", self.restarts)
        self.start()


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
        self.collector: HarnessCollector | None = None
        self.metrics_url: str | None = None
        self._faults: list[gevent.Greenlet] = []
        self.fault_log: list[str] = []
        # (monotonic time, "start" | "end" | "at", what): the timeline's fault markers.
        self.marks: list[tuple[float, str, str]] = []

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
        self.metrics_url = metrics_url(template)
        if self.metrics_url is None and "reference.collector" in template:
            port = free_port()  # the timeline scrapes the collector's own counters
            template += f" --metrics-port {port}"
            self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        self.collector = HarnessCollector(template, self.fifo, self.database.dsn, self.run_dir / "collector.log")
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

    def _note(self, text: str, edge: str = "at", fault: str = "") -> None:
        log.warning("fault: %s", text)
        self.fault_log.append(text)
        self.marks.append((time.monotonic(), edge, fault or text))

    def _pause(self, seconds: float) -> None:
        if self.collector is None:
            return
        self._note(f"collector paused (SIGSTOP) for {seconds} s", "start", "collector paused")
        self.collector.signal(signal.SIGSTOP)
        try:
            gevent.sleep(seconds)
        finally:
            self.collector.signal(signal.SIGCONT)
            self._note("collector resumed (SIGCONT)", "end", "collector paused")

    def _kill(self) -> None:
        if self.collector is None:
            return
        self._note("collector killed (SIGKILL) and restarted", "at", "collector killed")
        self.collector.kill_and_restart()

    def _restart(self, gap: float) -> None:
        if self.collector is None:
            return
        status = self.collector.stop()
        self._note(f"collector stopped (SIGTERM, exit {status}); no reader for {gap} s", "start", "no reader")
        gevent.sleep(gap)
        self.collector.restarts += 1
        self.collector.start()
        self._note("collector started again", "end", "no reader")

    def _outage(self, seconds: float) -> None:
        if self.database.embedded is None:
            self._note("database outage skipped: only the embedded database can be stopped by the harness")
            return
        self._note(f"database stopped for {seconds} s", "start", "database outage")
        self.database.embedded.stop()
        try:
            gevent.sleep(seconds)
        finally:  # also when the run ends during the outage: the verdict needs the database
            self.database.start()
            self._note("database started again", "end", "database outage")

    def cancel_faults(self) -> None:
        """End the fault schedule (a fault under way finishes its clean-up, e.g. restarting the database)."""
        for g in self._faults:
            g.kill(block=True)
        self._faults.clear()

    def stop(self, hurry: bool = False) -> int | None:
        """Cancel pending faults and stop the collector (quickly when hurried); return its exit status."""
        self.cancel_faults()
        status = None
        if self.collector is not None:
            status = self.collector.stop(COLLECTOR_HURRY_TIMEOUT_S) if hurry else self.collector.stop()
        if self._tmp is not None:
            try:
                os.unlink(self.fifo)
                os.rmdir(self._tmp)
            except OSError as exc:
                log.debug("temporary FIFO folder left behind: %s", exc)
        return status
