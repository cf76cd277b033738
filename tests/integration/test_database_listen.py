"""The embedded database listening on TCP for fleet hosts: off by default, password on every TCP connection."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg2
import pytest
from harness import free_port

from loadtests.database import EmbeddedPostgres


@pytest.fixture
def data_dir():
    """A data folder of its own (the session's server keeps its own), deleted after the test."""
    path = Path(tempfile.mkdtemp(prefix="np-listen-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class TestListening:
    """--db-listen: the server takes TCP connections on the given address, each with the generated password."""

    def test_off_by_default(self, data_dir):
        """Without listen: no TCP address in postmaster.pid, no remote DSN."""
        server = EmbeddedPostgres(data_dir)
        server.start()
        try:
            info = server._postmaster()
            assert not info.hostname
            assert server.remote_dsn is None
        finally:
            server.stop()

    def test_tcp_needs_the_password(self, data_dir):
        """The remote DSN connects over TCP; the same address without or with a wrong password is refused; the
        unix socket still works; a restart keeps the password."""
        port = free_port()
        server = EmbeddedPostgres(data_dir, listen=("127.0.0.1", port))
        server.start()
        try:
            remote = server.remote_dsn
            assert remote is not None
            assert f"@127.0.0.1:{port}/" in remote
            psycopg2.connect(remote, connect_timeout=5).close()
            psycopg2.connect(server.dsn, connect_timeout=5).close()  # the harness's own unix socket
            for bad in (
                f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                f"host=127.0.0.1 port={port} user=postgres dbname=postgres password=wrong",
            ):
                with pytest.raises(psycopg2.OperationalError, match="password"):
                    psycopg2.connect(bad, connect_timeout=5)
            password = server.password
            server.stop()
            server.start()  # the database-outage fault's restart
            assert server.password == password
            psycopg2.connect(server.remote_dsn, connect_timeout=5).close()
        finally:
            server.stop()
