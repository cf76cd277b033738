"""TimescaleDB in the embedded server: the hypertable path when preloaded, and both states of a missing preload.

Needs TimescaleDB built into this venv's embedded PostgreSQL (../shared/timescaledb/build.sh); skips otherwise.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from loadtests.database import EmbeddedPostgres, _embedded_module, postgres_bin_path
from reference.schema import timescaledb_preloaded

RUN_PREDICATE = "data->'_np'->>'run' = %s"
REFUSAL_TIMEOUT_S = 30.0


def _extension_installed() -> bool:
    bin_path = postgres_bin_path()
    return any((bin_path.parent / "share").glob("**/extension/timescaledb.control"))


pytestmark = pytest.mark.skipif(
    not _extension_installed(),
    reason="TimescaleDB is not built into this venv's embedded PostgreSQL: run ../shared/timescaledb/build.sh "
    "with its pg_config to test the hypertable path and a missing preload",
)


def _sql(dsn: str, *statements: str) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    rows: list[tuple] = []
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = cur.fetchall() if cur.description is not None else []
    finally:
        conn.close()
    return rows


@pytest.fixture(scope="module")
def unpreloaded_server() -> Iterator[tuple[Path, str]]:
    """An embedded server started as the package starts it, without our preload: (data dir, DSN)."""
    scratch = Path(tempfile.mkdtemp(prefix="namedpiper-ts-"))
    data_dir = scratch / "pgdata"
    data_dir.mkdir()
    server = _embedded_module("postgres_server").PostgresServer(data_dir, cleanup_mode=None)
    try:
        yield data_dir, server.get_uri()
    finally:
        EmbeddedPostgres(data_dir).stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _restart(data_dir: Path) -> str:
    EmbeddedPostgres(data_dir).stop()
    return _embedded_module("postgres_server").PostgresServer(data_dir, cleanup_mode=None).get_uri()


def _new_database(server_dsn: str) -> str:
    name = f"np_ts_{secrets.token_hex(4)}"
    _sql(server_dsn, f"CREATE DATABASE {name}")
    return psycopg2.extensions.make_dsn(server_dsn, dbname=name)


class TestPreloaded:
    """The project's embedded server preloads TimescaleDB, and logs becomes a hypertable."""

    def test_logs_is_a_hypertable(self, dsn):
        """The session's server has TimescaleDB preloaded; the schema made logs a hypertable."""
        conn = psycopg2.connect(dsn)
        try:
            assert timescaledb_preloaded(conn)
        finally:
            conn.close()
        assert _sql(dsn, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [("logs",)]

    def test_rows_land_in_the_hypertable(self, collector, dsn, fifo_path, run_emitter, wait_for_rows):
        """A collector loads into the hypertable: every line lands in chunks."""
        proc = collector(fifo_path, dsn)
        run_emitter(fifo_path, "--count", "2000", "--run-id", "hyper")
        wait_for_rows(dsn, RUN_PREDICATE, 2000, params=("hyper",))
        assert proc.stop() == 0
        chunks = _sql(dsn, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'logs'")
        assert chunks[0][0] >= 1


class TestNotPreloaded:
    """TimescaleDB installed, not in shared_preload_libraries: a plain table with one warning, or exit 2."""

    def test_a_fresh_database_gets_a_plain_table_and_one_warning(
        self, unpreloaded_server, collector, fifo_path, run_emitter, wait_for_rows
    ):
        """No extension in the database yet: logs is a plain table, one warning names shared_preload_libraries."""
        _, server_dsn = unpreloaded_server
        db = _new_database(server_dsn)
        proc = collector(fifo_path, db)
        run_emitter(fifo_path, "--count", "2000", "--run-id", "plain")
        wait_for_rows(db, RUN_PREDICATE, 2000, params=("plain",))
        assert proc.stop() == 0
        assert proc.log().count("not in shared_preload_libraries") == 1
        assert _sql(db, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == [(0,)]

    def test_a_database_with_the_extension_exits_2(self, unpreloaded_server, collector, fifo_path):
        """The extension is in the database but not preloaded (the server lost its setting): exit 2, named."""
        data_dir, server_dsn = unpreloaded_server
        db = _new_database(server_dsn)
        _sql(
            server_dsn,
            "ALTER SYSTEM SET shared_preload_libraries = 'timescaledb'",
            "ALTER SYSTEM SET timescaledb.telemetry_level = 'off'",
        )
        server_dsn = _restart(data_dir)
        _sql(db, "CREATE EXTENSION timescaledb")
        _sql(server_dsn, "ALTER SYSTEM RESET shared_preload_libraries")
        _restart(data_dir)
        proc = collector(fifo_path, db, ready=None)
        assert proc.wait(REFUSAL_TIMEOUT_S) == 2
        assert "shared_preload_libraries" in proc.log()
