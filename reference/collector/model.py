"""What flows from the collector's source to its sink: batches of COPY rows and rejected lines."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Python's bytes object costs this much beside its data; counted so that a batch of many tiny rejections is
# bounded too (sys.getsizeof(b"") is 33 on CPython 3.11 x86_64, a list slot 8 more).
ITEM_OVERHEAD_BYTES = 41
# A batch notes where a read's rows end (Batch.cuts) only once the rows since its last note reach this many bytes:
# a trickle of one-line reads would otherwise add a note (about 120 bytes, not counted in the batch's size) a row.
# With this, a 4 MiB batch has at most about 64 notes, and COPY's 1 MiB pieces are cut from a few dozen notes
# (a read larger than a piece is cut row by row).
CUT_MIN_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Rejection:
    """A line that goes to logs_rejected: the reason, its first bytes, its full length and the SHA-256 of all of it.

    digest is None when the whole line never was in memory at once (an over-long line is only ever held in part).
    """

    reason: str
    raw: bytes
    length: int
    digest: bytes | None

    @classmethod
    def of(cls, reason: str, line: bytes, keep_bytes: int | None = None) -> Rejection:
        """The rejection of a whole line, keeping at most keep_bytes of it (None: all of it)."""
        kept = line if keep_bytes is None or len(line) <= keep_bytes else line[:keep_bytes]
        return cls(reason, kept, len(line), hashlib.sha256(line).digest())

    @property
    def size(self) -> int:
        """Bytes this rejection holds in memory, as the batch limits count them."""
        return len(self.raw) + len(self.reason) + ITEM_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """When a batch is full: rows and rejections together, and the bytes they hold."""

    items: int
    size: int


@dataclass
class Batch:
    """COPY rows and rejected lines to commit in one transaction; each line is held once, as its row or rejection."""

    rows: list[bytes] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    size: int = 0  # the rows' bytes plus the rejections' sizes: what the batch limits count
    lines: int = 0  # lines read that this batch stands for (a glued fragment and its event are one line)
    # With a journal: the stream offsets of the batch's first byte and just past its last line; the database's
    # committed offset moves from the one to the other in the batch's transaction.
    start_offset: int | None = None
    end_offset: int | None = None
    # Where each read's rows end: (rows so far, their bytes so far). COPY cuts its pieces there (copytext.RowStream)
    # instead of measuring every row again in the writer thread, where the rows are no longer in the CPU's caches.
    cuts: list[tuple[int, int]] = field(default_factory=list)
    row_bytes: int = 0
    cut_min_bytes: int = CUT_MIN_BYTES

    def add_row(self, row: bytes) -> None:
        """Add one COPY row (newline included)."""
        self.rows.append(row)
        self.row_bytes += len(row)
        self.size += len(row) + ITEM_OVERHEAD_BYTES
        self._cut()

    def add_rows(self, rows: list[bytes]) -> None:
        """Add a read's COPY rows (newlines included) at once."""
        if not rows:
            return
        length = sum(map(len, rows))
        self.rows += rows
        self.row_bytes += length
        self.size += length + ITEM_OVERHEAD_BYTES * len(rows)
        self._cut()

    def _cut(self) -> None:
        """Note that the rows so far end here; the last note moves instead while its rows are under cut_min_bytes."""
        cuts = self.cuts
        if cuts and cuts[-1][1] - (cuts[-2][1] if len(cuts) > 1 else 0) < self.cut_min_bytes:
            cuts[-1] = (len(self.rows), self.row_bytes)
        else:
            cuts.append((len(self.rows), self.row_bytes))

    def add_rejection(self, rejection: Rejection) -> None:
        """Add one rejected line."""
        self.rejections.append(rejection)
        self.size += rejection.size

    def full(self, limits: BatchLimits) -> bool:
        """True when either limit is reached."""
        return len(self) >= limits.items or self.size >= limits.size

    def __len__(self) -> int:
        return len(self.rows) + len(self.rejections)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one batch did to the database."""

    rows: int
    rejected: int
