"""The collector's command line: `python -m reference.collector --fifo PATH --dsn DSN [options]`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from reference.collector.collector import (
    BATCH_MAX_BYTES,
    BATCH_ROWS,
    FLUSH_INTERVAL_S,
    STATS_INTERVAL_S,
    Collector,
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
from reference.collector.loader import DatabaseConfigError
from reference.fifo import DEFAULT_FIFO_MODE, FifoPathError, NotAFifoError
from reference.sizes import MAX_LINE_BYTES

DSN_ENV = "NAMEDPIPER_DSN"
# --journal-max-bytes holds at least this many of the longest lines: an unfinished line plus a quarter-limit
# segment then never fill the journal, so loading can always free room.
JOURNAL_LINES_HELD = 4


def build_parser() -> argparse.ArgumentParser:
    """The command line of the reference collector."""
    p = argparse.ArgumentParser(prog="python -m reference.collector", description=__doc__)
    p.add_argument("--fifo", required=True, help="FIFO to read; created (mode --fifo-mode) when missing")
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV, ""),
                   help=f"PostgreSQL DSN (default ${DSN_ENV}, else libpq's PG* variables); a password here is "
                        "visible to every local user: prefer the variable, --dsn-file or PGPASSFILE")
    p.add_argument("--dsn-file", metavar="FILE", default=None,
                   help="read the DSN from the first line of FILE (mode 600), keeping a password off the command line")
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
    p.add_argument("--journal-max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"with --journal: at most this many bytes on disk; when reached (or the disk is full) the "
                        f"collector stops reading the FIFO until loaded bytes are removed, so writers wait "
                        f"(default {DEFAULT_MAX_BYTES}, 4 GiB; 0: only the disk limits it)")
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
    if args.journal_max_bytes and args.journal_max_bytes < JOURNAL_LINES_HELD * args.max_line_bytes:
        print(f"error: --journal-max-bytes must be 0 or at least {JOURNAL_LINES_HELD} x --max-line-bytes "
              f"({JOURNAL_LINES_HELD * args.max_line_bytes}), so the longest line fits", file=sys.stderr)
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
        fifo=args.fifo, dsn=args.dsn, batch_rows=args.batch_rows, batch_bytes=args.batch_bytes,
        flush_interval=args.flush_interval, max_line_bytes=args.max_line_bytes, pipe_size=args.pipe_size,
        fifo_mode=args.fifo_mode, apply_schema=args.apply_schema, stats_interval=args.stats_interval,
        journal=args.journal, fsync=args.fsync, journal_max_bytes=args.journal_max_bytes)
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
