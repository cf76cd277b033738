"""While a run drains and verifies: one namedpiper progress line every few seconds, and no Locust stats tables."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from loadtests.timeline import pipe_fill

log = logging.getLogger("namedpiper")

# One line every 2 s: often enough to see a drain move, rarely enough to read (Locust prints its tables as often).
PROGRESS_INTERVAL_S = 2.0
# Locust prints its periodic stats tables through this logger; they repeat unchanged once the users stopped.
LOCUST_STATS_LOGGER = "locust.stats_logger"


class _Mute(logging.Filter):
    """Drops every record (Locust's periodic tables while the run drains)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def locust_tables_muted() -> Iterator[None]:
    """Silence Locust's repeated stats tables inside the block (its final summary prints later, as usual)."""
    logger = logging.getLogger(LOCUST_STATS_LOGGER)
    mute = _Mute()
    logger.addFilter(mute)
    try:
        yield
    finally:
        logger.removeFilter(mute)


class DrainProgress:
    """Turns drain polls into a progress line at most every PROGRESS_INTERVAL_S."""

    def __init__(
        self, run_id: str, sent: int, timeout_s: float, fifo: str | None, interval_s: float = PROGRESS_INTERVAL_S
    ) -> None:
        self.run_id, self.sent, self.fifo, self.interval_s = run_id, sent, fifo, interval_s
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self._last_at = self.started
        self._last_landed: int | None = None
        self.latest = ""  # the last line, shown by the web UI

    def line(self, landed: int, rejected: int, now: float) -> str:
        """The progress line for this poll."""
        rate = 0.0
        if self._last_landed is not None and now > self._last_at:
            rate = (landed - self._last_landed) / (now - self._last_at)
        fill = pipe_fill(self.fifo) if self.fifo else None
        pending = fill[0] if fill is not None else None
        in_pipe = "no reader on the pipe" if pending is None else f"{pending} bytes still in the pipe"
        share = f" ({100 * landed / self.sent:.1f}%)" if self.sent else ""
        return (
            f"namedpiper: draining run {self.run_id}: {landed} of {self.sent} rows landed{share}, "
            f"{rejected} rejected, {rate:.0f} rows/s, {in_pipe}, "
            f"{max(0.0, self.deadline - now):.0f} s left of --drain-timeout"
        )

    def poll(self, landed: int, rejected: int) -> str | None:
        """Call on every drain poll; returns (and logs) a line when one is due."""
        now = time.monotonic()
        if self._last_landed is not None and now - self._last_at < self.interval_s:
            return None
        text = self.line(landed, rejected, now)
        self._last_at, self._last_landed = now, landed
        self.latest = text
        log.info("%s", text)
        return text

    def say(self, text: str) -> None:
        """A phase change (stopping the collector, verifying): logged and shown like a progress line."""
        self.latest = f"namedpiper: run {self.run_id}: {text}"
        log.info("%s", self.latest)
