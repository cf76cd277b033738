"""The namedpiper locustfile: `locust -f loadtests/fifo.py` or `locust --config scenarios/NAME.conf`."""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import os
import random
import signal
import sys
from pathlib import Path

# Run from a checkout without `pip install -e .`: make the project importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import User, events, task
from locust.exception import StopUser
from locust.runners import STATE_STOPPED, MasterRunner, WorkerRunner

from loadtests import webui
from loadtests.collector_process import CollectorError
from loadtests.corpus import BadLine, CorpusError, load_corpus, select
from loadtests.database import parse_listen
from loadtests.fifo_client import FifoClient, SourceCounts, WriteGate
from loadtests.fleet_host import FleetHost, host_id
from loadtests.interrupt import Interrupt
from loadtests.options import EXIT_CANNOT_START, add_options, parse_size_mix
from loadtests.run import Run
from loadtests.timeline import REPORT_KEY, writer_totals
from reference.dsn import DSN_ENV
from reference.events import EventFactory
from reference.fifo import PIPE_BUF
from reference.sizes import parse_size

log = logging.getLogger("namedpiper")

# Users get this long to unwind after being stopped (they only update counters on the way out).
USER_EXIT_WAIT_S = 5.0
# Counters of the users in this process, by source; cumulative over a run, sent to the master at its end.
COUNTS: dict[str, SourceCounts] = {}
# With hostile input on, the users of this process share it: the 2 MiB bad line must not tear with their writes.
GATE = WriteGate()
# Locust request name of the bad lines' writes.
HOSTILE_REQUEST = "hostile"
# Users are numbered from 0 in every run, per process, so the sources of two runs compare line by line.
_user_numbers = itertools.count()
_run: Run | None = None
INTERRUPT = Interrupt()
# A fleet worker: its own options as started (Locust's spawn message overwrites the live ones with the master's),
# and its share of its host for the current run.
_own_options = None
_host: FleetHost | None = None


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    add_options(parser)


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    global _run, _own_options
    try:
        parse_size_mix(environment.parsed_options.size_mix)
        if not getattr(environment.parsed_options, "timeline_interval", 1.0) > 0:
            raise ValueError(
                f"--timeline-interval {environment.parsed_options.timeline_interval}: give the "
                "seconds between the timeline's samples, more than 0 (default 1)"
            )
        _hostile_lines(environment.parsed_options)
        parse_listen(
            getattr(environment.parsed_options, "db_listen", ""),
            getattr(environment.parsed_options, "db_listen_allow_remote", False),
        )
    except ValueError as exc:
        log.error("%s", exc)
        environment.process_exit_code = EXIT_CANNOT_START
        raise SystemExit(EXIT_CANNOT_START) from None
    # What the web UI shows as "host": where the users write (there is no HTTP host).
    FifoUser.host = f"fifo:{environment.parsed_options.fifo or 'a new FIFO per run'}"
    if isinstance(environment.runner, WorkerRunner):
        _own_options = copy.copy(environment.parsed_options)
        try:
            host_id(_own_options)
        except ValueError as exc:
            log.error("%s", exc)
            environment.process_exit_code = EXIT_CANNOT_START
            raise SystemExit(EXIT_CANNOT_START) from None
        environment.runner.register_message("np_stop", _on_np_stop)
        # Concurrent: the drain takes seconds, and this worker must keep answering Locust meanwhile.
        environment.runner.register_message("np_drain", _on_np_drain, concurrent=True)
        if getattr(environment.parsed_options, "processes", None):
            # A Ctrl-C reaches the whole process group: the master stops these workers through Locust.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return
    _run = Run(environment, INTERRUPT)
    _run.writers.local = COUNTS
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message("np_counts", _run.receive_counts)
        environment.runner.register_message("np_host", _run.receive_host)
        environment.runner.register_message("np_host_report", _run.receive_host_report)
    INTERRUPT.install(functools.partial(_stop_like_run_time, environment))
    _run.prepare()
    if environment.web_ui is not None:
        webui.install(environment.web_ui, _run.web_rows, _run.web_verdict, _run.finishing, _run.web_charts)


def _stop_like_run_time(environment) -> None:
    """After the first SIGINT: stop the load and quit as --run-time does (the run drains in test_stop)."""
    if _run is not None and _run.preparing:
        return  # the set-up at init sees the signal and finishes the run itself
    if _run is not None and environment.web_ui is not None:
        # A fleet run in the web UI drains its hosts in the background; Locust's quit would stop listening to them.
        _run.stop_and_collect_fleet()
    environment.runner.quit()
    if environment.web_ui is not None:
        environment.web_ui.stop()  # ends Locust's main greenlet in web UI mode, which then quits


def _hostile_lines(o) -> list[BadLine]:
    """The corpus lines the users send with --hostile-every ([] when off); ValueError for a bad setting."""
    if o.hostile_every < 0:
        raise ValueError(f"--hostile-every {o.hostile_every}: give 0 (off) or a number of writes between bad lines")
    if not o.hostile_every:
        return []
    if o.account_bytes:
        raise ValueError(
            "--hostile-every and --account-bytes do not mix: the bad lines' bytes would count as "
            "accounted bytes of torn lines; drop one of them"
        )
    try:
        return _corpus(o.hostile_kinds)
    except CorpusError as exc:
        raise ValueError(f"--hostile-every: {exc}") from None


@functools.lru_cache(maxsize=4)
def _corpus(kinds: str) -> list[BadLine]:
    """The corpus, read once per process (its 2 MiB line is shared by the users)."""
    return select(load_corpus(), kinds)


def _on_np_stop(environment, msg, **_kw) -> None:
    """Worker: the master needs this worker's counters now (a headless quit does not stop workers first)."""
    if environment.runner.state == STATE_STOPPED:
        _send_counts(environment)
    else:
        environment.runner.stop()  # fires test_stop, which sends the counters


def _on_np_drain(environment, msg, **_kw) -> None:
    """Fleet worker owning its host's collector: drain locally, stop the collector, report to the master."""
    host = _host
    if host is None:
        return
    data = msg.data or {}
    try:
        report = host.finish(int(data.get("expected", 0)), list(data.get("indexes", [])), bool(data.get("hurry")))
    except Exception as exc:
        log.exception("host %s: drain failed", host.host)
        report = {"host": host.host, "error": f"drain failed: {type(exc).__name__}: {exc}"}
    environment.runner.send_message("np_host_report", report)
    try:
        host.close()
    except OSError as exc:
        log.error("host %s: cannot clean up its run folder: %s", host.host, exc)


def _join_host(environment) -> None:
    """Fleet worker at test start: join this host (run its FIFO and collector, or use its owner's)."""
    global _host
    if _host is not None:
        _host.close()
    o = environment.parsed_options
    runner = environment.runner
    # The host's own NAMEDPIPER_DSN first (a DSN with a password never comes from the master: see run.py).
    dsn = os.environ.get(DSN_ENV, "") or getattr(o, "np_dsn", "")
    _host = FleetHost(_own_options or o, o.np_run_id, dsn, runner.worker_index)
    error = ""
    try:
        if not dsn:
            raise CollectorError(
                f"no database: set {DSN_ENV} on this host to the central database's DSN (the master sends a DSN "
                "only when it holds no password, since anyone who connects to its port would receive it)"
            )
        _host.join()
    except (CollectorError, OSError) as exc:
        error = str(exc)
        log.error("host %s cannot take part in run %s: %s", _host.host, o.np_run_id, error)
        _host.error = error
    runner.send_message(
        "np_host", {"host": _host.host, "index": runner.worker_index, "owner": _host.owner, "error": error}
    )
    if not error:
        _host.begin()


def _send_counts(environment) -> None:
    """Worker: this process's counters to the master."""
    environment.runner.send_message("np_counts", {src: c.as_dict() for src, c in COUNTS.items()})


@events.report_to_master.add_listener
def _on_report_to_master(client_id, data, **_kw) -> None:
    """Worker: this process's counters ride along with Locust's periodic report (the master's timeline)."""
    data[REPORT_KEY] = writer_totals(COUNTS)


@events.worker_report.add_listener
def _on_worker_report(client_id, data, **_kw) -> None:
    if _run is not None:
        _run.writers.worker_report(client_id, data)


@events.test_start.add_listener
def _on_test_start(environment, **_kw) -> None:
    global _user_numbers
    COUNTS.clear()
    GATE.reset()
    _user_numbers = itertools.count()
    if isinstance(environment.runner, WorkerRunner) and getattr(environment.parsed_options, "np_fleet", False):
        _join_host(environment)
    if _run is not None:
        _run.start()


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw) -> None:
    # A run that ends by --run-time kills users without waiting: let them finish their own bookkeeping.
    environment.runner.user_greenlets.join(timeout=USER_EXIT_WAIT_S)
    if isinstance(environment.runner, WorkerRunner):
        _send_counts(environment)
    elif _run is not None:
        if not isinstance(environment.runner, MasterRunner):
            _run.receive_counts_local(COUNTS)
        _run.stopped()


@events.quitting.add_listener
def _on_quitting(environment, **_kw) -> None:
    if _run is not None:
        _run.close()
    if _host is not None:
        _host.close()  # a master that quit before asking for the drain: the collector stops with the worker


class FifoUser(User):
    """Writes faker log lines into the FIFO as fast as it can, one Locust request per write."""

    def on_start(self) -> None:
        """Pick this user's size class from the mix, then open its own event source."""
        o = self.environment.parsed_options
        self.client = None
        if not getattr(o, "np_run_id", ""):
            return  # the run did not start (the master logs why, once); the task stops this user
        fifo = o.np_fifo
        if getattr(o, "np_fleet", False):
            if _host is None or _host.error:
                return  # this host could not start its collector (its worker told the master why)
            fifo = _host.fifo  # in a fleet, users write to their own host's FIFO only
        number = next(_user_numbers)
        mix = parse_size_mix(o.size_mix)
        chooser = random.Random(f"{o.seed}:{number}")
        self.size_name = chooser.choices([n for n, _ in mix], weights=[w for _, w in mix])[0]
        size = parse_size(self.size_name)
        worker = getattr(self.environment.runner, "worker_index", 0)
        self.source = f"p{worker}u{number}"
        self.counts = COUNTS.setdefault(self.source, SourceCounts())
        self.factory = EventFactory(size, seed=o.seed, run_id=o.np_run_id, source=self.source)
        # Packing: as many whole lines as surely fit in PIPE_BUF; a larger line travels alone.
        self.lines_per_write = o.lines_per_write or max(1, PIPE_BUF // size.high)
        self.record_big = o.account_bytes and size.high > PIPE_BUF
        self.size_high = size.high
        # Hostile input: every --hostile-every writes, the next corpus line. Users start spread over the kinds,
        # so a short run still sends every kind.
        bad_lines = _hostile_lines(o)
        self.bad_lines = None
        if bad_lines:
            start = number * len(bad_lines) // max(1, o.num_users or 1) % len(bad_lines)
            self.bad_lines = itertools.islice(itertools.cycle(bad_lines), start, None)
        self.writes = 0
        self.client = FifoClient(
            self.environment,
            fifo,
            self.counts,
            drop_when_full=o.drop_when_full,
            reopen_per_write=o.reopen_per_write,
            gate=GATE if bad_lines else None,
        )

    def on_stop(self) -> None:
        """Close the write end."""
        if self.client is not None:
            self.client.close()

    @task
    def write_lines(self) -> None:
        """Generate one write's worth of lines and write them (or, every --hostile-every writes, a bad line)."""
        if self.client is None:
            raise StopUser
        glued = []
        count = self.lines_per_write
        if self.bad_lines is not None:
            self.writes += 1
            if self.writes % (self.environment.parsed_options.hostile_every + 1) == 0:
                bad = next(self.bad_lines)
                if not bad.glue:
                    self.client.write([bad.raw + b"\n"], HOSTILE_REQUEST, bad=1)
                    return
                # A writer that stopped mid-line: its fragment and the next good lines go in one write, so
                # the fragment glues onto a good line (and stays atomic below PIPE_BUF).
                glued = [bad.raw]
                count = max(1, min(count, (PIPE_BUF - len(bad.raw)) // self.size_high))
        lines = self.factory.lines(count)
        # No yield point between generating and counting: a stop cannot catch lines in between.
        self.counts.generated += len(lines)
        first = self.factory.seq - len(lines) + 1
        if self.client.write(glued + lines, self.size_name, bad=len(glued)) and self.record_big:
            self.counts.big_lines.extend((first + i, len(line)) for i, line in enumerate(lines) if len(line) > PIPE_BUF)
