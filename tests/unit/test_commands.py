"""Every command answers --version; the emitter reports a stop honestly; the collector explains a missing DSN."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from reference import __version__
from reference.collector import cli
from reference.fifo import ensure_fifo

COMMANDS = [
    "reference.emitter",
    "reference.collector",
    "reference.pipefacts",
    "loadtests",
    "loadtests.database",
    "loadtests.bench",
    "loadtests.fleet",
]
# The emitter starts (imports faker, builds its pool) within a few seconds even on a loaded machine.
START_S = 20


@pytest.mark.parametrize("module", COMMANDS)
class TestVersion:
    """`python -m MODULE --version` prints the project's version and exits 0."""

    def test_version(self, module):
        """The version line names namedpiper and its version."""
        done = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert f"namedpiper {__version__}" in done.stdout


def start_emitter(fifo, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "reference.emitter", "--fifo", str(fifo), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_for_stderr_text(proc: subprocess.Popen, text: bytes) -> bytes:
    """Read stderr lines until one contains text (the emitter logs each phase)."""
    seen = b""
    deadline = time.monotonic() + START_S
    assert proc.stderr is not None
    while text not in seen:
        assert time.monotonic() < deadline, seen
        seen += proc.stderr.readline()
    return seen


class TestEmitterStop:
    """A signal stops the emitter with its summary printed, and a short run exits non-zero."""

    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
    def test_stopped_while_waiting_for_the_fifo(self, tmp_path, signum):
        """Stopped before the FIFO appeared: a summary of nothing sent, exit status 3."""
        proc = start_emitter(tmp_path / "later.fifo", "--count", "10")
        try:
            wait_for_stderr_text(proc, b"does not exist yet")
            proc.send_signal(signum)
            out, _ = proc.communicate(timeout=START_S)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 3
        summary = orjson.loads(out.splitlines()[-1])
        assert summary["lines_sent"] == 0

    def test_stopped_before_its_count(self, tmp_path):
        """Stopped mid-run (the pipe full, no one reading): the summary is printed and the status is 3."""
        fifo = ensure_fifo(tmp_path / "fifo")
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads: the pipe fills up
        proc = start_emitter(fifo, "--count", "1000000")
        try:
            time.sleep(3)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=START_S)
        finally:
            proc.kill()
            proc.wait()
            os.close(reader)
        assert proc.returncode == 3
        summary = orjson.loads(out.splitlines()[-1])
        assert summary["lines_sent"] < 1_000_000


class TestCollectorWithoutDsn:
    """With no DSN anywhere, the collector says so and how to give one."""

    def test_no_dsn_at_all(self, tmp_path, monkeypatch, capsys):
        """No --dsn, no NAMEDPIPER_DSN, no PG* variable: exit 2, naming every way to give a database."""
        for name in ("NAMEDPIPER_DSN", *cli.LIBPQ_ENV):
            monkeypatch.delenv(name, raising=False)
        assert cli.main(["--fifo", str(tmp_path / "fifo"), "--dsn", ""]) == 2
        err = capsys.readouterr().err
        for needed in ("no database given", "--dsn", "NAMEDPIPER_DSN", "PGHOST", "python -m loadtests.database start"):
            assert needed in err
        assert not (tmp_path / "fifo").exists()
