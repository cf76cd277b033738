"""One benchmark run: its settings, the seeded data set every part shares, and what was measured."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reference.collector.validate import parse_line, parse_lines
from reference.events import EventFactory
from reference.sizes import SIZE_CLASSES

if TYPE_CHECKING:
    from loadtests.bench.server import Server

# The project folder (loadtests/bench/dataset.py is three levels down): the cwd of the processes the benchmark starts.
ROOT = Path(__file__).resolve().parents[2]
# How long a helper process may take to get ready (open its FIFO, connect), to stop after SIGTERM (drain and
# flush), and to run to its end: generous, so that only a stuck process ever hits them.
COLLECTOR_READY_TIMEOUT_S = 30.0
COLLECTOR_STOP_TIMEOUT_S = 60.0
SUBPROCESS_TIMEOUT_S = 120.0
# parse_line is timed on the first 20,000 lines, best of 5 rounds: stable to a few percent on a busy machine.
PARSE_SAMPLE_LINES = 20_000
PARSE_ROUNDS = 5
# parse_lines gets the sample in pieces of this many lines: about what one 1 MiB read of small lines holds.
PARSE_READ_LINES = 2_500


class BenchError(RuntimeError):
    """A measurement could not be made; the message says what was seen and where the logs are."""


@dataclass
class Bench:
    """One benchmark run: settings, the shared data set, and what was measured."""

    size: str
    lines: int
    naive_lines: int
    seed: int
    latency_rate: int
    latency_seconds: float
    fifo_mib: int
    emitter_seconds: float
    locust_seconds: int
    workdir: Path
    collector_args: tuple[str, ...] = ()
    # The verify part (loadtests/bench/verify_scale.py): rows of the run verified, rows of earlier runs beside it.
    verify_rows: int = 1_000_000
    verify_other_rows: int = 10_000_000
    server: Server | None = None
    data: list[bytes] = field(default_factory=list)
    rows: list[bytes] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def database(self) -> Server:
        """The benchmark's PostgreSQL server; BenchError when this run was started without one."""
        if self.server is None:
            raise BenchError("this measurement needs the database, which the skipped parts did not start")
        return self.server

    def fifo(self, name: str) -> Path:
        """A FIFO path in the work folder (not created)."""
        return self.workdir / f"{name}.fifo"


def measure_factory(bench: Bench) -> None:
    """Generate the data set with EventFactory in this process (faker pools built beforehand, not timed)."""
    factory = EventFactory(SIZE_CLASSES[bench.size], seed=bench.seed, run_id="bench", source="b0")
    started = time.perf_counter()
    bench.data = factory.lines(bench.lines)
    elapsed = time.perf_counter() - started
    bench.metrics["factory_lines_per_s"] = bench.lines / elapsed
    bench.details["factory"] = {"lines": bench.lines, "seconds": round(elapsed, 3), "bytes": sum(map(len, bench.data))}


def measure_parse(bench: Bench) -> None:
    """Turn the data set into COPY rows with parse_line; time it alone (the collector's hot path) on a sample."""
    rows = [row for line in bench.data if (row := parse_line(line[:-1])[0]) is not None]
    if len(rows) != len(bench.data):
        raise BenchError("the seeded data set has lines parse_line rejects")
    bench.rows = rows
    per_line, per_read = parse_cpu([line[:-1] for line in bench.data[:PARSE_SAMPLE_LINES]])
    bench.metrics["parse_us_per_line"] = per_line
    bench.metrics["parse_lines_us_per_line"] = per_read


def parse_cpu(sample: list[bytes]) -> tuple[float, float]:
    """CPU us per line (best of PARSE_ROUNDS) of parse_line one line at a time, and of parse_lines a read at a time.

    Process CPU time, not wall clock: on a shared machine it moves much less with the load.
    """
    one = whole = math.inf
    for _ in range(PARSE_ROUNDS):
        started = time.process_time()
        for line in sample:
            parse_line(line)
        one = min(one, time.process_time() - started)
        started = time.process_time()
        for first in range(0, len(sample), PARSE_READ_LINES):
            parse_lines(sample[first : first + PARSE_READ_LINES])
        whole = min(whole, time.process_time() - started)
    return one / len(sample) * 1e6, whole / len(sample) * 1e6
