"""syslog-ng 3.38 as the collector: pipe() source, json-parser, sql(type(pgsql)) into logs, with flow-control."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

import psycopg2
from psycopg2.extensions import parse_dsn

from loadtests.adapters.base import Adapter, Context, Launch, StopPolicy

# Where Debian's syslog-ng-core puts the daemon and its control tool.
SYSLOG_NG = "syslog-ng"
SYSLOG_NG_CTL = "syslog-ng-ctl"
# syslog-ng retries a failed database connection after time-reopen seconds (60 by default); 5 s keeps a database
# outage's catch-up inside a run...
TIME_REOPEN_S = 5
# ...and the drain waits longer than one retry for the next row: a quieter drain would stop syslog-ng mid-backoff
# and blame it for lines it still holds.
DRAIN_QUIET_S = 3 * TIME_REOPEN_S
# syslog-ng drops its in-memory queue at SIGTERM: before the signal, give the queue this long to empty (a batch
# commit takes well under a second; a reconnect takes up to TIME_REOPEN_S).
WAIT_QUEUE_EMPTY_S = 4 * TIME_REOPEN_S
# Rows per INSERT transaction and the longest wait to fill one: 1000 rows amortise the commit, 100 ms bounds latency.
BATCH_LINES = 1000
BATCH_TIMEOUT_MS = 100
# Messages held in memory for the destination: with flow-control, the FIFO stops being read when this is full, so
# writers block instead of lines being dropped (the window of the source, below, must not exceed it).
LOG_FIFO_SIZE = 100_000
LOG_IW_SIZE = 10_000
# Lines up to 64 MiB are read whole (the harness's over_pipe_buf lines reach 64 KiB, syslog-ng's default limit).
LOG_MSG_SIZE = 64 * 1024 * 1024
# A stats query answers in milliseconds; one that hangs must not stall the drain.
CTL_TIMEOUT_S = 5.0
COLUMNS = ("time", "application_name", "environment_name", "log_event", "trace_id", "file_path", "host_ip")

CONFIG = """@version: 3.38
# Written by namedpiper's syslog-ng adapter (loadtests/adapters/syslog_ng.py) for one run; mode 0600: it holds the
# database password.
options {{ keep-hostname(yes); stats-freq(0); time-reopen({time_reopen}); log-msg-size({log_msg_size}); }};
source s_fifo {{ pipe({fifo} flags(no-parse) log-iw-size({log_iw_size}) log-fetch-limit(1000)); }};
parser p_json {{ json-parser(prefix(".json.")); }};
destination d_pg {{
  sql(type(pgsql) host({host}) port({port}) username({user}) password({password}) database({database})
      table("logs")
      columns({columns}, "data")
      values({values},
             "$(format-json --no-cast --key .json.data.* --shift-levels 3)")
      flags(explicit-commits, dont-create-tables) batch-lines({batch_lines}) batch-timeout({batch_timeout})
      log-fifo-size({log_fifo_size}));
}};
log {{ source(s_fifo); parser(p_json); destination(d_pg); flags(flow-control); }};
"""


def quote(value: str) -> str:
    """A syslog-ng string literal: double quotes, with backslash and double quote escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def database_target(dsn: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """host, port, user, password, database for syslog-ng from a libpq DSN (URI or key=value), libpq's defaults
    filling the gaps: a socket directory as host, as the embedded database gives in the URI's query string."""
    env = os.environ if environ is None else environ
    try:
        parts = parse_dsn(dsn) if dsn else {}
    except psycopg2.ProgrammingError as exc:
        raise ValueError(f"the DSN cannot be parsed for syslog-ng ({exc}); give a libpq URI or key=value DSN") from None
    hosts = parts.get("host") or env.get("PGHOST") or "/var/run/postgresql"
    ports = parts.get("port") or env.get("PGPORT") or "5432"
    host, port = hosts.split(",")[0], ports.split(",")[0]  # syslog-ng knows one server: the first
    user = parts.get("user") or env.get("PGUSER") or getpass.getuser()
    return {
        "host": host,
        "port": port,
        "user": user,
        "password": parts.get("password") or env.get("PGPASSWORD", ""),
        "database": parts.get("dbname") or env.get("PGDATABASE") or user,
    }


def render_config(fifo: str, dsn: str) -> str:
    """The run's syslog-ng configuration for fifo and the database of dsn."""
    t = database_target(dsn)
    return CONFIG.format(
        fifo=quote(fifo),
        host=quote(t["host"]),
        port=quote(t["port"]),
        user=quote(t["user"]),
        password=quote(t["password"]),
        database=quote(t["database"]),
        columns=", ".join(quote(c) for c in COLUMNS),
        values=", ".join(quote(f"${{.json.{c}}}") for c in COLUMNS),
        time_reopen=TIME_REOPEN_S,
        log_msg_size=LOG_MSG_SIZE,
        log_iw_size=LOG_IW_SIZE,
        log_fifo_size=LOG_FIFO_SIZE,
        batch_lines=BATCH_LINES,
        batch_timeout=BATCH_TIMEOUT_MS,
    )


def parse_stats(text: str) -> dict[str, int]:
    """syslog-ng-ctl stats (CSV: SourceName;SourceId;SourceInstance;State;Type;Number) -> the run's counters.

    read: lines the pipe source took; written, queued, dropped: the sql destination's; parse_dropped: what the
    json-parser discarded (read, but never handed to the destination).
    """
    out = {"read": 0, "written": 0, "queued": 0, "dropped": 0}
    for row in text.splitlines():
        fields = row.split(";")
        if len(fields) != 6 or not fields[5].strip().isdigit():
            continue
        kind, ident, _instance, _state, counter, number = fields
        value = int(number)
        if kind == "source" and ident == "s_fifo" and counter == "processed":
            out["read"] += value
        elif kind == "dst.sql" and ident.startswith("d_pg"):
            if counter in ("written", "queued", "dropped"):
                out[counter] += value
            elif counter == "processed":
                out["processed"] = out.get("processed", 0) + value
    out["parse_dropped"] = max(0, out["read"] - out.get("processed", out["read"]))
    out.pop("processed", None)
    return out


class SyslogNg(Adapter):
    """syslog-ng 3.38 (Debian: syslog-ng-core, syslog-ng-mod-sql, libdbd-pgsql)."""

    name = "syslog-ng"
    # syslog-ng opens the FIFO before it touches the database: only a row that went all the way proves it works.
    readiness = "probe"
    drain_quiet_s = float(DRAIN_QUIET_S)
    stop_policy = StopPolicy(wait_queue_empty_s=WAIT_QUEUE_EMPTY_S)
    keeps_rejected = False  # bad lines are discarded by the parser or the database, never kept

    @staticmethod
    def paths(run_dir: Path) -> dict[str, Path]:
        """The run's syslog-ng files: configuration, persist state, pid and control socket."""
        return {
            "config": run_dir / "syslog-ng.conf",
            "persist": run_dir / "syslog-ng.persist",
            "pid": run_dir / "syslog-ng.pid",
            "control": run_dir / "syslog-ng.ctl",
        }

    def launch(self, ctx: Context) -> Launch:
        """Write the 0600 configuration into the run's folder and start syslog-ng in the foreground on it."""
        daemon = shutil.which(SYSLOG_NG, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if daemon is None:
            raise FileNotFoundError(
                f"{SYSLOG_NG} is not installed; on Debian: apt-get install syslog-ng-core "
                "syslog-ng-mod-sql libdbd-pgsql"
            )
        p = self.paths(ctx.run_dir)
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        p["config"].unlink(missing_ok=True)
        fd = os.open(p["config"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render_config(ctx.fifo, ctx.dsn))
        # No shell in between: signals and memory readings reach syslog-ng itself. -F: foreground, -e: its own
        # messages (SQL errors, drops) on stderr, into the run's collector.log. --no-caps: as root, syslog-ng would
        # otherwise try to drop capabilities it needs no more than a harness run does.
        argv = [
            daemon,
            "-F",
            "-e",
            "-f",
            str(p["config"]),
            "-R",
            str(p["persist"]),
            "-p",
            str(p["pid"]),
            "-c",
            str(p["control"]),
        ]
        if os.geteuid() == 0:
            argv.insert(2, "--no-caps")
        return Launch(argv=argv, env=dict(os.environ), shown=" ".join(argv), files={k: str(v) for k, v in p.items()})

    def ready_command(self, ctx: Context) -> list[str] | None:
        """syslog-ng answers on its control socket once its configuration is loaded."""
        return [self._ctl(), "stats", "-c", str(self.paths(ctx.run_dir)["control"])]

    def counters(self, ctx: Context) -> dict[str, int] | None:
        """read, parse_dropped, written, queued, dropped from syslog-ng-ctl stats; None when it does not answer."""
        try:
            done = subprocess.run(
                self.ready_command(ctx) or [], capture_output=True, text=True, timeout=CTL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        return parse_stats(done.stdout)

    @staticmethod
    def _ctl() -> str:
        return shutil.which(SYSLOG_NG_CTL, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or SYSLOG_NG_CTL
