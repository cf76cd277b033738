"""The benchmark's FIFOs: whole lines packed and written from a thread, a `cat` that drains, raw FIFO throughput."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import threading
import time
from pathlib import Path

from loadtests.bench.dataset import COLLECTOR_READY_TIMEOUT_S, SUBPROCESS_TIMEOUT_S, Bench, BenchError
from loadtests.lifecycle import has_reader
from reference.fifo import get_pipe_size, set_pipe_size, write_whole
from reference.framing import frames

# Raw FIFO throughput in 1 MiB writes and reads, the usual pipe-max-size (the big-pipe run raises the pipe to it):
# --fifo-mib (256 by default) then goes through in about a second, long enough to swamp process start-up.
FIFO_WRITE_BYTES = 1024 * 1024


def write_all(fd: int, data: bytes) -> None:
    """Every byte into a blocking pipe (a write above PIPE_BUF may return early on a signal): write_whole's loop."""
    write_whole(fd, data, wait=_never_full)


def _never_full(_fd: int) -> bool:
    """A blocking descriptor waits inside os.write and never sees EAGAIN."""
    return True


def pack_writes(lines: list[bytes]) -> list[bytes]:
    """Whole lines packed into writes of at most PIPE_BUF bytes (a larger line is a write of its own)."""
    return [b"".join(batch) for batch in frames(lines)]


class Writer(threading.Thread):
    """Writes pre-packed data into a FIFO from a thread; keeps the first error for the caller."""

    def __init__(self, fifo: Path, writes: list[bytes]) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.fifo, self.writes = fifo, writes
        self.error: BaseException | None = None
        self.finished_at = 0.0

    def run(self) -> None:
        """Open the FIFO, write everything, close it; note when the last byte went out."""
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_CLOEXEC)
            try:
                for data in self.writes:
                    write_all(fd, data)
            finally:
                os.close(fd)
            self.finished_at = time.monotonic()
        except OSError as exc:
            self.error = exc


def start_drain(fifo: Path) -> subprocess.Popen:
    """`cat` reading the FIFO opened read-write, so it never sees EOF between writers; kill it when done."""
    proc = subprocess.Popen(["sh", "-c", 'exec cat 0<>"$1" >/dev/null', "sh", str(fifo)], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + COLLECTOR_READY_TIMEOUT_S
    while not has_reader(str(fifo)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"cat did not open {fifo} (status {proc.poll()})")
        time.sleep(0.01)
    return proc


def _fifo_reader(fifo: str, results) -> None:
    buffer = bytearray(FIFO_WRITE_BYTES)
    received = 0
    with open(fifo, "rb", buffering=0) as stream:
        while n := stream.readinto(buffer):
            received += n
    results.put((received, time.monotonic()))


def measure_fifo(bench: Bench) -> None:
    """Raw FIFO throughput: one writer (this process), one reader process, 1 MiB writes and reads."""
    for key, pipe_size in (("fifo_mb_per_s", None), ("fifo_big_pipe_mb_per_s", FIFO_WRITE_BYTES)):
        fifo = bench.fifo(key)
        os.mkfifo(fifo, 0o600)
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        reader = ctx.Process(target=_fifo_reader, args=(str(fifo), results), daemon=True)
        reader.start()
        block = b"x" * FIFO_WRITE_BYTES
        fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC)
        if pipe_size:
            set_pipe_size(fd, pipe_size)
        capacity = get_pipe_size(fd)
        started = time.monotonic()
        for _ in range(bench.fifo_mib * 1024 * 1024 // FIFO_WRITE_BYTES):
            write_all(fd, block)
        os.close(fd)
        received, finished = results.get(timeout=SUBPROCESS_TIMEOUT_S)
        reader.join()
        bench.metrics[key] = received / (finished - started) / 1e6
        bench.details[key] = {
            "bytes": received,
            "seconds": round(finished - started, 3),
            "pipe_capacity": capacity,
            "write_bytes": FIFO_WRITE_BYTES,
        }
