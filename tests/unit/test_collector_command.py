"""The harness starts the collector with the DSN in its environment, never on its command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from loadtests.lifecycle import HarnessCollector
from loadtests.options import DEFAULT_COLLECTOR_CMD

DSN = "postgresql://loader:s3cret@db.example/logs"


class TestDefaultCollectorCommand:
    """The default --collector-cmd keeps the password out of /proc/PID/cmdline."""

    def test_the_password_is_in_the_environment_only(self, tmp_path):
        """No argument holds the password; NAMEDPIPER_DSN of the child does."""
        proc = HarnessCollector(DEFAULT_COLLECTOR_CMD, str(tmp_path / "f"), DSN, tmp_path / "collector.log")
        assert not any("s3cret" in arg for arg in proc.argv)
        assert proc.env["NAMEDPIPER_DSN"] == DSN


class TestUnparsableDsn:
    """A DSN libpq cannot parse ends the collector at once with status 2, never showing the DSN."""

    def test_exit_2_without_echoing_the_password(self, tmp_path):
        """`s3cret%ZZ` is a bad percent-encoding: libpq's own message would quote it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NAMEDPIPER_", "PG"))}
        env["NAMEDPIPER_DSN"] = "postgresql://loader:s3cret%ZZ@db.example/logs"
        done = subprocess.run(
            [sys.executable, "-m", "reference.collector", "--fifo", str(tmp_path / "f")],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 2, done.stderr
        assert "cannot parse the DSN" in done.stderr
        assert "NAMEDPIPER_DSN" in done.stderr
        assert "s3cret" not in done.stderr + done.stdout
        assert not (tmp_path / "f").exists()  # refused before anything was created


class TestWithoutTheCompiledParser:
    """Installed without a C compiler, the collector says so at start and how to fix it."""

    def test_the_collector_warns_and_names_the_fix(self, tmp_path):
        """A None in sys.modules makes the import fail as a missing build does; the warning comes, then SIGTERM."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NAMEDPIPER_", "PG"))}
        env["NAMEDPIPER_DSN"] = f"host={tmp_path} port=1 dbname=none connect_timeout=1"  # nothing answers there
        script = (
            "import sys; sys.modules['reference.collector._fastrows'] = None; "
            "from reference.collector.cli import main; sys.exit(main())"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", script, "--fifo", str(tmp_path / "f")],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        killer = threading.Timer(60, proc.kill)  # the loop below ends at EOF even if the warning never comes
        killer.start()
        try:
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if "compiled line parser is not built" in line:
                    break
            assert "install gcc and the Python headers" in "".join(seen).replace("\n", " "), seen
        finally:
            killer.cancel()
            proc.terminate()
            proc.communicate(timeout=60)


# Locust monkey-patches the process on import: its parser is built in a child interpreter.
WEB_HOST_SCRIPT = """
import json, sys
from locust import argument_parser
from loadtests.options import add_options
parser = argument_parser.get_empty_argument_parser(add_help=False)
argument_parser.setup_parser_arguments(parser)
add_options(parser)
print(json.dumps([parser.parse_args([]).web_host, parser.parse_args(["--web-host", "10.0.0.5"]).web_host]))
"""


class TestWebUiBinding:
    """The harness's web UI answers on this machine only unless told otherwise."""

    def test_the_web_ui_binds_loopback_by_default(self):
        """Locust's parser with the harness's options: --web-host defaults to 127.0.0.1, and can be set."""
        env = {k: v for k, v in os.environ.items() if k != "LOCUST_WEB_HOST"}
        done = subprocess.run(
            [sys.executable, "-c", WEB_HOST_SCRIPT], capture_output=True, text=True, timeout=60, check=True, env=env
        )
        assert json.loads(done.stdout.strip().splitlines()[-1]) == ["127.0.0.1", "10.0.0.5"]
