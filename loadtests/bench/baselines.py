"""The collector's two yardsticks: one COPY stream (the server's limit) and a naive readline + INSERT collector."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import time
from collections.abc import Callable

import psycopg2

from loadtests.bench.dataset import COLLECTOR_STOP_TIMEOUT_S, Bench, BenchError
from loadtests.bench.pipes import Writer, pack_writes
from loadtests.bench.server import count_rows, wait_until_visible
from reference.collector.copytext import COPY_READ_BYTES, COPY_SQL
from reference.collector.validate import COLUMNS

# Built from the constant column names, never from input.
NAIVE_INSERT_SQL = f"INSERT INTO logs ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"  # noqa: S608


def measure_copy(bench: Bench) -> None:
    """The same rows, pre-formatted, in one COPY into a fresh logs table."""
    payload = b"".join(bench.rows)
    with bench.database().fresh_database() as dsn, contextlib.closing(psycopg2.connect(dsn)) as conn:
        with conn.cursor() as cur:
            started = time.perf_counter()
            cur.copy_expert(COPY_SQL, io.BytesIO(payload), size=COPY_READ_BYTES)
            conn.commit()
            elapsed = time.perf_counter() - started
        loaded = count_rows(dsn, "logs")
    if loaded != len(bench.rows):
        raise BenchError(f"COPY loaded {loaded} of {len(bench.rows)} rows")
    bench.metrics["copy_rows_per_s"] = len(bench.rows) / elapsed
    bench.details["copy"] = {"rows": len(bench.rows), "bytes": len(payload), "seconds": round(elapsed, 3)}


def naive_params(line: bytes) -> tuple:
    """One line as the parameters of the naive INSERT: json.loads, the eight columns, data as JSON text."""
    event = json.loads(line)
    data = event.get("data")
    return (*(event[c] for c in COLUMNS[:7]), None if data is None else json.dumps(data))


def naive_collect(fifo: str | os.PathLike[str], insert: Callable[[tuple], None]) -> int:
    """Read the FIFO line by line until every writer closed it, insert each line; return the lines inserted."""
    count = 0
    with open(fifo, "rb") as stream:
        for line in iter(stream.readline, b""):
            if line.strip():
                insert(naive_params(line))
                count += 1
    return count


def _naive_process(fifo: str, dsn: str) -> None:
    conn = psycopg2.connect(dsn, application_name="namedpiper-bench-naive")
    conn.autocommit = True
    with conn.cursor() as cur:
        naive_collect(fifo, lambda params: cur.execute(NAIVE_INSERT_SQL, params))
    conn.close()


def measure_naive(bench: Bench) -> None:
    """The naive collector (readline, one autocommitted INSERT per line) on the first naive_lines lines."""
    lines = bench.data[: bench.naive_lines]
    fifo = bench.fifo("naive")
    os.mkfifo(fifo, 0o600)
    with bench.database().fresh_database() as dsn:
        proc = multiprocessing.get_context("fork").Process(target=_naive_process, args=(str(fifo), dsn), daemon=True)
        proc.start()
        try:
            writer = Writer(fifo, pack_writes(lines))
            started = time.monotonic()
            writer.start()
            visible_at = wait_until_visible(dsn, lines[-1], len(lines), started, alive=proc.is_alive)
            writer.join()
        finally:
            proc.join(COLLECTOR_STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
    elapsed = visible_at - started
    bench.metrics["naive_rows_per_s"] = len(lines) / elapsed
    bench.details["naive"] = {"lines": len(lines), "seconds": round(elapsed, 3)}
