"""SIGINT and SIGTERM on the harness: the first stops the load and lets the run drain, the second skips the drain."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import gevent
import gevent.event

from loadtests.options import EXIT_INTERRUPTED

log = logging.getLogger("namedpiper")


class Interrupt:
    """The interruption state of the harness process, set from signal handlers and read by the run."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.count = 0
        # Set by the second signal: stop waiting for lines to land, hurry the collector, clean up.
        self.hurry = gevent.event.Event()
        self._on_first: Callable[[], None] | None = None

    def install(self, on_first: Callable[[], None]) -> None:
        """Handle SIGINT and SIGTERM in greenlets from now on (no KeyboardInterrupt anywhere).

        on_first runs after the first SIGINT and stops the load the way --run-time does. For SIGTERM, Locust's
        own handler runs too and quits; the run finishes inside Locust's quitting event either way.
        """
        self._on_first = on_first
        gevent.signal_handler(signal.SIGINT, self.received, signal.SIGINT)
        gevent.signal_handler(signal.SIGTERM, self.received, signal.SIGTERM)

    def note(self, name: str) -> None:
        """Record an interruption that did not come through received() (Locust quitting on its own signal)."""
        if self.signal_name is None:
            self.signal_name = name

    def received(self, signum: int) -> None:
        """A signal arrived."""
        name = signal.Signals(signum).name
        self.count += 1
        if self.count == 1:
            self.note(name)
            log.warning(
                "%s: stopping the load; a run under way drains (at most --drain-timeout), gives its verdict "
                "and exits %s; send it again to skip the drain",
                name,
                EXIT_INTERRUPTED,
            )
            if signum == signal.SIGINT and self._on_first is not None:
                gevent.spawn(self._on_first)
            return
        if not self.hurry.is_set():
            log.warning("%s again: skipping the drain; stopping the collector and the database", name)
        self.hurry.set()
