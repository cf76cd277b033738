"""The benchmark's command line: options, the parts in order, the printed table and the JSON report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

import loadtests.bench
from loadtests.bench.baselines import measure_copy, measure_naive
from loadtests.bench.collector import measure_collector
from loadtests.bench.dataset import Bench, BenchError, measure_factory, measure_parse
from loadtests.bench.generators import measure_emitter, measure_locust
from loadtests.bench.independent import LINE_HIGH, LINE_LOW, measure_independent
from loadtests.bench.latency import measure_latency
from loadtests.bench.pipes import measure_fifo
from loadtests.bench.profile import PROFILE_CODE, profile_collector
from loadtests.bench.report import LATENCY_RATE, check_targets, derive, render_table
from loadtests.bench.server import Server
from loadtests.bench.verify_scale import add_arguments as add_verify_arguments
from loadtests.bench.verify_scale import measure_verify, render_verify
from loadtests.database import DatabaseUnavailableError
from reference import VERSION_TEXT
from reference.collector.validate import COMPILED
from reference.fifo import PIPE_BUF
from reference.sizes import SIZE_CLASSES

log = logging.getLogger("namedpiper.bench")

SIZES = ("small", "medium", "pipe_buf")
PARTS = ("factory", "copy", "collector", "independent", "naive", "latency", "fifo", "emitter", "locust", "verify")
# What each part after the data set runs, in the order of PARTS; factory (and parse) run even if skipped: every
# other part needs the data set.
MEASUREMENTS: dict[str, Callable[[Bench], None]] = {
    "copy": measure_copy,
    "collector": measure_collector,
    "independent": measure_independent,
    "naive": measure_naive,
    "latency": measure_latency,
    "fifo": measure_fifo,
    "emitter": measure_emitter,
    "locust": measure_locust,
    "verify": measure_verify,
}
# 200,000 small lines are ~85 MB and a few seconds of collector time: long enough that start-up and the last
# partial batch are under 5 % of the run, short enough for the whole benchmark to stay under 3 minutes.
DEFAULT_LINES = 200_000
# One INSERT per line runs at a few thousand rows/s here: 10,000 lines take a few seconds.
NAIVE_LINES = 10_000
# The latency run writes for 5 s at LATENCY_RATE (10k lines/s): 50,000 samples, enough for a p99.
LATENCY_SECONDS = 5.0
# 256 MiB through the pipe in 1 MiB writes: about a second, long enough to swamp process start-up.
FIFO_MIB = 256
# Long enough for a steady rate, short enough to keep the whole benchmark under 3 minutes.
EMITTER_SECONDS = 5.0
LOCUST_SECONDS = 10


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench",
        description=loadtests.bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=VERSION_TEXT)
    p.add_argument("--size", choices=SIZES, default="small", help="size class of the lines (default small)")
    p.add_argument(
        "--lines", type=int, default=DEFAULT_LINES, help=f"lines in the data set (default {DEFAULT_LINES:,})"
    )
    p.add_argument(
        "--naive-lines",
        type=int,
        default=NAIVE_LINES,
        help=f"lines for the naive collector, the first of the data set (default {NAIVE_LINES:,})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data set (default 0)")
    p.add_argument(
        "--dsn",
        default=None,
        help="PostgreSQL server to use (default: an embedded one with its data in a temporary folder); "
        "the benchmark creates and drops one database per measurement on it",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=Path("reports") / "bench.json",
        help="where to write the results (default reports/bench.json)",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="NAME",
        help=f"skip a part; repeat or separate with commas: {', '.join(PARTS)}",
    )
    p.add_argument(
        "--with-verify",
        action="store_true",
        help="also run the verify part (verification among earlier runs: about 15 minutes and 6 GB of disk at its "
        "default size, so it runs only when asked)",
    )
    p.add_argument(
        "--latency-rate",
        type=int,
        default=LATENCY_RATE,
        help=f"lines/s of the latency run (default {LATENCY_RATE:,}; the target applies at that rate)",
    )
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=LATENCY_SECONDS,
        help=f"length of the latency run (default {LATENCY_SECONDS:g} s)",
    )
    p.add_argument("--fifo-mib", type=int, default=FIFO_MIB, help=f"MiB through the raw FIFO (default {FIFO_MIB})")
    p.add_argument(
        "--emitter-seconds",
        type=float,
        default=EMITTER_SECONDS,
        help=f"length of the emitter run (default {EMITTER_SECONDS:g} s)",
    )
    p.add_argument(
        "--locust-seconds",
        type=int,
        default=LOCUST_SECONDS,
        help=f"length of the Locust run (default {LOCUST_SECONDS} s)",
    )
    p.add_argument(
        "--collector-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the reference collector, repeatable: --collector-arg=--pipe-size=1048576",
    )
    p.add_argument(
        "--profile",
        choices=tuple(PROFILE_CODE),
        default=None,
        help="also run the collector once under this profiler and print its top entries "
        "(pyinstrument must be installed; it is not a dependency)",
    )
    p.add_argument("--profile-top", type=int, default=8, help="entries of the profile shown (default 8)")
    add_verify_arguments(p)
    return p


def parse_skip(values: list[str]) -> set[str]:
    """--skip values (repeated and/or comma separated) as a set of part names; unknown names are an error."""
    names = {n.strip() for v in values for n in v.split(",") if n.strip()}
    unknown = names - set(PARTS)
    if unknown:
        raise ValueError(f"--skip {', '.join(sorted(unknown))}: unknown part; choose from {', '.join(PARTS)}")
    return names


def _say(text: str) -> None:
    """The table is the benchmark's output: stdout, for people and CI logs."""
    print(text, flush=True)  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    """Run every part not skipped, print the table, write the JSON; 0 unless a part failed to measure."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench %(asctime)s %(message)s", stream=sys.stderr)
    try:
        skip = parse_skip(args.skip) | (set() if args.with_verify else {"verify"})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.lines < 1 or args.naive_lines < 1 or args.latency_rate < 1:
        print("error: --lines, --naive-lines and --latency-rate must be 1 or more", file=sys.stderr)  # noqa: T201
        return 2
    if args.profile == "pyinstrument":
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            print(  # noqa: T201 - the command line's error, from main()
                "error: --profile pyinstrument needs `pip install pyinstrument`; or use --profile cprofile",
                file=sys.stderr,
            )
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="namedpiper-bench-"))
    bench = Bench(
        args.size,
        args.lines,
        min(args.naive_lines, args.lines),
        args.seed,
        args.latency_rate,
        args.latency_seconds,
        args.fifo_mib,
        args.emitter_seconds,
        args.locust_seconds,
        workdir,
        tuple(args.collector_arg),
        verify_rows=args.verify_rows,
        verify_other_rows=args.verify_other_rows,
    )
    load_before = os.getloadavg()
    started = time.monotonic()
    needs_db = bool({"copy", "collector", "independent", "naive", "latency", "locust", "verify"} - skip) or args.profile
    server = Server(args.dsn) if needs_db else None
    version = None
    profile = None
    try:
        if server is not None:
            version = server.start()
            bench.server = server
        steps: list[tuple[str, Callable[[Bench], None]]] = [("factory", measure_factory), ("parse", measure_parse)]
        steps += [(name, MEASUREMENTS[name]) for name in PARTS[1:] if name not in skip]
        for name, step in steps:
            log.info("%s ...", name)
            step_started = time.monotonic()
            try:
                step(bench)
            except (BenchError, OSError, psycopg2.Error, subprocess.SubprocessError) as exc:
                if name in ("factory", "parse"):
                    raise
                log.error("%s failed: %s", name, exc)
                bench.errors[name] = str(exc)
            log.info("%s done in %.1f s", name, time.monotonic() - step_started)
        if args.profile:
            log.info("profile (%s) ...", args.profile)
            profile = profile_collector(bench, args.profile, args.profile_top)
    except DatabaseUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    finally:
        if server is not None:
            server.close()
        if bench.errors:
            log.error("work folder kept for its logs: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    metrics = derive(bench.metrics)
    checks = check_targets(metrics, args.size, args.latency_rate)
    size = SIZE_CLASSES[args.size]
    title = (
        f"namedpiper benchmark: {args.lines:,} {args.size} lines ({size.low}-{size.high} B) and {args.lines:,} "
        f"independent ones ({LINE_LOW}-{LINE_HIGH} B), seed {args.seed}, PostgreSQL {version or '-'}, "
        f"{os.cpu_count()} CPUs, load {load_before[0]:.1f}, {elapsed:.0f} s, line parser "
        f"{'compiled' if COMPILED else 'Python only (the C part is not built)'}"
    )
    _say(render_table(metrics, checks, title=title, latency_rate=args.latency_rate))
    if "verify" in bench.details:
        _say(render_verify(bench))
    for name, error in bench.errors.items():
        _say(f"ERROR {name}: {error}")
    if profile is not None:
        _say(
            f"\nprofile of the collector's main thread ({profile['tool']}, "
            f"{profile['rows_per_s_under_profiler']:,} rows/s under the profiler):\n{profile['text']}"
        )
    report = {
        "benchmark": "namedpiper",
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "dsn"},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgresql": version,
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "compiled_parser": COMPILED,
        },
        "seconds": round(elapsed, 1),
        "metrics": metrics,
        "targets": [
            {"key": c.target.key, "op": c.target.op, "bound": c.target.bound, "value": c.value, "result": c.result}
            for c in checks
        ],
        "details": bench.details,
        "errors": bench.errors,
        "profile": profile,
        "pipe_buf": PIPE_BUF,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    _say(f"results: {args.json}")
    return 1 if bench.errors else 0
