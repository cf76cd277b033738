"""With --journal, SIGKILL, a database outage and a lost connection lose and duplicate nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import psycopg2
import psycopg2.extensions

log = logging.getLogger(__name__)

RUN_PREDICATE = "data->'_np'->>'run' = %s"
EXACTLY_ONCE_SQL = (
    "SELECT count(*), count(DISTINCT (data->'_np'->>'src', data->'_np'->>'seq')) FROM logs "
    "WHERE data->'_np'->>'run' = %s"
)
# Lines written while the faults happen: enough to keep the pipe busy across them, few enough to stay quick.
LINES = 40_000
RATE = 8_000


def start_emitter(fifo: Path, run_id: str, lines: int = LINES, rate: int = RATE) -> subprocess.Popen:
    """A blocking emitter in the background: it waits through EPIPE for the next reader."""
    cmd = [
        sys.executable,
        "-m",
        "reference.emitter",
        "--fifo",
        str(fifo),
        "--count",
        str(lines),
        "--rate",
        str(rate),
        "--run-id",
        run_id,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def finish(proc: subprocess.Popen) -> str:
    """Wait for a background emitter and return its summary line."""
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return out


def journal_bytes(folder: Path) -> int:
    """Bytes on disk in the journal's segments."""
    return sum(p.stat().st_size for p in folder.glob("segment-*.log"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exactly_once(query, dsn: str, run_id: str) -> tuple[int, int]:
    ((rows, distinct),) = query(dsn, EXACTLY_ONCE_SQL, (run_id,))
    return rows, distinct


class TestCrash:
    def test_three_sigkills_lose_and_duplicate_nothing(self, dsn, fifo_path, tmp_path, collector, query, wait_for_rows):
        """A collector killed with SIGKILL three times mid-stream and restarted leaves each line exactly once."""
        journal = str(tmp_path / "journal")
        handle = collector(fifo_path, dsn, "--journal", journal)
        emitter = start_emitter(fifo_path, "crash3")
        try:
            for _ in range(3):
                time.sleep(0.8)
                handle.kill()
                handle = collector(fifo_path, dsn, "--journal", journal)
            finish(emitter)
            wait_for_rows(dsn, RUN_PREDICATE, LINES, params=("crash3",))
        finally:
            emitter.kill()
        assert exactly_once(query, dsn, "crash3") == (LINES, LINES)
        assert handle.stop() == 0
        ((rejected,),) = query(dsn, "SELECT count(*) FROM logs_rejected")
        assert rejected == 0

    def test_lost_connections_duplicate_nothing(self, dsn, fifo_path, tmp_path, collector, query, wait_for_rows):
        """Connections terminated by the server again and again (some during COMMIT) leave each line once."""
        handle = collector(fifo_path, dsn, "--journal", str(tmp_path / "journal"))
        emitter = start_emitter(fifo_path, "cut")
        stop = threading.Event()
        kills = 0

        def terminate_collector_sessions() -> None:
            nonlocal kills
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            while not stop.is_set():
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'namedpiper-collector'"
                    )
                    kills += cur.fetchone()[0]
                time.sleep(0.15)
            conn.close()

        killer = threading.Thread(target=terminate_collector_sessions)
        killer.start()
        try:
            finish(emitter)
            time.sleep(1)
        finally:
            stop.set()
            killer.join()
            emitter.kill()
        wait_for_rows(dsn, RUN_PREDICATE, LINES, params=("cut",))
        log.info("terminated %d collector sessions", kills)
        assert kills >= 3
        assert exactly_once(query, dsn, "cut") == (LINES, LINES)
        assert handle.alive
        assert "reconnecting" in handle.log()


class TestDatabaseOutage:
    OUTAGE_S = 5.0

    def test_writers_never_stall_and_everything_lands_after_the_outage(
        self, private_database, fifo_path, tmp_path, collector, query, wait_for_rows
    ):
        """The FIFO keeps draining into the journal while PostgreSQL is down; afterwards every line lands once."""
        db = private_database
        handle = collector(fifo_path, db.dsn, "--journal", str(tmp_path / "journal"), "--stats-interval", "1")
        time.sleep(0.5)
        emitter = start_emitter(fifo_path, "outage", lines=60_000, rate=6_000)
        try:
            time.sleep(1.5)
            db.embedded.stop()
            down_at = time.monotonic()
            time.sleep(0.5)
            journaled_early = journal_bytes(tmp_path / "journal")
            cpu_early = cpu_seconds(handle.pid)
            time.sleep(self.OUTAGE_S - 0.5)
            journaled_late = journal_bytes(tmp_path / "journal")
            cpu_during = cpu_seconds(handle.pid) - cpu_early
            db.start()
            back_at = time.monotonic()
            ((landed_when_back,),) = query(db.dsn, f"SELECT count(*) FROM logs WHERE {RUN_PREDICATE}", ("outage",))
            summary = finish(emitter)
        finally:
            emitter.kill()
        wait_for_rows(db.dsn, RUN_PREDICATE, 60_000, timeout=120, params=("outage",))
        caught_up = time.monotonic()
        assert exactly_once(query, db.dsn, "outage") == (60_000, 60_000)
        # The FIFO kept draining while the database was down: the journal grew by megabytes meanwhile
        # (the emitter writes ~2.5 MB/s; blocked time is logged, not asserted: CPU starvation also blocks).
        assert journaled_late - journaled_early > 1_000_000
        # Waiting for the database is no busy loop: a spinning collector would burn a whole core meanwhile.
        assert cpu_during < 0.6 * (self.OUTAGE_S - 0.5), cpu_during
        blocked = orjson.loads(summary)["blocked_seconds"]
        text = handle.log()
        assert "database unreachable" in text
        assert "reachable again" in text
        peak_kib = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{handle.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            )
        )
        log.info(
            "emitter blocked %.2f s in all; journal grew %d bytes and the collector used %.2f s of CPU during "
            "the outage",
            blocked,
            journaled_late - journaled_early,
            cpu_during,
        )
        log.info(
            "outage %.1f s; collector peak RSS %.1f MiB; %d rows when the database came back; %d more "
            "rows (backlog and new lines) landed in %.2f s",
            back_at - down_at,
            peak_kib / 1024,
            landed_when_back,
            60_000 - landed_when_back,
            caught_up - back_at,
        )
        assert peak_kib < 100 * 1024
        assert handle.stop() == 0

    def test_sigterm_with_the_database_down_keeps_lines_for_the_next_start(
        self, dsn, fifo_path, tmp_path, collector, run_emitter, query, wait_for_rows
    ):
        """SIGTERM while the database is unreachable exits promptly; the next collector loads every line."""
        journal = str(tmp_path / "journal")
        nowhere = psycopg2.extensions.make_dsn(host=str(tmp_path / "no-server"), dbname="np", user="np")
        handle = collector(fifo_path, nowhere, "--journal", journal)
        summary = run_emitter(fifo_path, "--count", "3000", "--run-id", "later")
        assert summary["lines_sent"] == 3000
        started = time.monotonic()
        assert handle.stop(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert "stay in the journal" in handle.log()
        again = collector(fifo_path, dsn, "--journal", journal)
        wait_for_rows(dsn, RUN_PREDICATE, 3000, params=("later",))
        assert exactly_once(query, dsn, "later") == (3000, 3000)
        assert again.stop() == 0
