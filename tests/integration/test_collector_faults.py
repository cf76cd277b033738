"""The collector under database faults and shutdown races: what a writer was told it wrote lands, errors say why.

Real collector processes, real FIFOs, real PostgreSQL (issue 12, items 2, 4, 5 and 6).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import orjson
import psutil
import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from loadtests.database import Database
from reference.collector.pgerrors import Kind, classify
from reference.collector.reader import stand_in_path

log = logging.getLogger(__name__)

# One open-write-close writer: a line per open, as `echo line > fifo` does. Non-blocking open, so it ends
# (ENXIO) once the collector has closed the FIFO; prints the sequence numbers whose write fully succeeded.
OPEN_WRITE_CLOSE_WRITER = r"""
import errno, json, os, sys, time
fifo, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + seconds
written, seq = [], 0
head = ('{"time":"2026-11-28T05:30:00.123456+00:00","application_name":"owc","environment_name":"test",'
        '"log_event":"echo","trace_id":"0ad94512-df55-11e8-9805-5b8e82d370a6","file_path":"/bin/echo",'
        '"host_ip":"10.0.0.1","data":')
while time.monotonic() < deadline:
    line = (head + json.dumps({"w": name, "seq": seq, "pad": "x" * 150}) + "}\n").encode()
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO and written:
            break  # no reader any more: the collector has closed the FIFO
        time.sleep(0.001)
        continue
    try:
        ok = os.write(fd, line) == len(line)
    except OSError:  # EAGAIN: the pipe is full; EPIPE: the reader closed after our open
        ok = False
    finally:
        os.close(fd)
    if ok:
        written.append(seq)
        seq += 1
    else:
        time.sleep(0.002)
print(json.dumps(written))
"""
# A statement-level trigger that makes every COPY into logs take this long: a slow database, so the collector's
# final loading at SIGTERM takes a while, which is when open-write-close writers used to lose lines.
SLOW_COPY_S = 0.3
SLOW_TRIGGER_SQL = f"""
CREATE FUNCTION np_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep({SLOW_COPY_S}); RETURN NULL;
END $$;
CREATE TRIGGER np_slow AFTER INSERT ON logs FOR EACH STATEMENT EXECUTE FUNCTION np_slow();
"""
WRITERS = 4
# Seconds the writers run before the SIGTERM: long enough for the pipe to be busy and the batches slow.
WRITE_BEFORE_SIGTERM_S = 1.5
# A collector honours SIGTERM within this long in every state (the stop grace, 5 s, plus start-up slack).
SIGTERM_BOUND_S = 10.0
EVENT = {
    "time": "2026-11-28T05:30:00.123456+00:00",
    "application_name": "fault",
    "environment_name": "test",
    "log_event": "probe",
    "trace_id": "0ad94512-df55-11e8-9805-5b8e82d370a6",
    "file_path": "/srv/probe.py",
    "host_ip": "10.0.0.1",
}


def event_lines(tag: str, count: int, start: int = 0) -> bytes:
    """count valid lines with data {"tag": tag, "seq": n}."""
    return b"".join(
        orjson.dumps({**EVENT, "data": {"tag": tag, "seq": n}}) + b"\n" for n in range(start, start + count)
    )


def write_fifo(fifo: Path, data: bytes) -> None:
    """Write data with a plain blocking writer, as `cat file > fifo` would."""
    with open(fifo, "wb") as pipe:
        pipe.write(data)


def tagged(query, dsn: str, tag: str) -> tuple[int, int]:
    """(rows, distinct seqs) of the lines with this tag."""
    ((rows, distinct),) = query(
        dsn, "SELECT count(*), count(DISTINCT data->>'seq') FROM logs WHERE data->>'tag' = %s", (tag,)
    )
    return rows, distinct


@pytest.fixture
def role(dsn: str, database: Database) -> Iterator[tuple[str, str]]:
    """(name, dsn) of a new login role with INSERT and SELECT on the namedpiper tables; dropped after the test."""
    name = f"np_role_{secrets.token_hex(4)}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        cur.execute(sql.SQL("GRANT SELECT, INSERT ON logs, logs_rejected TO {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON np_collector_offsets TO {}").format(sql.Identifier(name)))
    yield name, psycopg2.extensions.make_dsn(dsn, user=name)
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    admin.close()


class TestSigtermWithOpenWriteCloseWriters:
    """Item 2: every write that succeeded before or after a SIGTERM lands."""

    @pytest.mark.parametrize("journal", [False, True], ids=["plain", "journal"])
    def test_every_successful_write_lands(self, journal, dsn, fifo_path, tmp_path, collector, query):
        """Open-write-close writers racing a SIGTERM on a slow database: each line whose write succeeded lands."""
        query(dsn, SLOW_TRIGGER_SQL)
        extra = ["--journal", str(tmp_path / "journal")] if journal else []
        handle = collector(fifo_path, dsn, *extra)
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_WRITE_CLOSE_WRITER, str(fifo_path), f"w{k}", "20"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(WRITERS)
        ]
        inode = os.lstat(fifo_path).st_ino
        try:
            time.sleep(WRITE_BEFORE_SIGTERM_S)
            status = handle.stop(timeout=60)
            outputs = [w.communicate(timeout=60) for w in writers]
        finally:
            for w in writers:
                w.kill()
                w.wait()
        written = {(f"w{k}", seq) for k, (out, _) in enumerate(outputs) for seq in orjson.loads(out)}
        landed = query(dsn, "SELECT data->>'w', (data->>'seq')::int FROM logs WHERE application_name = 'owc'")
        lost = written - set(landed)
        log.info("%d writes succeeded, %d landed, %d lost", len(written), len(landed), len(lost))
        assert status == 0, handle.log()
        assert len(written) > 1000
        # Reading on after the SIGTERM lost up to a pipe's worth (160 of these lines); closing right after the
        # final read still lost the writes that landed between the two (2 of 55,144 once). With the stand-in FIFO
        # at the path, the stop reads until the last writer that has the FIFO open is done: none.
        assert not lost, f"{len(lost)} of {len(written)} successful writes lost: {sorted(lost)[:10]}"
        assert os.lstat(fifo_path).st_ino == inode  # the same FIFO is back at the path
        assert stat.S_ISFIFO(os.lstat(stand_in_path(fifo_path)).st_mode)  # the stand-in waits for the next start
        assert len(landed) == len(set(landed))


class TestStopWithTheDatabaseDown:
    """Without a journal and with the database down, a stop does not read lines it could only give up."""

    def test_no_wait_for_writers_when_nothing_can_be_stored(self, fifo_path, collector):
        """The pipe keeps what a writer holding the FIFO wrote, for the next collector; the stop takes no stand-in."""
        handle = collector(fifo_path, "postgresql://nobody@/none?host=/nonexistent&connect_timeout=1")
        writer = os.open(fifo_path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(writer, event_lines("down", 50))
            handle.wait_for_log("unreachable", 20)
            os.write(writer, event_lines("down", 50, start=50))
            started = time.monotonic()
            status = handle.stop(timeout=30)
            took = time.monotonic() - started
        finally:
            os.close(writer)
        text = handle.log()
        assert status == 4, text
        assert took < SIGTERM_BOUND_S, text
        assert not stand_in_path(fifo_path).exists(), text


class TestStatementTimeout:
    """Item 4: a cancelled statement is retried on the same connection with backoff, and SIGTERM still works."""

    @pytest.mark.parametrize("journal", [False, True], ids=["plain", "journal"])
    def test_no_reconnect_storm_and_prompt_sigterm(self, journal, dsn, role, fifo_path, tmp_path, collector, query):
        """With the role's statement_timeout at 1 ms: one session, one warning naming the cause, exit within 10 s."""
        name, role_dsn = role
        query(dsn, f"ALTER ROLE \"{name}\" SET statement_timeout = '1ms'")  # name: letters, digits, _
        query(dsn, SLOW_TRIGGER_SQL)  # so that every COPY outlasts the 1 ms, not only most
        extra = ["--journal", str(tmp_path / "journal")] if journal else []
        handle = collector(fifo_path, role_dsn, *extra, "--no-schema", ready=None)
        handle.wait_for_log("reading")
        write_fifo(fifo_path, event_lines("timeout", 100))
        pids: set[int] = set()
        deadline = time.monotonic() + 6
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while time.monotonic() < deadline:
                    cur.execute("SELECT pid FROM pg_stat_activity WHERE usename = %s", (name,))
                    pids.update(pid for (pid,) in cur.fetchall())
                    time.sleep(0.02)
        finally:
            conn.close()
        started = time.monotonic()
        status = handle.stop(timeout=30)
        took = time.monotonic() - started
        text = handle.log()
        log.info("sessions seen: %d; SIGTERM to exit %.2f s; status %d", len(pids), took, status)
        assert len(pids) <= 2, f"{len(pids)} sessions in 6 s: a reconnect storm\n{text}"
        assert "connection lost" not in text
        assert text.count("statement_timeout") >= 1
        # One warning per state change: the journal's offset query may pass now and then between cancelled COPYs.
        assert 1 <= text.count("cancelled the statement") <= 3, text
        assert took < SIGTERM_BOUND_S, text
        if journal:
            assert status == 0, text
            assert "stay in the journal" in text
        else:
            assert status == 4, text
            assert "100 lines read were not stored" in text


class TestRecoveryAndLocks:
    """Item 4: a corrected setting is picked up, and a statement stuck on a lock does not hold a stop hostage."""

    def test_reset_statement_timeout_lets_lines_land(self, dsn, role, fifo_path, collector, query, wait_for_rows):
        """After ALTER ROLE ... RESET statement_timeout the collector's retries reach a fresh session and load."""
        name, role_dsn = role
        query(dsn, f"ALTER ROLE \"{name}\" SET statement_timeout = '1ms'")
        query(dsn, SLOW_TRIGGER_SQL)
        handle = collector(fifo_path, role_dsn, "--no-schema")
        write_fifo(fifo_path, event_lines("reset", 100))
        time.sleep(3)
        assert tagged(query, dsn, "reset") == (0, 0)
        query(dsn, f'ALTER ROLE "{name}" RESET statement_timeout')
        # The backoff grows to its 5 s cap within 6.3 s of trouble, then each retry takes a fresh session.
        wait_for_rows(dsn, "data->>'tag' = 'reset'", 100, timeout=30)
        assert handle.stop() == 0
        assert "taking batches again" in handle.log()

    @pytest.mark.parametrize("journal", [False, True], ids=["plain", "journal"])
    def test_sigterm_while_a_copy_waits_for_a_lock(
        self, journal, dsn, fifo_path, tmp_path, collector, query, wait_for_rows
    ):
        """A COPY stuck behind a lock is cancelled once the stop's grace is over: exit within 10 s, lines counted."""
        extra = ["--journal", str(tmp_path / "journal")] if journal else []
        handle = collector(fifo_path, dsn, *extra)
        blocker = psycopg2.connect(dsn)
        try:
            with blocker.cursor() as cur:
                cur.execute("LOCK TABLE logs IN ACCESS EXCLUSIVE MODE")
            write_fifo(fifo_path, event_lines("locked", 100))
            time.sleep(1)
            started = time.monotonic()
            status = handle.stop(timeout=30)
            took = time.monotonic() - started
        finally:
            blocker.close()
        text = handle.log()
        log.info("SIGTERM to exit %.2f s behind a lock; status %d", took, status)
        assert took < SIGTERM_BOUND_S, text
        assert "cancelled the statement" not in text  # the stop's own cancel is no statement_timeout to check
        if journal:
            assert status == 0, text
            again = collector(fifo_path, dsn, *extra)
            wait_for_rows(dsn, "data->>'tag' = 'locked'", 100)
            assert tagged(query, dsn, "locked") == (100, 100)
            assert again.stop() == 0
        else:
            assert status == 4, text
            assert "100 lines read were not stored" in text


# A per-row trigger slow enough that a batch's COPY runs for seconds: a terminate arrives while the rows stream.
SLOW_ROW_TRIGGER_SQL = """
CREATE FUNCTION np_slow_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.0005); RETURN NULL;
END $$;
CREATE TRIGGER np_slow_row AFTER INSERT ON logs FOR EACH ROW EXECUTE FUNCTION np_slow_row();
"""
TERMINATE_COPY_SQL = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = 'namedpiper-collector' AND query LIKE 'COPY%%' AND state = 'active'
"""


class TestSessionTerminatedMidCopy:
    """An administrator ending the collector's session mid-COPY: one warning, a new session, every line once."""

    def test_terminate_mid_copy_is_a_lost_connection_without_traceback(
        self, dsn, fifo_path, collector, query, wait_for_rows
    ):
        """psycopg2 prints a SystemError for it from C (a bug of its own): the collector keeps it out of the log."""
        query(dsn, SLOW_ROW_TRIGGER_SQL)
        handle = collector(fifo_path, dsn)
        write_fifo(fifo_path, event_lines("terminated", 3000))
        terminated = 0
        deadline = time.monotonic() + 20
        while terminated < 2 and time.monotonic() < deadline:
            ((n,),) = query(dsn, TERMINATE_COPY_SQL)
            terminated += n
            time.sleep(0.2)
        query(dsn, "DROP TRIGGER np_slow_row ON logs")
        wait_for_rows(dsn, "data->>'tag' = 'terminated'", 3000, timeout=60)
        assert handle.stop() == 0
        text = handle.log()
        assert terminated >= 2, text
        assert tagged(query, dsn, "terminated") == (3000, 3000)
        assert "connection lost" in text
        assert "Traceback" not in text
        assert "SystemError" not in text


@pytest.fixture
def small_tablespace(dsn: str) -> Iterator[str]:
    """A tablespace on a 2 MiB tmpfs (the server's disk filling up), removed after the test; needs root."""
    if os.geteuid() != 0:
        pytest.skip("a full server disk is simulated with a small tmpfs, which only root may mount")
    folder = Path(tempfile.mkdtemp(prefix="namedpiper-small-ts-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], check=True)
    name = f"np_small_{secrets.token_hex(4)}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SHOW data_directory")
            (data_dir,) = cur.fetchone()
            owner = os.stat(data_dir)
            os.chown(folder, owner.st_uid, owner.st_gid)  # the server's own user must own a tablespace's folder
            cur.execute(sql.SQL("CREATE TABLESPACE {} LOCATION %s").format(sql.Identifier(name)), (str(folder),))
        yield name
        with admin.cursor() as cur:
            # Everything in it, a hypertable's chunks included (TimescaleDB puts new chunks where logs lives).
            cur.execute("ALTER TABLE logs SET TABLESPACE pg_default")
            for kind in ("TABLE", "INDEX"):
                cur.execute(
                    sql.SQL(f"ALTER {kind} ALL IN TABLESPACE {{}} SET TABLESPACE pg_default").format(
                        sql.Identifier(name)
                    )
                )
            cur.execute(sql.SQL("DROP TABLESPACE {}").format(sql.Identifier(name)))
    finally:
        admin.close()
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


class TestServerDiskFull:
    """Item 4: a full disk on the server is named as such and retried with backoff until space returns."""

    def test_disk_full_is_retried_and_everything_lands(
        self, dsn, small_tablespace, fifo_path, collector, query, wait_for_rows
    ):
        """COPY into a full tablespace: one warning naming the disk, no reconnect storm, every line lands after."""
        query(dsn, f'ALTER TABLE logs SET TABLESPACE "{small_tablespace}"')  # name: letters, digits, _
        handle = collector(fifo_path, dsn)
        writer = threading.Thread(target=write_fifo, args=(fifo_path, event_lines("disk", 20_000)))
        writer.start()
        try:
            handle.wait_for_log("short of resources")
            time.sleep(2)
            query(dsn, "ALTER TABLE logs SET TABLESPACE pg_default")
            writer.join(timeout=60)
            wait_for_rows(dsn, "data->>'tag' = 'disk'", 20_000, timeout=60)
        finally:
            writer.join(timeout=60)
        text = handle.log()
        assert tagged(query, dsn, "disk") == (20_000, 20_000)
        assert text.count("short of resources") == 1, text
        assert "SQLSTATE 53100 disk_full" in text
        assert "connection lost" not in text
        assert handle.stop() == 0


class TestSchemaChangeMidRun:
    """Item 5: a schema or privilege change mid-run stops the collector with one clear line and a documented status."""

    CHANGES: ClassVar[dict[str, tuple[str, str, str, str]]] = {
        "revoke": (
            "REVOKE INSERT ON logs FROM {role}",
            "GRANT INSERT ON logs TO {role}",
            "permission denied",
            "GRANT INSERT",
        ),
        "drop_column": (
            "ALTER TABLE logs DROP COLUMN file_path",
            "ALTER TABLE logs ADD COLUMN file_path TEXT",
            "file_path",
            "reference/schema.sql",
        ),
    }

    @pytest.mark.parametrize("journal", [False, True], ids=["plain", "journal"])
    @pytest.mark.parametrize("change", sorted(CHANGES))
    def test_one_error_line_and_nothing_lost_with_a_journal(
        self, change, journal, dsn, role, fifo_path, tmp_path, collector, query, wait_for_rows
    ):
        """Exit 3 with one line naming cause, fix and the lines not stored; a journal keeps those lines."""
        name, role_dsn = role
        breaking, fixing, cause, fix = (text.replace("{role}", name) for text in self.CHANGES[change])
        extra = ["--journal", str(tmp_path / "journal")] if journal else []
        handle = collector(fifo_path, role_dsn, "--no-schema", *extra)
        write_fifo(fifo_path, event_lines("before", 500))
        wait_for_rows(dsn, "data->>'tag' = 'before'", 500)
        query(dsn, breaking)
        write_fifo(fifo_path, event_lines("after", 200))  # one write below the pipe's capacity: one read, one batch
        status = handle.wait(timeout=30)
        text = handle.log()
        errors = [line for line in text.splitlines() if " ERROR " in line or line.startswith("error:")]
        assert status == 3, text
        assert "Traceback" not in text
        assert len(errors) == 1, text
        assert cause in errors[0]
        assert fix in errors[0]
        assert "200 lines read were not stored" in errors[0]
        if journal:
            assert "they stay in the journal" in errors[0]
            query(dsn, fixing)
            again = collector(fifo_path, role_dsn, "--no-schema", *extra)
            wait_for_rows(dsn, "data->>'tag' = 'after'", 200)
            assert tagged(query, dsn, "after") == (200, 200)
            assert tagged(query, dsn, "before") == (500, 500)
            assert again.stop() == 0


# Garbage lines of exactly --max-line-bytes (1 MiB), the largest that is parsed rather than cut short.
GARBAGE_LINE_BYTES = 1024 * 1024
GARBAGE_LINES = 200
# The bound on the collector's peak RSS under the flood.
MAX_RSS_BYTES = 100 * 1024 * 1024
# psutil samples the collector's RSS this often: a batch lives for tens of milliseconds at least.
RSS_SAMPLE_S = 0.005
OUTAGE_S = 4.0


def flood() -> bytes:
    """GARBAGE_LINES lines of 1 MiB garbage (no newline inside, not JSON), each different."""
    return b"".join(
        b"%08d " % k + b"garbage " * ((GARBAGE_LINE_BYTES - 9) // 8) + b"g" * ((GARBAGE_LINE_BYTES - 9) % 8) + b"\n"
        for k in range(GARBAGE_LINES)
    )


class PeakRss:
    """Samples a process's RSS with psutil in a thread until stopped; peak is the largest sample."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(RSS_SAMPLE_S)

    def stop(self) -> int:
        """Stop sampling and return the peak in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak


class TestRejectionFlood:
    """Item 6: rejected lines count toward the batch limits, and logs_rejected keeps a bounded prefix of each."""

    @pytest.mark.parametrize("outage", [False, True], ids=["db_up", "db_outage"])
    @pytest.mark.parametrize("journal", [False, True], ids=["plain", "journal"])
    def test_peak_rss_stays_bounded(
        self, journal, outage, private_database, fifo_path, tmp_path, collector, query, wait_for_rows
    ):
        """200 garbage lines of 1 MiB: peak RSS at most 100 MiB; each is kept as 64 KiB, its length and its hash."""
        db = private_database
        extra = ["--journal", str(tmp_path / "journal")] if journal else []
        handle = collector(fifo_path, db.dsn, *extra)
        sampler = PeakRss(handle.pid)
        data = flood()
        writer = threading.Thread(target=write_fifo, args=(fifo_path, data + event_lines("after_flood", 100)))
        try:
            if outage:
                db.embedded.stop()
            writer.start()
            if outage:
                time.sleep(OUTAGE_S)
                db.start()
            writer.join(timeout=120)
            wait_for_rows(db.dsn, "data->>'tag' = 'after_flood'", 100, timeout=120)
            wait_for_rows(db.dsn, "TRUE", GARBAGE_LINES, table="logs_rejected", timeout=60)
        finally:
            peak = sampler.stop()
        log.info("peak RSS %.1f MiB (journal %s, outage %s)", peak / 2**20, journal, outage)
        assert handle.stop() == 0
        assert peak <= MAX_RSS_BYTES, f"peak RSS {peak / 2**20:.1f} MiB"
        rows = query(db.dsn, "SELECT octet_length(raw), raw_length, raw_sha256 FROM logs_rejected")
        expected = {hashlib.sha256(line).digest() for line in data.split(b"\n")[:-1]}
        assert all(kept == 64 * 1024 for kept, _, _ in rows)
        assert all(length == GARBAGE_LINE_BYTES for _, length, _ in rows)
        assert {bytes(digest) for _, _, digest in rows} == expected


class TestRejectKeepBytes:
    """Item 6: --reject-keep-bytes bounds what logs_rejected keeps of each line."""

    def test_option_bounds_the_kept_prefix(self, dsn, fifo_path, collector, query, wait_for_rows):
        """With --reject-keep-bytes 100, a 5,000-byte bad line keeps 100 bytes, its length and its SHA-256."""
        handle = collector(fifo_path, dsn, "--reject-keep-bytes", "100")
        bad = b"not json " * 555 + b"!"
        write_fifo(fifo_path, bad + b"\n")
        wait_for_rows(dsn, "TRUE", 1, table="logs_rejected")
        ((kept, length, digest),) = query(dsn, "SELECT raw, raw_length, raw_sha256 FROM logs_rejected")
        assert bytes(kept) == bad[:100]
        assert length == len(bad)
        assert bytes(digest) == hashlib.sha256(bad).digest()
        assert handle.stop() == 0


class TestErrorClassification:
    """Errors PostgreSQL really raises are classified by their SQLSTATE, whatever psycopg2's class for them."""

    @pytest.mark.parametrize(
        ("statements", "kind"),
        [
            (["SET statement_timeout = '10ms'", "SELECT pg_sleep(1)"], Kind.CANCELLED),
            (["SET lock_timeout = '10ms'", "LOCK TABLE logs IN ACCESS EXCLUSIVE MODE"], Kind.CANCELLED),
            (["SELECT 1/0"], Kind.DATA),
            (["SELECT 'x'::timestamptz"], Kind.DATA),
            (["SELECT * FROM no_such_table"], Kind.REFUSED),
            (["SELECT no_such_column FROM logs"], Kind.REFUSED),
            (
                [
                    "SET default_transaction_read_only = on",
                    "COMMIT",
                    "INSERT INTO logs_rejected (reason, raw) VALUES ('x', 'x')",
                ],
                Kind.REFUSED,
            ),
            (["SELECT pg_terminate_backend(pg_backend_pid())"], Kind.CONNECTION),
        ],
        ids=[
            "statement_timeout",
            "lock_timeout",
            "division",
            "bad_time",
            "no_table",
            "no_column",
            "read_only",
            "terminated",
        ],
    )
    def test_real_errors(self, statements, kind, dsn):
        """Each statement's real error lands in the kind the collector's retry logic expects."""
        blocker = psycopg2.connect(dsn)
        conn = psycopg2.connect(dsn)
        try:
            if any("LOCK" in statement for statement in statements):
                with blocker.cursor() as cur:
                    cur.execute("LOCK TABLE logs IN ACCESS EXCLUSIVE MODE")  # held until the end: lock_timeout fires
            with pytest.raises(psycopg2.Error) as caught:
                run_statements(conn, statements)
        finally:
            blocker.close()
            conn.close()
        failure = classify(caught.value)
        assert failure.kind is kind, (failure, type(caught.value))
        assert failure.message


def run_statements(conn: psycopg2.extensions.connection, statements: list[str]) -> None:
    """Run statements in order on conn; "COMMIT" commits."""
    with conn.cursor() as cur:
        for statement in statements:
            if statement == "COMMIT":
                conn.commit()
            else:
                cur.execute(statement)
