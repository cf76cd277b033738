"""The harness starts the collector with the DSN in its environment, never on its command line."""

from __future__ import annotations

from loadtests.lifecycle import CollectorProcess
from loadtests.options import DEFAULT_COLLECTOR_CMD

DSN = "postgresql://loader:s3cret@db.example/logs"


class TestDefaultCollectorCommand:
    """The default --collector-cmd keeps the password out of /proc/PID/cmdline."""

    def test_the_password_is_in_the_environment_only(self, tmp_path):
        """No argument holds the password; NAMEDPIPER_DSN of the child does."""
        proc = CollectorProcess(DEFAULT_COLLECTOR_CMD, str(tmp_path / "f"), DSN, tmp_path / "collector.log")
        assert not any("s3cret" in arg for arg in proc.argv)
        assert proc.env["NAMEDPIPER_DSN"] == DSN
