"""Command lines whose every option may also come from an environment variable, through configargparse."""

from __future__ import annotations

from typing import Any

import configargparse

# Prefix of the variables of the reference programs; the harness's own options use NAMEDPIPER_<NAME>, so the
# collector and emitter it starts as children never pick up one of the harness's settings by accident.
ENV_PREFIX = "NAMEDPIPER_"


def env_parser(prog: str, description: str | None) -> configargparse.ArgumentParser:
    """An argument parser whose options name their environment variable in --help."""
    return configargparse.ArgumentParser(prog=prog, description=description)


def env_name(program: str, option: str) -> str:
    """The variable of one option: NAMEDPIPER_COLLECTOR_BATCH_ROWS for ("collector", "--batch-rows")."""
    return f"{ENV_PREFIX}{program.upper()}_{option.lstrip('-').upper().replace('-', '_')}"


def add_env_option(target: Any, program: str, *names: str, env_var: str | None = None, **kwargs: Any) -> None:
    """Add an option to a parser or group with its environment variable (the given one, or the program's)."""
    long_name = next(n for n in names if n.startswith("--"))
    target.add_argument(*names, env_var=env_var or env_name(program, long_name), **kwargs)
