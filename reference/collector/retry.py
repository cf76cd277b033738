"""How long to wait before trying the database again: capped exponential backoff, interruptible."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Quick first retries for a server restart, capped so an outage costs one attempt per 5 s.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# A waiting retry looks at its give-up test this often, so a stop request is honoured within this long.
GIVE_UP_POLL_S = 0.1


def never() -> bool:
    """Default give-up test: keep waiting."""
    return False


@dataclass
class Backoff:
    """Delays of first, 2 x first, 4 x first, ... up to maximum; reset() after a success."""

    first: float = RETRY_FIRST_S
    maximum: float = RETRY_MAX_S
    _next: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start again from the first delay."""
        self._next = self.first

    def next_delay(self) -> float:
        """The delay to wait now; the one after it doubles, up to the maximum."""
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def wait(self, give_up: Callable[[], bool] = never, sleep: Callable[[float], None] = time.sleep) -> bool:
        """Wait the next delay in short steps; return False as soon as give_up() turns true, else True."""
        deadline = time.monotonic() + self.next_delay()
        while (left := deadline - time.monotonic()) > 0:
            if give_up():
                return False
            sleep(min(GIVE_UP_POLL_S, left))
        return not give_up()
