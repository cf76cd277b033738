"""One harness run on the master (or local) runner: set up, drain, verify, judge, report, clean up."""

from __future__ import annotations

import atexit
import copy
import logging
import os
import secrets
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import gevent
import gevent.event
import psycopg2
from locust.html import get_html_report
from locust.runners import STATE_INIT, STATE_MISSING, MasterRunner

from loadtests.adapters.base import DEFAULT_DRAIN_QUIET_S, drain_quiet_s
from loadtests.database import Database, DatabaseUnavailableError, is_loopback, parse_listen
from loadtests.fifo_client import SourceCounts
from loadtests.fleet_master import UNANNOUNCED, Fleet, fleet_master_problem, host_sections, split_unverified
from loadtests.lifecycle import CollectorError, SystemUnderTest
from loadtests.local_hosts import LocalHosts
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
from reference.dsn import DSN_ENV, redact
from reference.schema import apply_schema

log = logging.getLogger("namedpiper")

# While draining, the harness polls the database this often...
DRAIN_POLL_S = 0.25
# ...and stops waiting once nothing new has landed for this long (torn lines never all land); an adapter or
# --drain-quiet may ask for longer.
DRAIN_QUIET_S = DEFAULT_DRAIN_QUIET_S
# Workers get this long to stop their users and send their counters to the master.
WORKER_COUNTS_TIMEOUT_S = 30.0
# A fleet host's owner gets this long beyond --drain-timeout to stop its collector and report (the collector's
# SIGTERM timeout is 60 s; a report later than that is not waited for).
FLEET_REPORT_MARGIN_S = 75.0
# Until the load starts, the master checks this often that the local fleet hosts it started still run.
LOCAL_HOSTS_POLL_S = 0.5
# Where a fleet master with a listening embedded database writes its DSN for hosts on other machines (beside the
# data folder, mode 600): the master never sends a password over its port.
FLEET_DSN_FILE = "fleet-dsn"
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
        listen = parse_listen(
            getattr(self.options, "db_listen", ""), getattr(self.options, "db_listen_allow_remote", False)
        )
        self.database = Database(self.options.dsn or None, listen=listen)
        self.database_started = False
        self._told_remote_hosts = False
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
        # A fleet (--fleet): the hosts run FIFOs and collectors; this master gathers their reports and verifies.
        self.fleet = Fleet()
        self.fleet_run = False  # a fleet run was started and is not finished
        self.fleet_collected = gevent.event.Event()  # the hosts drained and reported (or were given up on)
        self.local_hosts: LocalHosts | None = None

    # -- start ----------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """At Locust's init, before --run-time starts counting: the database, and for a headless run the whole
        set-up (initdb and a collector's start take seconds on a busy machine, which the load must not lose)."""
        self.preparing = True
        try:
            if getattr(self.options, "fleet", False):
                problem = fleet_master_problem(self.options, isinstance(self.environment.runner, MasterRunner))
                if problem:
                    log.error("cannot start the run: %s", problem)
                    self.environment.process_exit_code = EXIT_CANNOT_START
                    raise SystemExit(EXIT_CANNOT_START)
            self._database()
            if getattr(self.options, "fleet", False):
                self._start_local_hosts()
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

    def _tell_remote_hosts(self, dsn: str) -> None:
        """Say once how hosts on other machines reach the database the master does not send them."""
        if self._told_remote_hosts or int(getattr(self.options, "local_hosts", 0) or 0) > 0:
            return
        self._told_remote_hosts = True
        embedded = self.database.embedded
        if embedded is None or dsn == self.database.dsn:
            if redact(dsn) != dsn:
                log.info("fleet: the DSN holds a password, so the master does not send it: give each host %s", DSN_ENV)
            return
        host, port = embedded.listen or ("", 0)
        if is_loopback(host):
            log.warning(
                "fleet: --db-listen %s:%d is this machine's loopback: hosts on other machines cannot reach it; give "
                "an address they can reach with --db-listen-allow-remote, or a server of your own in %s",
                host,
                port,
                DSN_ENV,
            )
        secret = embedded.data_dir.parent / FLEET_DSN_FILE
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(dsn + "\n")
        log.warning(
            "fleet: hosts on other machines need %s set to the DSN in %s (mode 600: it holds the database's "
            "password, which the master never sends over its port)",
            DSN_ENV,
            secret,
        )

    def _start_local_hosts(self) -> None:
        """--local-hosts N: start N worker hosts on this machine, each in a mount namespace of its own."""
        count = int(getattr(self.options, "local_hosts", 0) or 0)
        if count <= 0:
            return
        try:
            self.local_hosts = LocalHosts.start(self.options, count, self.database.remote_dsn)
        except (OSError, ValueError) as exc:
            log.error("cannot start the run: --local-hosts: %s", exc)
            self.environment.process_exit_code = EXIT_CANNOT_START
            raise SystemExit(EXIT_CANNOT_START) from None
        gevent.spawn(self._watch_local_hosts, self.local_hosts)

    def _watch_local_hosts(self, hosts: LocalHosts) -> None:
        """Until the load starts: a local host that ended (not root, no unshare) ends the run with status 2, instead
        of the master waiting for a worker that never comes."""
        runner = self.environment.runner
        while runner.state == STATE_INIT and self.local_hosts is hosts:
            gone = hosts.exited()
            if gone:
                log.error("cannot start the run: local fleet host %s", "; ".join(gone))
                self.start_failed = True
                self.fleet_run = False  # nothing ran: no verdict to give
                self.environment.process_exit_code = EXIT_CANNOT_START
                runner.quit()
                self.close()  # the other hosts, the database
                # Locust's headless master waits for its workers in a plain loop that only --expect-workers-max-wait
                # ends (with status 1, without its quitting event): end it here, cleaned up, with status 2.
                gevent.get_hub().parent.throw(SystemExit(EXIT_CANNOT_START))
                return
            gevent.sleep(LOCAL_HOSTS_POLL_S)

    def _database(self) -> None:
        if not self.database_started:
            self.database.start()
            self.database_started = True
            # Locust's headless master ends with sys.exit(1) and no quitting event when --expect-workers-max-wait
            # runs out (a fleet host that never came): the embedded database must not outlive the harness then.
            atexit.register(self._stop_database_at_exit)

    def _stop_database_at_exit(self) -> None:
        if self.database_started:
            self.database.close()
            self.database_started = False

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
        if getattr(o, "fleet", False):
            # Each host runs its own FIFO and collector; the workers get the run id and the DSN with the spawn
            # message (Locust passes the master's options to its workers), never on a command line.
            self.fleet.reset()
            self.fleet_collected.clear()
            self.fleet_run = True
            live.np_fleet = True
            # Locust's spawn message goes to whoever connects to the master port, unauthenticated: a DSN with a
            # password never travels in it. The local hosts have it in their environment; other hosts need their own
            # NAMEDPIPER_DSN (docs/fleet.md).
            dsn = self.database.remote_dsn
            live.np_dsn = dsn if redact(dsn) == dsn else ""
            self._tell_remote_hosts(dsn)
            live.np_fifo = ""
            live.np_run_id = self.run_id
            self.started = time.monotonic()
            log.info("fleet run %s: the hosts write their own FIFOs; reports in %s", self.run_id, self.run_dir)
            return
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

    def receive_host(self, msg, **_kw) -> None:
        """Master: a fleet worker announced its host (and whether it runs the host's collector)."""
        self.fleet.receive_hello(msg.node_id, msg.data or {}, self.environment.runner.get_worker_index(msg.node_id))

    def receive_host_report(self, msg, **_kw) -> None:
        """Master: a fleet host drained and stopped its collector."""
        self.fleet.receive_report(msg.node_id, msg.data or {})

    def receive_counts_local(self, counts: Mapping[str, SourceCounts]) -> None:
        """Local runner: the counters of this process's users."""
        self.worker_counts["local"] = copy.deepcopy(dict(counts))

    # -- stop -------------------------------------------------------------------------------------------------
    def stopped(self) -> None:
        """Test stop: finish the run in its own greenlet, so a web UI stop returns at once."""
        if self.starter is None or self.finisher is not None:
            return
        self.finisher = gevent.spawn(self.finish)
        if self.fleet_run and getattr(self.options, "headless", False):
            # A headless master quits its workers (and stops listening to them) as soon as this returns: the hosts
            # must drain and report first.
            self.fleet_collected.wait(WORKER_COUNTS_TIMEOUT_S + self.options.drain_timeout + FLEET_REPORT_MARGIN_S)

    def stop_and_collect_fleet(self) -> None:
        """A fleet run under way (web UI): stop it and wait until the hosts reported, before anything quits Locust."""
        if not self.fleet_run:
            return
        self.environment.runner.stop()  # fires test_stop (once), which starts the finish
        self.fleet_collected.wait(WORKER_COUNTS_TIMEOUT_S + self.options.drain_timeout + FLEET_REPORT_MARGIN_S)

    def finish(self) -> None:
        """Wait for the data to land, stop the collector, verify, print and record the verdict."""
        if self.starter is not None:
            self.starter.join()
        if self.fleet_run:
            try:
                with locust_tables_muted():
                    self._finish_fleet()
            except psycopg2.Error as exc:
                log.error("run %s: cannot verify: %s", self.run_id, str(exc).strip().splitlines()[0])
                self.phase = f"run {self.run_id}: cannot verify ({exc})"
                self.environment.process_exit_code = EXIT_FAIL
            finally:
                self.fleet_run = False
                self.fleet_collected.set()
            return
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
            latency=_latency(stats, counts),
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
        self._publish(verdict)

    def _publish(self, verdict: Verdict) -> None:
        """Check the expectations, write the reports, print the verdict, set the exit status, prune old runs."""
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

    def _collect_fleet(self) -> None:
        """Master: every worker's counters, then each host's drain and report (its owner drains locally)."""
        runner = self.environment.runner
        self._gather_worker_counts()
        asked = []
        for host, workers in self.fleet.hosts().items():
            owner = self.fleet.owner(host)
            if owner is None or owner.error or owner.client_id not in self.worker_counts:
                continue
            expected = sum(c.sent for w in workers for c in self.worker_counts.get(w.client_id, {}).values())
            runner.send_message(
                "np_drain",
                {"expected": expected, "indexes": [w.index for w in workers], "hurry": self.interrupt.hurry.is_set()},
                owner.client_id,
            )
            asked.append(host)
        deadline = time.monotonic() + self.options.drain_timeout + FLEET_REPORT_MARGIN_S
        while any(h not in self.fleet.reports for h in asked):
            if time.monotonic() > deadline or self.interrupt.hurry.is_set():
                log.error("fleet hosts %s sent no report", [h for h in asked if h not in self.fleet.reports])
                break
            self.interrupt.hurry.wait(DRAIN_POLL_S)
        self.fleet_collected.set()

    def _finish_fleet(self) -> None:
        """Master of a fleet: collect the hosts' reports, verify centrally, one verdict with a section per host."""
        users_stopped = time.monotonic()
        self.phase = f"run {self.run_id}: the hosts drain"
        _say(f"namedpiper: fleet run {self.run_id}: {len(self.fleet.hosts())} hosts drain and report")
        self._collect_fleet()
        counts = {src: c for per_worker in self.worker_counts.values() for src, c in per_worker.items()}
        sent = sum(c.sent for c in counts.values())
        runner = self.environment.runner
        unannounced = self.fleet.note_unannounced({c.id: runner.get_worker_index(c.id) for c in runner.clients.all})
        vanished = {
            cid: w
            for cid, w in self.fleet.workers.items()
            if cid not in self.worker_counts or w.host == UNANNOUNCED  # an unknown client's counters prove nothing
        }
        for w in unannounced:
            log.warning("worker %s (index %d) joined the run but never announced a host", w.client_id, w.index)
        self.phase = f"run {self.run_id}: verifying"
        sources, totals = gevent.get_hub().threadpool.apply(
            verify_run, (self.database.dsn, self.run_id, self.since, counts)
        )
        sources, gone, totals = split_unverified(sources, totals, {w.index for w in vanished.values()})
        last_sent = {cid: self.writers.workers.get(cid, {}).get("sent", 0) for cid in vanished}
        hosts = host_sections(self.fleet, sources, vanished, last_sent)
        unverified = []
        for host in sorted({w.host for w in vanished.values()}):
            workers = [w for w in vanished.values() if w.host == host]
            indexes = {w.index for w in workers}
            theirs = [s for s in gone if int(s.source[1:].split("u")[0]) in indexes]
            unverified.append(
                {
                    "host": host,
                    "workers": [{"client_id": w.client_id, "index": w.index} for w in workers],
                    "sources": len(theirs),
                    "source_names": [s.source for s in theirs],
                    "rows": sum(s.rows for s in theirs),
                    "sent_last_report": int(sum(last_sent.get(w.client_id, 0) for w in workers)),
                }
            )
        reported = [h for h in hosts if h["state"] == "reported"]
        exits = [h["collector_exit"] for h in reported if h["collector_exit"] is not None]
        rss = [h["collector_peak_rss_mib"] for h in reported if h["collector_peak_rss_mib"] is not None]
        stats = self.environment.stats.total
        verdict = Verdict(
            run_id=self.run_id,
            scenario=_scenario_name(self.options),
            totals=totals,
            sources=sources,
            latency=_latency(stats, counts),
            # Each host measures from its start until its last row landed; the fleet's rate is their sum.
            rows_per_s=round(sum(h["rows_per_s"] or 0 for h in reported), 1),
            lines_per_s=round(sent / max(1e-6, users_stopped - self.started), 1),
            duration_s=round(time.monotonic() - self.started, 2),
            collector_exit=next((e for e in exits if e != 0), 0) if exits else None,
            collector_peak_rss_mib=max(rss) if rss else None,
            interrupted=self.interrupt.signal_name,
            drain_skipped=self.interrupt.hurry.is_set(),
            started_at=self.started_at,
            ended_at=utc_now(),
            options=recorded_options(self.options, HARNESS_OPTIONS),
            versions=versions(self.server_version),
            hosts=hosts,
            unverified=unverified,
        )
        self._publish(verdict)

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
            # A worker Locust marked missing (no heartbeat) sends nothing more: not waited for.
            missing = [c.id for c in runner.clients.all if c.id not in self.worker_counts and c.state != STATE_MISSING]
            if not missing:
                return
            if time.monotonic() > deadline or self.interrupt.hurry.is_set():
                fate = "are unverified" if self.fleet_run else "count as lost"
                log.error("workers %s sent no counters; their lines %s", missing, fate)
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
            if (self.sut is not None or self.fleet_run) and self.finisher is None:
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
            if self.local_hosts is not None:
                self.local_hosts.stop()
                self.local_hosts = None
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
        return self.sut is not None or self.fleet_run or (self.finisher is not None and not self.finisher.dead)

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


def _latency(stats, counts: Mapping[str, SourceCounts]) -> Latency:
    """Write latency from Locust's statistics (one request a write), and the time writers spent blocked."""
    return Latency(
        p50_ms=round(stats.get_response_time_percentile(0.5) or 0, 1),
        p99_ms=round(stats.get_response_time_percentile(0.99) or 0, 1),
        max_ms=round(stats.max_response_time or 0, 1),
        blocked_s=round(sum(c.blocked_s for c in counts.values()), 3),
    )


def _scenario_name(options) -> str:
    configs = (
        [c for c in (getattr(options, "config", None) or "").split(",") if c.endswith(".conf")]
        if isinstance(getattr(options, "config", None), str)
        else []
    )
    return Path(configs[-1]).stem if configs else "custom"
