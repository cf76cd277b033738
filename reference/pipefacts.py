"""Measure what a Linux FIFO really does on the running kernel: `python -m reference.pipefacts`."""

from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import select
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from reference import VERSION_TEXT
from reference.fifo import PIPE_BUF, ensure_fifo, get_pipe_size, pipe_max_size, set_pipe_size
from reference.torn_lines import (
    DEFAULT_LINES,
    DEFAULT_SIZES,
    DEFAULT_WRITERS,
    POLL_SECONDS,
    READ_CHUNK,
    WAIT_TIMEOUT_SECONDS,
    WRITER_TAGS,
    TornLinesError,
    count_torn_lines,
)

# One write well above both PIPE_BUF and the default capacity of 65,536 bytes.
LARGE_WRITE_BYTES = 100_000
# How long a writer must stay blocked on a full pipe to count as blocked; short to keep the run fast.
BLOCK_PROBE_SECONDS = 0.2

CORRECTIONS = (
    "A full pipe blocks the writer (blocking fd) or fails the write with EAGAIN (O_NONBLOCK); "
    "the data already in the pipe stays intact and is read first, in order.",
    "A single write larger than PIPE_BUF is allowed and completes, but it is not atomic: "
    "pieces of concurrent writers may interleave, so only writes of at most PIPE_BUF keep lines whole.",
)

RD = os.O_RDONLY | os.O_NONBLOCK
WR = os.O_WRONLY | os.O_NONBLOCK


def _errno_name(exc: OSError) -> str:
    """The symbolic name of an OSError's errno (EAGAIN, EPIPE, ...)."""
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


class MeasurementError(RuntimeError):
    """A measurement did not finish within its bounds or its helper processes failed."""


@dataclass(frozen=True)
class Fact:
    """One measured fact: a key, a label, the measured value and what it shows."""

    key: str
    label: str
    value: object
    shows: str


def _render(value: object) -> str:
    """Format a measured value for the table: thousands separators, yes/no, key=value pairs."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return " ".join(f"{k}={_render(v)}" for k, v in value.items())
    return f"{value:,}" if isinstance(value, int) else str(value)


class _Fds(list[int]):
    """The descriptors one measurement holds; whatever is still open is closed on leaving `_scratch`."""

    def open(self, path: str, flags: int) -> int:
        """Open path with flags and keep the descriptor."""
        self.append(os.open(path, flags))
        return self[-1]

    def close(self, fd: int) -> None:
        """Close one descriptor now."""
        self.remove(fd)
        os.close(fd)


@contextmanager
def _scratch() -> Iterator[tuple[str, _Fds]]:
    """A new FIFO in a temporary directory and a descriptor list; both are gone on exit."""
    fds = _Fds()
    with tempfile.TemporaryDirectory(prefix="pipefacts-") as tmp:
        try:
            yield str(ensure_fifo(Path(tmp) / "fifo")), fds
        finally:
            while fds:
                os.close(fds.pop())


def _fill(fd: int) -> bytes:
    """Write numbered PIPE_BUF chunks to a non-blocking fd until EAGAIN; return all bytes written."""
    written = bytearray()
    for number in range(get_pipe_size(fd) // PIPE_BUF + 1):
        chunk = (f"{number:07d}\n".encode() * PIPE_BUF)[:PIPE_BUF]
        try:
            os.write(fd, chunk)  # at most PIPE_BUF: all or nothing
        except BlockingIOError:
            return bytes(written)
        written += chunk
    raise MeasurementError("the pipe took more than its capacity without EAGAIN")


def _read_now(fd: int) -> bytes:
    """Read everything a non-blocking fd holds right now."""
    chunks = []
    with suppress(BlockingIOError):
        while data := os.read(fd, READ_CHUNK):
            chunks.append(data)
    return b"".join(chunks)


def _await(future: Future[int], fds: _Fds, reader: int) -> int:
    """The count a writer thread's write returns; if it stays blocked, close the reader so EPIPE frees it."""
    try:
        return future.result(WAIT_TIMEOUT_SECONDS)
    except TimeoutError:
        fds.close(reader)
        raise MeasurementError(f"a blocked writer was not released within {WAIT_TIMEOUT_SECONDS} s") from None


def measure_capacity() -> list[Fact]:
    """Default capacity, pipe-max-size, the capacity granted at that ceiling, and PIPE_BUF."""
    with _scratch() as (path, fds):
        fd = fds.open(path, os.O_RDWR | os.O_NONBLOCK)
        capacity, pipe_buf, ceiling = get_pipe_size(fd), os.fpathconf(fd, "PC_PIPE_BUF"), pipe_max_size()
        raised = set_pipe_size(fd, ceiling)
    return [
        Fact(
            "capacity",
            "default capacity of a new FIFO (F_GETPIPE_SZ)",
            capacity,
            "A writer runs this many bytes ahead of the reader before it blocks or gets EAGAIN.",
        ),
        Fact(
            "pipe_max_size",
            "ceiling for F_SETPIPE_SZ (/proc/sys/fs/pipe-max-size)",
            ceiling,
            "An unprivileged process may raise a pipe's capacity up to this.",
        ),
        Fact(
            "raised_capacity",
            "capacity after F_SETPIPE_SZ(pipe-max-size)",
            raised,
            "set_pipe_size raises the capacity to the ceiling.",
        ),
        Fact(
            "pipe_buf",
            "PIPE_BUF (fpathconf PC_PIPE_BUF)",
            pipe_buf,
            "A write of at most this many bytes is atomic: never mixed with other writers.",
        ),
    ]


def measure_full_pipe() -> Fact:
    """Fill a FIFO through a non-blocking fd, try one more byte, then read everything back."""
    with _scratch() as (path, fds):
        reader, writer = fds.open(path, RD), fds.open(path, WR)
        written = _fill(writer)
        try:
            next_write = f"accepted {os.write(writer, b'x')} byte"
        except BlockingIOError as exc:
            next_write = _errno_name(exc)
        read_back = _read_now(reader)
    value = {
        "filled": len(written),
        "next_write": next_write,
        "first_bytes_intact": read_back[:PIPE_BUF] == written[:PIPE_BUF],
        "all_bytes_in_order": read_back == written,
    }
    return Fact(
        "full_pipe_nonblocking",
        "write into a full FIFO (O_NONBLOCK)",
        value,
        "A full pipe fails the write with EAGAIN; the first bytes written are the first read.",
    )


def measure_blocking_write() -> Fact:
    """A blocking write into a full FIFO, released after BLOCK_PROBE_SECONDS by one read."""
    with _scratch() as (path, fds):
        reader, writer = fds.open(path, RD), fds.open(path, WR)
        _fill(writer)
        os.set_blocking(writer, True)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(os.write, writer, b"x")
            blocked = wait([future], BLOCK_PROBE_SECONDS).not_done == {future}
            os.read(reader, PIPE_BUF)  # frees one page
            count = _await(future, fds, reader)
    value = {
        "blocked_after_probe": blocked,
        "completed_after_read": count == 1,
        "blocked_for_s": round(time.perf_counter() - start, 2),
    }
    return Fact(
        "full_pipe_blocking",
        "write into a full FIFO (blocking fd)",
        value,
        "A full pipe blocks the writer until the reader reads; nothing is dropped.",
    )


def measure_large_write() -> Fact:
    """One os.write of LARGE_WRITE_BYTES into a FIFO whose reader drains concurrently."""
    payload = (bytes(range(256)) * (LARGE_WRITE_BYTES // 256 + 1))[:LARGE_WRITE_BYTES]
    with _scratch() as (path, fds):
        reader, writer = fds.open(path, RD), fds.open(path, os.O_WRONLY)
        received = bytearray()
        deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(os.write, writer, payload)
            while len(received) < len(payload) and time.monotonic() < deadline:
                if select.select([reader], [], [], POLL_SECONDS)[0]:
                    received += _read_now(reader)
            count = _await(future, fds, reader)
    value = {"asked": LARGE_WRITE_BYTES, "returned": count, "intact": received == payload}
    return Fact(
        "large_write",
        "one write of 100,000 bytes, reader draining",
        value,
        "A write larger than PIPE_BUF is allowed and completes; it is not atomic.",
    )


def measure_partial_write() -> Fact:
    """A non-blocking write larger than the free space of an empty FIFO."""
    with _scratch() as (path, fds):
        fds.open(path, RD)
        count = os.write(fds.open(path, WR), b"p" * LARGE_WRITE_BYTES)
    return Fact(
        "partial_write",
        "non-blocking write of 100,000 bytes, empty FIFO",
        {"asked": LARGE_WRITE_BYTES, "returned": count},
        "Above the free space a non-blocking write takes what fits: the caller loops on the count.",
    )


def measure_torn_lines(size: int, lines: int, writers: int) -> Fact:
    """Count lines that come back torn when writer processes write whole lines concurrently."""
    with _scratch() as (path, fds):
        try:
            torn, total = count_torn_lines(path, fds.open(path, RD), size, lines, writers)
        except TornLinesError as exc:
            raise MeasurementError(str(exc)) from None
    return Fact(
        f"torn_lines_{size}",
        f"torn {size:,}-byte lines, {writers} writers x {lines}",
        {"torn": torn, "lines": total},
        "At most PIPE_BUF a write is atomic: 0 torn is guaranteed."
        if size <= PIPE_BUF
        else "Above PIPE_BUF lines may interleave: measured, not guaranteed.",
    )


def measure_open_without_reader() -> Fact:
    """open(O_WRONLY | O_NONBLOCK) on a FIFO nobody reads."""
    with _scratch() as (path, fds):
        try:
            outcome = f"opened fd {fds.open(path, WR)}"
        except OSError as exc:
            outcome = _errno_name(exc)
    return Fact(
        "open_without_reader",
        "non-blocking open(O_WRONLY) with no reader",
        outcome,
        "A non-blocking writer retries its open until a reader is there.",
    )


def measure_write_without_reader() -> Fact:
    """A write after the last reader closed."""
    with _scratch() as (path, fds):
        reader, writer = fds.open(path, RD), fds.open(path, WR)
        fds.close(reader)
        try:
            outcome = f"accepted {os.write(writer, b'x')} byte"
        except BrokenPipeError as exc:
            outcome = f"{_errno_name(exc)} (BrokenPipeError)"
    return Fact(
        "write_without_reader",
        "write after the last reader closed",
        {"outcome": outcome, "sigpipe_ignored": signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN},
        "The writer learns the collector is gone; Python ignores SIGPIPE, so the write raises.",
    )


def measure_data_kept() -> Fact:
    """Unread data after the only reader closed while a writer keeps the FIFO open."""
    payload = b"unread line\n"
    with _scratch() as (path, fds):
        first, writer = fds.open(path, RD), fds.open(path, WR)
        os.write(writer, payload)
        fds.close(first)  # what the kernel does when the reader process exits
        data = _read_now(fds.open(path, RD))
    return Fact(
        "data_kept_for_next_reader",
        "unread data after the only reader exits",
        {"written": len(payload), "read_by_new_reader": len(data), "intact": data == payload},
        "A restarted collector reads what its predecessor left, if a writer held the FIFO open.",
    )


def measure_eof() -> Fact:
    """What a reader sees while one of two writers remains, and after both closed."""
    with _scratch() as (path, fds):
        reader, first, second = fds.open(path, RD), fds.open(path, WR), fds.open(path, WR)
        os.write(first, b"x")
        fds.close(first)
        os.read(reader, 1)
        try:
            one_left = f"data {os.read(reader, 1)!r}"
        except BlockingIOError as exc:
            one_left = _errno_name(exc)
        fds.close(second)
        value = {"one_writer_left": one_left, "all_writers_closed": repr(os.read(reader, 1))}
    return Fact(
        "eof_when_writers_close",
        "read when writers close",
        value,
        "EOF (b'') comes only after every writer closed; the reader then reopens or holds O_RDWR.",
    )


def measure_rdwr_open() -> Fact:
    """open(O_RDWR) on a FIFO with no other party, then a write and a read through it."""
    with _scratch() as (path, fds):
        fd = fds.open(path, os.O_RDWR)  # Linux never blocks this open (fifo(7))
        os.write(fd, b"self")
        value = {"opened": True, "reads_own_write": os.read(fd, 4) == b"self"}
    return Fact(
        "rdwr_open",
        "open(O_RDWR) with no other party",
        value,
        "Works on Linux (undefined by POSIX): a reader holding O_RDWR never sees EOF.",
    )


def measure_all(sizes: Sequence[int], lines: int, writers: int) -> list[Fact]:
    """Every fact, in the order of the table."""
    facts = measure_capacity()
    facts += [measure_full_pipe(), measure_blocking_write(), measure_large_write(), measure_partial_write()]
    facts += [measure_torn_lines(size, lines, writers) for size in sizes]
    return [
        *facts,
        measure_open_without_reader(),
        measure_write_without_reader(),
        measure_data_kept(),
        measure_eof(),
        measure_rdwr_open(),
    ]


def format_table(facts: Sequence[Fact]) -> str:
    """A markdown table of the facts, followed by the two corrections."""
    rows = [("fact", "measured", "what it shows")] + [(f.label, _render(f.value), f.shows) for f in facts]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    header = f"Linux FIFO facts measured on kernel {platform.release()} ({platform.machine()})"
    return "\n".join([header, "", *lines, "", "Corrections:", *(f"- {c}" for c in CORRECTIONS)])


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every fact and print a table or JSON; return 1 if a measurement failed."""
    parser = argparse.ArgumentParser(prog="python -m reference.pipefacts", description=__doc__)
    parser.add_argument("--version", action="version", version=VERSION_TEXT)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="comma-separated torn-line sizes in bytes, newline included (%(default)s)",
    )
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="lines per writer (%(default)s)")
    parser.add_argument("--writers", type=int, default=DEFAULT_WRITERS, help="writer processes (%(default)s)")
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.sizes.split(",") if part.strip().isdigit()]
    if (
        len(sizes) != len(args.sizes.split(","))
        or min(sizes, default=0) < 2
        or args.lines < 1
        or not 1 <= args.writers <= len(WRITER_TAGS)
    ):
        parser.error(
            f"need --sizes like 4096,65536 (each >= 2: a tag and a newline), --lines >= 1, "
            f"1 <= --writers <= {len(WRITER_TAGS)}"
        )
    try:
        facts = measure_all(sizes, args.lines, args.writers)
    except MeasurementError as exc:
        print(f"pipefacts: {exc}", file=sys.stderr)
        return 1
    if not args.json:
        print(format_table(facts))
        return 0
    by_key = {f.key: {"label": f.label, "value": f.value, "shows": f.shows} for f in facts}
    document = {"kernel": platform.release(), "machine": platform.machine(), "corrections": CORRECTIONS}
    print(json.dumps({**document, "facts": by_key}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
