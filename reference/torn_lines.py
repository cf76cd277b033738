"""Torn lines: writer processes write whole lines into one FIFO at once; a reader counts the mixed ones."""

from __future__ import annotations

import os
import select
import string
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress

# Torn-line sizes: PIPE_BUF (atomic by POSIX), the default capacity, and a line above the default capacity.
DEFAULT_SIZES = (4096, 65_536, 200_000)
# 4 writers x 200 lines: enough contention to tear large lines, about 0.5 s per size on 2 cores.
DEFAULT_LINES = 200
DEFAULT_WRITERS = 4
# One tag byte per writer, repeated over its whole line, so any mix of two writers is visible.
WRITER_TAGS = string.ascii_letters
# The reader asks for 1 MiB per read, the most a pipe raised to the usual pipe-max-size holds.
READ_CHUNK = 1_048_576
# Bound for any single wait (a thread to finish, bytes to arrive); healthy runs take milliseconds.
WAIT_TIMEOUT_SECONDS = 5.0
# Bound for one torn-line size; 4 x 200 lines of 200,000 bytes take about 0.5 s on 2 cores.
TORN_TIMEOUT_SECONDS = 20.0
# The select() timeout of reader loops: they re-check their deadline and their writers this often.
POLL_SECONDS = 0.05
# The torn-line reader's pause while no writer has the FIFO open, so it does not spin on EOF.
IDLE_SECONDS = 0.005

WRITER_SCRIPT = """
import os, sys
path, tag, size, lines = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), int(sys.argv[4])
line = tag * (size - 1) + b"\\n"
fd = os.open(path, os.O_WRONLY)
for _ in range(lines):
    count = os.write(fd, line)
    if count != len(line):
        sys.exit(f"short write: {count} of {len(line)} bytes")
os.close(fd)
"""


class TornLinesError(RuntimeError):
    """The writers did not finish within TORN_TIMEOUT_SECONDS, or some of them failed."""


def _judge_lines(reader: int, procs: Sequence[subprocess.Popen[bytes]], size: int) -> tuple[int, int]:
    """Read lines until every writer exited and the FIFO is empty; return (torn, total)."""
    torn = total = 0
    pending = b""
    deadline = time.monotonic() + TORN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        exited = all(proc.poll() is not None for proc in procs)  # checked first: nothing arrives later
        ready, data = select.select([reader], [], [], POLL_SECONDS)[0], b""
        if ready:
            with suppress(BlockingIOError):
                data = os.read(reader, READ_CHUNK)
        if not data:
            if exited:
                return torn + bool(pending), total + bool(pending)
            if ready:
                time.sleep(IDLE_SECONDS)  # EOF between one writer's close and the next one's open
            continue
        *complete, pending = (pending + data).split(b"\n")
        total += len(complete)
        torn += sum(len(line) != size - 1 or line.count(line[:1]) != size - 1 for line in complete)
    raise TornLinesError(f"{size}-byte lines: writers did not finish within {TORN_TIMEOUT_SECONDS} s")


def _reap(procs: Sequence[subprocess.Popen[bytes]]) -> list[str]:
    """Kill writers still running, wait for all; return the stderr of those that failed on their own."""
    failures = []
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=WAIT_TIMEOUT_SECONDS)
        if proc.returncode > 0:
            failures.append(err.decode(errors="replace").strip())
    return failures


def count_torn_lines(path: str, reader: int, size: int, lines: int, writers: int) -> tuple[int, int]:
    """Start the writer processes on the FIFO at path, judge what reader gets; return (torn, total)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for tag in WRITER_TAGS[:writers]:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", WRITER_SCRIPT, path, tag, str(size), str(lines)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        torn, total = _judge_lines(reader, procs, size)
    finally:
        failures = _reap(procs)
    if failures:
        raise TornLinesError(f"{len(failures)} writer(s) failed: {failures[0]}")
    return torn, total
