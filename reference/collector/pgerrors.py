"""What a PostgreSQL error means for the collector, judged by its SQLSTATE (pgcode), never by its Python class."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import psycopg2
import psycopg2.errorcodes


class Kind(enum.Enum):
    """How the collector answers an error."""

    CONNECTION = "connection"  # the session is gone: reconnect, with backoff
    CANCELLED = "cancelled"  # statement_timeout, lock_timeout, a cancel: retry on the same connection, with backoff
    RESOURCES = "resources"  # disk full, out of memory, too many connections on the server: retry, with backoff
    TRANSIENT = "transient"  # serialization failure, deadlock, an I/O or internal error: retry, with backoff
    DATA = "data"  # this row is wrong: bisect the batch, reject the row
    REFUSED = "refused"  # privileges, schema, read-only server, credentials: retrying cannot help; stop


# SQLSTATE classes (the first two characters) and single codes, per
# https://www.postgresql.org/docs/current/errcodes-appendix.html. Single codes are looked up first.
_CODES = {
    "57014": Kind.CANCELLED,  # query_canceled: statement_timeout, or pg_cancel_backend
    "55P03": Kind.CANCELLED,  # lock_not_available: lock_timeout
    "57P01": Kind.CONNECTION,  # admin_shutdown: pg_terminate_backend, server stop
    "57P02": Kind.CONNECTION,  # crash_shutdown
    "57P03": Kind.CONNECTION,  # cannot_connect_now: the server is starting
    "57P05": Kind.CONNECTION,  # idle_session_timeout
    "25P03": Kind.CONNECTION,  # idle_in_transaction_session_timeout: the server ended the session
    "25006": Kind.REFUSED,  # read_only_sql_transaction: a standby, or default_transaction_read_only
    "3D000": Kind.REFUSED,  # invalid_catalog_name: the database does not exist (any more)
    "55000": Kind.REFUSED,  # object_not_in_prerequisite_state: e.g. TimescaleDB in the database, not preloaded
}
_CLASSES = {
    "08": Kind.CONNECTION,  # connection_exception
    "53": Kind.RESOURCES,  # insufficient_resources: disk_full, out_of_memory, too_many_connections
    "40": Kind.TRANSIENT,  # transaction_rollback: serialization failure, deadlock
    "58": Kind.TRANSIENT,  # system_error: I/O error on the server
    "XX": Kind.TRANSIENT,  # internal_error
    "22": Kind.DATA,  # data_exception
    "23": Kind.DATA,  # integrity_constraint_violation
    "42": Kind.REFUSED,  # syntax_error_or_access_rule_violation: privileges, missing table or column
    "0A": Kind.REFUSED,  # feature_not_supported
    "28": Kind.REFUSED,  # invalid_authorization_specification
    "3F": Kind.REFUSED,  # invalid_schema_name
    "2B": Kind.REFUSED,  # dependent_privilege_descriptor_still_exists
    "44": Kind.REFUSED,  # with_check_option_violation
}

# What to do about a refused write, by SQLSTATE (then by class).
_FIXES = {
    "42501": "GRANT INSERT ON logs, logs_rejected TO the collector's role (with --journal also SELECT, INSERT, "
    "UPDATE ON np_collector_offsets)",
    "42703": "the logs tables no longer match reference/schema.sql: restore the column it names (the collector "
    "creates missing tables at start but never alters an existing one)",
    "42P01": "the logs tables no longer match reference/schema.sql: re-create the table it names (start the "
    "collector without --no-schema to create missing tables)",
    "42804": "a column's type no longer matches reference/schema.sql: restore the type it names",
    "25006": "the server accepts no writes (a standby, or default_transaction_read_only): point the DSN at the "
    "primary or lift the read-only setting",
    "3D000": "the database was dropped or renamed: create it or fix the DSN",
    "55000": "provide what the message names (for TimescaleDB: shared_preload_libraries = 'timescaledb' in "
    "postgresql.conf, then restart the server)",
}
_CLASS_FIXES = {
    "28": "fix the credentials (the password or pg_hba.conf changed)",
    "42": "fix the schema or the role's privileges to match reference/schema.sql",
}
DEFAULT_FIX = "fix the database or the role named in the DSN; retrying the same statement cannot succeed"


@dataclass(frozen=True)
class Failure:
    """One classified error: its kind, its SQLSTATE (None when the server never answered) and its first line."""

    kind: Kind
    sqlstate: str | None
    message: str

    @property
    def code_text(self) -> str:
        """'SQLSTATE 57014 query_canceled', or 'no SQLSTATE' for a failure below the protocol."""
        if self.sqlstate is None:
            return "no SQLSTATE"
        name = psycopg2.errorcodes.lookup(self.sqlstate) if self.sqlstate in _KNOWN_CODES else "unknown"
        return f"SQLSTATE {self.sqlstate} {name.lower()}"

    @property
    def fix(self) -> str:
        """What the operator can do about a refused write."""
        code = self.sqlstate or ""
        return _FIXES.get(code) or _CLASS_FIXES.get(code[:2]) or DEFAULT_FIX


_KNOWN_CODES = {
    value
    for name, value in vars(psycopg2.errorcodes).items()
    if name.isupper() and isinstance(value, str) and len(value) == 5
}


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def classify(exc: psycopg2.Error) -> Failure:
    """Classify a psycopg2 error by its SQLSTATE; one without a SQLSTATE is a lost connection.

    psycopg2 raises QueryCanceledError (a statement_timeout) as an OperationalError, like a lost connection:
    judged by class, a timeout became a reconnect storm. The SQLSTATE tells them apart.
    """
    code = getattr(exc, "pgcode", None)
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    message = primary.strip().splitlines()[0] if primary and primary.strip() else first_line(exc)
    if not code:
        # libpq failed below the protocol (server closed the connection, no route, connection already closed);
        # anything else without a SQLSTATE happened in psycopg2 itself and is retried like an unknown error.
        lost = isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
        return Failure(Kind.CONNECTION if lost else Kind.TRANSIENT, None, message)
    kind = _CODES.get(code) or _CLASSES.get(code[:2]) or Kind.TRANSIENT
    return Failure(kind, code, message)
