"""Group encoded lines into writes: whole lines only, each write at most PIPE_BUF unless one line is larger."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from reference.fifo import PIPE_BUF

# 0 lines per write means: as many whole lines as fit in one atomic write.
PACK_TO_PIPE_BUF = 0


def frames(
    lines: Iterable[bytes], lines_per_write: int = PACK_TO_PIPE_BUF, limit: int = PIPE_BUF
) -> Iterator[list[bytes]]:
    """Yield lists of lines, one list per write.

    With lines_per_write == 0, whole lines are packed while the write stays within limit, and a line larger
    than limit travels in a write of its own (the kernel accepts it, but no longer promises that it arrives
    untorn). With N > 0, N lines go into each write whatever their size.
    """
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if lines_per_write:
            batch.append(line)
            if len(batch) == lines_per_write:
                yield batch
                batch = []
            continue
        if batch and size + len(line) > limit:
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        yield batch
