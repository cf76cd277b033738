"""Hostile input: every kind of bad line in scenarios/corpus/ is rejected with its bytes and a reason, alone."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest
from conftest import COLLECTOR_READY_TEXT, POLL_INTERVAL_S, CollectorProcess, collector_command, run_query
from psycopg2 import sql
from test_scenarios import assert_passed, run_scenario

from loadtests.corpus import load_corpus
from reference.collector.lines import REJECTED_PREFIX_BYTES
from reference.events import EventFactory
from reference.fifo import write_whole
from reference.schema import apply_schema
from reference.sizes import SIZE_CLASSES

CORPUS = load_corpus()
# Rows are visible within one flush interval (0.1 s) of being read. This bound catches a stall (a collector
# stuck on a bad line, or waiting for more bytes), not slowness: a loaded CI machine stays far below it.
NO_STALL_S = 5.0
RUN_ID = "hostile"
SIZE = SIZE_CLASSES["small"]
# The scenario's users, and a bad line after every 5 writes: even a 6 s run on a busy machine sends each kind.
SCENARIO_USERS = 10
SCENARIO_HOSTILE_EVERY = "5"


@pytest.fixture(scope="module")
def module_dsn(database) -> Iterator[str]:
    """A database with the schema for this module's one collector (conftest's dsn, scoped to the module)."""
    name = f"np_hostile_{secrets.token_hex(4)}"
    admin = psycopg2.connect(database.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    dsn = psycopg2.extensions.make_dsn(database.dsn, dbname=name)
    conn = psycopg2.connect(dsn)
    apply_schema(conn)
    conn.close()
    yield dsn
    admin = psycopg2.connect(database.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


@pytest.fixture(scope="module")
def hostile_collector(module_dsn, tmp_path_factory) -> Iterator[CollectorProcess]:
    """One reference collector (default settings) for every kind: a bad line must not disturb the next test."""
    folder = tmp_path_factory.mktemp("hostile")
    handle = CollectorProcess(
        collector_command(folder / "logs.fifo", module_dsn), folder / "logs.fifo", folder / "collector.log"
    ).start()
    try:
        handle.wait_for_log(COLLECTOR_READY_TEXT)
        yield handle
        assert handle.stop() == 0, handle.log()
    finally:
        handle.kill()


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a blocking fd (a line larger than the pipe goes in as the collector reads)."""
    write_whole(fd, data, wait=lambda _fd: True)


@pytest.mark.parametrize(("number", "line"), [pytest.param(n, line, id=line.kind) for n, line in enumerate(CORPUS)])
def test_a_bad_line_is_rejected_and_the_good_lines_around_it_land(number, line, hostile_collector, module_dsn):
    """Good, bad, good line: both good lines land, the bad one alone is rejected with its raw bytes and a reason
    naming the problem, the collector runs on, and rows show within NO_STALL_S (no stall; not a speed check)."""
    source = f"k{number}"
    factory = EventFactory(SIZE, seed=number, run_id=RUN_ID, source=source)
    before, after = factory.line(), factory.line()
    rejected_before = run_query(module_dsn, "SELECT count(*) FROM logs_rejected")[0][0]
    fd = os.open(hostile_collector.fifo, os.O_WRONLY | os.O_CLOEXEC)
    try:
        started = time.monotonic()
        write_all(fd, before)
        write_all(fd, line.raw if line.glue else line.raw + b"\n")  # a fragment glues onto the next line
        write_all(fd, after)
    finally:
        os.close(fd)

    deadline = started + NO_STALL_S
    while True:
        landed = run_query(
            module_dsn,
            "SELECT (data->'_np'->>'seq')::int FROM logs WHERE data->'_np'->>'run' = %s "
            "AND data->'_np'->>'src' = %s ORDER BY 1",
            (RUN_ID, source),
        )
        rejected = run_query(
            module_dsn, "SELECT reason, raw FROM logs_rejected ORDER BY received_at, ctid OFFSET %s", (rejected_before,)
        )
        visible_after = time.monotonic() - started
        if (len(landed) >= 2 and rejected) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)

    assert hostile_collector.alive, hostile_collector.log()
    assert [seq for (seq,) in landed] == [1, 2], f"good lines around {line.kind} after {visible_after:.2f} s"
    got = [(reason, bytes(raw)) for reason, raw in rejected]
    shown = [(reason, raw[:80]) for reason, raw in got]
    # An over-long line keeps its first REJECTED_PREFIX_BYTES; every other line is kept whole.
    assert [raw for _reason, raw in got] == [line.raw[:REJECTED_PREFIX_BYTES]], (
        f"{line.kind}: expected one rejection holding the raw line, got {shown}"
    )
    assert line.reason in got[0][0]
    stored = run_query(module_dsn, "SELECT count(*) FROM logs WHERE data->>'corpus' = %s", (line.kind,))[0][0]
    assert stored == 0, f"the bad line {line.kind} was stored as an event"
    assert visible_after < NO_STALL_S


def assert_every_kind_sent(verdict: dict, kinds: int) -> None:
    """Users start spread over the kinds (kinds / users apart): each sending that many covers every kind."""
    sources = verdict["sources"]
    assert len(sources) == SCENARIO_USERS
    assert min(s["bad_sent"] for s in sources) >= -(-kinds // SCENARIO_USERS), sources


class TestHostileScenario:
    def test_every_rejection_is_a_bad_line_sent_and_every_good_line_lands(self, dsn, tmp_path):
        """hostile_input: every kind is sent; rejected lines equal bad lines sent, good lines land once each."""
        code, output, v = run_scenario("hostile_input", dsn, tmp_path, "--hostile-every", SCENARIO_HOSTILE_EVERY)
        assert_every_kind_sent(v, len(CORPUS))
        t = v["totals"]
        assert t["rejected"] == t["bad_sent"], output[-4000:]
        assert t["lost"] == t["duplicated"] == t["torn_or_rejected"] == 0
        assert t["landed"] == t["sent"]
        assert_passed(code, output, v)
