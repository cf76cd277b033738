"""The reference collector (reference/collector) as the harness starts it: from --collector-cmd."""

from __future__ import annotations

import logging

from loadtests.adapters.base import Adapter, Context, Launch, dsn_environment, shown, template_argv
from reference.dsn import redact

log = logging.getLogger(__name__)

# --collector-cmd's default: no {dsn}, the collector reads NAMEDPIPER_DSN (a command line is world-readable).
DEFAULT_COMMAND = "{python} -m reference.collector --fifo {fifo} --stats-interval 5"


class Reference(Adapter):
    """The reference collector, or any command given with --collector-cmd (ready once it opens the FIFO)."""

    name = "reference"
    readiness = "fifo"

    def __init__(self, command: str = DEFAULT_COMMAND) -> None:
        self.command = command

    def launch(self, ctx: Context) -> Launch:
        """The command template with the run's FIFO, journal folder and interpreter; the DSN in the environment."""
        command = self.command
        pipe_size = int(ctx.option("pipe_size", 0) or 0)
        if pipe_size and "reference.collector" in command:
            command += f" --pipe-size {pipe_size}"
        if "{dsn}" in command and redact(ctx.dsn) != ctx.dsn:
            log.warning("--collector-cmd puts a DSN with a password on the collector's command line, where every "
                        "local user can read it; drop {dsn}: the collector gets it in NAMEDPIPER_DSN")
        argv = template_argv(command, ctx)
        return Launch(argv=argv, env=dsn_environment(ctx.dsn), shown=shown(argv))
