"""Where the collector's DSN comes from, and a warning when its password is visible to every local user."""

from __future__ import annotations

import os
import stat

from reference.dsn import redact

ARGUMENT_DSN_WARNING = (
    "the --dsn argument holds a password, which every local user can read in /proc/{pid}/cmdline; pass the DSN "
    "in NAMEDPIPER_DSN or --dsn-file FILE (mode 600), or the password in PGPASSFILE (~/.pgpass)"
)


class DsnFileError(ValueError):
    """The --dsn-file cannot be used."""


def has_password(dsn: str) -> bool:
    """True when dsn carries a password (URI user:password@, ?password=, or password=... keyword)."""
    return redact(dsn) != dsn


def dsn_given_as_argument(argv: list[str]) -> bool:
    """True when the command line itself holds --dsn (not the environment's default)."""
    return any(arg == "--dsn" or arg.startswith("--dsn=") for arg in argv)


def read_dsn_file(path: str) -> str:
    """The DSN in path (its first non-empty line); the file must be readable by its owner only, like ~/.pgpass."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DsnFileError(f"cannot read --dsn-file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise DsnFileError(
                f"--dsn-file {path} has mode {stat.S_IMODE(st.st_mode):04o}: other users can read "
                f"the password in it; run `chmod 600 {path}`"
            )
        with os.fdopen(os.dup(fd), encoding="utf-8") as f:
            text = f.read()
    finally:
        os.close(fd)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    raise DsnFileError(f"--dsn-file {path} is empty; write the DSN on its first line")
