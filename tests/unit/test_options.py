"""The harness's options: nothing that names a command, path or database reaches the web UI; local binds."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from loadtests.options import (
    HARNESS_OPTIONS,
    LOCUST_FORM_FIELDS,
    MAX_LINES_PER_WRITE,
    WEB_EDITABLE,
    add_options,
    check_load_options,
    refused_fields,
)

# Locust monkey-patches threading when imported, which would break the thread-based unit tests that run after:
# its parser is built in a child process.
PARSER_FACTS = """
import json, sys
from locust.argument_parser import get_parser
from loadtests.options import HARNESS_OPTIONS, add_options
p = get_parser(default_config_files=[])
add_options(p)
o = p.parse_args(sys.argv[1:])
print(json.dumps({"ui": sorted(p.args_included_in_web_ui), "harness": sorted(HARNESS_OPTIONS),
                  "web_host": o.web_host, "master_bind_host": o.master_bind_host}))
"""


def parser_facts(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PARSER_FACTS, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def facts() -> dict:
    return parser_facts()


class TestWebEditable:
    """Only the load-shaping options are in the web UI, and a new option stays out unless listed."""

    def test_only_the_listed_options_are_in_the_web_ui(self, facts):
        """Of the harness's options, the ones Locust's UI shows are exactly WEB_EDITABLE."""
        assert set(facts["ui"]) & set(facts["harness"]) == set(WEB_EDITABLE)

    def test_no_command_path_or_database_option_is_editable(self):
        """No editable option names a command, a path, a DSN, a database or a report."""
        for name in WEB_EDITABLE:
            assert not any(word in name for word in ("cmd", "dsn", "fifo", "dir", "file", "path", "database")), name

    def test_every_other_option_is_refused_in_a_post(self, facts):
        """A /swarm form carrying any harness option outside WEB_EDITABLE is refused, naming it."""
        others = set(facts["harness"]) - WEB_EDITABLE
        assert {"collector_cmd", "fifo", "report_dir", "dsn", "keep_runs"} <= others
        assert refused_fields({*LOCUST_FORM_FIELDS, *WEB_EDITABLE, *others}) == sorted(others)


class TestBinding:
    """The web UI and a --processes master listen on 127.0.0.1 unless told otherwise."""

    def test_defaults_are_local(self, facts):
        """--web-host and --master-bind-host default to 127.0.0.1 once the harness's options are in."""
        assert (facts["web_host"], facts["master_bind_host"]) == ("127.0.0.1", "127.0.0.1")

    def test_an_explicit_host_wins(self):
        """The user's --web-host is kept."""
        assert parser_facts("--web-host", "0.0.0.0")["web_host"] == "0.0.0.0"


def test_options_are_collected_once_declared():
    """HARNESS_OPTIONS fills as add_options declares them (what verdict.json records)."""
    import argparse

    import configargparse

    add_options(configargparse.ArgumentParser())
    assert {"dsn", "collector_cmd", "keep_runs", "size_mix"} <= HARNESS_OPTIONS
    assert not isinstance(HARNESS_OPTIONS, argparse.Namespace)


class TestLoadOptionBounds:
    """Load-shaping values, which the web UI may set, are checked before a run starts."""

    @pytest.mark.parametrize("value", [-1, MAX_LINES_PER_WRITE + 1, 100_000_000, "many"])
    def test_out_of_range_lines_per_write_is_refused(self, value):
        """A negative, huge or non-numeric --lines-per-write stops the start with a message naming the option."""
        with pytest.raises(ValueError, match="--lines-per-write"):
            check_load_options(argparse.Namespace(lines_per_write=value))

    @pytest.mark.parametrize("value", [0, 1, MAX_LINES_PER_WRITE, None])
    def test_in_range_lines_per_write_is_accepted(self, value):
        """0 (pack up to PIPE_BUF) to MAX_LINES_PER_WRITE is accepted."""
        check_load_options(argparse.Namespace(lines_per_write=value))
