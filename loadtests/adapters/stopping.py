"""A run's collector over its life: its counters sampled, its stop policy applied, its report assembled."""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from collections.abc import Sequence

import gevent
import psycopg2

from loadtests.adapters.report import FAIL_LOG_LINES, CollectorReport, count_unmarked, exit_text, explain
from loadtests.collector_process import CollectorError

log = logging.getLogger(__name__)

# The collector's counters are read this often during a run: one syslog-ng-ctl call (~5 ms) every 5 s is free.
SAMPLE_S = 5.0
# While waiting for the collector's queue to empty before the stop signal, its counters are read this often.
QUEUE_POLL_S = 0.25
# A --fault-cmd gets this long to perform its action (a restart may wait for a service manager).
FAULT_CMD_TIMEOUT_S = 60.0
# Lines of a failed --fault-cmd's output quoted in the fault log.
FAULT_CMD_OUTPUT_CHARS = 300


class CollectorWatch:
    """Samples the adapter's counters, stops the collector by the adapter's policy and writes its report."""

    def __init__(self, collector) -> None:
        self.collector = collector
        adapter = collector.adapter
        self.report = CollectorReport(
            adapter=adapter.name,
            command=collector.shown,
            log_path=str(collector.log_path),
            keeps_rejected=adapter.keeps_rejected,
        )
        self.unmarked_before = 0
        self._started = time.monotonic()
        self._sampler: gevent.Greenlet | None = None
        self._stopped = False

    def begin(self) -> None:
        """The collector is ready: take the baselines and start sampling its counters."""
        self._started = time.monotonic()
        if not self.collector.adapter.keeps_rejected:
            self.unmarked_before = count_unmarked(self.collector.ctx.dsn)
        self._sampler = gevent.spawn(self._sample_forever)

    def _counters(self) -> dict | None:
        if not self.collector.alive:
            return None
        return self.collector.adapter.counters(self.collector.ctx)

    def _sample_forever(self) -> None:
        while True:
            gevent.sleep(SAMPLE_S)
            counters = self._counters()
            if counters is not None:
                self.report.samples.append((round(time.monotonic() - self._started, 1), counters))

    def _quiesce(self) -> tuple[dict | None, float]:
        """The counters once the collector's queue emptied or the policy's wait ran out, and the seconds waited.

        A collector that drops what it queues at the signal gets its queue emptied first, so the stop's cost is
        what it could not write in that time, not the harness's impatience.
        """
        counters = self._counters()
        started = time.monotonic()
        wait = self.collector.adapter.stop_policy.wait_queue_empty_s
        while counters and counters.get("queued", 0) > 0 and time.monotonic() - started < wait:
            gevent.sleep(QUEUE_POLL_S)
            counters = self._counters() or counters
        return counters, round(time.monotonic() - started, 2)

    def stop_for_fault(self) -> tuple[int | None, int | None]:
        """A restart fault's stop: (exit status, lines still queued at the signal).

        No wait for the queue here: under load it never empties (flow-control keeps it full), and an operator's
        restart does not wait either; what the collector held at the signal is the fault's cost, and is noted.
        """
        counters = self._counters()
        status = self.collector.stop(self.collector.adapter.stop_policy.timeout_s)
        queued = counters.get("queued") if counters else None
        self.report.fault_stops.append({"exit": exit_text(status), "queued": queued})
        return status, queued

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop by the adapter's policy (timeout given: hurried, no wait for the queue); the exit status."""
        if self._sampler is not None:
            self._sampler.kill(block=True)
            self._sampler = None
        policy = self.collector.adapter.stop_policy
        if self._stopped:
            return self.collector.stop(timeout if timeout is not None else policy.timeout_s)
        self._stopped = True
        if timeout is None:
            counters, self.report.waited_for_queue_s = self._quiesce()
        else:
            counters = self._counters()
        self.report.at_stop = counters
        self.report.queued_at_stop = counters.get("queued") if counters else None
        status = self.collector.stop(timeout if timeout is not None else policy.timeout_s)
        self.report.exit_status = status
        self.report.exit = exit_text(status, self.collector.adapter.exit_meaning(status))
        self.report.log_tail = self.collector.tail(FAIL_LOG_LINES).splitlines()
        return status

    def finish(self, dsn: str, run_id: str, sources: Sequence, bad_sent: int) -> dict:
        """The report for verdict.json, with the loss explanation when the collector keeps no logs_rejected."""
        if not self.report.keeps_rejected:
            try:
                conn = psycopg2.connect(dsn, connect_timeout=10, application_name="namedpiper-verify")
                try:
                    self.report.explanation = explain(conn, run_id, sources, bad_sent, self.unmarked_before)
                finally:
                    conn.close()
            except psycopg2.Error as exc:
                log.warning("no loss explanation: %s", str(exc).strip().splitlines()[0])
        return self.report.as_dict()


def collector_faults(options) -> list[str]:
    """The options of faults that act on the collector process, as given."""
    found = []
    if getattr(options, "pause_collector_at", -1) >= 0 and getattr(options, "pause_collector_for", 0) > 0:
        found.append("--pause-collector-at")
    if (getattr(options, "kill_collector_at", "") or "").strip():
        found.append("--kill-collector-at")
    if getattr(options, "restart_collector_at", -1) >= 0:
        found.append("--restart-collector-at")
    return found


def refuse_unperformable_faults(options) -> None:
    """CollectorError (status 2) when collector faults are asked of a collector the harness did not start and no
    --fault-cmd performs them: the run would otherwise pass without the fault it claims to test."""
    faults = collector_faults(options)
    if faults and not (getattr(options, "fault_cmd", "") or "").strip():
        raise CollectorError(
            f"--collector-cmd none: the scenario asks for {', '.join(faults)}, which the harness cannot do to a "
            "collector it did not start; give --fault-cmd 'COMMAND {action}' (actions: pause, resume, kill, stop, "
            "start) that performs them, or choose a scenario without collector faults"
        )


def external_fault(options, action: str, fifo: str) -> str:
    """Run --fault-cmd for action ({action}, {fifo} filled in); a short description of how it went."""
    template = (getattr(options, "fault_cmd", "") or "").strip()
    if not template:
        return "skipped: no --fault-cmd"
    argv = [part.format(action=action, fifo=fifo) for part in shlex.split(template)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=FAULT_CMD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"failed: {exc}"
    if done.returncode != 0:
        return f"failed with exit status {done.returncode}: {(done.stderr or done.stdout)[-FAULT_CMD_OUTPUT_CHARS:]}"
    return "done"
