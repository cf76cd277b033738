"""What an adapter tells the harness about one kind of collector: how to start it, see it ready, stop it, read it."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from reference.dsn import DSN_ENV, redact

# The drain's quiet limit for collectors that write continuously: nothing landed for 3 s means nothing more will
# (the reference collector commits at least every second while it holds lines).
DEFAULT_DRAIN_QUIET_S = 3.0
# SIGTERM gives a collector this long to drain the pipe and flush before SIGKILL (a large batch on a slow disk).
DEFAULT_STOP_TIMEOUT_S = 60.0


@dataclass
class Launch:
    """One collector start: its argument list, environment, and the command line as shown (no secret in it)."""

    argv: list[str]
    env: dict[str, str]
    shown: str
    # Files that hold the collector's secrets or state, kept in the run's folder (for the report's reader).
    files: dict[str, str] = field(default_factory=dict)
    # Where the collector serves Prometheus metrics, which the timeline scrapes (None: it serves none).
    metrics_url: str | None = None


@dataclass
class StopPolicy:
    """How the harness stops this collector at the end of a run: SIGTERM, SIGKILL after timeout_s."""

    timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    # Before the signal, wait this long at most for the collector's own queue (counters) to empty: a collector that
    # drops its queue at SIGTERM would otherwise be blamed for the harness's impatience.
    wait_queue_empty_s: float = 0.0


@dataclass
class Context:
    """What a run gives the adapter: the FIFO, the database, the run's folder and the harness options."""

    fifo: str
    dsn: str
    run_dir: Path
    options: object = None

    def option(self, name: str, default):
        """A harness option, default when the options lack it (tests, the benchmark)."""
        value = getattr(self.options, name, None)
        return default if value is None else value


class Adapter:
    """A kind of collector the harness can drive; subclasses fill in the parts that differ."""

    name = "base"
    # Readiness strategy (see readiness.py): "fifo", "probe", "sql:CONDITION" or "cmd:COMMAND".
    readiness = "fifo"
    drain_quiet_s = DEFAULT_DRAIN_QUIET_S
    stop_policy = StopPolicy()
    # Whether bad lines end up in logs_rejected; when not, the verdict explains losses from logs alone.
    keeps_rejected = True

    def launch(self, ctx: Context) -> Launch:
        """The command that starts the collector on ctx.fifo, writing into ctx.dsn."""
        raise NotImplementedError

    def ready_command(self, ctx: Context) -> list[str] | None:
        """The adapter's own readiness command ("cmd:" strategy without a command), None when it has none."""
        return None

    def counters(self, ctx: Context) -> dict[str, int] | None:
        """The collector's own counters (read, parse_dropped, written, queued ...), None when it exposes none."""
        return None

    def exit_meaning(self, status: int) -> str:
        """What the collector means by this exit status, for the verdict ("" when the adapter does not know)."""
        return ""


def template_argv(template: str, ctx: Context) -> list[str]:
    """A command template's argument list: {fifo}, {dsn}, {journal} (a folder in the run's folder), {python}."""
    import sys

    return [
        part.format(fifo=ctx.fifo, dsn=ctx.dsn, python=sys.executable, journal=str(ctx.run_dir / "journal"))
        for part in shlex.split(template)
    ]


def dsn_environment(dsn: str) -> dict[str, str]:
    """The harness's environment plus the DSN in NAMEDPIPER_DSN: a password never goes on a command line."""
    return {**os.environ, DSN_ENV: dsn}


def shown(argv: list[str]) -> str:
    """argv as one shell line with any DSN password masked."""
    return " ".join(shlex.quote(redact(a)) for a in argv)


def drain_quiet_s(options, adapter: Adapter | None) -> float:
    """--drain-quiet, else the collector adapter's default (syslog-ng retries the database in seconds, not 3)."""
    if getattr(options, "drain_quiet", None) is not None:
        return float(options.drain_quiet)
    return float(adapter.drain_quiet_s) if adapter is not None else DEFAULT_DRAIN_QUIET_S
