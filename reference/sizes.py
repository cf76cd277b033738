"""Size classes: exact byte bounds for one encoded event line, newline included."""

from __future__ import annotations

import re
from dataclasses import dataclass

from reference.fifo import DEFAULT_PIPE_CAPACITY, PIPE_BUF

# The smallest line every event can be built at: all eight fields, bookkeeping with a run id of up to
# MAX_RUN_ID_LENGTH and a source of up to MAX_SOURCE_LENGTH characters, and room for a 12-digit seq.
# Measured over the record pools of three seeds: the largest such skeleton is 370 bytes.
MIN_LINE_BYTES = 380
MAX_RUN_ID_LENGTH = 12
MAX_SOURCE_LENGTH = 16
# A line larger than this would not fit a pipe raised to the usual pipe-max-size of 1 MiB.
MAX_LINE_BYTES = 1_048_576


@dataclass(frozen=True)
class SizeRange:
    """Inclusive bounds in bytes of one encoded line, newline included."""

    name: str
    low: int
    high: int

    def __str__(self) -> str:
        return self.name


SIZE_CLASSES: dict[str, SizeRange] = {
    # A typical access or login line.
    "small": SizeRange("small", MIN_LINE_BYTES, 480),
    # A line with a short stack trace.
    "medium": SizeRange("medium", 1024, 2048),
    # The largest line a single write is guaranteed to deliver whole under concurrency.
    "pipe_buf": SizeRange("pipe_buf", PIPE_BUF, PIPE_BUF),
    # Above PIPE_BUF and up to the default capacity: writes are allowed but no longer atomic.
    "over_pipe_buf": SizeRange("over_pipe_buf", PIPE_BUF + 1, DEFAULT_PIPE_CAPACITY),
    # Larger than a default pipe: one write cannot complete until the reader drains the pipe.
    "over_capacity": SizeRange("over_capacity", DEFAULT_PIPE_CAPACITY + 1, MAX_LINE_BYTES),
}

_EXPLICIT = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_size(text: str) -> SizeRange:
    """Turn a class name or an explicit MIN-MAX into a SizeRange, with a clear error for anything else."""
    key = text.strip().lower().replace("-", "_")
    if key in SIZE_CLASSES:
        return SIZE_CLASSES[key]
    match = _EXPLICIT.match(text)
    if not match:
        raise ValueError(
            f"size {text!r} is neither a class ({', '.join(SIZE_CLASSES)}) nor MIN-MAX in bytes such as 500-900"
        )
    low, high = int(match.group(1)), int(match.group(2))
    if low > high:
        raise ValueError(f"size {text!r}: MIN {low} is larger than MAX {high}; write it as {high}-{low}")
    if low < MIN_LINE_BYTES:
        raise ValueError(f"size {text!r}: an event line needs at least {MIN_LINE_BYTES} bytes; raise MIN")
    if high > MAX_LINE_BYTES:
        raise ValueError(f"size {text!r}: lines above {MAX_LINE_BYTES} bytes are not supported; lower MAX")
    return SizeRange(f"{low}-{high}", low, high)
