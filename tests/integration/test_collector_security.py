"""The collector against a second collector, other local users and a FIFO that disappears: real processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

NOBODY_UID = 65534
RUN_PREDICATE = "data->'_np'->>'run' = %s"
# A collector refusing to start exits within its start-up time (about 0.5 s); this is the margin.
REFUSAL_TIMEOUT_S = 20.0
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def start_emitter(fifo: Path, run_id: str, count: int, rate: int) -> subprocess.Popen:
    """A blocking emitter in the background that keeps its descriptor for the whole run."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reference.emitter",
            "--fifo",
            str(fifo),
            "--count",
            str(count),
            "--rate",
            str(rate),
            "--run-id",
            run_id,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def finish(proc: subprocess.Popen) -> None:
    """Wait for a background emitter; fail with its stderr if it did not succeed."""
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


class TestOneCollectorPerJournalAndFifo:
    """A second collector on the same journal or FIFO exits 2 naming the first one's pid; the first goes on."""

    def test_a_second_collector_on_the_journal_is_refused(self, collector, dsn, tmp_path, run_emitter, wait_for_rows):
        """Same --journal, another FIFO: exit 2 with the holder's pid, and the first loads every line once."""
        first = collector(tmp_path / "a.fifo", dsn, "--journal", str(tmp_path / "j"))
        second = collector(tmp_path / "b.fifo", dsn, "--journal", str(tmp_path / "j"), ready=None)
        assert second.wait(REFUSAL_TIMEOUT_S) == 2
        assert f"pid {first.pid}" in second.log()
        run_emitter(tmp_path / "a.fifo", "--count", "5000", "--run-id", "onejrnl")
        wait_for_rows(dsn, RUN_PREDICATE, 5000, params=("onejrnl",))
        assert first.stop() == 0

    def test_a_second_collector_on_the_fifo_is_refused(self, collector, dsn, fifo_path, run_emitter, wait_for_rows):
        """Same FIFO without a journal: exit 2 with the holder's pid instead of splitting lines between two."""
        first = collector(fifo_path, dsn)
        second = collector(fifo_path, dsn, ready=None)
        assert second.wait(REFUSAL_TIMEOUT_S) == 2
        assert f"pid {first.pid}" in second.log()
        run_emitter(fifo_path, "--count", "5000", "--run-id", "onefifo")
        wait_for_rows(dsn, RUN_PREDICATE, 5000, params=("onefifo",))
        assert first.stop() == 0


class TestPrivateJournal:
    """Logged lines in the journal are readable by the collector's user only."""

    def test_journal_folder_0700_and_files_0600_under_an_open_umask(
        self, collector, dsn, fifo_path, tmp_path, run_emitter, wait_for_rows
    ):
        """With umask 000 the journal folder is 0700 and every file in it 0600."""
        old = os.umask(0)
        try:
            proc = collector(fifo_path, dsn, "--journal", str(tmp_path / "j"))
        finally:
            os.umask(old)
        run_emitter(fifo_path, "--count", "1000", "--run-id", "private")
        wait_for_rows(dsn, RUN_PREDICATE, 1000, params=("private",))
        assert stat.S_IMODE((tmp_path / "j").stat().st_mode) == 0o700
        files = modes(tmp_path / "j")
        assert any(name.startswith("segment-") for name in files)
        assert files == dict.fromkeys(files, 0o600)
        assert proc.stop() == 0

    def test_a_journal_folder_others_can_write_is_refused(self, collector, dsn, fifo_path, tmp_path):
        """A world-writable journal folder: exit 2 and the chmod that fixes it."""
        (tmp_path / "j").mkdir()
        (tmp_path / "j").chmod(0o777)
        proc = collector(fifo_path, dsn, "--journal", str(tmp_path / "j"), ready=None)
        assert proc.wait(REFUSAL_TIMEOUT_S) == 2
        assert "chmod 700" in proc.log()


class TestPlantedFifo:
    """An existing FIFO must belong to the collector's user and allow no more than --fifo-mode."""

    @needs_root
    def test_a_fifo_of_another_user_is_refused(self, collector, dsn, fifo_path):
        """A FIFO another user planted (mode 600 even): exit 2 naming its owner."""
        os.mkfifo(fifo_path, 0o600)
        os.chown(fifo_path, NOBODY_UID, NOBODY_UID)
        proc = collector(fifo_path, dsn, "--fifo-mode", "600", ready=None)
        assert proc.wait(REFUSAL_TIMEOUT_S) == 2
        assert f"belongs to uid {NOBODY_UID}" in proc.log()

    def test_a_fifo_more_open_than_fifo_mode_is_refused(self, collector, dsn, fifo_path):
        """A 0666 FIFO with --fifo-mode 600: exit 2 and the chmod that fixes it."""
        os.mkfifo(fifo_path)
        os.chmod(fifo_path, 0o666)
        proc = collector(fifo_path, dsn, "--fifo-mode", "600", ready=None)
        assert proc.wait(REFUSAL_TIMEOUT_S) == 2
        assert "chmod 600" in proc.log()


class TestFifoRemoved:
    """A FIFO removed while the collector reads it: recreated, both read, nothing lost."""

    @pytest.mark.parametrize("journal", [False, True], ids=["no-journal", "journal"])
    def test_lines_through_the_old_and_the_new_fifo_all_land(
        self, collector, dsn, fifo_path, tmp_path, wait_for_rows, journal
    ):
        """An emitter holding the old FIFO and one opening the new path both land every line, once."""
        extra = ("--journal", str(tmp_path / "j")) if journal else ()
        proc = collector(fifo_path, dsn, *extra)
        emitters = [start_emitter(fifo_path, "oldfifo", 6000, 2000)]
        try:
            time.sleep(1.0)
            os.unlink(fifo_path)
            proc.wait_for_log("was removed", timeout=10)  # noticed within PATH_CHECK_S
            assert stat.S_ISFIFO(fifo_path.lstat().st_mode)
            emitters.append(start_emitter(fifo_path, "newfifo", 3000, 3000))
            for emitter in reversed(emitters):
                finish(emitter)
        finally:
            for emitter in emitters:  # a blocking emitter without a reader would wait for ever
                if emitter.poll() is None:
                    emitter.kill()
                    emitter.wait()
        wait_for_rows(dsn, RUN_PREDICATE, 6000, params=("oldfifo",))
        wait_for_rows(dsn, RUN_PREDICATE, 3000, params=("newfifo",))
        proc.wait_for_log("no writers left", timeout=10)
        assert wait_for_rows(dsn, "TRUE", 0, table="logs_rejected") == 0
        assert proc.stop() == 0

    def test_the_emitter_refuses_a_regular_file_at_the_path(self, tmp_path):
        """A FIFO replaced by a regular file: the emitter exits 2 and writes nothing into it."""
        path = tmp_path / "f"
        path.write_bytes(b"")
        done = subprocess.run(
            [sys.executable, "-m", "reference.emitter", "--fifo", str(path), "--count", "10"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert path.read_bytes() == b""
