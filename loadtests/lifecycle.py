"""The system under test for one run: the FIFO, the collector process, the database, and scheduled faults."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from pathlib import Path

import gevent

from loadtests.adapters import Adapter, Context, choose
from loadtests.adapters.readiness import wait_ready
from loadtests.adapters.reference import Reference
from loadtests.adapters.stopping import CollectorWatch, external_fault, refuse_unperformable_faults
from loadtests.collector_process import CollectorError, CollectorProcess, has_reader
from loadtests.database import Database
from loadtests.statement_timeout import (
    FAULT_TIMEOUT,
    collector_sessions,
    prepare_role,
    set_timeout,
    terminate_sessions,
)
from reference.collector.reader import lock_path, stand_in_path
from reference.fifo import ensure_fifo

log = logging.getLogger(__name__)

# A collector gets this long to open the FIFO after it starts (the reference one needs ~0.5 s).
COLLECTOR_READY_TIMEOUT_S = 30.0
# While the statement timeout is on, the collector's sessions are listed this often (a reconnect storm shows as
# many pids; a session lives at least one backoff step, 0.1 s).
SESSION_POLL_S = 0.1
# After a second signal the collector gets this long to flush what it holds before SIGKILL: the user asked to
# stop now, but a collector killed mid-COPY would turn lines it had already read into "lost".
COLLECTOR_HURRY_TIMEOUT_S = 5.0
__all__ = ["CollectorError", "HarnessCollector", "SystemUnderTest", "has_reader"]


class HarnessCollector(CollectorProcess):
    """The collector of a run, as its adapter starts it; restarted after faults, ready by the adapter's strategy."""

    def __init__(
        self, template: str, fifo: str, dsn: str, log_path: Path, *, adapter: Adapter | None = None, options=None
    ) -> None:
        self.adapter = adapter or Reference(template)
        self.ctx = Context(fifo, dsn, log_path.parent, options)
        try:
            launch = self.adapter.launch(self.ctx)
        except (OSError, ValueError) as exc:
            raise CollectorError(f"cannot prepare the {self.adapter.name} collector: {exc}") from None
        super().__init__(launch.argv, fifo, log_path, shown=launch.shown, env=launch.env)
        self.metrics_url = launch.metrics_url  # the collector's own counters, for the timeline
        self.readiness = getattr(options, "ready", "") or self.adapter.readiness
        self.ready_timeout = getattr(options, "ready_timeout", None) or COLLECTOR_READY_TIMEOUT_S
        self.restarts = 0

    def start(self) -> HarnessCollector:
        """Start the collector and wait until it is ready (a collector that never is: CollectorError, status 2)."""
        log.info("starting collector (%s): %s", self.adapter.name, self.shown)
        try:
            super().start()
        except CollectorError as exc:
            raise CollectorError(f"{exc} (check --collector / --collector-cmd)") from None
        wait_ready(self, self.adapter, self.ctx, self.readiness, self.ready_timeout)
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
        self.watch: CollectorWatch | None = None  # the adapter's counters, the stop policy, the collector's report
        self._faults: list[gevent.Greenlet] = []
        self.fault_log: list[str] = []
        # (monotonic time, "start" | "end" | "at", what): the timeline's fault markers.
        self.marks: list[tuple[float, str, str]] = []

    def start(self) -> None:
        """Create the FIFO and start the collector (unless an external one reads it)."""
        ensure_fifo(self.fifo)
        template = self.options.collector_cmd.strip()
        try:
            adapter = choose(getattr(self.options, "collector", "reference") or "reference", template)
        except ValueError as exc:
            raise CollectorError(str(exc)) from None
        if template.lower() == "none" and isinstance(adapter, Reference):
            refuse_unperformable_faults(self.options)
            if not has_reader(self.fifo):
                log.warning("--collector-cmd none: nothing reads %s yet; users wait for a reader", self.fifo)
            return
        dsn = self.database.dsn
        if self._wants_statement_timeout():
            # A role of its own: ALTER ROLE on the harness's role would cancel the harness's verification too.
            dsn = prepare_role(self.database.dsn)
        self.collector = HarnessCollector(
            template, self.fifo, dsn, self.run_dir / "collector.log", adapter=adapter, options=self.options
        )
        self.watch = CollectorWatch(self.collector)
        self.collector.start()
        self.watch.begin()

    def _wants_statement_timeout(self) -> bool:
        o = self.options
        return getattr(o, "statement_timeout_at", -1) >= 0 and getattr(o, "statement_timeout_for", 0) > 0

    @property
    def metrics_url(self) -> str | None:
        """Where the collector serves its Prometheus metrics, None when it serves none (or is not ours)."""
        return self.collector.metrics_url if self.collector is not None else None

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
        if self._wants_statement_timeout() and self.collector is not None:
            self._at(started, o.statement_timeout_at, self._statement_timeout, o.statement_timeout_for)

    def _at(self, started: float, second: float, action, *args) -> None:
        self._faults.append(gevent.spawn_later(max(0.0, started + second - time.monotonic()), action, *args))

    def _note(self, text: str, edge: str = "at", fault: str = "") -> None:
        log.warning("fault: %s", text)
        self.fault_log.append(text)
        self.marks.append((time.monotonic(), edge, fault or text))

    def _pause(self, seconds: float) -> None:
        if self.collector is None:
            self._external(f"collector paused for {seconds} s", "pause", seconds, "resume")
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
            self._external("collector killed and restarted", "kill")
            return
        self._note("collector killed (SIGKILL) and restarted", "at", "collector killed")
        self.collector.kill_and_restart()

    def _restart(self, gap: float) -> None:
        if self.collector is None:
            self._external(f"collector stopped; no reader for {gap} s", "stop", gap, "start")
            return
        status, queued = self.watch.stop_for_fault() if self.watch is not None else (self.collector.stop(), None)
        cost = f", {queued} lines still queued in it" if queued else ""
        self._note(f"collector stopped (SIGTERM, exit {status}{cost}); no reader for {gap} s", "start", "no reader")
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

    def _statement_timeout(self, seconds: float) -> None:
        dsn = self.database.dsn
        set_timeout(dsn, FAULT_TIMEOUT)
        ended = terminate_sessions(dsn)  # role settings apply to new sessions only
        self._note(
            f"statement_timeout = {FAULT_TIMEOUT} for the collector's role for {seconds} s "
            f"({len(ended)} sessions ended)",
            "start",
            "statement timeout",
        )
        seen: set[int] = set()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                seen |= collector_sessions(dsn)
                gevent.sleep(SESSION_POLL_S)
        finally:  # also when the run ends during the fault: the drain needs a collector that can load
            set_timeout(dsn, None)
            terminate_sessions(dsn)  # so the collector's next session has no timeout, without waiting for it
            self._note(
                f"statement_timeout reset; {len(seen)} distinct collector sessions (backend pids) seen "
                f"during the fault",
                "end",
                "statement timeout",
            )

    def _external(self, what: str, action: str, seconds: float = 0, then: str = "") -> None:
        """A fault on a collector the harness did not start: --fault-cmd performs it."""
        self._note(f"{what} (--fault-cmd {action}): {external_fault(self.options, action, self.fifo)}")
        if then:
            try:
                gevent.sleep(seconds)
            finally:
                self._note(f"--fault-cmd {then}: {external_fault(self.options, then, self.fifo)}")

    def cancel_faults(self) -> None:
        """End the fault schedule (a fault under way finishes its clean-up, e.g. restarting the database)."""
        for g in self._faults:
            g.kill(block=True)
        self._faults.clear()

    def stop(self, hurry: bool = False) -> int | None:
        """Cancel pending faults and stop the collector (quickly when hurried); return its exit status."""
        self.cancel_faults()
        status = None
        if self.collector is not None and self.watch is not None:
            status = self.watch.stop(COLLECTOR_HURRY_TIMEOUT_S if hurry else None)
        if self._tmp is not None:
            try:
                # The reference collector's lock file and its stop's stand-in FIFO lie beside the FIFO
                # (reference/collector/reader.py); the run's writers are gone, so nothing waits in the stand-in.
                for beside in (lock_path(self.fifo), stand_in_path(self.fifo)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(beside)
                os.unlink(self.fifo)
                os.rmdir(self._tmp)
            except OSError as exc:
                log.debug("temporary FIFO folder left behind: %s", exc)
        return status
