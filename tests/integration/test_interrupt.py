"""Ctrl-C and SIGTERM at any moment of a real Locust run: a verdict marked INTERRUPTED, status 3, no traceback."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from harness import Harness, clean_env, latest_verdict, master_port_args

from loadtests.options import EXIT_INTERRUPTED

SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
# Long enough that every signal below lands while the run is still under way.
RUN_TIME = "30s"


def start(dsn: str, report_dir: Path, log_path: Path, *extra: str, env: dict[str, str] | None = None) -> Harness:
    """The steady scenario, headless, against dsn (an own embedded database when dsn is empty)."""
    args = [
        "--config",
        "scenarios/steady.conf",
        "--run-time",
        RUN_TIME,
        "--users",
        "8",
        "--spawn-rate",
        "8",
        "--report-dir",
        str(report_dir),
        "--drain-timeout",
        "20",
        *master_port_args(),
        *extra,
    ]
    if dsn:
        args += ["--dsn", dsn]
    return Harness(args, log_path, env)


def collector_of(harness: Harness) -> psutil.Process:
    """The reference collector the harness started."""
    found = [p for p in harness.descendants() if "reference.collector" in " ".join(p.cmdline())]
    assert len(found) == 1, found
    return found[0]


def assert_interrupted(harness: Harness, report_dir: Path, name: str) -> dict:
    """Exit status 3, no traceback, the verdict printed and written, marked INTERRUPTED by name."""
    code = harness.wait()
    output = harness.output()
    assert "Traceback" not in output, output[-4000:]
    assert code == EXIT_INTERRUPTED, output[-4000:]
    verdict = latest_verdict(report_dir)
    assert verdict is not None, output[-4000:]
    assert verdict["status"] == "INTERRUPTED"
    assert verdict["interrupted"] == name
    assert f"INTERRUPTED by {name}" in output
    assert (report_dir / verdict["run_id"] / "locust.html").exists()
    assert "expectations:" in output
    return verdict


class TestOneSignal:
    """The first signal stops the load, drains, verifies, prints and writes the verdict, then exits 3."""

    @pytest.mark.parametrize("signum", SIGNALS)
    def test_during_ramp_up(self, signum, dsn, tmp_path):
        """A signal while the run sets up (the collector is starting) still ends with a verdict and status 3."""
        harness = start(dsn, tmp_path / "reports", tmp_path / "locust.log")
        try:
            harness.wait_for("starting collector")
            harness.signal(signum)
            verdict = assert_interrupted(harness, tmp_path / "reports", signum.name)
            assert verdict["totals"]["landed"] == verdict["totals"]["sent"]
        finally:
            harness.stop()

    @pytest.mark.parametrize("signum", SIGNALS)
    def test_during_load(self, signum, dsn, tmp_path):
        """A signal mid-load: what was sent lands (the collector is not signalled with the harness), status 3."""
        harness = start(dsn, tmp_path / "reports", tmp_path / "locust.log")
        try:
            harness.wait_for("All users spawned")
            time.sleep(2)
            collector = collector_of(harness)
            harness.signal(signum)
            verdict = assert_interrupted(harness, tmp_path / "reports", signum.name)
            t = verdict["totals"]
            assert t["sent"] > 1000
            assert t["landed"] == t["sent"]
            assert t["lost"] == 0
            assert not collector.is_running()
        finally:
            harness.stop()

    @pytest.mark.parametrize("signum", SIGNALS)
    def test_during_drain(self, signum, dsn, tmp_path):
        """A signal while the run drains (the collector is held still by the test) still gives a verdict."""
        harness = start(dsn, tmp_path / "reports", tmp_path / "locust.log", "--run-time", "4s")
        collector = None
        try:
            harness.wait_for("All users spawned")
            collector = collector_of(harness)
            collector.suspend()  # the pipe fills up; nothing lands while the harness drains
            harness.wait_for("namedpiper: draining run")
            harness.signal(signum)
            time.sleep(0.5)
            collector.resume()
            verdict = assert_interrupted(harness, tmp_path / "reports", signum.name)
            assert verdict["totals"]["sent"] > 0
            assert "draining run" in harness.output()
        finally:
            if collector is not None and collector.is_running():
                collector.resume()
            harness.stop()


class TestTwoSignals:
    """A second signal skips the drain and still stops every process the harness started."""

    @pytest.mark.parametrize("signum", SIGNALS)
    def test_second_signal_skips_the_drain_and_cleans_up(self, signum, tmp_path):
        """Collector paused, first signal during the drain, second at once: verdict, status 3, nothing left running.

        The harness starts its own embedded PostgreSQL here, so its stop can be checked too.
        """
        data_dir = Path(tempfile.mkdtemp(prefix="namedpiper-it-"))  # not under pytest's 0700 basetemp (see conftest)
        env = clean_env(NAMEDPIPER_DATA_DIR=str(data_dir / "pgdata"))
        harness = start(
            "", tmp_path / "reports", tmp_path / "locust.log", "--run-time", "4s", "--drain-timeout", "60", env=env
        )
        try:
            harness.wait_for("All users spawned", timeout=120)
            collector = collector_of(harness)
            postmaster = psutil.Process(int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0]))
            started = harness.descendants()
            collector.suspend()
            harness.wait_for("namedpiper: draining run")
            harness.signal(signum)
            harness.wait_for(f"{signum.name}: stopping the load")
            harness.signal(signum)
            verdict = assert_interrupted(harness, tmp_path / "reports", signum.name)
            assert verdict["drain_skipped"] is True
            assert "drain skipped (second signal)" in harness.output()
            assert not collector.is_running()
            # pg_ctl -w returns once postmaster.pid is gone, a moment before the process itself.
            assert psutil.wait_procs([postmaster], timeout=10)[1] == []
            assert [p for p in started if p.is_running()] == []
        finally:
            harness.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


class TestTerminalCtrlC:
    """A Ctrl-C in a terminal signals the whole process group: Locust's workers too, the collector not."""

    def test_ctrl_c_to_the_process_group_with_workers(self, dsn, tmp_path):
        """--processes 2, SIGINT to the group mid-load: one verdict from both workers, nothing lost, status 3."""
        harness = start(dsn, tmp_path / "reports", tmp_path / "locust.log", "--processes", "2")
        try:
            harness.wait_for("Sending spawn jobs", timeout=120)  # the master's line; workers log the rest
            time.sleep(4)
            os.killpg(harness.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
            verdict = assert_interrupted(harness, tmp_path / "reports", "SIGINT")
            t = verdict["totals"]
            assert len({s["source"].split("u")[0] for s in verdict["sources"]}) == 2
            assert t["sent"] > 1000
            assert t["landed"] == t["sent"]
            assert harness.output().count("namedpiper verdict:") == 1
        finally:
            harness.stop()
