"""The collector's command line: `python -m reference.collector --fifo PATH --dsn DSN [options]`."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import configargparse

from reference.collector.collector import (
    BATCH_MAX_BYTES,
    BATCH_ROWS,
    FLUSH_INTERVAL_S,
    REJECT_KEEP_BYTES,
    STATS_INTERVAL_S,
    CollectorConfig,
)
from reference.collector.journal import JournalError
from reference.collector.loader import DatabaseConfigError
from reference.collector.pipeline import build_collector
from reference.collector.stop import StopRequest
from reference.collector.writer import STOP_GRACE_S
from reference.dsn import DSN_ENV
from reference.envargs import add_env_option, env_parser
from reference.fifo import DEFAULT_FIFO_MODE, FifoPathError, NotAFifoError
from reference.sizes import MAX_LINE_BYTES

PROGRAM = "collector"


def build_parser() -> configargparse.ArgumentParser:
    """The command line of the reference collector; each option also reads NAMEDPIPER_COLLECTOR_<OPTION>."""
    p = env_parser("python -m reference.collector", __doc__)

    def option(*names: str, **kwargs: Any) -> None:
        add_env_option(p, PROGRAM, *names, **kwargs)

    option("--fifo", required=True, help="FIFO to read; created (mode --fifo-mode) when missing")
    option("--dsn", env_var=DSN_ENV, default="", help="PostgreSQL DSN (else libpq's PG* variables)")
    option("--batch-rows", type=int, default=BATCH_ROWS, help=f"rows per COPY (default {BATCH_ROWS})")
    option("--batch-bytes", type=int, default=BATCH_MAX_BYTES, help=f"bytes per COPY (default {BATCH_MAX_BYTES})")
    option("--flush-interval", type=float, default=FLUSH_INTERVAL_S,
           help=f"seconds before a partly filled batch is sent (default {FLUSH_INTERVAL_S})")
    option("--max-line-bytes", type=int, default=MAX_LINE_BYTES,
           help=f"longer lines are rejected with their first bytes (default {MAX_LINE_BYTES})")
    option("--pipe-size", type=int, default=None,
           help="ask for this pipe capacity with F_SETPIPE_SZ (capped at /proc/sys/fs/pipe-max-size)")
    option("--fifo-mode", type=lambda s: int(s, 8), default=DEFAULT_FIFO_MODE,
           help="octal mode of a FIFO the collector creates (default 660)")
    option("--no-schema", dest="apply_schema", action="store_false",
           help="do not create the tables at start (they must exist)")
    option("--stats-interval", type=float, default=STATS_INTERVAL_S,
           help=f"seconds between stats lines (default {STATS_INTERVAL_S})")
    option("--journal", metavar="DIR", default=None,
           help="journal folder: raw bytes are kept here until their rows are committed, so a crash or a "
                "database outage loses and duplicates nothing")
    option("--fsync", action="store_true",
           help="with --journal: fdatasync every read, so the journal also survives a power loss")
    option("--reject-keep-bytes", type=int, default=REJECT_KEEP_BYTES,
           help="logs_rejected keeps this many first bytes of a rejected line, with its full length and SHA-256 "
                f"(default {REJECT_KEEP_BYTES})")
    option("--stop-timeout", dest="stop_grace", type=float, default=STOP_GRACE_S,
           help="seconds a stop waits for a database that cannot take the lines read; then they are given up and "
                f"counted (exit status 4), or with --journal left there (default {STOP_GRACE_S:g})")
    option("-v", "--verbose", action="store_true", help="log at debug level")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the collector until SIGTERM or SIGINT; exit 0 after flushing, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s collector %(levelname)s %(message)s", stream=sys.stderr)
    for name in ("batch_rows", "batch_bytes", "max_line_bytes", "reject_keep_bytes"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be 1 or more", file=sys.stderr)
            return 2
    config = CollectorConfig(
        fifo=args.fifo, dsn=args.dsn, batch_rows=args.batch_rows, batch_bytes=args.batch_bytes,
        flush_interval=args.flush_interval, max_line_bytes=args.max_line_bytes, pipe_size=args.pipe_size,
        fifo_mode=args.fifo_mode, apply_schema=args.apply_schema, stats_interval=args.stats_interval,
        journal=args.journal, fsync=args.fsync, reject_keep_bytes=args.reject_keep_bytes, stop_grace=args.stop_grace)
    if args.fsync and not args.journal:
        print("error: --fsync needs --journal DIR", file=sys.stderr)
        return 2
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop.request)
    signal.signal(signal.SIGINT, stop.request)
    try:
        return build_collector(config, stop).run()
    except (NotAFifoError, FifoPathError, JournalError, DatabaseConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
