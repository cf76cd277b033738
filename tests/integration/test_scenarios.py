"""Every scenario, shortened to a few seconds, runs Locust for real and ends with the verdict it promises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from harness import master_port_args

from loadtests.database import DATA_DIR_ENV, EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
# A shortened scenario still needs time for Locust to start its workers and for the drain after the stop.
LOCUST_TIMEOUT_S = 240
SHORT_RUN = "6s"


def run_scenario(
    name: str, dsn: str, report_dir: Path, *overrides: str, data_dir: Path | None = None
) -> tuple[int, str, dict]:
    """Run `locust --config scenarios/NAME.conf` headless against dsn; return (exit code, output, verdict).

    With data_dir and no dsn, the harness starts an embedded server of its own there (one it can stop: the
    database-outage fault needs that).
    """
    locust = shutil.which("locust", path=os.path.dirname(sys.executable)) or "locust"
    cmd = [
        locust,
        "--config",
        f"scenarios/{name}.conf",
        "--run-time",
        SHORT_RUN,
        "--dsn",
        dsn,
        "--report-dir",
        str(report_dir),
        "--drain-timeout",
        "20",
        *master_port_args(),
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAMEDPIPER_")}
    if data_dir is not None:
        env[DATA_DIR_ENV] = str(data_dir)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=LOCUST_TIMEOUT_S, env=env)
    output = proc.stdout + proc.stderr
    reports = sorted(report_dir.glob("*/verdict.json"), key=lambda p: p.stat().st_mtime)
    assert reports, f"no verdict written; locust said:\n{output[-4000:]}"
    return proc.returncode, output, json.loads(reports[-1].read_text())


def assert_passed(code: int, output: str, verdict: dict) -> None:
    assert "Traceback" not in output, output[-4000:]
    assert verdict["passed"], verdict["failures"]
    assert code == 0, output[-4000:]
    assert "PASS: every expectation holds" in output


class TestScenarios:
    def test_steady_loses_tears_and_duplicates_nothing(self, dsn, tmp_path):
        """steady: small lines from many users all land once, none torn."""
        code, output, v = run_scenario("steady", dsn, tmp_path)
        assert_passed(code, output, v)
        t = v["totals"]
        assert t["sent"] > 1000
        assert t["lost"] == t["duplicated"] == t["torn_or_rejected"] == 0
        assert t["landed"] == t["sent"]
        assert "psql" in output
        assert v["run_id"] in output

    def test_pipe_buf_edge_never_tears(self, dsn, tmp_path):
        """pipe_buf_edge: 4096-byte lines, one per write, arrive whole."""
        code, output, v = run_scenario("pipe_buf_edge", dsn, tmp_path)
        assert_passed(code, output, v)
        assert v["totals"]["torn_or_rejected"] == 0
        assert v["totals"]["landed"] == v["totals"]["sent"] > 100

    def test_over_pipe_buf_accounts_for_every_byte(self, dsn, tmp_path):
        """over_pipe_buf: lines above PIPE_BUF tear, and every byte sent is landed or rejected."""
        code, output, v = run_scenario("over_pipe_buf", dsn, tmp_path)
        assert_passed(code, output, v)
        t = v["totals"]
        assert t["bytes"]["unexplained"] == 0
        assert t["bytes"]["unaccounted"] >= 0  # corrupt rows can only read back shorter than what arrived
        assert t["bytes"]["sent_big"] > 1_000_000
        assert t["torn_or_rejected"] > 0, "writes above PIPE_BUF from 8 users tore no line at all"

    def test_over_capacity_accounts_for_every_byte(self, dsn, tmp_path):
        """over_capacity: lines larger than the pipe block their writers and every byte is accounted for."""
        code, output, v = run_scenario("over_capacity", dsn, tmp_path)
        assert_passed(code, output, v)
        assert v["totals"]["bytes"]["unexplained"] == 0
        assert v["latency"]["blocked_s"] > 0

    def test_backpressure_stalls_writers_and_loses_nothing(self, dsn, tmp_path):
        """backpressure: a paused collector shows as write latency, then everything lands."""
        code, output, v = run_scenario(
            "backpressure", dsn, tmp_path, "--run-time", "8s", "--pause-collector-at", "2", "--pause-collector-for", "3"
        )
        assert_passed(code, output, v)
        assert v["latency"]["max_ms"] >= 2500, v["latency"]
        assert v["totals"]["lost"] == 0
        assert v["totals"]["landed"] == v["totals"]["sent"]
        assert any("paused" in f for f in v["faults"])

    def test_nonblocking_drop_counts_every_drop(self, dsn, tmp_path):
        """nonblocking_drop: landed equals sent, and generated equals sent plus dropped, exactly."""
        code, output, v = run_scenario(
            "nonblocking_drop",
            dsn,
            tmp_path,
            "--run-time",
            "8s",
            "--pause-collector-at",
            "2",
            "--pause-collector-for",
            "3",
        )
        assert_passed(code, output, v)
        t = v["totals"]
        assert t["dropped"] > 0
        assert t["landed"] == t["sent"]
        assert t["generated"] == t["sent"] + t["dropped"] + t["interrupted"]

    def test_writer_churn_loses_nothing(self, dsn, tmp_path):
        """writer_churn: a FIFO reopened for every write loses no line."""
        code, output, v = run_scenario("writer_churn", dsn, tmp_path)
        assert_passed(code, output, v)
        assert v["totals"]["landed"] == v["totals"]["sent"] > 100

    def test_stop_race_loses_no_successful_write(self, dsn, tmp_path):
        """stop_race: open-write-close writers racing a SIGTERM and restart: every write that succeeded lands."""
        code, output, v = run_scenario(
            "stop_race", dsn, tmp_path, "--run-time", "10s", "--restart-collector-at", "4", "--restart-gap", "2"
        )
        assert_passed(code, output, v)
        assert v["totals"]["landed"] == v["totals"]["sent"] > 100

    def test_statement_timeout_retries_without_a_reconnect_storm(self, dsn, tmp_path):
        """statement_timeout: a 1 ms role timeout costs a handful of sessions, and every line lands once after it."""
        code, output, v = run_scenario(
            "statement_timeout",
            dsn,
            tmp_path,
            "--run-time",
            "8s",
            "--statement-timeout-at",
            "2",
            "--statement-timeout-for",
            "3",
        )
        assert_passed(code, output, v)
        t = v["totals"]
        assert t["lost"] == t["duplicated"] == 0
        assert t["landed"] == t["sent"] > 100
        end = [f for f in v["faults"] if "distinct collector sessions" in f]
        assert end, v["faults"]
        sessions = int(end[0].split("; ")[1].split()[0])
        assert 1 <= sessions <= 10, end[0]
        assert "57014" in (tmp_path / v["run_id"] / "collector.log").read_text()  # the timeout did cancel COPYs

    def test_journal_full_blocks_writers_and_loses_nothing(self, tmp_path):
        """journal_full: a 4 MiB journal filled by a database outage stops reading (writers block), then resumes."""
        # Not under pytest's basetemp: run as root, the server runs as another user (see conftest's database).
        scratch = Path(tempfile.mkdtemp(prefix="namedpiper-it-"))
        try:
            code, output, v = run_scenario(
                "journal_full",
                "",
                tmp_path,
                "--run-time",
                "10s",
                "--db-outage-at",
                "2",
                "--db-outage-for",
                "4",
                data_dir=scratch / "pgdata",
            )
        finally:
            EmbeddedPostgres(scratch / "pgdata").stop()  # the harness stops it; this is for a harness that died
            shutil.rmtree(scratch, ignore_errors=True)
        assert_passed(code, output, v)
        t = v["totals"]
        assert t["lost"] == t["duplicated"] == 0
        assert t["landed"] == t["sent"] > 100
        assert any("database stopped" in f for f in v["faults"]), v["faults"]
        log = (tmp_path / v["run_id"] / "collector.log").read_text()
        assert "is full" in log, log[-2000:]
        assert "has room again" in log, log[-2000:]
        assert v["latency"]["max_ms"] >= 2000, v["latency"]  # writers waited for the journal to have room


class TestVerdictFails:
    def test_an_unmet_expectation_fails_the_run(self, dsn, tmp_path):
        """An expectation the run cannot meet gives a non-zero exit code and names itself."""
        code, output, v = run_scenario("steady", dsn, tmp_path, "--run-time", "3s", "--min-rows-per-s", "1e9")
        assert code != 0
        assert not v["passed"]
        assert "FAIL: min_rows_per_s" in output

    def test_a_collector_that_loses_lines_fails_the_run(self, dsn, tmp_path):
        """A plugged-in collector that reads and discards the FIFO is caught: every line is lost."""
        code, output, v = run_scenario(
            "steady", dsn, tmp_path, "--run-time", "3s", "--collector-cmd", "cat {fifo}", "--drain-timeout", "5"
        )
        assert code != 0
        assert v["totals"]["lost"] > 0
        assert "FAIL: max_lost" in output


class TestDistributed:
    def test_two_processes_give_one_verdict_from_all_workers(self, dsn, tmp_path):
        """With --processes 2 both workers write, and the master judges their lines together."""
        code, output, v = run_scenario("steady", dsn, tmp_path, "--processes", "2", "--users", "8", "--spawn-rate", "8")
        assert_passed(code, output, v)
        # Locust numbers workers as they connect, not necessarily 0 and 1: count distinct ones, never name them.
        workers = {s["source"].split("u")[0] for s in v["sources"]}
        assert len(workers) == 2, workers
        assert v["totals"]["landed"] == v["totals"]["sent"] > 1000
        assert output.count("namedpiper verdict:") == 1


@pytest.mark.parametrize("bad", ["small:0", "huge", "100-50"])
def test_a_bad_size_mix_is_refused_with_a_clear_message(bad, dsn, tmp_path):
    """A size mix Locust cannot build users from stops the run at once with the reason."""
    locust = shutil.which("locust", path=os.path.dirname(sys.executable)) or "locust"
    proc = subprocess.run(
        [locust, "--config", "scenarios/steady.conf", "--size-mix", bad, "--dsn", dsn, "--report-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--size-mix" in proc.stderr + proc.stdout
