"""One application host of a fleet, on its Locust worker: the host's FIFO, collector and faults, and its drain."""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import logging
import os
import re
import socket
import stat
import tempfile
import time
from datetime import datetime
from pathlib import Path

import gevent
import psycopg2

from loadtests.adapters.base import drain_quiet_s
from loadtests.collector_process import CollectorError
from loadtests.database import Database, DatabaseUnavailableError
from loadtests.lifecycle import SystemUnderTest
from loadtests.verify import connect
from loadtests.window import CLOCK_SKEW_MARGIN, WINDOW_SESSION_SQL, scoped
from reference.collector.reader import lock_path, stand_in_path

log = logging.getLogger("namedpiper")

# The first worker of a host to take this lock (flock) in the host's run folder owns the FIFO and the collector.
OWNER_LOCK = "owner.lock"
# The owner writes this file once its collector is ready ("ok") or could not start ("error: why").
READY_FILE = "ready"
FIFO_NAME = "logs.fifo"
# Other workers of the host poll for the owner's ready file this often.
READY_POLL_S = 0.1
# ... and wait this long beyond the collector's own --ready-timeout (the owner may start a few seconds later).
READY_MARGIN_S = 15.0
# While draining, the owner counts its host's rows this often.
DRAIN_POLL_S = 0.25
# A host id names a folder and a verdict section: letters, digits and . _ - only.
HOST_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Rows of the run from this host's sources (the sources are Locust worker indexes: unique across the fleet), in
# the run's time window (loadtests/window.py) from the host's own start: polled every DRAIN_POLL_S while draining,
# so it must not scan a big table.
HOST_LANDED_TEMPLATE = (
    "SELECT count(*) FROM logs WHERE {window} AND data->'_np'->>'run' = %(run)s "
    "AND data->'_np'->>'src' LIKE ANY(%(prefixes)s)"
)
HOST_LANDED_SQL = scoped(HOST_LANDED_TEMPLATE)
HOST_LANDED_WHOLE_TABLE_SQL = scoped(HOST_LANDED_TEMPLATE, whole_table=True)


def host_id(options) -> str:
    """--host-id, or this machine's hostname; ValueError for a name that cannot be a folder."""
    name = (getattr(options, "host_id", "") or "").strip() or socket.gethostname().split(".")[0]
    if not HOST_ID_PATTERN.fullmatch(name):
        raise ValueError(
            f"--host-id {name!r}: give 1 to 63 letters, digits, '.', '_' or '-' (it names the host's run folder)"
        )
    return name


def fleet_dir(options) -> Path:
    """The folder under which each run gets the host's FIFO and owner lock."""
    given = (getattr(options, "fleet_dir", "") or "").strip()
    return Path(given) if given else Path(tempfile.gettempdir()) / "namedpiper-fleet"


def private_folders(folder: Path) -> None:
    """Create folder and its missing parents (mode 0700); OSError unless each of the fleet's levels is a real
    folder of this user that no one else may write to.

    The default fleet folder sits in a shared /tmp under a predictable name: another local user who created it
    first (or a symlink in its place) could read or swap the hosts' FIFOs.
    """
    levels = [folder.parent.parent, folder.parent, folder]  # fleet folder, run, host
    for level in levels:
        with contextlib.suppress(FileExistsError):
            level.mkdir(mode=0o700, parents=True)
        st = os.lstat(level)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise OSError(
                f"{level} is not a folder of this user closed to others (owner uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):o}): remove it, or give --fleet-dir a folder of your own"
            )


def source_prefixes(worker_indexes: list[int]) -> list[str]:
    """LIKE patterns of the sources of these Locust workers (p<index>u<n>)."""
    return [f"p{i}u%" for i in sorted(set(worker_indexes))]


class FleetHost:
    """This worker's share of its host: the owner runs the FIFO and collector, the others write to its FIFO."""

    def __init__(self, options, run_id: str, dsn: str, worker_index: int) -> None:
        self.options = copy.copy(options)  # the host's own options (its command line, config and environment)
        self.host = host_id(options)
        self.run_id = run_id
        self.dsn = dsn
        self.worker_index = worker_index
        self.folder = fleet_dir(options) / run_id / self.host
        # The host's own --fifo (a collector beside the application already reads it: --collector-cmd none, as in
        # docker-compose's fleet profile), else a new FIFO in the host's run folder.
        given = (getattr(options, "fifo", "") or "").strip()
        self.fifo = str(Path(given).resolve()) if given else str(self.folder / FIFO_NAME)
        self.owner = False
        self.sut: SystemUnderTest | None = None
        self.report_dir: Path | None = None
        self.started = time.monotonic()
        self.since: datetime | None = None  # the database's now() when this host's collector was ready
        self._lock_fd: int | None = None
        self.error = ""

    # -- start --------------------------------------------------------------------------------------------------
    def join(self) -> None:
        """Become the host's owner (start FIFO and collector) or wait for the owner's; CollectorError if neither."""
        private_folders(self.folder)
        fd = os.open(self.folder / OWNER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            self._wait_for_owner()
            return
        self._lock_fd = fd  # held for the run: the lock is the ownership
        self.owner = True
        try:
            self._start()
        except (CollectorError, DatabaseUnavailableError, OSError, ValueError) as exc:
            self._mark_ready(f"error: {exc}")
            raise CollectorError(str(exc)) from None
        self._mark_ready("ok")

    def _start(self) -> None:
        o = self.options
        o.fifo = self.fifo
        report = Path(o.report_dir or "reports").resolve() / self.run_id / self.host
        report.mkdir(parents=True, exist_ok=True)
        self.report_dir = report
        database = Database(self.dsn)
        self.sut = SystemUnderTest(o, report, database)
        self.sut.start()
        self.since = _database_now(self.dsn)  # before the load: every line of this host is generated after it
        log.info("host %s: collector ready on %s (run %s)", self.host, self.fifo, self.run_id)

    def _mark_ready(self, text: str) -> None:
        (self.folder / READY_FILE).write_text(text)

    def _wait_for_owner(self) -> None:
        timeout = float(getattr(self.options, "ready_timeout", 30.0) or 30.0) + READY_MARGIN_S
        deadline = time.monotonic() + timeout
        ready = self.folder / READY_FILE
        while not ready.exists():
            if time.monotonic() > deadline:
                raise CollectorError(f"host {self.host}: its owner worker set up no collector within {timeout:g} s")
            gevent.sleep(READY_POLL_S)
        text = ready.read_text()
        if text != "ok":
            raise CollectorError(f"host {self.host}: the owner worker's collector did not start ({text})")

    def begin(self) -> None:
        """The load starts: the host's fault schedule starts counting."""
        self.started = time.monotonic()
        if self.sut is not None:
            self.sut.schedule_faults(self.started)

    # -- end ----------------------------------------------------------------------------------------------------
    def finish(self, expected: int, worker_indexes: list[int], hurry: bool = False) -> dict:
        """Owner: drain until the host's sent lines landed (or quiet, or timeout), stop the collector, report."""
        sut = self.sut
        if sut is None:
            return {"host": self.host, "error": self.error or "this worker owns no collector"}
        sut.cancel_faults()
        adapter = sut.collector.adapter if sut.collector is not None else None
        landed, landed_at = (0, time.monotonic())
        if not hurry:
            landed, landed_at = self._drain(expected, worker_indexes, drain_quiet_s(self.options, adapter))
        collector = sut.collector
        exit_status = sut.stop(hurry=hurry)
        self.sut = None
        report = sut.watch.report.as_dict() if sut.watch is not None else None
        lasted = max(1e-6, landed_at - self.started)
        return {
            "host": self.host,
            "expected": expected,
            "landed_rows": landed,
            "rows_per_s": round(landed / lasted, 1),
            "collector_exit": exit_status,
            "collector_peak_rss_mib": round(collector.peak_rss_kib / 1024, 1)
            if collector is not None and collector.peak_rss_kib
            else None,
            "faults": list(sut.fault_log),
            "collector": report,
            "report_dir": str(self.report_dir) if self.report_dir is not None else None,
        }

    def _drain(self, expected: int, worker_indexes: list[int], quiet_s: float) -> tuple[int, float]:
        """(rows of the host's sources, when the last one landed) once all landed, nothing moved, or the timeout."""
        deadline = time.monotonic() + float(self.options.drain_timeout)
        prefixes = source_prefixes(worker_indexes)
        last, last_change = -1, time.monotonic()
        while True:
            try:
                now_count = gevent.get_hub().threadpool.apply(
                    _host_landed, (self.dsn, self.run_id, prefixes, self.since)
                )
            except psycopg2.Error as exc:
                log.warning("host %s: cannot count rows yet (%s)", self.host, str(exc).strip().splitlines()[0])
                now_count = last
            now = time.monotonic()
            if now_count != last:
                last, last_change = now_count, now
            if now_count >= expected or now - last_change >= quiet_s or now >= deadline:
                if now_count < expected:
                    log.warning("host %s: drain ended with %d of %d sent lines landed", self.host, now_count, expected)
                return max(0, now_count), (now if now_count >= expected else last_change)
            gevent.sleep(DRAIN_POLL_S)

    def close(self) -> None:
        """Stop a collector still running (quickly) and remove the host's run folder of this run."""
        if self.sut is not None:
            self.sut.stop(hurry=True)
            self.sut = None
        if self._lock_fd is not None:
            fifo = self.folder / FIFO_NAME
            beside = (lock_path(fifo), stand_in_path(fifo), self.folder / READY_FILE, self.folder / OWNER_LOCK)
            for path in (fifo, *beside):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            os.close(self._lock_fd)
            self._lock_fd = None
            with contextlib.suppress(OSError):
                self.folder.rmdir()
                self.folder.parent.rmdir()


def _database_now(dsn: str) -> datetime:
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0]


def _host_landed(dsn: str, run_id: str, prefixes: list[str], since: datetime | None) -> int:
    """Rows of the host's sources; over the whole table only if the host's start time is unknown."""
    with contextlib.closing(connect(dsn)) as conn, conn.cursor() as cur:
        if since is None:
            cur.execute(HOST_LANDED_WHOLE_TABLE_SQL, {"run": run_id, "prefixes": prefixes})
        else:
            cur.execute(WINDOW_SESSION_SQL)
            params = {"run": run_id, "prefixes": prefixes, "since": since, "margin": CLOCK_SKEW_MARGIN}
            cur.execute(HOST_LANDED_SQL, params)
        return int(cur.fetchone()[0])
