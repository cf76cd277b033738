"""What a verdict records about how it was made: the options (secrets masked), UTC times and versions."""

from __future__ import annotations

import platform
from datetime import UTC, datetime

from reference import __version__
from reference.dsn import redact, scrub

# Locust's own options worth keeping next to the harness's: they shape the load.
LOCUST_OPTIONS = ("num_users", "spawn_rate", "run_time", "processes", "headless", "config", "locustfile")


def utc_now() -> str:
    """The current time in UTC, ISO 8601 with seconds: 2026-12-01T22:40:00Z."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def versions(server_version: str | None) -> dict[str, str | None]:
    """Versions of everything that shaped the run; server_version is PostgreSQL's (None when unknown)."""
    import locust

    return {
        "namedpiper": __version__,
        "locust": locust.__version__,
        "python": platform.python_version(),
        "postgresql": server_version,
        "kernel": platform.release(),
    }


def recorded_options(options, names: frozenset[str] | set[str]) -> dict:
    """The harness options (names) and Locust's load options, with the DSN's password masked everywhere."""
    dsn = getattr(options, "dsn", "") or ""
    out = {}
    for name in sorted({*names, *LOCUST_OPTIONS}):
        if not hasattr(options, name):
            continue
        value = getattr(options, name)
        if isinstance(value, str):
            value = redact(value) if name == "dsn" else scrub(value, dsn) if dsn else value
        out[name] = value
    return out
