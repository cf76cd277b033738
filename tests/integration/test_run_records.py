"""What a run leaves behind: a one-line start error, progress while draining, bounded rows (--keep-runs), reset."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import psycopg2
import pytest
from harness import ROOT, Harness, clean_env, latest_verdict
from test_interrupt import collector_of

from loadtests.database import Database
from loadtests.options import EXIT_CANNOT_START
from loadtests.progress import PROGRESS_INTERVAL_S


def steady(dsn: str, report_dir: Path, log_path: Path, *extra: str) -> Harness:
    return Harness(
        [
            "--config",
            "scenarios/steady.conf",
            "--run-time",
            "3s",
            "--users",
            "4",
            "--spawn-rate",
            "4",
            "--dsn",
            dsn,
            "--report-dir",
            str(report_dir),
            *extra,
        ],
        log_path,
    )


class TestStartError:
    """A run that cannot start says why in one line and exits 2, with nothing of Locust's ramp-up after it."""

    def test_unreachable_database(self, tmp_path):
        """A DSN naming a socket folder with no server: exit 2, one error line, no ramp-up, no traceback."""
        nowhere = f"postgresql:///np?host={tmp_path / 'no-server'}"
        harness = steady(nowhere, tmp_path / "reports", tmp_path / "locust.log")
        try:
            code = harness.wait(120)
        finally:
            harness.stop()
        output = harness.output()
        assert code == EXIT_CANNOT_START, output
        errors = [line for line in output.splitlines() if "cannot start the run" in line]
        assert len(errors) == 1, output
        after = output.split(errors[0], 1)[1]
        assert "Ramping" not in after, output
        assert "All users spawned" not in after, output
        assert "Traceback" not in output


class TestDrainProgress:
    """While a run drains, one progress line every ~2 s, and no Locust stats tables in between."""

    def test_progress_lines_while_the_collector_is_held(self, dsn, tmp_path):
        """Collector held still by the test: progress lines about 2 s apart until the drain gives up."""
        harness = steady(dsn, tmp_path / "reports", tmp_path / "locust.log", "--run-time", "4s")
        try:
            harness.wait_for("All users spawned")
            collector = collector_of(harness)
            collector.suspend()  # nothing lands: the drain waits until nothing moved for 3 s
            harness.wait_for("stopping the collector")  # the harness sends SIGCONT before SIGTERM
            code = harness.wait(120)
        finally:
            harness.stop()
        output = harness.output()
        lines = [line for line in output.splitlines() if "namedpiper: draining run" in line]
        assert len(lines) >= 2, output[-4000:]
        stamps = [datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f") for line in lines]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
        assert all(PROGRESS_INTERVAL_S - 0.3 <= gap <= PROGRESS_INTERVAL_S + 1.5 for gap in gaps), gaps
        assert re.search(
            r"\d+ of \d+ rows landed .*rows/s, .*(bytes still in the pipe|no reader).*s left of "
            r"--drain-timeout",
            lines[0],
        ), lines[0]
        drain = output[output.index(lines[0]) : output.index("namedpiper verdict:")]
        assert "Aggregated" not in drain, "Locust printed its stats tables during the drain"
        assert code in (0, 1)


class TestKeepRuns:
    """Rows of runs beyond --keep-runs are deleted after each verdict; the newest runs stay whole."""

    def test_only_the_last_runs_keep_their_rows(self, dsn, tmp_path):
        """Three runs with --keep-runs 2: the first run's rows are gone, the other two are complete."""
        run_ids = []
        for k in range(3):
            harness = steady(dsn, tmp_path / f"reports{k}", tmp_path / f"locust{k}.log", "--keep-runs", "2")
            try:
                assert harness.wait(120) == 0, harness.output()[-3000:]
            finally:
                harness.stop()
            verdict = latest_verdict(tmp_path / f"reports{k}")
            assert verdict is not None
            run_ids.append((verdict["run_id"], verdict["totals"]["landed"]))
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT data->'_np'->>'run', count(*) FROM logs GROUP BY 1")
            rows = dict(cur.fetchall())
        assert run_ids[0][0] not in rows
        assert [rows.get(run_id) for run_id, _ in run_ids[1:]] == [landed for _, landed in run_ids[1:]]


class TestReset:
    """`python -m loadtests.database reset` deletes the embedded database and nothing else."""

    def test_reset_stops_and_deletes_the_embedded_database(self):
        """A running embedded server is stopped and its data folder removed; a second reset has nothing to do."""
        scratch = Path(tempfile.mkdtemp(prefix="namedpiper-it-"))  # not under pytest's 0700 basetemp (see conftest)
        data_dir = scratch / "pgdata"
        env = clean_env(NAMEDPIPER_DATA_DIR=str(data_dir))
        db = Database(data_dir=data_dir)
        try:
            db.start()
            db._started_here = False
            done = subprocess.run(
                [sys.executable, "-m", "loadtests.database", "reset"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert "deleted the embedded database" in done.stdout
            assert not data_dir.exists()
            again = subprocess.run(
                [sys.executable, "-m", "loadtests.database", "reset"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert again.returncode == 0
            assert "nothing to reset" in again.stdout
        finally:
            db.close()
            shutil.rmtree(scratch, ignore_errors=True)

    def test_reset_refuses_a_folder_that_is_not_a_database(self, tmp_path):
        """A data folder holding anything but PostgreSQL data is left alone, with an error."""
        folder = tmp_path / "precious"
        folder.mkdir()
        (folder / "notes.txt").write_text("keep me")
        done = subprocess.run(
            [sys.executable, "-m", "loadtests.database", "reset", "--data-dir", str(folder)],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert "not a PostgreSQL data folder" in done.stderr
        assert (folder / "notes.txt").read_text() == "keep me"


@pytest.fixture(autouse=True)
def _no_namedpiper_env(monkeypatch):
    """The harness processes get only what each test passes."""
    for name in ("NAMEDPIPER_DSN", "NAMEDPIPER_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
