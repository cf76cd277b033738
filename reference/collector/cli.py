"""The collector's command line and main loop: read, split, validate, batch, hand to the writer thread."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

from reference.collector.lines import LineSplitter, Oversized
from reference.collector.loader import Batch, Loader
from reference.collector.reader import FifoReader
from reference.collector.validate import Rejection, parse_line
from reference.collector.writer import BatchWriter
from reference.dsn import redact
from reference.fifo import DEFAULT_FIFO_MODE, NotAFifoError
from reference.sizes import MAX_LINE_BYTES

log = logging.getLogger("reference.collector")

# Rows per COPY: past ~5,000 rows the per-batch cost (a round trip, a commit) is under 2 % of the load.
BATCH_ROWS = 10_000
# Bytes per COPY: bounds memory when lines are large (over_capacity lines reach 1 MiB each).
BATCH_MAX_BYTES = 4 * 1024 * 1024
# A partly filled batch is sent after this long, so a quiet writer's lines are visible within ~0.1 s.
FLUSH_INTERVAL_S = 0.1
# The main loop wakes at least this often to notice a stop request and to print stats.
IDLE_WAKE_S = 0.2
STATS_INTERVAL_S = 10.0
DSN_ENV = "NAMEDPIPER_DSN"


@dataclass(frozen=True)
class CollectorConfig:
    """Settings of one collector run."""

    fifo: str
    dsn: str
    batch_rows: int = BATCH_ROWS
    batch_bytes: int = BATCH_MAX_BYTES
    flush_interval: float = FLUSH_INTERVAL_S
    max_line_bytes: int = MAX_LINE_BYTES
    pipe_size: int | None = None
    fifo_mode: int = DEFAULT_FIFO_MODE
    apply_schema: bool = True
    stats_interval: float = STATS_INTERVAL_S


class Collector:
    """Moves lines from the FIFO into PostgreSQL until asked to stop, then flushes everything it read."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.stop_requested = False
        self.lines_read = 0
        self.bytes_read = 0
        self.splitter = LineSplitter(config.max_line_bytes)
        self.batch = Batch()
        self.batch_started = 0.0

    def request_stop(self, signum: int = 0, frame: object = None) -> None:
        """Signal handler: finish the current chunk, drain the pipe, flush, exit."""
        self.stop_requested = True

    def run(self) -> int:
        """The main loop; returns the process exit status."""
        cfg = self.config
        reader = FifoReader(cfg.fifo, mode=cfg.fifo_mode, pipe_size=cfg.pipe_size)
        loader = Loader(cfg.dsn, apply_schema_at_start=cfg.apply_schema)
        loader.connect()
        self.writer = BatchWriter(loader)
        log.info("reading %s (capacity %d bytes) into %s", reader.path, reader.capacity,
                 redact(cfg.dsn) or "libpq defaults")
        next_stats = time.monotonic() + cfg.stats_interval
        try:
            while not self.stop_requested:
                now = time.monotonic()
                wait = IDLE_WAKE_S
                if self.batch:
                    wait = min(wait, max(0.0, self.batch_started + cfg.flush_interval - now))
                chunk = reader.read(wait)
                if chunk:
                    self._consume(chunk)
                now = time.monotonic()
                if self.batch and now >= self.batch_started + cfg.flush_interval:
                    self._flush()
                if now >= next_stats:
                    log.info("stats %s", self._stats_text(reader.waiting()))
                    next_stats = now + cfg.stats_interval
            # Stop: take what the pipe holds now, reject an unfinished line, and flush everything.
            self._consume(reader.read_available())
            partial = self.splitter.take_partial()
            if partial is not None:
                self._reject_partial(partial)
            self._flush()
            self.writer.close()
        finally:
            reader.close()
            loader.close()
        log.info("final %s", self._stats_text(0))
        return 0

    def _consume(self, chunk: bytes) -> None:
        self.bytes_read += len(chunk)
        lines, oversized = self.splitter.feed(chunk)
        if not self.batch:
            self.batch_started = time.monotonic()
        batch = self.batch
        for too_long in oversized:
            self._reject_partial(too_long)
        for raw in lines:
            row, rejections = parse_line(raw)
            if row is not None:
                batch.rows.append(row)
                batch.raws.append(raw)
                batch.bytes += len(row)
            if rejections:
                batch.rejections.extend(rejections)
            if len(batch.rows) >= self.config.batch_rows or batch.bytes >= self.config.batch_bytes:
                self._flush()
                batch = self.batch
        self.lines_read += len(lines) + len(oversized)

    def _reject_partial(self, partial: bytes | Oversized) -> None:
        if isinstance(partial, Oversized):
            what = "line" if partial.complete else "unfinished line"
            reason = (f"{what} of {partial.length} bytes exceeds --max-line-bytes {self.config.max_line_bytes}; "
                      f"its first {len(partial.prefix)} bytes are kept")
            self.batch.rejections.append(Rejection(reason, partial.prefix))
        else:
            self.batch.rejections.append(
                Rejection(f"unfinished line of {len(partial)} bytes (no newline) when the collector stopped",
                          partial))
            self.lines_read += 1

    def _flush(self) -> None:
        if self.batch:
            self.writer.submit(self.batch)
        self.batch = Batch()
        self.batch_started = time.monotonic()

    def _stats_text(self, waiting: int) -> str:
        c = self.writer.counters
        return (f"lines_read={self.lines_read} bytes_read={self.bytes_read} rows_written={c.rows_written} "
                f"rejected={c.rejected} batches={c.batches} queued_batches={self.writer.queued} "
                f"pipe_waiting_bytes={waiting} pending_bytes={self.splitter.pending}")


def build_parser() -> argparse.ArgumentParser:
    """The command line of the reference collector."""
    p = argparse.ArgumentParser(prog="python -m reference.collector", description=__doc__)
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
        fifo_mode=args.fifo_mode, apply_schema=args.apply_schema, stats_interval=args.stats_interval)
    collector = Collector(config)
    signal.signal(signal.SIGTERM, collector.request_stop)
    signal.signal(signal.SIGINT, collector.request_stop)
    try:
        return collector.run()
    except NotAFifoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
