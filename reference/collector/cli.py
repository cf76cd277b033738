"""The collector's command line: `python -m reference.collector --fifo PATH --dsn DSN [options]`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from reference import VERSION_TEXT
from reference.collector.collector import (
    BATCH_MAX_BYTES,
    BATCH_ROWS,
    FLUSH_INTERVAL_S,
    STATS_INTERVAL_S,
    Collector,
    CollectorConfig,
)
from reference.collector.journal import JournalError
from reference.collector.loader import DatabaseConfigError
from reference.fifo import DEFAULT_FIFO_MODE, FifoPathError, NotAFifoError
from reference.sizes import MAX_LINE_BYTES

DSN_ENV = "NAMEDPIPER_DSN"
# libpq reads these itself: any of them set means the user chose a server without --dsn.
LIBPQ_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE", "PGDATABASE")
NO_DSN_MESSAGE = (f"error: no database given: pass --dsn, set {DSN_ENV}, or set libpq's variables "
                  f"({', '.join(LIBPQ_ENV)}, PGUSER, PGPASSFILE ...); for a local test database run "
                  "`python -m loadtests.database start` and pass the DSN it prints")


def build_parser() -> argparse.ArgumentParser:
    """The command line of the reference collector."""
    p = argparse.ArgumentParser(prog="python -m reference.collector", description=__doc__)
    p.add_argument("--version", action="version", version=VERSION_TEXT)
    p.add_argument("--fifo", required=True, help="FIFO to read; created (mode --fifo-mode) when missing")
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV, ""),
                   help=f"PostgreSQL DSN (default ${DSN_ENV}, else libpq's PG* variables)")
    p.add_argument("--batch-rows", type=int, default=BATCH_ROWS, help=f"rows per COPY (default {BATCH_ROWS})")
    p.add_argument("--batch-bytes", type=int, default=BATCH_MAX_BYTES,
                   help=f"bytes per COPY (default {BATCH_MAX_BYTES})")
    p.add_argument("--flush-interval", type=float, default=FLUSH_INTERVAL_S,
                   help=f"seconds before a partly filled batch is sent (default {FLUSH_INTERVAL_S})")
    p.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES,
                   help=f"longer lines are rejected with their first bytes (default {MAX_LINE_BYTES})")
    p.add_argument("--pipe-size", type=int, default=None,
                   help="ask for this pipe capacity with F_SETPIPE_SZ (capped at /proc/sys/fs/pipe-max-size)")
    p.add_argument("--fifo-mode", type=lambda s: int(s, 8), default=DEFAULT_FIFO_MODE,
                   help="octal mode of a FIFO the collector creates (default 660)")
    p.add_argument("--no-schema", dest="apply_schema", action="store_false",
                   help="do not create the tables at start (they must exist)")
    p.add_argument("--stats-interval", type=float, default=STATS_INTERVAL_S,
                   help=f"seconds between stats lines (default {STATS_INTERVAL_S})")
    p.add_argument("--journal", metavar="DIR", default=None,
                   help="journal folder: raw bytes are kept here until their rows are committed, so a crash or a "
                        "database outage loses and duplicates nothing")
    p.add_argument("--fsync", action="store_true",
                   help="with --journal: fdatasync every read, so the journal also survives a power loss")
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the collector until SIGTERM or SIGINT; exit 0 after flushing, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s collector %(levelname)s %(message)s", stream=sys.stderr)
    for name in ("batch_rows", "batch_bytes", "max_line_bytes"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be 1 or more", file=sys.stderr)
            return 2
    config = CollectorConfig(
        fifo=args.fifo, dsn=args.dsn, batch_rows=args.batch_rows, batch_bytes=args.batch_bytes,
        flush_interval=args.flush_interval, max_line_bytes=args.max_line_bytes, pipe_size=args.pipe_size,
        fifo_mode=args.fifo_mode, apply_schema=args.apply_schema, stats_interval=args.stats_interval,
        journal=args.journal, fsync=args.fsync)
    if not args.dsn and not any(os.environ.get(name) for name in LIBPQ_ENV):
        print(NO_DSN_MESSAGE, file=sys.stderr)
        return 2
    if args.fsync and not args.journal:
        print("error: --fsync needs --journal DIR", file=sys.stderr)
        return 2
    collector = Collector(config)
    signal.signal(signal.SIGTERM, collector.request_stop)
    signal.signal(signal.SIGINT, collector.request_stop)
    try:
        return collector.run()
    except (NotAFifoError, FifoPathError, JournalError, DatabaseConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
