"""The compose TimescaleDB through pytest-docker: the hypertable path, and a collector loading into it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
import yaml

from reference.schema import apply_schema
from reference.sizes import MAX_RUN_ID_LENGTH

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICE = "timescaledb"
CONTAINER_PORT = 5432
ENABLE_ENV = "NAMEDPIPER_DOCKER"
HOW_TO_ENABLE = f"set {ENABLE_ENV}=1 on a machine with a running Docker engine"
# `docker info` answers in well under a second from a running engine; a hung socket must not hang the run.
DOCKER_PROBE_TIMEOUT_S = 20
# `up --wait` has already waited for the healthcheck; this covers the port forward becoming usable.
CONNECT_TIMEOUT_S = 60
# 2,000 small lines are loaded in about a second; the margin absorbs a slow CI runner.
LINES = 2_000
LOAD_TIMEOUT_S = 60
# The collector drains, flushes and exits within a second of SIGTERM.
STOP_TIMEOUT_S = 30
# The first test also pulls the TimescaleDB image (a few hundred MB) while pytest-docker sets up the service.
TEST_TIMEOUT_S = 900


def _docker_skip_reason() -> str | None:
    """Why these tests cannot run here, or None when they can (asked for, and an engine answers)."""
    if os.environ.get(ENABLE_ENV) != "1":
        return f"{ENABLE_ENV} is not 1: {HOW_TO_ENABLE}"
    if shutil.which("docker") is None:
        return f"no docker client on PATH: {HOW_TO_ENABLE}"
    for probe, needs in (
        (["docker", "info"], "no Docker engine answers"),
        (["docker", "compose", "version"], "the docker compose plugin is missing"),
    ):
        try:
            subprocess.run(probe, capture_output=True, text=True, timeout=DOCKER_PROBE_TIMEOUT_S, check=True)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            return f"{needs} (`{' '.join(probe)}`: {detail[-1] if detail else exc.returncode}): {HOW_TO_ENABLE}"
        except (subprocess.TimeoutExpired, OSError) as exc:
            return f"{needs} (`{' '.join(probe)}`: {exc}): {HOW_TO_ENABLE}"
    return None


SKIP_REASON = _docker_skip_reason()

pytestmark = [
    pytest.mark.docker,
    pytest.mark.timeout(TEST_TIMEOUT_S),
    # Evaluated before any fixture is set up: pytest-docker's fixtures never run when the tests skip.
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]


def _compose_value(text: str) -> str:
    """Resolve a compose value like ${POSTGRES_PASSWORD:-CHANGE_ME} the way compose does from the environment."""
    match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", text)
    if match is None:
        return text
    return os.environ.get(match.group(1)) or match.group(2)


def _database_settings() -> dict[str, str]:
    """User, database and password of the compose TimescaleDB, as docker-compose.yml sets them."""
    env = yaml.safe_load(COMPOSE_FILE.read_text())["services"][SERVICE]["environment"]
    return {
        "user": env["POSTGRES_USER"],
        "dbname": env["POSTGRES_DB"],
        "password": _compose_value(env["POSTGRES_PASSWORD"]),
    }


def _accepts_connections(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn).close()
    except psycopg2.OperationalError:
        return False
    return True


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    """The repository's own docker-compose.yml (pytest-docker looks in tests/ by default)."""
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    """Start only the database: the collector under test runs here, so no image is built."""
    return [f"up --wait {SERVICE}"]


@pytest.fixture(scope="session")
def timescaledb_dsn(docker_ip: str, docker_services) -> str:
    """A DSN for the compose TimescaleDB, once it accepts connections."""
    port = docker_services.port_for(SERVICE, CONTAINER_PORT)
    dsn = psycopg2.extensions.make_dsn(host=docker_ip, port=port, connect_timeout=5, **_database_settings())
    docker_services.wait_until_responsive(check=lambda: _accepts_connections(dsn), timeout=CONNECT_TIMEOUT_S, pause=0.5)
    return dsn


def _query(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


class TestHypertable:
    def test_apply_schema_makes_logs_a_hypertable(self, timescaledb_dsn):
        """apply_schema returns True, twice, and timescaledb_information.hypertables lists logs."""
        conn = psycopg2.connect(timescaledb_dsn)
        try:
            assert apply_schema(conn) is True
            assert apply_schema(conn) is True
        finally:
            conn.close()
        names = [
            name
            for (name,) in _query(timescaledb_dsn, "SELECT hypertable_name FROM timescaledb_information.hypertables")
        ]
        assert "logs" in names


class TestCollectorIntoTimescaleDB:
    def test_collector_loads_every_emitted_line(self, timescaledb_dsn, tmp_path):
        """The reference collector loads every line of the reference emitter into the logs hypertable, once."""
        fifo = tmp_path / "logs.fifo"
        run_id = uuid.uuid4().hex[:MAX_RUN_ID_LENGTH]
        count_sql = "SELECT count(*), count(DISTINCT data->'_np'->>'seq') FROM logs WHERE data->'_np'->>'run' = %s"
        started = _query(timescaledb_dsn, "SELECT now()")[0][0]
        collector_log = tmp_path / "collector.log"
        with collector_log.open("wb") as log_file:
            collector = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reference.collector",
                    "--fifo",
                    str(fifo),
                    "--dsn",
                    timescaledb_dsn,
                    "--stats-interval",
                    "1",
                ],
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            emitter = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "reference.emitter",
                    "--fifo",
                    str(fifo),
                    "--count",
                    str(LINES),
                    "--run-id",
                    run_id,
                    "--seed",
                    "7",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=LOAD_TIMEOUT_S,
                check=False,
            )
            assert emitter.returncode == 0, emitter.stderr
            assert json.loads(emitter.stdout)["lines_sent"] == LINES
            deadline = time.monotonic() + LOAD_TIMEOUT_S
            while _query(timescaledb_dsn, count_sql, (run_id,))[0][0] < LINES and time.monotonic() < deadline:
                time.sleep(0.2)
            collector.send_signal(signal.SIGTERM)
            assert collector.wait(timeout=STOP_TIMEOUT_S) == 0, collector_log.read_text()
        finally:
            if collector.poll() is None:
                collector.kill()
                collector.wait()
        assert _query(timescaledb_dsn, count_sql, (run_id,))[0] == (LINES, LINES), collector_log.read_text()
        assert (
            _query(timescaledb_dsn, "SELECT count(*) FROM logs_rejected WHERE received_at >= %s", (started,))[0][0] == 0
        )
        chunks = _query(
            timescaledb_dsn, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'logs'"
        )
        assert chunks[0][0] >= 1
