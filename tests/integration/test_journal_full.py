"""A full journal disk, or --journal-max-bytes reached, stops the reading (writers wait) and never the collector."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest

RUN_PREDICATE = "data->'_np'->>'run' = %s"
EXACTLY_ONCE_SQL = (
    "SELECT count(*), count(DISTINCT (data->'_np'->>'src', data->'_np'->>'seq')) FROM logs "
    "WHERE data->'_np'->>'run' = %s"
)
# A disk smaller than what the emitter writes (~430 B a line), so it fills while the database is held back.
TMPFS_BYTES = 2 * 1024 * 1024
LINES = 20_000
# --journal-max-bytes for the test without tmpfs: the smallest the collector accepts (4 x --max-line-bytes).
MAX_BYTES = 4 * 1024 * 1024
LIMIT_LINES = 30_000
# The journal fills in well under a second at full speed; the margin is for a loaded CI machine.
FULL_TIMEOUT_S = 30.0
# Rows land at tens of thousands a second once the database is released.
LAND_TIMEOUT_S = 90.0


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of TMPFS_BYTES mounted for the test and unmounted after it; skips where mounting is not permitted."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): run as root with "
            "CAP_SYS_ADMIN to test a full journal disk"
        )
    try:
        yield mountpoint
    finally:
        # Lazy: a collector the test could not stop may still hold a file open; the mount goes when it exits.
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=False, capture_output=True)


@contextmanager
def loading_held(dsn: str) -> Iterator[None]:
    """Hold an exclusive lock on logs: the collector cannot load (or even apply its schema) until released."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE logs IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


def start_emitter(fifo: Path, run_id: str, count: int) -> subprocess.Popen:
    """A blocking emitter at full speed in the background: it waits while the collector does not read."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reference.emitter",
            "--fifo",
            str(fifo),
            "--count",
            str(count),
            "--run-id",
            run_id,
            "--writers",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # its own process group: its writer processes end with it


def kill_emitter(emitter: subprocess.Popen | None) -> None:
    """SIGKILL an emitter still running, with its writer processes (its process group), and reap it."""
    if emitter is not None and emitter.poll() is None:
        os.killpg(emitter.pid, signal.SIGKILL)
        emitter.wait()


def segment_bytes(folder: Path) -> int:
    """Bytes on disk in the journal's segments (a segment trimmed while we look counts as 0)."""
    total = 0
    for path in folder.glob("segment-*.log"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


class TestFullJournalDisk:
    """ENOSPC on the journal: the collector stays up, writers wait, and every line lands once when room returns."""

    def test_a_full_disk_stops_reading_and_a_restart_replays(self, small_tmpfs, collector, dsn, fifo_path, query):
        """Full disk, SIGKILL while full, restart: no crash, one clear log line, every line exactly once."""
        journal = small_tmpfs / "journal"
        emitter = None
        try:
            with loading_held(dsn):
                first = collector(fifo_path, dsn, "--journal", str(journal))
                emitter = start_emitter(fifo_path, "diskfull", LINES)
                first.wait_for_log("is full", timeout=FULL_TIMEOUT_S)
                time.sleep(0.5)
                assert first.alive
                assert emitter.poll() is None  # the writers wait: back-pressure
                assert first.log().count("is full") == 1
                first.kill()  # a crash while the disk is full
                second = collector(fifo_path, dsn, "--journal", str(journal), ready=None)
                second.wait_for_log("is full", timeout=FULL_TIMEOUT_S)
                assert second.alive
            try:
                _, err = emitter.communicate(timeout=LAND_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the emitter still waits after the database came back; collector log:\n{second.log()}")
            assert emitter.returncode == 0, err
            deadline = time.monotonic() + LAND_TIMEOUT_S
            while query(dsn, EXACTLY_ONCE_SQL, ("diskfull",))[0][0] < LINES and time.monotonic() < deadline:
                time.sleep(0.2)
            assert query(dsn, EXACTLY_ONCE_SQL, ("diskfull",))[0] == (LINES, LINES), second.log()
            assert "has room again" in second.log()
            assert "Traceback" not in second.log()
            assert second.stop() == 0
        finally:
            kill_emitter(emitter)


class TestJournalMaxBytes:
    """--journal-max-bytes bounds the journal's disk use the same way, without a full disk."""

    def test_the_journal_never_exceeds_the_limit(self, collector, dsn, fifo_path, tmp_path, query):
        """Held back by the database, the journal stops at the limit; released, every line lands once."""
        journal = tmp_path / "journal"
        emitter = None
        peak = 0
        try:
            with loading_held(dsn):
                proc = collector(fifo_path, dsn, "--journal", str(journal), "--journal-max-bytes", str(MAX_BYTES))
                emitter = start_emitter(fifo_path, "maxbytes", LIMIT_LINES)
                proc.wait_for_log("is full", timeout=FULL_TIMEOUT_S)
                for _ in range(10):
                    peak = max(peak, segment_bytes(journal))
                    time.sleep(0.05)
                assert emitter.poll() is None
                assert proc.alive
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, segment_bytes(journal))
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                _, err = emitter.communicate(timeout=LAND_TIMEOUT_S)
                assert emitter.returncode == 0, err
                deadline = time.monotonic() + LAND_TIMEOUT_S
                while query(dsn, EXACTLY_ONCE_SQL, ("maxbytes",))[0][0] < LIMIT_LINES and time.monotonic() < deadline:
                    time.sleep(0.2)
            finally:
                stop.set()
                sampler.join()
            assert query(dsn, EXACTLY_ONCE_SQL, ("maxbytes",))[0] == (LIMIT_LINES, LIMIT_LINES)
            assert MAX_BYTES * 0.9 <= peak <= MAX_BYTES
            assert proc.stop() == 0
        finally:
            kill_emitter(emitter)

    def test_a_limit_below_four_lines_is_refused(self, collector, dsn, fifo_path, tmp_path):
        """A limit that could not hold the longest line and a segment: exit 2 with the minimum."""
        proc = collector(fifo_path, dsn, "--journal", str(tmp_path / "j"), "--journal-max-bytes", "1000", ready=None)
        assert proc.wait(20) == 2
        assert "--journal-max-bytes must be 0 or at least" in proc.log()
