"""Shipped collector adapters, by the name --collector takes; see docs/adapters.md to add one."""

from __future__ import annotations

from loadtests.adapters.base import Adapter, Context, Launch, StopPolicy
from loadtests.adapters.reference import DEFAULT_COMMAND, Reference
from loadtests.adapters.syslog_ng import SyslogNg

ADAPTERS: dict[str, type[Adapter]] = {"reference": Reference, "syslog-ng": SyslogNg}
DEFAULT_ADAPTER = "reference"

__all__ = ["ADAPTERS", "DEFAULT_ADAPTER", "Adapter", "Context", "Launch", "StopPolicy", "choose"]


def choose(name: str, collector_cmd: str) -> Adapter:
    """The adapter for --collector name and --collector-cmd; ValueError naming the fix when they disagree.

    A scenario's --collector-cmd that runs the reference collector (db_outage adds --journal) yields to another
    --collector; any other command with another --collector is ambiguous.
    """
    if name not in ADAPTERS:
        raise ValueError(
            f"--collector {name!r}: no such adapter; shipped: {', '.join(sorted(ADAPTERS))} "
            "(or --collector-cmd for any other command)"
        )
    if name == "reference":
        return Reference(collector_cmd.strip() or DEFAULT_COMMAND)
    command = collector_cmd.strip()
    if command and command.lower() != "none" and "reference.collector" not in command:
        raise ValueError(f"--collector {name} and --collector-cmd {command!r} both name a collector; give one")
    return ADAPTERS[name]()
