"""The DSN's environment variable, and showing a PostgreSQL connection string without its password."""

from __future__ import annotations

from urllib.parse import quote

from psycopg2 import ProgrammingError
from psycopg2.extensions import make_dsn, parse_dsn

# The one environment variable that names the database, for the collector and the harness alike.
DSN_ENV = "NAMEDPIPER_DSN"
# libpq reads these itself: any of them set means the user chose a server without a DSN.
LIBPQ_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE", "PGDATABASE")
MASK = "***"
# What an unparsable DSN is shown as: libpq's own error could echo a piece of it, the password included.
UNPARSABLE = "(an invalid DSN, not shown)"
# What replaces libpq's message about a DSN it cannot parse: the message quotes the offending piece of the DSN,
# which may be part of the password (`invalid percent-encoded token: "s3cret%ZZ"`).
UNPARSABLE_MESSAGE = (
    "libpq cannot parse the DSN (its message is not shown: it may quote the password); check its syntax"
)


def _password(dsn: str) -> str | None:
    """The password libpq would send for dsn; raises ProgrammingError when libpq cannot parse dsn."""
    return parse_dsn(dsn).get("password") or None


def parsable(dsn: str) -> bool:
    """True when libpq can parse dsn (a URI or key=value pairs)."""
    try:
        parse_dsn(dsn)
    except ProgrammingError:
        return False
    return True


def _could_hold_password(text: str) -> bool:
    """True for a text with a URI's user info or a password keyword: one libpq cannot parse is then never shown."""
    return "://" in text or "password" in text.lower()


def redact(dsn: str) -> str:
    """Return dsn with any password replaced by ***, as libpq reads it; a DSN without one is shown unchanged.

    A DSN with a password comes back in key=value form (psycopg2's make_dsn), whatever form it was given in.
    """
    try:
        password = _password(dsn)
    except ProgrammingError:
        # Not a DSN libpq can read: a text without a URI's user info or a password keyword cannot hold a password
        # (a command line's other arguments, say); anything else is not shown.
        return UNPARSABLE if _could_hold_password(dsn) else dsn
    if password is None:
        return dsn
    return make_dsn(dsn, password=MASK)


def _spellings(password: str) -> list[str]:
    """The ways a password can appear in a text: as is, percent-encoded (URIs), quoted with escapes (key=value)."""
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    forms = {password, quote(password, safe=""), quote(password), escaped}
    return sorted(forms, key=len, reverse=True)  # longest first: a short form must not split a longer one


def scrub(text: str, dsn: str) -> str:
    """Remove the password of dsn from an arbitrary text such as an exception message."""
    try:
        password = _password(dsn)
    except ProgrammingError:
        if dsn and _could_hold_password(dsn):
            return UNPARSABLE_MESSAGE  # libpq's message quotes a piece of the DSN, and it may be the password
        return text
    if password is None:
        return text
    for form in _spellings(password):
        text = text.replace(form, MASK)
    return text
