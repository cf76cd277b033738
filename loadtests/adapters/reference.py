"""The reference collector (reference/collector) as the harness starts it: from --collector-cmd."""

from __future__ import annotations

import logging
import re
import socket

from loadtests.adapters.base import Adapter, Context, Launch, dsn_environment, shown, template_argv
from reference.dsn import redact

log = logging.getLogger(__name__)

# --collector-cmd's default: no {dsn}, the collector reads NAMEDPIPER_DSN (a command line is world-readable).
DEFAULT_COMMAND = "{python} -m reference.collector --fifo {fifo} --stats-interval 5"
# A --metrics-port in --collector-cmd: the harness scrapes that port instead of adding one.
METRICS_PORT = re.compile(r"--metrics-port[= ]+(\d+)")


def free_port() -> int:
    """A loopback TCP port free right now (the kernel's pick), for the collector's metrics."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics_url(command: str) -> str | None:
    """The metrics URL a collector command line asks for (--metrics-port N), None when it asks for none."""
    found = METRICS_PORT.search(command)
    if found is None or not int(found.group(1)):
        return None
    return f"http://127.0.0.1:{int(found.group(1))}/metrics"


# The reference collector's exit statuses (docs/collector.md, Exit status), as the verdict explains them.
EXIT_MEANINGS = {
    1: "an unexpected error: its traceback is in the collector's log",
    2: "it could not start: its log says why",
    3: "the database refused the writes (privileges or schema): its log names the cause and the fix",
    4: "lines read were not stored: the database could not take them within --stop-timeout, and there is no journal",
}


class Reference(Adapter):
    """The reference collector, or any command given with --collector-cmd (ready once it opens the FIFO)."""

    name = "reference"
    readiness = "fifo"

    def __init__(self, command: str = DEFAULT_COMMAND) -> None:
        self.command = command

    def exit_meaning(self, status: int) -> str:
        """The reference collector's meaning of status (nothing for another command)."""
        return EXIT_MEANINGS.get(status, "") if "reference.collector" in self.command else ""

    def launch(self, ctx: Context) -> Launch:
        """The command template with the run's FIFO, journal folder and interpreter; the DSN in the environment."""
        command = self.command
        pipe_size = int(ctx.option("pipe_size", 0) or 0)
        if pipe_size and "reference.collector" in command:
            command += f" --pipe-size {pipe_size}"
        if "{dsn}" in command and redact(ctx.dsn) != ctx.dsn:
            log.warning(
                "--collector-cmd puts a DSN with a password on the collector's command line, where every "
                "local user can read it; drop {dsn}: the collector gets it in NAMEDPIPER_DSN"
            )
        url = metrics_url(command)
        if url is None and "reference.collector" in command:  # the timeline scrapes the collector's own counters
            port = free_port()
            command += f" --metrics-port {port}"
            url = f"http://127.0.0.1:{port}/metrics"
        argv = template_argv(command, ctx)
        return Launch(argv=argv, env=dsn_environment(ctx.dsn), shown=shown(argv), metrics_url=url)
