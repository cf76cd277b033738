"""When a started collector counts as ready: its FIFO open, a probe row visible, an SQL condition, or a command."""

from __future__ import annotations

import errno
import os
import secrets
import shlex
import subprocess
import time

import orjson
import psycopg2

from loadtests.adapters.base import Adapter, Context
from loadtests.collector_process import CollectorError, CollectorProcess, has_reader

STRATEGIES = ("fifo", "probe", "sql:CONDITION", "cmd:COMMAND", "cmd")
# A started collector gets this long to become ready (syslog-ng connects to the database in about 1 s).
READY_TIMEOUT_S = 30.0
# A probe row or SQL condition is looked for this often: each look is one short connection.
PROBE_POLL_S = 0.25
# The probe line is written again this often until it is seen: a line written while the collector reopens its
# FIFO (syslog-ng does when the last writer closes) is discarded with the pipe's contents.
PROBE_RESEND_S = 2.0
# A readiness command that hangs must not hang the start.
COMMAND_TIMEOUT_S = 5.0
# Probe rows carry this prefix as their run id, so no verdict ever counts them as a run's lines.
PROBE_RUN_PREFIX = "probe-"
PROBE_SQL = "SELECT count(*) FROM logs WHERE data->'_np'->>'run' = %s"


def check_strategy(text: str) -> str:
    """text when it names a strategy; ValueError saying which ones exist otherwise."""
    if text in ("fifo", "probe", "cmd") or (text.startswith(("sql:", "cmd:")) and text[4:].strip()):
        return text
    raise ValueError(f"--ready {text!r}: not a readiness strategy; use one of {', '.join(STRATEGIES)}")


def probe_line(run_id: str) -> bytes:
    """A valid event line with its own run id (never the run's): stored, it proves FIFO-to-table works."""
    event = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime()),
        "application_name": "namedpiper",
        "environment_name": "probe",
        "log_event": "ready",
        "trace_id": "00000000-0000-4000-8000-000000000000",
        "file_path": "loadtests/adapters/readiness.py",
        "host_ip": "127.0.0.1",
        "data": {"message": "readiness probe", "_np": {"run": run_id}},
    }
    return orjson.dumps(event) + b"\n"


def _sql_true(dsn: str, sql: str, args: tuple = ()) -> bool:
    """Whether sql's first column is true (or a positive count); False while the database cannot answer."""
    try:
        conn = psycopg2.connect(dsn, connect_timeout=5, application_name="namedpiper-ready")
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
    except psycopg2.Error:
        return False
    finally:
        conn.close()
    return bool(row and row[0])


def _write_probe(fifo: str, line: bytes) -> bool:
    """Write the probe line once a reader holds the FIFO (non-blocking open: never wait for one here)."""
    if not has_reader(fifo):
        return False
    try:
        # Non-blocking although a reader was there: it may have exited since, and a blocking open would then wait
        # for the next reader with the harness stuck in it.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return False  # the reader is gone again (or the FIFO is being replaced): try again later
        raise
    try:
        os.write(fd, line)  # below PIPE_BUF: one atomic write, all or nothing
    except BlockingIOError:
        return False  # the pipe is full: the probe is sent again later
    finally:
        os.close(fd)
    return True


def wait_ready(
    proc: CollectorProcess, adapter: Adapter, ctx: Context, strategy: str, timeout: float = READY_TIMEOUT_S
) -> None:
    """Wait until the collector is ready by strategy; CollectorError with its log's tail when it never is."""
    if strategy == "fifo":
        proc.wait_until(lambda: has_reader(ctx.fifo), f"opening {ctx.fifo}", timeout)
    elif strategy == "probe":
        run_id = PROBE_RUN_PREFIX + secrets.token_hex(4)
        last_write = [float("-inf")]

        def seen() -> bool:
            if time.monotonic() - last_write[0] >= PROBE_RESEND_S:
                if _write_probe(ctx.fifo, probe_line(run_id)):
                    last_write[0] = time.monotonic()
                return False
            return _sql_true(ctx.dsn, PROBE_SQL, (run_id,))

        proc.wait_until(
            seen,
            f"storing a probe line in logs (run id {run_id}; is the database reachable with the DSN it was given?)",
            timeout,
        )
    elif strategy.startswith("sql:"):
        condition = strategy[4:].strip()
        proc.wait_until(lambda: _sql_true(ctx.dsn, f"SELECT ({condition})"), f"making true: {condition}", timeout)
    elif strategy.startswith("cmd"):
        command = shlex.split(strategy[4:]) if strategy.startswith("cmd:") else adapter.ready_command(ctx)
        if not command:
            raise CollectorError(f"--ready cmd: the {adapter.name} adapter has no readiness command; give cmd:COMMAND")
        proc.wait_until(lambda: _command_ok(command), f"passing {' '.join(command)}", timeout)
    else:
        raise CollectorError(check_strategy(strategy))


def _command_ok(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
