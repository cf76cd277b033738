"""One harness run on the master (or local) runner: set up, drain, verify, judge, report."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path

import gevent
import psycopg2
from locust.runners import MasterRunner

from loadtests.database import Database, DatabaseUnavailableError
from loadtests.lifecycle import CollectorError, SystemUnderTest
from loadtests.verdict import Verdict, check, render, write_report
from loadtests.verify import connect, landed_count, verify_run
from reference.schema import apply_schema

log = logging.getLogger("namedpiper")

# While draining, the harness polls the database this often...
DRAIN_POLL_S = 0.25
# ...and stops waiting once nothing new has landed for this long (torn lines never all land).
DRAIN_QUIET_S = 3.0
# Workers get this long to stop their users and send their counters to the master.
WORKER_COUNTS_TIMEOUT_S = 30.0


class Run:
    """The master's side of the harness: owns the database and the system under test across runs."""

    def __init__(self, environment) -> None:
        self.environment = environment
        self.options = environment.parsed_options
        self.database = Database(self.options.dsn or None)
        self.database_started = False
        self.sut: SystemUnderTest | None = None
        self.worker_counts: dict[str, dict] = {}
        self.verdict: Verdict | None = None
        self.run_id = ""

    def start(self) -> None:
        """Test start; a run that cannot start says why in one line and ends with exit code 2."""
        self.options.np_run_id = ""  # users that see no run id stop at once
        try:
            self._start()
        except (DatabaseUnavailableError, CollectorError, OSError, psycopg2.Error) as exc:
            log.error("cannot start the run: %s", exc)
            if self.sut is not None:
                self.sut.stop()
                self.sut = None
            self.environment.process_exit_code = 2
            gevent.spawn(self.environment.runner.quit)

    def _start(self) -> None:
        """Database, FIFO, collector; tell the users (and workers) the run id and the FIFO."""
        o = self.options
        if not self.database_started:
            self.database.start()
            self.database_started = True
        with connect(self.database.dsn) as conn:
            apply_schema(conn)  # the verdict's queries need the tables even if the collector never made them
            with conn.cursor() as cur:
                cur.execute("SELECT now()")
                self.since = cur.fetchone()[0]
        self.run_id = secrets.token_hex(4)
        self.run_dir = Path(o.report_dir).resolve() / self.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not getattr(o, "html_file", None) or getattr(self, "_html_is_ours", False):
            o.html_file = str(self.run_dir / "locust.html")
            self._html_is_ours = True
        self.worker_counts = {}
        self.sut = SystemUnderTest(o, self.run_dir, self.database)
        self.sut.start()
        o.np_run_id = self.run_id
        o.np_fifo = self.sut.fifo
        self.started = time.monotonic()
        self.sut.schedule_faults(self.started)
        log.info("run %s: writing %s; reports in %s", self.run_id, self.sut.fifo, self.run_dir)

    def receive_counts(self, msg, **_kw) -> None:
        """Master: a worker's per-source counters (cumulative for the run)."""
        self.worker_counts[msg.node_id] = msg.data

    def receive_counts_local(self, counts: dict) -> None:
        """Local runner: the counters of this process's users."""
        self.worker_counts["local"] = counts

    def finish(self) -> None:
        """Test stop: wait for the data to land, stop the collector, verify, print and record the verdict."""
        if self.sut is None:
            return
        users_stopped = time.monotonic()
        self.sut.cancel_faults()  # faults belong to the load: none may hit the drain
        self._gather_worker_counts()
        counts = {src: c for per_worker in self.worker_counts.values() for src, c in per_worker.items()}
        sent = sum(c["sent"] for c in counts.values())
        landed_at = self._drain(sent)
        collector_exit = self.sut.stop()
        sources, totals = verify_run(self.database.dsn, self.run_id, self.since, counts)
        stats = self.environment.stats.total
        lasted = max(1e-6, landed_at - self.started)
        verdict = Verdict(
            run_id=self.run_id, scenario=_scenario_name(self.options), totals=totals, sources=sources,
            latency_ms={
                "p50": stats.get_response_time_percentile(0.5) or 0,
                "p99": stats.get_response_time_percentile(0.99) or 0,
                "max": stats.max_response_time or 0,
                "blocked_s": round(sum(c["blocked_s"] for c in counts.values()), 3),
            },
            rows_per_s=round(totals["landed"] / lasted, 1),
            lines_per_s=round(sent / max(1e-6, users_stopped - self.started), 1),
            duration_s=round(lasted, 2), faults=list(self.sut.fault_log), collector_exit=collector_exit,
            # None when unknown: no collector of ours, or it had exited before the harness could read its memory.
            collector_peak_rss_mib=round(self.sut.collector.peak_rss_kib / 1024, 1)
            if self.sut.collector and self.sut.collector.peak_rss_kib else None,
        )
        verdict.failures = check(verdict, self.options)
        self.verdict = verdict
        report = write_report(verdict, self.run_dir)
        _say(render(verdict))
        _say(f"report: {report}\nopen the data: {self.database.psql_command()}   (run id {self.run_id}: "
             f"WHERE data->'_np'->>'run' = '{self.run_id}')")
        self.environment.process_exit_code = 0 if verdict.passed else 1
        self.sut = None

    def _gather_worker_counts(self) -> None:
        """Master: make sure every worker stopped and sent its counters (ask those that did not)."""
        runner = self.environment.runner
        if not isinstance(runner, MasterRunner):
            return
        deadline = time.monotonic() + WORKER_COUNTS_TIMEOUT_S
        asked = set()
        while True:
            missing = [c.id for c in runner.clients.all if c.id not in self.worker_counts]
            if not missing:
                return
            if time.monotonic() > deadline:
                log.error("workers %s sent no counters within %s s; their lines count as lost", missing,
                          WORKER_COUNTS_TIMEOUT_S)
                return
            for client_id in set(missing) - asked:
                runner.send_message("np_stop", None, client_id)
                asked.add(client_id)
            gevent.sleep(DRAIN_POLL_S)

    def _drain(self, sent: int) -> float:
        """Wait until every sent line landed, nothing moved for DRAIN_QUIET_S, or the drain timeout; return when."""
        deadline = time.monotonic() + self.options.drain_timeout
        last, last_change = (-1, -1), time.monotonic()
        while True:
            try:
                now_counts = landed_count(self.database.dsn, self.run_id, self.since)
            except psycopg2.Error as exc:  # the database is away for now: no progress, keep waiting
                log.warning("drain: cannot count rows yet (%s)", str(exc).strip().splitlines()[0])
                now_counts = last
            now = time.monotonic()
            if now_counts != last:
                last, last_change = now_counts, now
            if now_counts[0] >= sent or now - last_change >= DRAIN_QUIET_S or now >= deadline:
                if now_counts[0] < sent and now >= deadline:
                    log.warning("drain timeout: %d of %d sent lines landed", now_counts[0], sent)
                return last_change if now_counts[0] < sent else now
            gevent.sleep(DRAIN_POLL_S)

    def close(self) -> None:
        """Quitting: stop what a run left behind, and the embedded database if this process started it."""
        if self.sut is not None:
            self.sut.stop()
        if self.database_started:
            self.database.close()
        if self.verdict is not None and self.environment.process_exit_code != 2:
            self.environment.process_exit_code = 0 if self.verdict.passed else 1


def _say(text: str) -> None:
    """Print to stdout: the verdict is the run's output, read by people and by CI logs."""
    print(text, flush=True)  # noqa: T201


def _scenario_name(options) -> str:
    configs = [c for c in (getattr(options, "config", None) or "").split(",") if c.endswith(".conf")] \
        if isinstance(getattr(options, "config", None), str) else []
    return Path(configs[-1]).stem if configs else "custom"
