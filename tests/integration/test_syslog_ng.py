"""The syslog-ng adapter against the real syslog-ng 3.38 and PostgreSQL; the refusal of faults it cannot perform."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import psycopg2.extensions
import pytest
from harness import ROOT, clean_env, latest_verdict, locust_path

from loadtests.adapters.base import Context
from loadtests.adapters.stopping import CollectorWatch
from loadtests.adapters.syslog_ng import SyslogNg
from loadtests.collector_process import CollectorError, has_reader
from loadtests.lifecycle import HarnessCollector
from reference.events import EventFactory
from reference.fifo import ensure_fifo
from reference.sizes import parse_size

MISSING = [
    what
    for what, found in (
        ("syslog-ng (Debian: syslog-ng-core)", shutil.which("syslog-ng", path="/usr/sbin:/usr/bin:/sbin")),
        ("its SQL module (syslog-ng-mod-sql)", glob.glob("/usr/lib/syslog-ng/*/libafsql.so")),
        ("libdbi's PostgreSQL driver (libdbd-pgsql)", glob.glob("/usr/lib/*/dbd/libdbdpgsql.so")),
    )
    if not found
]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (.ci/run installs them)")
# Lines written straight into the FIFO by a test: enough for several of syslog-ng's 1000-line batches.
LINES = 5000
# A short run of a scenario, and the drain's limit for it.
SHORT_RUN = "5s"
LOCUST_TIMEOUT_S = 240


def lines(run_id: str, count: int) -> list[bytes]:
    """count small event lines of source s0 in run run_id."""
    return EventFactory(parse_size("small"), seed=1, run_id=run_id, source="s0").lines(count)


def write_all(fifo: Path, data: list[bytes]) -> None:
    """Write the lines in writes of at most PIPE_BUF bytes (whole lines each), as the harness's users do."""
    fd = os.open(fifo, os.O_WRONLY)
    try:
        chunk: list[bytes] = []
        for line in data:
            if sum(map(len, chunk)) + len(line) > 4096:
                os.write(fd, b"".join(chunk))
                chunk = []
            chunk.append(line)
        os.write(fd, b"".join(chunk))
    finally:
        os.close(fd)


def count(dsn: str, run_id: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM logs WHERE data->'_np'->>'run' = %s", (run_id,))
        n = cur.fetchone()[0]
    conn.close()
    return n


@pytest.fixture
def syslog_ng(tmp_path):
    """start(dsn, **options) -> (HarnessCollector, CollectorWatch): syslog-ng on tmp_path/logs.fifo, killed after."""
    started: list[HarnessCollector] = []

    def start(dsn: str, **options) -> tuple[HarnessCollector, CollectorWatch]:
        fifo = tmp_path / "logs.fifo"
        ensure_fifo(fifo)
        collector = HarnessCollector(
            "", str(fifo), dsn, tmp_path / "collector.log", adapter=SyslogNg(), options=SimpleNamespace(**options)
        )
        started.append(collector)
        watch = CollectorWatch(collector)
        collector.start()
        watch.begin()
        return collector, watch

    yield start
    for collector in started:
        collector.kill()


class TestSyslogNgAdapter:
    """syslog-ng started by its adapter: ready only once a row lands, every line stored, stopped without loss."""

    def test_lines_land_with_their_data_and_the_stop_costs_nothing(self, dsn, syslog_ng):
        """5000 lines written and the stop right after: every one lands, queued at the stop 0, exit status 0."""
        collector, watch = syslog_ng(dsn)
        write_all(collector.fifo, lines("sng1", LINES))
        status = watch.stop()  # at once: the policy waits for syslog-ng's queue to empty before SIGTERM
        assert status == 0
        assert count(dsn, "sng1") == LINES
        assert watch.report.queued_at_stop == 0
        assert watch.report.at_stop is not None
        assert watch.report.at_stop["written"] >= LINES
        report = watch.finish(dsn, "sng1", [], 0)
        assert report["exit"] == "exit status 0"
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(DISTINCT (data->'_np'->>'seq')::int), min(length(data->>'message')) "
                "FROM logs WHERE data->'_np'->>'run' = 'sng1'"
            )
            distinct, shortest = cur.fetchone()
        conn.close()
        assert distinct == LINES
        assert shortest > 0

    def test_a_wrong_database_fails_the_start_with_the_log(self, dsn, syslog_ng):
        """The FIFO is open but no probe row can land: CollectorError with syslog-ng's SQL error, not a run."""
        wrong = psycopg2.extensions.make_dsn(dsn, dbname="np_no_such_database")
        with pytest.raises(CollectorError) as info:
            syslog_ng(wrong, ready_timeout=6)
        text = str(info.value)
        assert "probe" in text
        assert "collector.log" in text
        assert "np_no_such_database" in text or "SQL" in text

    def test_fifo_readiness_would_have_passed_the_wrong_database(self, dsn, syslog_ng, tmp_path):
        """With --ready fifo the same wrong database starts: the probe is what catches it."""
        wrong = psycopg2.extensions.make_dsn(dsn, dbname="np_no_such_database")
        collector, _watch = syslog_ng(wrong, ready="fifo", ready_timeout=6)
        assert has_reader(collector.fifo)

    def test_the_password_stays_off_the_command_line(self, dsn, syslog_ng):
        """/proc/PID/cmdline of syslog-ng itself (no wrapper) holds no password; its 0600 config does."""
        collector, watch = syslog_ng(psycopg2.extensions.make_dsn(dsn, password="pw-in-file-only"))
        cmdline = Path(f"/proc/{collector.pid}/cmdline").read_bytes()
        assert b"pw-in-file-only" not in cmdline
        assert b"syslog-ng" in cmdline.split(b"\0")[0]
        assert "pw-in-file-only" in Path(collector.ctx.run_dir / "syslog-ng.conf").read_text()
        watch.stop()

    def test_the_config_passes_syslog_ngs_own_parser_with_hostile_values(self, tmp_path):
        """Quotes and backslashes in the DSN's values give a configuration syslog-ng --syntax-only accepts."""
        dsn = psycopg2.extensions.make_dsn(host='/tmp/a "b"\\c', user='u\\"', password='p"\\', dbname="d b")
        SyslogNg().launch(Context(str(tmp_path / "f.fifo"), dsn, tmp_path))
        done = subprocess.run(
            ["syslog-ng", "--syntax-only", "-f", str(tmp_path / "syslog-ng.conf")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def run_locust(report_dir: Path, dsn: str, *args: str) -> tuple[int, str, dict | None]:
    cmd = [
        locust_path(),
        *args,
        "--run-time",
        SHORT_RUN,
        "--dsn",
        dsn,
        "--report-dir",
        str(report_dir),
        "--drain-timeout",
        "30",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=LOCUST_TIMEOUT_S, env=clean_env())
    return proc.returncode, proc.stdout + proc.stderr, latest_verdict(report_dir)


class TestScenariosWithSyslogNg:
    """The harness with --collector syslog-ng: steady passes, hostile input fails with its causes named."""

    def test_steady_passes(self, dsn, tmp_path):
        """Every line lands once; the report carries syslog-ng's counters and exit."""
        code, output, v = run_locust(tmp_path, dsn, "--config", "scenarios/steady.conf", "--collector", "syslog-ng")
        assert v is not None, output[-4000:]
        assert v["passed"], output[-4000:]
        assert code == 0, output[-4000:]
        assert v["collector"]["adapter"] == "syslog-ng"
        assert v["collector"]["exit"] == "exit status 0"
        assert v["collector"]["at_stop"]["written"] >= v["totals"]["landed"]
        assert "collector syslog-ng: exit status 0" in output

    def test_hostile_input_fails_with_the_causes(self, dsn, tmp_path):
        """Bad lines are split into stored/dropped silently, and the FAIL shows syslog-ng's log."""
        code, output, v = run_locust(
            tmp_path, dsn, "--config", "scenarios/hostile_input.conf", "--collector", "syslog-ng"
        )
        assert v is not None, output[-4000:]
        assert code == 1
        assert not v["passed"]
        e = v["collector"]["explanation"]
        assert e["stored_although_bad"] + e["dropped_silently"] == v["totals"]["bad_sent"] > 0
        assert "dropped silently" in output
        assert "collector log " in output


class TestExternalCollectorFaults:
    """--collector-cmd none with a collector fault: the run does not start (status 2) and says why."""

    def test_backpressure_is_refused(self, dsn, tmp_path):
        """backpressure pauses the collector, which the harness cannot do to one it did not start."""
        code, output, _v = run_locust(
            tmp_path, dsn, "--config", "scenarios/backpressure.conf", "--collector-cmd", "none"
        )
        assert code == 2, output[-4000:]
        assert "--pause-collector-at" in output
        assert "--fault-cmd" in output
