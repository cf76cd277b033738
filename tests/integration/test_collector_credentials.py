"""The collector's DSN: a password on its command line is warned about, --dsn-file keeps it off."""

from __future__ import annotations

import os

RUN_PREDICATE = "data->'_np'->>'run' = %s"
# The embedded server trusts local connections, so any password is accepted: it only has to be visible.
PASSWORD = "notreallysecret"


class TestDsnOnTheCommandLine:
    """A DSN with a password given as an argument works, with one warning, and the password is never logged."""

    def test_a_password_argument_is_warned_about(self, collector, dsn, fifo_path, run_emitter, wait_for_rows):
        """--dsn 'password=...' logs a warning naming /proc/PID/cmdline and the alternatives."""
        proc = collector(fifo_path, f"{dsn} password={PASSWORD}")
        run_emitter(fifo_path, "--count", "500", "--run-id", "pwdarg")
        wait_for_rows(dsn, RUN_PREDICATE, 500, params=("pwdarg",))
        assert proc.stop() == 0
        log = proc.log()
        assert f"/proc/{proc.pid}/cmdline" in log
        assert "--dsn-file" in log
        assert PASSWORD not in log


class TestDsnFile:
    """--dsn-file reads the DSN from a file only its owner can read."""

    def test_the_dsn_comes_from_the_file(self, collector, dsn, fifo_path, tmp_path, run_emitter, wait_for_rows):
        """A 0600 file with the DSN: the collector loads into that database and warns about nothing."""
        secret = tmp_path / "dsn"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, f"{dsn} password={PASSWORD}\n".encode())
        os.close(fd)
        proc = collector(fifo_path, "", "--dsn-file", str(secret))
        run_emitter(fifo_path, "--count", "500", "--run-id", "dsnfile")
        wait_for_rows(dsn, RUN_PREDICATE, 500, params=("dsnfile",))
        assert proc.stop() == 0
        assert "cmdline" not in proc.log()
        assert PASSWORD not in proc.log()

    def test_a_file_others_can_read_is_refused(self, collector, fifo_path, tmp_path):
        """A 0644 DSN file: exit 2 and the chmod that fixes it."""
        secret = tmp_path / "dsn"
        secret.write_text("dbname=x password=y\n")
        secret.chmod(0o644)
        proc = collector(fifo_path, "", "--dsn-file", str(secret), ready=None)
        assert proc.wait(20) == 2
        assert f"chmod 600 {secret}" in proc.log()
