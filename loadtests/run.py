"""One harness run on the master (or local) runner: set up, drain, verify, judge, report, clean up."""

from __future__ import annotations

import copy
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import gevent
import gevent.event
import psycopg2
from locust.html import get_html_report
from locust.runners import MasterRunner

from loadtests.adapters.base import DEFAULT_DRAIN_QUIET_S, drain_quiet_s
from loadtests.database import Database, DatabaseUnavailableError
from loadtests.fifo_client import SourceCounts
from loadtests.lifecycle import CollectorError, SystemUnderTest
from loadtests.options import (
    EXIT_CANNOT_START,
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    HARNESS_OPTIONS,
    WEB_EDITABLE,
    check_load_options,
)
from loadtests.progress import DrainProgress, locust_tables_muted
from loadtests.provenance import recorded_options, utc_now, versions
from loadtests.report import build as build_report
from loadtests.report import write_html
from loadtests.retention import record_and_prune
from loadtests.timeline import DEFAULT_INTERVAL_S, Probes, Sampler, WriterTotals, write_csv
from loadtests.verdict import Latency, Verdict, check, render, write_report
from loadtests.verify import connect, landed_count, verify_run
from loadtests.webui import CHARTS_PATH
from reference.schema import apply_schema

log = logging.getLogger("namedpiper")

# While draining, the harness polls the database this often...
DRAIN_POLL_S = 0.25
# ...and stops waiting once nothing new has landed for this long (torn lines never all land); an adapter or
# --drain-quiet may ask for longer.
DRAIN_QUIET_S = DEFAULT_DRAIN_QUIET_S
# Workers get this long to stop their users and send their counters to the master.
WORKER_COUNTS_TIMEOUT_S = 30.0
# The web UI's charts page of a run under way reloads itself this often (a sample comes every second).
LIVE_CHARTS_REFRESH_S = 5


class Run:
    """The master's side of the harness: owns the database and the system under test across runs."""

    def __init__(self, environment, interrupt) -> None:
        self.environment = environment
        # A copy taken at start-up: commands, paths, the DSN and the expectations are read from here only, so
        # nothing posted to the web UI can change them; only WEB_EDITABLE options are refreshed per run.
        self.options = copy.copy(environment.parsed_options)
        self.interrupt = interrupt
        self.database = Database(self.options.dsn or None)
        self.database_started = False
        self.sut: SystemUnderTest | None = None
        self.worker_counts: dict[str, dict[str, SourceCounts]] = {}
        self.verdict: Verdict | None = None
        self.run_id = ""
        self.start_failed = False
        self.starter: gevent.Greenlet | None = None
        self.finisher: gevent.Greenlet | None = None
        self.progress: DrainProgress | None = None
        self.phase = "no run yet"
        self.drain_skipped = False
        self.preparing = False  # inside prepare(): a signal is handled there
        self.prepared = False  # a headless run set up at init, waiting for its test start
        self.writers = WriterTotals()  # the users' counters while the run goes (the timeline's writes)
        self.sampler: Sampler | None = None
        self.sampler_run = ""  # the run whose load began (its faults and sampler started)
        self._closing = False
        self._closed = gevent.event.Event()

    # -- start ----------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """At Locust's init, before --run-time starts counting: the database, and for a headless run the whole
        set-up (initdb and a collector's start take seconds on a busy machine, which the load must not lose)."""
        self.preparing = True
        try:
            self._database()
            if getattr(self.options, "headless", False):
                self.starter = gevent.spawn(self._start_or_explain, quit_on_error=False)
                self.starter.join()
                if not self.starter.value:
                    raise SystemExit(EXIT_CANNOT_START)
                self.prepared = True
        except (DatabaseUnavailableError, psycopg2.Error) as exc:
            log.error("cannot start the run: %s", exc)
            self.environment.process_exit_code = EXIT_CANNOT_START
            raise SystemExit(EXIT_CANNOT_START) from None
        finally:
            self.preparing = False
        if self.interrupt.signal_name is not None:
            # Interrupted while setting up: the verdict of a run that sent nothing, then the same clean-up.
            self.finish()
            self.close()
            raise SystemExit(self.verdict.exit_code if self.verdict is not None else EXIT_INTERRUPTED)

    def _database(self) -> None:
        if not self.database_started:
            self.database.start()
            self.database_started = True

    def start(self) -> None:
        """Test start: set up in a greenlet of its own, so a signal during ramp-up cannot cut the set-up in half."""
        if self.prepared:
            self.prepared = False  # set up at init (headless): the load starts now
            self._begin()
            return
        # A second start while the first still sets up (two quick POST /swarm: Locust kills the first spawning
        # greenlet, not our set-up) joins that set-up instead of starting a second collector beside it.
        if self.starter is None or self.starter.dead:
            if self.finisher is not None:
                self.finisher.join()  # the previous run's verdict first (web UI: a start right after a stop)
            self.environment.parsed_options.np_run_id = ""  # users that see no run id stop at once
            self.finisher = None
            self.drain_skipped = False
            self.start_failed = False
            self.starter = gevent.spawn(self._start_or_explain)
        self.starter.join()
        if not self.starter.value:
            raise gevent.GreenletExit  # ends Locust's ramp-up quietly: nothing of it is printed after the error
        self._begin()

    def _begin(self) -> None:
        """The load starts: the clock of the run and of its faults (once per run, however often Locust starts)."""
        if self.run_id and self.sampler_run == self.run_id:
            return
        self.sampler_run = self.run_id
        self.started = time.monotonic()
        if self.sut is not None:
            self.sut.schedule_faults(self.started)
            self.sampler = self._sampler(self.sut)
            self.sampler.start()
        self.phase = f"run {self.run_id}: load"

    def _start_or_explain(self, quit_on_error: bool = True) -> bool:
        """Set up; a run that cannot start says why in one line and (headless) ends with exit status 2."""
        try:
            self._start()
        except (DatabaseUnavailableError, CollectorError, OSError, psycopg2.Error, ValueError) as exc:
            log.error("cannot start the run: %s", exc)
            self.phase = f"cannot start the run: {exc}"
            if self.sut is not None:
                self.sut.stop(hurry=True)
                self.sut = None
            self.start_failed = True
            self.environment.process_exit_code = EXIT_CANNOT_START
            if quit_on_error and getattr(self.options, "headless", False):
                gevent.spawn(self.environment.runner.quit)
            return False
        return True

    def _start(self) -> None:
        """Database, FIFO, collector; tell the users (and workers) the run id and the FIFO."""
        live = self.environment.parsed_options
        for name in (*WEB_EDITABLE, "num_users", "spawn_rate", "run_time"):
            if hasattr(live, name):
                setattr(self.options, name, getattr(live, name))
        o = self.options
        check_load_options(o)
        self.started_at = utc_now()
        self.phase = "starting"
        self._database()
        with connect(self.database.dsn) as conn:
            apply_schema(conn)  # the verdict's queries need the tables even if the collector never made them
            with conn.cursor() as cur:
                cur.execute("SELECT now(), current_setting('server_version')")
                self.since, self.server_version = cur.fetchone()
        self.run_id = secrets.token_hex(4)
        self.run_dir = Path(o.report_dir).resolve() / self.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Each run writes its own locust.html into its folder; Locust writes --html at exit, here the last run's
        # report too unless the user named a file.
        if not getattr(self.options, "html_file", None):
            live.html_file = str(self.run_dir / "locust.html")
        self.worker_counts = {}
        self.writers.reset()
        self.sut = SystemUnderTest(o, self.run_dir, self.database)
        self.sut.start()
        live.np_run_id = self.run_id
        live.np_fifo = self.sut.fifo
        self.started = time.monotonic()  # again at _begin(), when the users start
        log.info("run %s: writing %s; reports in %s", self.run_id, self.sut.fifo, self.run_dir)

    def _sampler(self, sut: SystemUnderTest) -> Sampler:
        """The timeline's sampler of this run."""
        journal = self.run_dir / "journal"
        probes = Probes(
            fifo=sut.fifo,
            writers=self.writers,
            response_times=lambda: self.environment.stats.total.response_times,
            collector_pid=lambda: sut.collector.pid if sut.collector is not None and sut.collector.alive else None,
            metrics_url=sut.metrics_url,
            journal=journal,
            marks=sut.marks,
        )
        return Sampler(probes, self.started, getattr(self.options, "timeline_interval", DEFAULT_INTERVAL_S))

    # -- counters ---------------------------------------------------------------------------------------------
    def receive_counts(self, msg, **_kw) -> None:
        """Master: a worker's per-source counters (cumulative for the run)."""
        self.worker_counts[msg.node_id] = {src: SourceCounts.from_dict(c) for src, c in msg.data.items()}

    def receive_counts_local(self, counts: Mapping[str, SourceCounts]) -> None:
        """Local runner: the counters of this process's users."""
        self.worker_counts["local"] = copy.deepcopy(dict(counts))

    # -- stop -------------------------------------------------------------------------------------------------
    def stopped(self) -> None:
        """Test stop: finish the run in its own greenlet, so a web UI stop returns at once."""
        if self.starter is None or self.finisher is not None:
            return
        self.finisher = gevent.spawn(self.finish)

    def finish(self) -> None:
        """Wait for the data to land, stop the collector, verify, print and record the verdict."""
        if self.starter is not None:
            self.starter.join()
        sut = self.sut
        if sut is None:
            return
        try:
            with locust_tables_muted():
                self._finish(sut)
        except psycopg2.Error as exc:
            log.error("run %s: cannot verify: %s", self.run_id, str(exc).strip().splitlines()[0])
            self.phase = f"run {self.run_id}: cannot verify ({exc})"
            self.environment.process_exit_code = EXIT_FAIL
        finally:
            if self.sut is not None:
                self.sut.stop(hurry=True)
            self.sut = None
            if self.sampler is not None:
                self.sampler.stop()

    def _finish(self, sut: SystemUnderTest) -> None:
        users_stopped = time.monotonic()
        sut.cancel_faults()  # faults belong to the load: none may hit the drain
        sampler = self.sampler
        if sampler is not None:
            sampler.phase = "drain"
        self._gather_worker_counts()
        counts = {src: c for per_worker in self.worker_counts.values() for src, c in per_worker.items()}
        sent = sum(c.sent for c in counts.values())
        self.progress = DrainProgress(self.run_id, sent, self.options.drain_timeout, sut.fifo)
        adapter = sut.collector.adapter if sut.collector is not None else None
        landed_at = self._drain(sent, self.progress, drain_quiet_s(self.options, adapter))
        self.progress.say("stopping the collector")
        if sampler is not None:
            sampler.sample_now()
        collector_exit = sut.stop(hurry=self.interrupt.hurry.is_set())
        self.sut = None
        self.progress.say("verifying")
        if sampler is not None:
            sampler.phase = "verify"
        # In a thread of gevent's pool: the queries take seconds on a big run, and the timeline keeps sampling.
        sources, totals = gevent.get_hub().threadpool.apply(
            verify_run, (self.database.dsn, self.run_id, self.since, counts)
        )
        collector_report = (
            sut.watch.finish(self.database.dsn, self.run_id, sources, totals.bad_sent)
            if sut.watch is not None
            else None
        )
        timeline = sampler.stop(totals.landed, totals.rejected) if sampler is not None else []
        stats = self.environment.stats.total
        lasted = max(1e-6, landed_at - self.started)
        collector = sut.collector
        verdict = Verdict(
            run_id=self.run_id,
            scenario=_scenario_name(self.options),
            totals=totals,
            sources=sources,
            latency=Latency(
                p50_ms=round(stats.get_response_time_percentile(0.5) or 0, 1),
                p99_ms=round(stats.get_response_time_percentile(0.99) or 0, 1),
                max_ms=round(stats.max_response_time or 0, 1),
                blocked_s=round(sum(c.blocked_s for c in counts.values()), 3),
            ),
            rows_per_s=round(totals.landed / lasted, 1),
            lines_per_s=round(sent / max(1e-6, users_stopped - self.started), 1),
            duration_s=round(lasted, 2),
            faults=list(sut.fault_log),
            collector_exit=collector_exit,
            # None when unknown: no collector of ours, or it had exited before the harness could read its memory.
            collector_peak_rss_mib=round(collector.peak_rss_kib / 1024, 1)
            if collector is not None and collector.peak_rss_kib
            else None,
            interrupted=self.interrupt.signal_name,
            drain_skipped=self.drain_skipped,
            collector=collector_report,
            started_at=self.started_at,
            ended_at=utc_now(),
            options=recorded_options(self.options, HARNESS_OPTIONS),
            versions=versions(self.server_version),
            timeline=timeline,
            fault_spans=sampler.spans if sampler is not None else [],
        )
        verdict.expectations = check(verdict, self.options)
        self._write_html()
        report = write_report(verdict, self.run_dir)
        self._write_charts(verdict)
        self.verdict = verdict
        self.environment.process_exit_code = verdict.exit_code
        _say(render(verdict))
        charts = self.run_dir / "report.html"
        _say(
            f"report: {_shown_path(report)}"
            + (f"\ncharts: {_shown_path(charts)}" if charts.exists() else "")
            + f"\nopen the data: {self.database.psql_command()}   (run id {self.run_id}: "
            f"WHERE data->'_np'->>'run' = '{self.run_id}')"
        )
        self.phase = f"run {self.run_id}: {verdict.status}"
        self._prune(verdict)

    def _write_html(self) -> None:
        """Locust's HTML report of this run, into its report folder (the web UI writes none by itself)."""
        try:
            (self.run_dir / "locust.html").write_text(
                get_html_report(self.environment, show_download_link=False), encoding="utf-8"
            )
        except (OSError, ValueError, KeyError) as exc:
            log.warning("run %s: no locust.html written: %s", self.run_id, exc)

    def _write_charts(self, verdict: Verdict) -> None:
        """timeline.csv and report.html beside verdict.json (a failure here costs the charts, not the verdict)."""
        try:
            write_csv(verdict.timeline, self.run_dir / "timeline.csv")
            write_html(verdict.as_dict(), self.run_dir / "report.html")
        except (OSError, ValueError) as exc:
            log.warning("run %s: no timeline.csv or report.html written: %s", self.run_id, exc)

    def _prune(self, verdict: Verdict) -> None:
        """Delete the rows of runs beyond --keep-runs (after the verdict: never the rows being judged)."""
        try:
            with connect(self.database.dsn) as conn:
                record_and_prune(
                    conn,
                    self.run_id,
                    datetime.fromisoformat(verdict.started_at),
                    datetime.fromisoformat(verdict.ended_at),
                    self.options.keep_runs,
                )
        except psycopg2.Error as exc:
            log.warning("run %s: old runs not pruned: %s", self.run_id, str(exc).strip().splitlines()[0])

    def _gather_worker_counts(self) -> None:
        """Master: make sure every worker stopped and sent its counters (ask those that did not)."""
        runner = self.environment.runner
        if not isinstance(runner, MasterRunner):
            return
        deadline = time.monotonic() + WORKER_COUNTS_TIMEOUT_S
        asked: set[str] = set()
        while True:
            missing = [c.id for c in runner.clients.all if c.id not in self.worker_counts]
            if not missing:
                return
            if time.monotonic() > deadline or self.interrupt.hurry.is_set():
                log.error("workers %s sent no counters; their lines count as lost", missing)
                return
            for client_id in set(missing) - asked:
                runner.send_message("np_stop", None, client_id)
                asked.add(client_id)
            self.interrupt.hurry.wait(DRAIN_POLL_S)

    def _drain(self, sent: int, progress: DrainProgress, quiet_s: float = DRAIN_QUIET_S) -> float:
        """Wait until every sent line landed, nothing moved for quiet_s, the drain timeout, or a second signal;
        return when the last row landed."""
        self.phase = f"run {self.run_id}: draining"
        deadline = time.monotonic() + self.options.drain_timeout
        last, last_change = (-1, -1), time.monotonic()
        while True:
            if self.interrupt.hurry.is_set():
                self.drain_skipped = True
                progress.say("drain skipped (second signal)")
                return last_change
            try:
                # In gevent's thread pool: a count over a million rows takes seconds, the timeline samples on.
                now_counts = gevent.get_hub().threadpool.apply(
                    landed_count, (self.database.dsn, self.run_id, self.since)
                )
            except psycopg2.Error as exc:  # the database is away for now: no progress, keep waiting
                log.warning("drain: cannot count rows yet (%s)", str(exc).strip().splitlines()[0])
                now_counts = last
            now = time.monotonic()
            if now_counts != last:
                last, last_change = now_counts, now
            progress.poll(*now_counts)
            if now_counts[0] >= sent or now - last_change >= quiet_s or now >= deadline:
                if now_counts[0] < sent and now >= deadline:
                    log.warning("drain timeout: %d of %d sent lines landed", now_counts[0], sent)
                return last_change if now_counts[0] < sent else now
            self.interrupt.hurry.wait(DRAIN_POLL_S)

    # -- quit -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Quitting: finish a run still under way (as interrupted), then the collector, then the database."""
        if self._closing:
            # A second quitting (Locust's handler of a second SIGTERM): the first one cleans up and exits the
            # process. This greenlet must neither return nor raise, or Locust's shutdown would run a second time
            # and its sys.exit would reach the interpreter's own shutdown as a traceback: it waits for the end.
            gevent.event.Event().wait()
        self._closing = True
        try:
            if self.sut is not None and self.finisher is None:
                # Locust quits on SIGTERM without stopping the runner first: stop it, which finishes the run.
                self.interrupt.note("SIGTERM")
                self.environment.runner.stop()
                self.stopped()
            if self.starter is not None:
                self.starter.join()
            if self.finisher is not None:
                self.finisher.join()
            if self.sut is not None:
                self.sut.stop(hurry=True)
                self.sut = None
            if self.database_started:
                self.database.close()
                self.database_started = False
            if self.verdict is not None and not self.start_failed:
                self.environment.process_exit_code = self.verdict.exit_code
        finally:
            self._closed.set()

    # -- web UI -----------------------------------------------------------------------------------------------
    def web_rows(self) -> list[dict]:
        """The verdict tab's table: the phase (or the drain's progress), the expectations, then the sources."""
        status = self.phase
        if self.progress is not None and self.finisher is not None and not self.finisher.dead:
            status = self.progress.latest or status
        rows = [
            {"item": "status", "threshold": "", "observed": status, "result": ""},
            {"item": "charts", "threshold": "", "observed": f"open {CHARTS_PATH} (this run's timeline)", "result": ""},
        ]
        v = self.verdict
        if v is None or v.run_id != self.run_id:
            return rows
        rows[0]["result"] = v.status
        rows.extend(
            {
                "item": e.name,
                "threshold": f"{e.op} {e.threshold:g}",
                "observed": f"{e.observed:g}",
                "result": "✓" if e.passed else "✗",
            }
            for e in v.expectations
        )
        rows.extend(
            {
                "item": f"source {s.source}",
                "threshold": f"sent {s.sent}",
                "observed": f"landed {s.landed}, missing {s.missing}, dup {s.duplicated}",
                "result": "",
            }
            for s in v.sources
        )
        rows.append({"item": "report", "threshold": "", "observed": str(self.run_dir), "result": ""})
        return rows

    def web_charts(self) -> str:
        """The web UI's charts page: the last verdict's report, or the current run's timeline so far."""
        v = self.verdict
        if v is not None and v.run_id == self.run_id:
            return build_report(v.as_dict())
        sampler = self.sampler
        live = {
            "run_id": self.run_id,
            "scenario": _scenario_name(self.options),
            "status": self.phase,
            "timeline": list(sampler.samples) if sampler is not None else [],
            "fault_spans": list(sampler.spans) if sampler is not None else [],
        }
        return build_report(live, refresh_s=LIVE_CHARTS_REFRESH_S)

    def finishing(self) -> bool:
        """Whether a stopped run is still draining, verifying or writing its verdict (or about to: Locust reports
        "stopped" before its test_stop listeners ran, and the run holds its system under test until the drain)."""
        return self.sut is not None or (self.finisher is not None and not self.finisher.dead)

    def web_verdict(self) -> dict:
        """GET /namedpiper: the phase and the last verdict as JSON."""
        return {
            "phase": self.phase,
            "progress": self.progress.latest if self.progress else "",
            "verdict": self.verdict.as_dict() if self.verdict is not None else None,
        }


def _say(text: str) -> None:
    """Print to stdout: the verdict is the run's output, read by people and by CI logs."""
    print(text, flush=True)  # noqa: T201


def _shown_path(path: Path) -> str:
    """path relative to the working folder when it is inside it (no machine-specific prefix in the output)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _scenario_name(options) -> str:
    configs = (
        [c for c in (getattr(options, "config", None) or "").split(",") if c.endswith(".conf")]
        if isinstance(getattr(options, "config", None), str)
        else []
    )
    return Path(configs[-1]).stem if configs else "custom"
