"""Collector adapters: choice, DSN translation, configuration, counters, readiness names, fault refusal, report."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg2.extensions import make_dsn

from loadtests.adapters import choose
from loadtests.adapters.base import DEFAULT_DRAIN_QUIET_S, Context, drain_quiet_s
from loadtests.adapters.readiness import _write_probe, check_strategy, probe_line
from loadtests.adapters.reference import DEFAULT_COMMAND, Reference
from loadtests.adapters.report import exit_text, render_lines
from loadtests.adapters.stopping import collector_faults, refuse_unperformable_faults
from loadtests.adapters.syslog_ng import SyslogNg, database_target, parse_stats, quote, render_config
from loadtests.collector_process import CollectorError

# syslog-ng-ctl stats of a syslog-ng 3.38 that read 2 lines, of which the json-parser dropped 1.
STATS = """SourceName;SourceId;SourceInstance;State;Type;Number
destination;d_pg;;a;processed;1
center;;received;a;processed;2
source;s_fifo;;a;processed;2
dst.sql;d_pg#0;pgsql,/tmp/nonexist,5432,x,logs;a;dropped;0
dst.sql;d_pg#0;pgsql,/tmp/nonexist,5432,x,logs;a;processed;1
dst.sql;d_pg#0;pgsql,/tmp/nonexist,5432,x,logs;a;queued;1
dst.sql;d_pg#0;pgsql,/tmp/nonexist,5432,x,logs;a;written;0
"""
EMBEDDED_URI = "postgresql://postgres@/postgres?host=/tmp/np-sock%20dir&port=54329"


def options(**kw) -> SimpleNamespace:
    base = {
        "pause_collector_at": -1,
        "pause_collector_for": 0,
        "kill_collector_at": "",
        "restart_collector_at": -1,
        "fault_cmd": "",
        "drain_quiet": None,
    }
    return SimpleNamespace(**{**base, **kw})


class TestChoose:
    """--collector picks a shipped adapter; a command naming another collector beside it is refused."""

    def test_reference_is_the_default_and_runs_the_given_command(self):
        """reference runs --collector-cmd."""
        adapter = choose("reference", "cat {fifo}")
        assert isinstance(adapter, Reference)
        assert adapter.command == "cat {fifo}"

    def test_a_scenario_reference_command_yields_to_syslog_ng(self):
        """db_outage's reference command with --journal does not stop --collector syslog-ng."""
        assert isinstance(choose("syslog-ng", DEFAULT_COMMAND + " --journal {journal}"), SyslogNg)

    def test_another_command_beside_an_adapter_is_ambiguous(self):
        """--collector syslog-ng with --collector-cmd 'fluent-bit ...' names two collectors."""
        with pytest.raises(ValueError, match="both name a collector"):
            choose("syslog-ng", "fluent-bit -c x.conf")

    def test_an_unknown_adapter_lists_the_shipped_ones(self):
        """A typo gets the list."""
        with pytest.raises(ValueError, match="reference, syslog-ng"):
            choose("syslogng", DEFAULT_COMMAND)


class TestDatabaseTarget:
    """The harness's DSN becomes syslog-ng's host, port, user, password and database."""

    def test_the_embedded_uri_gives_its_socket_directory(self):
        """A URI with host= in its query string (what the embedded database gives) names the socket folder."""
        t = database_target(EMBEDDED_URI, {})
        assert t == {
            "host": "/tmp/np-sock dir",
            "port": "54329",
            "user": "postgres",
            "password": "",
            "database": "postgres",
        }

    def test_libpq_environment_fills_the_gaps(self):
        """What the DSN leaves out comes from PG* variables, as libpq would take it."""
        t = database_target("dbname=logs", {"PGHOST": "/run/pg", "PGPORT": "6543", "PGUSER": "loader"})
        assert (t["host"], t["port"], t["user"], t["database"]) == ("/run/pg", "6543", "loader", "logs")

    def test_an_unparsable_dsn_says_so(self):
        """A broken DSN is a clear ValueError."""
        with pytest.raises(ValueError, match="cannot be parsed"):
            database_target("host='unterminated", {})

    @settings(max_examples=200)
    @given(
        host=st.text(st.characters(codec="utf-8", exclude_characters="\x00,"), min_size=1),
        port=st.integers(1, 65535),
        user=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
        password=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
        database=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
    )
    def test_any_key_value_dsn_round_trips(self, host, port, user, password, database):
        """Every value libpq's own quoting (make_dsn) puts in a DSN comes back unchanged."""
        dsn = make_dsn(host=host, port=port, user=user, password=password, dbname=database)
        assert database_target(dsn, {}) == {
            "host": host,
            "port": str(port),
            "user": user,
            "password": password,
            "database": database,
        }


class TestConfig:
    """The syslog-ng configuration: quoted values, the password only in a 0600 file."""

    @given(st.text(st.characters(codec="utf-8", exclude_characters="\x00")))
    def test_quoting_escapes_every_quote_and_backslash(self, text):
        """Unescaping the literal gives the value back (no quote ends it early)."""
        literal = quote(text)
        assert literal[0] == literal[-1] == '"'
        body, out, i = literal[1:-1], [], 0
        while i < len(body):
            assert body[i] != '"', "an unescaped quote"
            if body[i] == "\\":
                i += 1
            out.append(body[i])
            i += 1
        assert "".join(out) == text

    def test_the_password_is_in_the_file_and_never_on_the_command_line(self, tmp_path):
        """launch writes syslog-ng.conf with mode 0600; argv holds only paths."""
        dsn = 'host=/tmp/s port=5432 user=loader password=s3cr"et dbname=logs'
        launch = SyslogNg().launch(Context(str(tmp_path / "f"), dsn, tmp_path))
        assert not any("s3cr" in a for a in launch.argv)
        assert "s3cr" not in launch.shown
        assert "s3cr" not in "".join(launch.env.values())
        conf = tmp_path / "syslog-ng.conf"
        assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
        assert 'password("s3cr\\"et")' in conf.read_text()
        assert "-F" in launch.argv
        assert str(conf) in launch.argv

    def test_the_template_names_every_column_and_the_data_object(self):
        """Seven text columns from the parsed JSON, data rebuilt from .json.data.*."""
        text = render_config("/tmp/f", EMBEDDED_URI)
        for column in ("time", "application_name", "trace_id", "host_ip", "data"):
            assert f'"{column}"' in text
        assert "--key .json.data.* --shift-levels 3" in text
        assert "flags(explicit-commits, dont-create-tables)" in text
        assert "flags(flow-control)" in text


class TestCounters:
    """syslog-ng-ctl stats becomes read, written, queued, dropped and parse_dropped."""

    def test_the_stats_of_a_real_syslog_ng(self):
        """Two lines read, one dropped by the parser, one queued for the database."""
        assert parse_stats(STATS) == {"read": 2, "written": 0, "queued": 1, "dropped": 0, "parse_dropped": 1}

    def test_garbage_gives_zeros(self):
        """Output that is not the CSV (an error text) counts nothing."""
        assert parse_stats("Error connecting to control socket")["read"] == 0


class TestReadinessAndDrain:
    """Readiness strategies are checked by name; the drain's quiet limit comes from the option or the adapter."""

    @pytest.mark.parametrize("text", ["fifo", "probe", "cmd", "sql:count(*) > 0 FROM logs", "cmd:true"])
    def test_known_strategies(self, text):
        """Each strategy is accepted."""
        assert check_strategy(text) == text

    @pytest.mark.parametrize("text", ["", "fifo-open", "sql:", "cmd: "])
    def test_unknown_strategies_are_refused(self, text):
        """An empty or unknown strategy is a ValueError listing them."""
        with pytest.raises(ValueError, match="probe"):
            check_strategy(text)

    def test_the_probe_line_is_one_atomic_json_line_of_its_own_run(self):
        """The probe line ends in a newline, fits PIPE_BUF and carries a run id of its own."""
        line = probe_line("probe-1234")
        assert line.endswith(b"\n")
        assert len(line) < 4096
        assert b'"run":"probe-1234"' in line

    def test_the_option_overrides_the_adapter(self):
        """--drain-quiet wins; else syslog-ng's longer default; no collector of ours: the constant."""
        assert drain_quiet_s(options(drain_quiet=7.5), SyslogNg()) == 7.5
        assert drain_quiet_s(options(), SyslogNg()) == SyslogNg.drain_quiet_s > DEFAULT_DRAIN_QUIET_S
        assert drain_quiet_s(options(), None) == DEFAULT_DRAIN_QUIET_S


class TestExternalCollectorFaults:
    """A collector fault asked of a collector the harness did not start is refused unless --fault-cmd does it."""

    def test_every_collector_fault_is_refused_without_a_command(self):
        """pause, kill and restart each refuse the start, naming the option and the fix."""
        for opts in (
            options(pause_collector_at=6, pause_collector_for=5),
            options(kill_collector_at="5"),
            options(restart_collector_at=6),
        ):
            with pytest.raises(CollectorError, match="--fault-cmd") as info:
                refuse_unperformable_faults(opts)
            assert collector_faults(opts)[0] in str(info.value)

    def test_a_fault_command_or_no_fault_starts(self):
        """With --fault-cmd, or with only a database outage, the run starts."""
        refuse_unperformable_faults(options(restart_collector_at=6, fault_cmd="systemctl {action} my-collector"))
        refuse_unperformable_faults(options())


class TestReport:
    """The verdict's collector lines: exit by signal name, the stop's cost, the loss split, the log on FAIL."""

    def test_exit_by_signal_name(self):
        """-11 is SIGSEGV; 0 and 4 are exit statuses."""
        assert exit_text(-11) == "killed by SIGSEGV"
        assert exit_text(0) == "exit status 0"
        assert exit_text(4) == "exit status 4"

    def test_the_reference_collector_explains_its_statuses(self):
        """4 and 3 name their cause for the reference collector; another command's statuses stay bare."""
        assert "not stored" in Reference().exit_meaning(4)
        assert "refused the writes" in Reference().exit_meaning(3)
        assert Reference().exit_meaning(0) == ""
        assert Reference("my-collector {fifo}").exit_meaning(4) == ""
        assert exit_text(4, "why") == "exit status 4 (why)"

    def test_a_failed_run_shows_the_log_tail_and_path(self):
        """FAIL: the path and the last lines; PASS: neither."""
        report = {
            "adapter": "syslog-ng",
            "exit": "killed by SIGSEGV",
            "log_path": "/r/collector.log",
            "log_tail": ["Error establishing SQL connection"],
            "at_stop": {"queued": 12},
            "queued_at_stop": 12,
            "waited_for_queue_s": 20.0,
            "explanation": {"stored_although_bad": 3, "dropped_silently": 5, "lost_mid_run": 7, "lost_at_stop": 12},
        }
        failed = "\n".join(render_lines(report, failed=True))
        assert "killed by SIGSEGV" in failed
        assert "/r/collector.log" in failed
        assert "Error establishing SQL connection" in failed
        assert "the stop cost 12 lines" in failed
        assert "stored although bad 3, dropped silently 5" in failed
        assert "lost mid-run 7" in failed
        assert "/r/collector.log" not in "\n".join(render_lines(report, failed=False))


def fill(fd: int) -> None:
    """Write into a non-blocking pipe until it is full."""
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except BlockingIOError:
        return


class TestProbeWrite:
    """The readiness probe never blocks the harness: no reader, or a full pipe, is "not yet"."""

    def test_no_reader_is_not_yet(self, tmp_path):
        """A FIFO nobody reads: False at once."""
        fifo = tmp_path / "f"
        os.mkfifo(fifo)
        assert _write_probe(str(fifo), probe_line("np-probe-1")) is False

    def test_a_full_pipe_is_not_yet(self, tmp_path):
        """A reader that reads nothing, its pipe full: False at once (a blocking write would wait for ever)."""
        fifo = tmp_path / "f"
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            fill(filler)
            assert _write_probe(str(fifo), probe_line("np-probe-2")) is False
        finally:
            os.close(filler)
            os.close(reader)

    def test_a_reader_gets_the_probe(self, tmp_path):
        """With room in the pipe the probe line arrives whole."""
        fifo = tmp_path / "f"
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            line = probe_line("np-probe-3")
            assert _write_probe(str(fifo), line) is True
            assert os.read(reader, 65536) == line
        finally:
            os.close(reader)
