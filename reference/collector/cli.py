"""The collector's command line: `python -m reference.collector --fifo PATH --dsn DSN [options]`."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import configargparse

from reference import VERSION_TEXT
from reference.collector.collector import (
    BATCH_MAX_BYTES,
    BATCH_ROWS,
    FLUSH_INTERVAL_S,
    REJECT_KEEP_BYTES,
    STATS_INTERVAL_S,
    CollectorConfig,
)
from reference.collector.credentials import (
    ARGUMENT_DSN_WARNING,
    DsnFileError,
    dsn_given_as_argument,
    has_password,
    read_dsn_file,
)
from reference.collector.journal import DEFAULT_MAX_BYTES, JournalError
from reference.collector.loader import DatabaseConfigError, quiet_psycopg2_reports
from reference.collector.metrics import DEFAULT_METRICS_HOST, serve
from reference.collector.pipeline import build_collector
from reference.collector.reader import WRITERS_GRACE_S
from reference.collector.stop import StopRequest
from reference.collector.writer import STOP_GRACE_S
from reference.dsn import DSN_ENV, LIBPQ_ENV, UNPARSABLE_MESSAGE, parsable
from reference.envargs import add_env_option, env_parser
from reference.fifo import DEFAULT_FIFO_MODE, FifoPathError, NotAFifoError
from reference.sizes import MAX_LINE_BYTES

PROGRAM = "collector"
# The longest wait a stop option may ask for: longer than any stop should take, and it keeps out inf and nan
# (a stop must end by itself).
MAX_WAIT_S = 3600.0
DSN_SOURCES = f"--dsn, {DSN_ENV} or --dsn-file"
NO_DSN_MESSAGE = (
    f"error: no database given: pass --dsn, set {DSN_ENV}, or set libpq's variables "
    f"({', '.join(LIBPQ_ENV)}, PGUSER, PGPASSFILE ...); for a local test database run "
    "`python -m loadtests.database start` and pass the DSN it prints"
)
# --journal-max-bytes holds at least this many of the longest lines: an unfinished line plus a quarter-limit
# segment then never fill the journal, so loading can always free room.
JOURNAL_LINES_HELD = 4
MAX_PORT = 65535


def build_parser() -> configargparse.ArgumentParser:
    """The command line of the reference collector; each option also reads NAMEDPIPER_COLLECTOR_<OPTION>."""
    p = env_parser("python -m reference.collector", __doc__)
    p.add_argument("--version", action="version", version=VERSION_TEXT)

    def option(*names: str, **kwargs: Any) -> None:
        add_env_option(p, PROGRAM, *names, **kwargs)

    option("--fifo", required=True, help="FIFO to read; created (mode --fifo-mode) when missing")
    option(
        "--dsn",
        env_var=DSN_ENV,
        default="",
        help=f"PostgreSQL DSN (${DSN_ENV}, else libpq's PG* variables); a password here is visible to every "
        "local user: prefer the variable, --dsn-file or PGPASSFILE",
    )
    option(
        "--dsn-file",
        metavar="FILE",
        default=None,
        help="read the DSN from the first line of FILE (mode 600), keeping a password off the command line",
    )
    option("--batch-rows", type=int, default=BATCH_ROWS, help=f"rows per COPY (default {BATCH_ROWS})")
    option("--batch-bytes", type=int, default=BATCH_MAX_BYTES, help=f"bytes per COPY (default {BATCH_MAX_BYTES})")
    option(
        "--flush-interval",
        type=float,
        default=FLUSH_INTERVAL_S,
        help=f"seconds before a partly filled batch is sent (default {FLUSH_INTERVAL_S})",
    )
    option(
        "--max-line-bytes",
        type=int,
        default=MAX_LINE_BYTES,
        help=f"longer lines are rejected with their first bytes (default {MAX_LINE_BYTES})",
    )
    option(
        "--pipe-size",
        type=int,
        default=None,
        help="ask for this pipe capacity with F_SETPIPE_SZ (capped at /proc/sys/fs/pipe-max-size)",
    )
    option(
        "--fifo-mode",
        type=lambda s: int(s, 8),
        default=DEFAULT_FIFO_MODE,
        help="octal mode of a FIFO the collector creates (default 660)",
    )
    option(
        "--no-schema",
        dest="apply_schema",
        action="store_false",
        help="do not create the tables at start (they must exist)",
    )
    option(
        "--stats-interval",
        type=float,
        default=STATS_INTERVAL_S,
        help=f"seconds between stats lines (default {STATS_INTERVAL_S})",
    )
    option(
        "--journal",
        metavar="DIR",
        default=None,
        help="journal folder: raw bytes are kept here until their rows are committed, so a crash or a "
        "database outage loses and duplicates nothing",
    )
    option(
        "--journal-max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"with --journal: at most this many bytes on disk; when reached (or the disk is full) the "
        f"collector stops reading the FIFO until loaded bytes are removed, so writers wait "
        f"(default {DEFAULT_MAX_BYTES}, 4 GiB; 0: only the disk limits it)",
    )
    option(
        "--fsync",
        action="store_true",
        help="with --journal: fdatasync every read, so the journal also survives a power loss",
    )
    option(
        "--reject-keep-bytes",
        type=int,
        default=REJECT_KEEP_BYTES,
        help="logs_rejected keeps this many first bytes of a rejected line, with its full length and SHA-256 "
        f"(default {REJECT_KEEP_BYTES})",
    )
    option(
        "--stop-timeout",
        dest="stop_grace",
        type=float,
        default=STOP_GRACE_S,
        help="seconds a stop waits for a database that cannot take the lines read; then they are given up and "
        f"counted (exit status 4), or with --journal left there (default {STOP_GRACE_S:g})",
    )
    option(
        "--stop-writers-grace",
        dest="writers_grace",
        type=float,
        default=WRITERS_GRACE_S,
        help="seconds a stop keeps reading while writers that have the FIFO open finish (writers that open it "
        f"meanwhile wait for the next collector); 0 closes it right after the final read (default {WRITERS_GRACE_S:g})",
    )
    option(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default 0: off)",
    )
    option(
        "--metrics-host",
        default=DEFAULT_METRICS_HOST,
        help=f"address the metrics endpoint binds (default {DEFAULT_METRICS_HOST}; it needs no password, so "
        "expose it only where everyone may read the collector's counters)",
    )
    option("-v", "--verbose", action="store_true", help="log at debug level")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the collector until SIGTERM or SIGINT; exit 0 after flushing, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s collector %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    quiet_psycopg2_reports()
    for name, flag in (("stop_grace", "--stop-timeout"), ("writers_grace", "--stop-writers-grace")):
        if not 0 <= getattr(args, name) < MAX_WAIT_S:
            print(f"error: {flag} {getattr(args, name)}: give seconds from 0 to {MAX_WAIT_S:g}", file=sys.stderr)
            return 2
    for name in ("batch_rows", "batch_bytes", "max_line_bytes", "reject_keep_bytes"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be 1 or more", file=sys.stderr)
            return 2
    if args.journal_max_bytes and args.journal_max_bytes < JOURNAL_LINES_HELD * args.max_line_bytes:
        print(
            f"error: --journal-max-bytes must be 0 or at least {JOURNAL_LINES_HELD} x --max-line-bytes "
            f"({JOURNAL_LINES_HELD * args.max_line_bytes}), so the longest line fits",
            file=sys.stderr,
        )
        return 2
    raw_argv = sys.argv[1:] if argv is None else argv
    if args.dsn_file:
        if dsn_given_as_argument(raw_argv) and args.dsn:
            print("error: give --dsn or --dsn-file, not both", file=sys.stderr)
            return 2
        try:
            args.dsn = read_dsn_file(args.dsn_file)
        except DsnFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    elif dsn_given_as_argument(raw_argv) and has_password(args.dsn):
        logging.getLogger("reference.collector").warning(ARGUMENT_DSN_WARNING.format(pid=os.getpid()))
    config = CollectorConfig(
        fifo=args.fifo,
        dsn=args.dsn,
        batch_rows=args.batch_rows,
        batch_bytes=args.batch_bytes,
        flush_interval=args.flush_interval,
        max_line_bytes=args.max_line_bytes,
        pipe_size=args.pipe_size,
        fifo_mode=args.fifo_mode,
        apply_schema=args.apply_schema,
        stats_interval=args.stats_interval,
        journal=args.journal,
        fsync=args.fsync,
        journal_max_bytes=args.journal_max_bytes,
        reject_keep_bytes=args.reject_keep_bytes,
        stop_grace=args.stop_grace,
        writers_grace=args.writers_grace,
    )
    if not args.dsn and not any(os.environ.get(name) for name in LIBPQ_ENV):
        print(NO_DSN_MESSAGE, file=sys.stderr)
        return 2
    if args.dsn and not parsable(args.dsn):
        # A DSN libpq cannot parse never connects: retrying it would look like a database that is down.
        print(f"error: the DSN given ({DSN_SOURCES}): {UNPARSABLE_MESSAGE}", file=sys.stderr)
        return 2
    if not 0 <= args.metrics_port <= MAX_PORT:
        print(
            f"error: --metrics-port {args.metrics_port}: give a TCP port from 1 to {MAX_PORT}, or 0 for no metrics",
            file=sys.stderr,
        )
        return 2
    if args.fsync and not args.journal:
        print("error: --fsync needs --journal DIR", file=sys.stderr)
        return 2
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop.request)
    signal.signal(signal.SIGINT, stop.request)
    try:
        collector = build_collector(config, stop)
    except (NotAFifoError, FifoPathError, JournalError, DatabaseConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.metrics_port:
        try:
            serve(collector, args.metrics_port, args.metrics_host)
        except OSError as exc:
            collector.source.close()
            collector.sink.abort()
            print(
                f"error: cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc.strerror}; pick "
                "another --metrics-port, or 0 for none",
                file=sys.stderr,
            )
            return 2
    try:
        return collector.run()
    except (NotAFifoError, FifoPathError, JournalError, DatabaseConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
