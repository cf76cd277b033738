"""Where the collector's batches go: the sink protocol the main loop programs against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from reference.collector.model import Batch


class SinkRefused(RuntimeError):
    """The destination refuses the data for a reason retrying cannot fix (the message says which, and the fix)."""


@dataclass
class SinkCounters:
    """Totals of what the sink committed."""

    rows_written: int = 0
    rejected: int = 0
    batches: int = 0
    lines_stored: int = 0  # lines read whose rows or rejections are committed (Batch.lines summed)


class Sink(Protocol):
    """Takes batches, commits them in order, and says how far it got.

    A sink may work in the background: it re-raises its first error in the caller's next call
    (submit or raise_if_failed), so nothing fails silently.
    """

    counters: SinkCounters

    def describe(self) -> str:
        """Where the batches go, for the start-up log line (no password)."""

    def submit(self, batch: Batch) -> None:
        """Queue a batch for committing; blocks while the sink has no room (back-pressure)."""

    @property
    def has_room(self) -> bool:
        """True when submit would not wait."""

    @property
    def taking(self) -> bool:
        """False while the destination fails (between a failed attempt and the next success)."""

    @property
    def ready(self) -> bool:
        """True once the sink knows its committed offset (at once for a sink without offsets)."""

    @property
    def committed(self) -> int | None:
        """The stream offset up to which every row is committed (None for a source without offsets)."""

    @property
    def queued(self) -> int:
        """Batches submitted but not committed yet."""

    @property
    def alive(self) -> bool:
        """False once the sink stopped (closed, failed, or gave up on its destination at shutdown)."""

    def raise_if_failed(self) -> None:
        """Raise the sink's first error, if it met one (SinkRefused when the destination refuses the data)."""

    def release(self) -> None:
        """From now on, give up rather than wait for a destination that does not answer (the source keeps the rest)."""

    def close(self) -> None:
        """Commit everything submitted (or give it up as release() or a second stop request allows), then stop."""

    def abort(self) -> None:
        """Stop without committing what is queued (the collector is failing anyway)."""
