"""The reference emitter and collector as real processes, through a real FIFO, into a real PostgreSQL."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import psycopg2.extensions
import pytest

from reference.collector.lines import REJECTED_PREFIX_BYTES
from reference.events import EventFactory
from reference.sizes import parse_size

log = logging.getLogger(__name__)

RUN = "itest"
# Rows of the run: every emitter here stamps data._np.run with RUN.
RUN_PREDICATE = "data->'_np'->>'run' = %s"
WRITERS = 4
LINES_PER_WRITER = 2_500
SMALL = parse_size("small")
# Medium lines (1-2 KiB) keep each event's whole faker data; small ones drop it when it does not fit,
# and with it every login_error's traceback.
MEDIUM = parse_size("medium")

# The sample rows of the original README, verbatim (its bulk INSERT).
README_INSERT = """
INSERT INTO logs(time, application_name, environment_name, log_event, trace_id, file_path, host_ip, data)
  VALUES
    (NOW(), 'LoadBalancer', 'production', 'access', 'cc47066c-df5f-11e8-93a0-03a5cafa053b', '/usr/src/app/haproxy', '127.0.0.1', NULL),
    (NOW(), 'WebApp', 'production', 'login', '0ad94512-df55-11e8-9805-5b8e82d370a6', '/usr/src/app/login.py', '127.0.0.1', '{"user": "Shawn Corey Carter", "age": 48, "email": "someemail@email.com"}');
"""  # noqa: E501 - kept exactly as the README prints it
README_ROWS = [
    (
        "LoadBalancer",
        "production",
        "access",
        "cc47066c-df5f-11e8-93a0-03a5cafa053b",
        "/usr/src/app/haproxy",
        "127.0.0.1",
        None,
    ),
    (
        "WebApp",
        "production",
        "login",
        "0ad94512-df55-11e8-9805-5b8e82d370a6",
        "/usr/src/app/login.py",
        "127.0.0.1",
        {"user": "Shawn Corey Carter", "age": 48, "email": "someemail@email.com"},
    ),
]
# The README's queries; the literals it compares with become parameters.
QUERY_LATEST = "SELECT * FROM logs ORDER BY time DESC LIMIT 5;"
QUERY_TRACE = "SELECT * FROM logs WHERE logs.trace_id = %s;"
QUERY_HOST = "SELECT * FROM logs WHERE logs.host_ip = %s;"
QUERY_LOGIN_ERRORS = "SELECT data,file_path FROM logs WHERE logs.log_event ='login_error' ORDER BY time DESC LIMIT 5;"
QUERY_TRACEBACKS = "SELECT log_event,data FROM logs WHERE data->>'traceback' IS NOT NULL;"

# Runs emitter.main() in one forked child per emitter, one after another: each child is a real, short-lived
# process that opens the FIFO, writes and exits, while the faker pools are built once in the parent
# (a cold `python -m reference.emitter` spends ~0.7 s on imports and pools, 100 of them would take 70 s).
SEQUENTIAL_EMITTERS = r"""
import os, sys, traceback
from reference import emitter
from reference.events import filler_text, record_pool
fifo, run_id, seed, count, emitters = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
record_pool(seed)
filler_text(seed)
for k in range(emitters):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = emitter.main(["--fifo", fifo, "--count", count, "--run-id", run_id, "--seed", str(seed),
                                 "--source", f"s{k}_"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status != 0:
        sys.exit(f"emitter {k} (pid {pid}) exited with status {status}")
"""


def per_source(query, dsn: str, run: str) -> dict[str, tuple[int, int, int, int]]:
    """{src: (rows, distinct seqs, min seq, max seq)} of one run."""
    rows = query(
        dsn,
        """
        SELECT data->'_np'->>'src', count(*), count(DISTINCT (data->'_np'->>'seq')::bigint),
               min((data->'_np'->>'seq')::bigint), max((data->'_np'->>'seq')::bigint)
        FROM logs WHERE data->'_np'->>'run' = %s GROUP BY 1""",
        (run,),
    )
    return {src: tuple(counts) for src, *counts in rows}


def assert_complete(query, dsn: str, run: str, expected: dict[str, int]) -> None:
    """Each source's seq 1..n is in logs exactly once, nothing else of the run is there, nothing was rejected."""
    ((total, distinct),) = query(
        dsn,
        """
        SELECT count(*), count(DISTINCT (data->'_np'->>'src', (data->'_np'->>'seq')::bigint))
        FROM logs WHERE data->'_np'->>'run' = %s""",
        (run,),
    )
    assert total == distinct == sum(expected.values()), f"{total} rows, {distinct} distinct (src, seq)"
    assert per_source(query, dsn, run) == {src: (n, n, 1, n) for src, n in expected.items()}
    assert query(dsn, "SELECT reason, raw FROM logs_rejected") == []


def rejected(query, dsn: str) -> dict[bytes, str]:
    """{raw bytes: reason} of every rejected line."""
    rows = query(dsn, "SELECT raw, reason FROM logs_rejected")
    table = {bytes(raw): reason for raw, reason in rows}
    assert len(table) == len(rows), "two rejected rows share the same raw bytes"
    return table


def columns(event: dict) -> tuple:
    """The columns of an event after time, in table order, as psycopg2 returns them."""
    return (
        event["application_name"],
        event["environment_name"],
        event["log_event"],
        event["trace_id"],
        event["file_path"],
        event["host_ip"],
        event["data"],
    )


def canonical(row: tuple) -> bytes:
    """A row as bytes that do not depend on the key order of its JSON (jsonb sorts keys its own way)."""
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


def write_fifo(fifo: Path, data: bytes) -> None:
    """Write data into the FIFO with a plain blocking writer, as `cat file > fifo` would."""
    with open(fifo, "wb") as pipe:
        pipe.write(data)


class TestConcurrentEmitters:
    """Several writers at once: no line lost, none duplicated."""

    def test_four_emitter_processes_land_every_line_once(
        self, dsn, fifo_path, collector, run_emitter, query, wait_for_rows, record_property
    ):
        """Four emitter processes writing at once land exactly 4 x 2,500 rows, each (src, seq) once."""
        handle = collector(fifo_path, dsn)
        started = time.monotonic()
        with ThreadPoolExecutor(WRITERS) as pool:
            summaries = list(
                pool.map(
                    lambda k: run_emitter(
                        fifo_path, "--count", str(LINES_PER_WRITER), "--run-id", RUN, "--source", f"p{k}_"
                    ),
                    range(WRITERS),
                )
            )
        wait_for_rows(dsn, RUN_PREDICATE, WRITERS * LINES_PER_WRITER, params=(RUN,))
        elapsed = time.monotonic() - started
        rate = WRITERS * LINES_PER_WRITER / elapsed
        record_property("rows_per_second", round(rate))
        log.info(
            "4 emitter processes: %d rows in %.2f s (%.0f rows/s, process start-up included)",
            WRITERS * LINES_PER_WRITER,
            elapsed,
            rate,
        )

        assert [s["lines_sent"] for s in summaries] == [LINES_PER_WRITER] * WRITERS
        assert [s["lines_dropped"] for s in summaries] == [0] * WRITERS
        assert_complete(query, dsn, RUN, {f"p{k}_0": LINES_PER_WRITER for k in range(WRITERS)})
        assert handle.stop() == 0

    def test_one_emitter_with_four_writers_lands_every_line_once(
        self, dsn, fifo_path, collector, run_emitter, query, wait_for_rows, record_property
    ):
        """One emitter with --writers 4 lands exactly 4 x 2,500 rows, each (src, seq) once."""
        handle = collector(fifo_path, dsn)
        summary = run_emitter(
            fifo_path,
            "--count",
            str(WRITERS * LINES_PER_WRITER),
            "--writers",
            str(WRITERS),
            "--run-id",
            RUN,
            "--source",
            "w",
        )
        wait_for_rows(dsn, RUN_PREDICATE, WRITERS * LINES_PER_WRITER, params=(RUN,))
        record_property("emitter_lines_per_second", summary["lines_per_second"])
        log.info(
            "--writers 4: %d lines in %.2f s (%s lines/s, blocked %.2f s, %d EAGAIN)",
            summary["lines_sent"],
            summary["elapsed_seconds"],
            summary["lines_per_second"],
            summary["blocked_seconds"],
            summary["eagain"],
        )

        assert summary["lines_sent"] == WRITERS * LINES_PER_WRITER
        assert summary["lines_dropped"] == 0
        assert_complete(query, dsn, RUN, {f"w{k}": LINES_PER_WRITER for k in range(WRITERS)})
        assert handle.stop() == 0


class TestReadmeQueries:
    """The original README's queries return what the loaded events imply."""

    SEED = 42
    COUNT = 300

    @pytest.fixture
    def loaded(self, dsn, fifo_path, collector, run_emitter, query, wait_for_rows) -> list[dict]:
        """Load COUNT seeded events through the pipeline, then the README's sample rows; return the events.

        The expected events are rebuilt here with EventFactory from the same seed, run and source, so they
        do not come from the database; only their times differ from what the emitter sent. --size medium keeps
        the tracebacks in; --rate spaces the lines ~2 ms apart, so ORDER BY time has no ties among them.
        """
        handle = collector(fifo_path, dsn)
        run_emitter(
            fifo_path,
            "--count",
            str(self.COUNT),
            "--seed",
            str(self.SEED),
            "--run-id",
            "readme",
            "--source",
            "r",
            "--size",
            "medium",
            "--rate",
            "500",
        )
        wait_for_rows(dsn, RUN_PREDICATE, self.COUNT, params=("readme",))
        assert handle.stop() == 0
        query(dsn, README_INSERT)
        factory = EventFactory(MEDIUM, seed=self.SEED, run_id="readme", source="r0")
        events = [orjson.loads(line) for line in factory.lines(self.COUNT)]
        ((distinct_times,),) = query(dsn, "SELECT count(DISTINCT time) FROM logs WHERE data->'_np'->>'run' = 'readme'")
        assert distinct_times == self.COUNT, "two emitted events share a time stamp; ORDER BY time is ambiguous"
        return events

    def test_latest_five_are_the_readme_rows_then_the_last_events(self, dsn, loaded, query):
        """ORDER BY time DESC LIMIT 5 returns the two README rows (inserted last), then events 300, 299, 298."""
        rows = query(dsn, QUERY_LATEST)
        assert [len(row) for row in rows] == [8] * 5
        assert sorted(row[1:] for row in rows[:2]) == sorted(README_ROWS)
        assert [row[1:] for row in rows[2:]] == [columns(e) for e in loaded[:-4:-1]]
        times = [row[0] for row in rows]
        assert times == sorted(times, reverse=True)

    def test_by_trace_id_returns_exactly_that_trace(self, dsn, loaded, query):
        """WHERE trace_id = X returns exactly the rows carrying X: an event's, a README row's, none for the example."""
        picks = {loaded[122]["trace_id"]: 1, README_ROWS[1][3]: 1, "bfb95991-ae1b-4f7b-bc11-024dc53b964f": 0}
        for trace, count in picks.items():
            expected = [columns(e) for e in loaded if e["trace_id"] == trace]
            expected += [row for row in README_ROWS if row[3] == trace]
            rows = query(dsn, QUERY_TRACE, (trace,))
            assert [row[1:] for row in rows] == expected, trace
            assert len(rows) == count, trace

    def test_by_host_ip_returns_exactly_that_host(self, dsn, loaded, query):
        """WHERE host_ip = X returns exactly the rows from X: the events' most common host, the README's two hosts."""
        ((common, common_count),) = Counter(e["host_ip"] for e in loaded).most_common(1)
        assert common_count >= 2, "the seeded events never repeat a host"
        for host, count in {common: common_count, "127.0.0.1": 2, "172.18.0.3": 0}.items():
            expected = [columns(e) for e in loaded if e["host_ip"] == host]
            expected += [row for row in README_ROWS if row[5] == host]
            rows = query(dsn, QUERY_HOST, (host,))
            assert sorted(map(canonical, (row[1:] for row in rows))) == sorted(map(canonical, expected)), host
            assert len(rows) == count, host

    def test_latest_login_errors_carry_their_traceback(self, dsn, loaded, query):
        """The last five login_error events come back newest first, each with data.traceback and login.py."""
        expected = [e for e in reversed(loaded) if e["log_event"] == "login_error"][:5]
        assert len(expected) == 5, "the seeded events hold fewer than five login errors"
        rows = query(dsn, QUERY_LOGIN_ERRORS)
        assert rows == [(e["data"], e["file_path"]) for e in expected]
        assert all(data["traceback"].startswith("Traceback (most recent call last):") for data, _ in rows)
        assert {path for _, path in rows} == {"/usr/src/app/login.py"}

    def test_rows_with_a_traceback_are_the_login_errors(self, dsn, loaded, query):
        """data->>'traceback' IS NOT NULL returns every login_error event and nothing else."""
        expected = [e for e in loaded if e["data"] and "traceback" in e["data"]]
        assert {e["log_event"] for e in expected} == {"login_error"}
        rows = query(dsn, QUERY_TRACEBACKS)
        assert {event for event, _ in rows} == {"login_error"}
        seq = lambda data: data["_np"]["seq"]  # noqa: E731
        assert sorted((data for _, data in rows), key=seq) == [e["data"] for e in expected]


class TestShortLivedEmitters:
    """Writers that open, write and exit one after another."""

    EMITTERS = 100
    LINES = 20

    def test_hundred_sequential_emitters_lose_nothing(self, dsn, fifo_path, collector, query, wait_for_rows):
        """A hundred emitter processes of 20 lines, one after another, land exactly 2,000 rows, each once."""
        handle = collector(fifo_path, dsn)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", SEQUENTIAL_EMITTERS, str(fifo_path), RUN, "0", str(self.LINES), str(self.EMITTERS)],
            capture_output=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        summaries = [orjson.loads(line) for line in done.stdout.splitlines()]
        log.info("%d sequential emitter processes in %.2f s", len(summaries), time.monotonic() - started)
        assert len(summaries) == self.EMITTERS
        assert sum(s["lines_sent"] for s in summaries) == self.EMITTERS * self.LINES
        wait_for_rows(dsn, RUN_PREDICATE, self.EMITTERS * self.LINES, params=(RUN,))
        assert_complete(query, dsn, RUN, {f"s{k}_0": self.LINES for k in range(self.EMITTERS)})
        assert handle.stop() == 0


class TestSigtermDrains:
    """SIGTERM stores everything already written before the collector exits."""

    LINES = 20_000

    @pytest.mark.parametrize(
        "extra", [(), ("--pipe-size", "1048576", "--flush-interval", "60")], ids=["defaults", "big-pipe-no-timed-flush"]
    )
    def test_sigterm_right_after_the_emitter_loses_nothing(self, dsn, fifo_path, collector, run_emitter, query, extra):
        """Every line the emitter sent is in logs after SIGTERM, the exit code is 0 and the final stats are logged.

        With --flush-interval 60 the last partial batch can only reach the database through the stop path.
        """
        handle = collector(fifo_path, dsn, *extra)
        summary = run_emitter(fifo_path, "--count", str(self.LINES), "--run-id", RUN, "--source", "t")
        assert handle.stop() == 0
        log.info(
            "SIGTERM test %s: emitter %s lines/s, blocked %.2f s",
            extra,
            summary["lines_per_second"],
            summary["blocked_seconds"],
        )
        assert summary["lines_sent"] == self.LINES
        ((stored,),) = query(dsn, f"SELECT count(*) FROM logs WHERE {RUN_PREDICATE}", (RUN,))
        ((refused,),) = query(dsn, "SELECT count(*) FROM logs_rejected")
        assert (stored, refused) == (summary["lines_sent"], 0)
        assert_complete(query, dsn, RUN, {"t0": self.LINES})
        text = handle.log()
        assert (
            f"final lines_read={self.LINES} bytes_read={summary['bytes_sent']} rows_written={self.LINES} "
            "rejected=0" in text
        ), text

    def test_sigterm_stops_a_collector_waiting_for_its_database(self, tmp_path, fifo_path, collector):
        """SIGTERM ends a collector that is still waiting for an unreachable database within a few seconds."""
        nowhere = psycopg2.extensions.make_dsn(host=str(tmp_path / "no-server"), dbname="np", user="np")
        handle = collector(fifo_path, nowhere, ready="database unreachable")
        handle.stop(timeout=3)


class TestBadInput:
    """Bad lines go to logs_rejected with their bytes and a reason; the collector keeps going."""

    MAX_LINE = 10_000

    def bad_lines(self, good: EventFactory) -> list[tuple[bytes, str]]:
        """(raw line without newline, text its rejection reason must contain), one per kind of breakage."""
        event = orjson.loads(good.line())

        def variant(**changes) -> bytes:
            changed = {**event, **changes}
            return orjson.dumps({k: v for k, v in changed.items() if v is not ...})

        line = good.line().rstrip(b"\n")
        return [
            (b'{"time": "2026-02-28T10:00:00+00:00", "application_name": ', "invalid JSON"),
            (line.replace(b'"application_name":"', b'"application_name":"\xff\xfe', 1), "invalid UTF-8 at byte"),
            (line.replace(b'"host_ip":"', b'"host_ip":"\x00', 1), "NUL byte at offset"),
            (orjson.dumps([event]), "expected a JSON object, got a JSON array"),
            (variant(host_ip=...), "field 'host_ip' is missing"),
            (variant(environment_name=""), "'environment_name' must be a non-empty string, got an empty string"),
            (variant(time="2026-02-28T10:00:00"), "'time' must be an RFC 3339 timestamp with an offset"),
            (variant(data=[1, 2]), "'data' must be a JSON object or null, got a JSON array"),
            # data reaches jsonb as written: a number beyond numeric's range is refused by PostgreSQL itself.
            (
                line.replace(b'"data":{', b'"data":{"huge":1e200000,', 1),
                "PostgreSQL rejected the row: value overflows numeric format",
            ),
            # RFC 3339 allows year 0000; PostgreSQL's calendar has none, so the contract refuses it.
            (variant(time="0000-02-28T10:00:00+00:00"), "year 0000 cannot be stored"),
        ]

    def test_bad_lines_are_rejected_with_bytes_and_reason(
        self, dsn, fifo_path, tmp_path, collector, query, wait_for_rows
    ):
        """Good lines land, each bad line is in logs_rejected with its bytes and reason, and later lines still land."""
        handle = collector(fifo_path, dsn, "--max-line-bytes", str(self.MAX_LINE))
        good = EventFactory(SMALL, seed=3, run_id=RUN, source="good")
        bad_factory = EventFactory(SMALL, seed=3, run_id=RUN, source="bad")
        bad = self.bad_lines(bad_factory)
        too_long = orjson.dumps({**orjson.loads(bad_factory.line()), "application_name": "x" * 50_000})
        stream = []
        for raw in [*(raw for raw, _ in bad), too_long]:
            stream += [*good.lines(3), raw + b"\n"]
        stream += good.lines(3)
        mixed = tmp_path / "mixed.ndjson"
        mixed.write_bytes(b"".join(stream))
        with open(fifo_path, "wb") as pipe:  # cat mixed.ndjson > fifo
            subprocess.run(["cat", str(mixed)], stdout=pipe, check=True, timeout=30)
        good_count = good.seq
        wait_for_rows(dsn, "TRUE", len(bad) + 1, table="logs_rejected")
        wait_for_rows(dsn, RUN_PREDICATE, good_count, params=(RUN,))

        table = rejected(query, dsn)
        for raw, reason_text in bad:
            assert raw in table, f"not in logs_rejected: {raw[:120]!r}"
            assert reason_text in table.pop(raw)
        # The over-long line keeps its first bytes, at most 64 KiB, whatever the read boundaries were.
        ((kept, reason),) = table.items()
        assert kept == too_long[:REJECTED_PREFIX_BYTES]
        assert f"line of {len(too_long)} bytes exceeds --max-line-bytes {self.MAX_LINE}" in reason
        assert per_source(query, dsn, RUN) == {"good": (good_count, good_count, 1, good_count)}

        assert handle.alive
        write_fifo(fifo_path, b"".join(good.lines(50)))
        wait_for_rows(dsn, RUN_PREDICATE, good_count + 50, params=(RUN,))
        assert per_source(query, dsn, RUN) == {"good": (good_count + 50, good_count + 50, 1, good_count + 50)}
        assert handle.alive
        assert handle.stop() == 0


class TestRefusesNonFifo:
    """The collector reads only from a FIFO."""

    @pytest.mark.parametrize("kind", ["a regular file", "a directory"])
    def test_exits_2_on_a_path_that_is_not_a_fifo(self, dsn, tmp_path, collector, kind):
        """Pointed at a regular file or a directory, the collector exits 2 and says it is not a FIFO."""
        path = tmp_path / "not-a-fifo"
        if kind == "a directory":
            path.mkdir()
        else:
            path.write_text("keep me\n")
        handle = collector(path, dsn, ready=None)
        assert handle.wait() == 2
        assert f"is {kind}, not a FIFO" in handle.log()
        if kind == "a regular file":
            assert path.read_text() == "keep me\n"


class TestSecrets:
    """The collector's log never shows the database password."""

    SECRET = "secret123"

    def with_password(self, dsn: str) -> tuple[str, str]:
        """The DSN with a password, and that password (the configured one when the DSN has one)."""
        password = psycopg2.extensions.parse_dsn(dsn).get("password")
        if password:
            return dsn, password
        # The embedded server trusts local connections: the password is accepted and ignored.
        return psycopg2.extensions.make_dsn(dsn, password=self.SECRET), self.SECRET

    def test_password_is_not_logged(self, dsn, fifo_path, collector, run_emitter, wait_for_rows):
        """A collector given a DSN with a password logs the DSN masked, never the password."""
        secret_dsn, password = self.with_password(dsn)
        handle = collector(fifo_path, secret_dsn)
        run_emitter(fifo_path, "--count", "50", "--run-id", RUN)
        wait_for_rows(dsn, RUN_PREDICATE, 50, params=(RUN,))
        assert handle.stop() == 0
        text = handle.log()
        assert password not in text
        assert "***" in text, text

    def test_password_is_not_logged_when_the_server_is_unreachable(self, tmp_path, fifo_path, collector):
        """A collector whose server is unreachable logs the failure without the password."""
        nowhere = psycopg2.extensions.make_dsn(
            host=str(tmp_path / "no-server"), dbname="np", user="np", password=self.SECRET
        )
        handle = collector(fifo_path, nowhere, ready="database unreachable")
        text = handle.log()
        assert self.SECRET not in text
        assert "password=***" in text, text
        assert os.path.exists(fifo_path)
