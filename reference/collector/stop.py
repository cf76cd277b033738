"""A stop request shared by the signal handler, the main loop and the sink's thread."""

from __future__ import annotations

import threading


class StopRequest:
    """First request: finish, drain, flush. A second one: also give up lines a missing database cannot take.

    Set from a signal handler, so the main thread only ever reads it (is_set); waiting on it from the main thread
    could deadlock on the event's lock if the signal arrived mid-wait.
    """

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._insistent = threading.Event()

    def request(self, signum: int = 0, frame: object = None) -> None:
        """Signal handler: the first call asks for a clean stop, any later one insists."""
        if self._requested.is_set():
            self._insistent.set()
        self._requested.set()

    @property
    def requested(self) -> bool:
        """True once a stop was asked for."""
        return self._requested.is_set()

    @property
    def insistent(self) -> bool:
        """True once a stop was asked for twice."""
        return self._insistent.is_set()
