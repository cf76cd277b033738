"""Reference emitter: `python -m reference.emitter` writes faker log events into a FIFO and prints a summary."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import queue as queue_module
import secrets
import signal
import stat
import sys
import time
from dataclasses import dataclass
from typing import Any

import configargparse
import orjson

from reference import VERSION_TEXT
from reference.envargs import add_env_option, env_parser
from reference.events import EventFactory, filler_text, record_pool
from reference.fifo import NotAFifoError, describe_kind
from reference.fifo_writer import FifoWriter, WriterStats
from reference.framing import PACK_TO_PIPE_BUF, frames
from reference.sizes import MAX_RUN_ID_LENGTH, MAX_SOURCE_LENGTH, SizeRange, parse_size

log = logging.getLogger("reference.emitter")

PROGRAM = "emitter"

# Lines generated ahead of the writes that carry them: large enough to pack PIPE_BUF many times over,
# small enough that a stop request is honoured within a few milliseconds.
GENERATION_CHUNK = 256
# A rate-limited writer never sleeps longer than this, so --duration and SIGTERM are honoured promptly.
MAX_PACING_SLEEP_S = 0.05


@dataclass(frozen=True)
class EmitterConfig:
    """Everything one writer process needs."""

    fifo: str
    size: SizeRange
    count: int | None
    duration: float | None
    rate: float
    seed: int
    run_id: str
    source: str
    nonblocking: bool
    lines_per_write: int


_stop_requested = False
# Exit status when a signal stopped the emitter before it sent what it was asked to (the summary is printed).
EXIT_STOPPED_SHORT = 3


def _request_stop(signum: int, frame: object) -> None:
    global _stop_requested
    _stop_requested = True


def run_writer(config: EmitterConfig) -> dict:
    """Write config.count lines (or for config.duration seconds) and return this writer's summary."""
    factory = EventFactory(config.size, seed=config.seed, run_id=config.run_id, source=config.source)
    writer = FifoWriter(config.fifo, nonblocking=config.nonblocking, should_stop=lambda: _stop_requested)
    writer.open()
    started = time.monotonic()
    deadline = started + config.duration if config.duration else None
    generated = 0
    try:
        while not _stop_requested:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            want = GENERATION_CHUNK
            if config.count is not None:
                want = min(want, config.count - generated)
            if config.rate:
                due = int((now - started) * config.rate) - generated
                if due <= 0:
                    time.sleep(min(MAX_PACING_SLEEP_S, (generated + 1) / config.rate - (now - started)))
                    continue
                want = min(want, due)
            if want <= 0:
                break
            lines = factory.lines(want)
            generated += want
            for batch in frames(lines, config.lines_per_write):
                writer.write_lines(batch)
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    return {
        "source": config.source,
        "elapsed_seconds": round(elapsed, 3),
        "last_seq": factory.seq,
        **writer.stats.as_dict(),
    }


def _writer_process(config: EmitterConfig, results: multiprocessing.Queue) -> None:
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    results.put(run_writer(config))


def _collect(procs: list, queue) -> list[dict]:
    """Wait for every writer's summary; pass a stop request on, and fail clearly if a writer dies."""
    results: list[dict] = []
    forwarded = False
    while len(results) < len(procs):
        try:
            results.append(queue.get(timeout=MAX_PACING_SLEEP_S))
            continue
        except queue_module.Empty:
            pass
        if _stop_requested and not forwarded:
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)
            forwarded = True
        dead = [p for p in procs if not p.is_alive() and p.exitcode != 0]
        if dead and queue.empty():
            for p in procs:
                p.terminate()
            raise RuntimeError(
                f"writer process {dead[0].pid} died with exit code {dead[0].exitcode}; its error is printed above"
            )
    for p in procs:
        p.join()
    return results


def split_count(total: int | None, writers: int) -> list[int | None]:
    """Share total lines between writers; the first ones take the remainder."""
    if total is None:
        return [None] * writers
    base, extra = divmod(total, writers)
    return [base + (1 if k < extra else 0) for k in range(writers)]


def run(args: argparse.Namespace) -> dict:
    """Start the writers, wait for them, and return the summary of the whole run."""
    counts = split_count(args.count, args.writers)
    configs = [
        EmitterConfig(
            args.fifo,
            args.size,
            counts[k],
            args.duration,
            args.rate / args.writers,
            args.seed,
            args.run_id,
            f"{args.source}{k}",
            args.nonblocking,
            args.lines_per_write,
        )
        for k in range(args.writers)
    ]
    started = time.monotonic()
    if args.writers == 1:
        results = [run_writer(configs[0])]
    else:
        # fork: children inherit the faker pools built here once instead of building their own.
        record_pool(args.seed)
        filler_text(args.seed)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_writer_process, args=(c, queue), daemon=True) for c in configs]
        for p in procs:
            p.start()
        results = _collect(procs, queue)
    elapsed = time.monotonic() - started
    total = WriterStats()
    for r in results:
        for key in ("lines_sent", "bytes_sent", "lines_dropped", "writes", "epipe", "eagain", "blocked_seconds"):
            setattr(total, key, getattr(total, key) + r[key])
    return {
        "run": args.run_id,
        "writers": args.writers,
        "size": str(args.size),
        **total.as_dict(),
        "elapsed_seconds": round(elapsed, 3),
        "lines_per_second": round(total.lines_sent / elapsed) if elapsed > 0 else None,
        "sources": sorted(results, key=lambda r: r["source"]),
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be 1 or more")
    return value


def _size(text: str) -> SizeRange:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> configargparse.ArgumentParser:
    """The command line of the reference emitter; each option also reads NAMEDPIPER_EMITTER_<OPTION>."""
    p = env_parser("python -m reference.emitter", __doc__)
    p.add_argument("--version", action="version", version=VERSION_TEXT)

    def option(*names: str, target: Any = p, **kwargs: Any) -> None:
        add_env_option(target, PROGRAM, *names, **kwargs)

    option("--fifo", required=True, help="path of the FIFO to write (the collector creates it)")
    amount = p.add_mutually_exclusive_group()
    option("--count", target=amount, type=int, help="lines in total, shared between writers (default 1000)")
    option("--duration", target=amount, type=float, help="write for this many seconds instead of a count")
    option("--rate", type=float, default=0, help="lines per second in total; 0 = as fast as possible")
    option(
        "--size",
        type=_size,
        default=parse_size("small"),
        help="size class (small, medium, pipe_buf, over_pipe_buf, over_capacity) or MIN-MAX bytes",
    )
    option("--writers", type=_positive_int, default=1, help="writer processes (default 1)")
    option("--seed", type=int, default=0, help="seed for reproducible events (default 0)")
    option("--run-id", default=None, help="run id stored in data._np.run (default: random)")
    option("--source", default="w", help="source prefix; writer k is SOURCE+k in data._np.src")
    option(
        "--lines-per-write",
        type=int,
        default=PACK_TO_PIPE_BUF,
        help="lines per write; 0 (default) packs whole lines up to PIPE_BUF (4096 B) per write",
    )
    option(
        "--nonblocking",
        action="store_true",
        help="drop and count lines when the pipe is full or has no reader, instead of waiting",
    )
    option("-v", "--verbose", action="store_true", help="log at debug level")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the writers, print one JSON summary line."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s emitter %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.count is None and args.duration is None:
        args.count = 1000
    problems = [
        text
        for bad, text in (
            (args.count is not None and args.count < 0, "--count must be 0 or more"),
            (args.duration is not None and args.duration <= 0, "--duration must be more than 0 seconds"),
            (args.rate < 0, "--rate must be 0 (as fast as possible) or more lines per second"),
            (args.lines_per_write < 0, "--lines-per-write must be 0 (pack up to PIPE_BUF) or more"),
        )
        if bad
    ]
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 2
    args.run_id = args.run_id or secrets.token_hex(4)
    last_source = f"{args.source}{args.writers - 1}"
    if len(args.run_id) > MAX_RUN_ID_LENGTH or not 0 < len(last_source) <= MAX_SOURCE_LENGTH:
        print(
            f"error: --run-id takes up to {MAX_RUN_ID_LENGTH} characters and --source plus the writer number "
            f"up to {MAX_SOURCE_LENGTH} ({args.run_id!r}, {last_source!r}); shorten them",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    if not os.path.exists(args.fifo):
        log.warning("%s does not exist yet; waiting for the collector to create it", args.fifo)
        while not os.path.exists(args.fifo) and not _stop_requested:
            time.sleep(MAX_PACING_SLEEP_S)
        if _stop_requested:
            log.warning("stopped before %s appeared; nothing was written", args.fifo)
            print(
                orjson.dumps(
                    {
                        "run": args.run_id,
                        "writers": args.writers,
                        "size": str(args.size),
                        **WriterStats().as_dict(),
                        "elapsed_seconds": 0,
                        "lines_per_second": None,
                        "sources": [],
                    }
                ).decode(),
                flush=True,
            )
            return EXIT_STOPPED_SHORT
    if os.path.exists(args.fifo) and not stat.S_ISFIFO(os.stat(args.fifo).st_mode):
        print(
            f"error: {args.fifo} is {describe_kind(os.stat(args.fifo).st_mode)}, not a FIFO; "
            "point --fifo at the collector's FIFO",
            file=sys.stderr,
        )
        return 2
    try:
        summary = run(args)
    except (ValueError, RuntimeError, NotAFifoError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps(summary).decode(), flush=True)
    short = (args.count is not None and summary["lines_sent"] + summary["lines_dropped"] < args.count) or (
        args.duration is not None and _stop_requested
    )
    return EXIT_STOPPED_SHORT if short else 0


if __name__ == "__main__":
    sys.exit(main())
