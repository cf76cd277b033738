"""The fleet's bookkeeping without processes: hosts of sources, unverified workers, per-host totals, host options."""

from __future__ import annotations

import argparse
import fcntl
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtests.collector_process import CollectorError
from loadtests.database import parse_listen, require_password_on_tcp
from loadtests.fleet import unshare_argv, worker_argv
from loadtests.fleet_host import OWNER_LOCK, FleetHost, host_id, private_folders, source_prefixes
from loadtests.fleet_master import (
    UNANNOUNCED,
    Fleet,
    fleet_master_problem,
    host_sections,
    split_unverified,
    worker_of_source,
)
from loadtests.local_hosts import parse_host_args
from loadtests.verdict import Latency, Verdict, check, render
from loadtests.verify import SourceResult, Totals


def source(name: str, sent: int, landed: int, *, dup: int = 0, corrupt: int = 0, dropped: int = 0) -> SourceResult:
    return SourceResult(
        name, sent + dropped, sent, dropped, 0, landed=landed, rows=landed + dup, duplicated=dup, corrupt=corrupt
    )


def totals_of(sources: list[SourceResult]) -> Totals:
    return Totals(
        generated=sum(s.generated for s in sources),
        sent=sum(s.sent for s in sources),
        dropped=sum(s.dropped for s in sources),
        landed=sum(s.landed for s in sources),
        duplicated=sum(s.duplicated for s in sources),
        corrupt=sum(s.corrupt for s in sources),
        missing=sum(s.missing for s in sources),
        torn_or_rejected=sum(s.corrupt for s in sources),
    )


def two_hosts() -> Fleet:
    fleet = Fleet()
    fleet.receive_hello("a", {"host": "web1", "owner": True}, 0)
    fleet.receive_hello("b", {"host": "web2", "owner": True}, 1)
    fleet.receive_hello("c", {"host": "web2", "owner": False}, 2)
    return fleet


class TestSourcesAndHosts:
    """A source names its Locust worker, and the worker's hello names its host."""

    def test_worker_of_source(self):
        """p12u3 is worker 12; a name the harness did not make has none."""
        assert worker_of_source("p12u3") == 12
        assert worker_of_source("web1.p1u2") is None

    def test_host_of_source(self):
        """Workers 1 and 2 are web2's; an unknown worker index has no host."""
        fleet = two_hosts()
        assert fleet.host_of_source("p2u0") == "web2"
        assert fleet.host_of_source("p9u0") is None
        assert [w.index for w in fleet.hosts()["web2"]] == [1, 2]
        owner = fleet.owner("web2")
        assert owner is not None
        assert owner.client_id == "b"

    def test_drain_patterns_match_only_the_hosts_workers(self):
        """The drain's LIKE patterns: p1u% does not match p11u0 (the u ends the index)."""
        assert source_prefixes([2, 1, 1]) == ["p1u%", "p2u%"]


class TestUnverified:
    """A worker that disappeared: its sources leave the totals, neither landed nor lost."""

    def test_split_removes_the_gone_workers_sources_from_the_totals(self):
        """Worker 1 vanished: its rows leave landed, its duplicates and corrupt rows leave the totals."""
        sources = [source("p0u0", 100, 100), source("p1u0", 0, 40, dup=2, corrupt=1)]
        kept, gone, t = split_unverified(sources, totals_of(sources), {1})
        assert [s.source for s in kept] == ["p0u0"]
        assert [s.source for s in gone] == ["p1u0"]
        assert (t.landed, t.duplicated, t.corrupt, t.torn_or_rejected, t.lost) == (100, 0, 0, 0, 0)

    def test_nothing_gone_changes_nothing(self):
        """No worker vanished: the totals are verify.py's, untouched."""
        sources = [source("p0u0", 100, 90)]
        t = totals_of(sources)
        assert split_unverified(sources, t, set())[2] is t

    @given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(0, 50)), max_size=12))
    def test_totals_of_the_kept_sources(self, rows):
        """Whatever vanished, landed and sent in the totals are the sums over the kept sources."""
        sources = [source(f"p{w}u{i}", sent, landed) for i, (w, sent, landed) in enumerate(rows)]
        kept, gone, t = split_unverified(sources, totals_of(sources), {1, 3})
        assert t.landed == sum(s.landed for s in kept)
        assert t.sent == sum(s.sent for s in kept)
        assert len(kept) + len(gone) == len(sources)


class TestHostSections:
    """Per-host totals add up to the run's, and each host carries its own collector figures and faults."""

    def test_sections_sum_and_carry_the_hosts_report(self):
        """web2's two workers' sources add up; its fault and rows/s come from its owner's report."""
        fleet = two_hosts()
        fleet.receive_report("a", {"host": "web1", "rows_per_s": 900.0, "collector_exit": 0, "faults": []})
        fleet.receive_report(
            "b", {"host": "web2", "rows_per_s": 800.0, "collector_exit": 0, "faults": ["collector killed"]}
        )
        sources = [source("p0u0", 10, 10), source("p1u0", 20, 18), source("p2u0", 5, 5, dup=1)]
        web1, web2 = host_sections(fleet, sources, {}, {})
        assert (web1["sent"], web1["landed"], web1["faults"]) == (10, 10, [])
        assert (web2["sent"], web2["landed"], web2["lost"], web2["duplicated"]) == (25, 23, 2, 1)
        assert web2["faults"] == ["collector killed"]
        assert web1["state"] == web2["state"] == "reported"

    @given(
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(0, 40), st.integers(0, 3)), max_size=15)
    )
    def test_hosts_add_up_to_the_run(self, rows):
        """Whatever the sources, the hosts' sent, landed, duplicated and torn add up to the sums over all sources,
        and a host's lost never exceeds its missing lines."""
        fleet = two_hosts()
        sources = [
            source(f"p{w}u{i}", sent, landed, dup=dup, corrupt=dup) for i, (w, sent, landed, dup) in enumerate(rows)
        ]
        sections = host_sections(fleet, sources, {}, {})
        for key, field in (("sent", "sent"), ("landed", "landed"), ("duplicated", "duplicated"), ("torn", "corrupt")):
            assert sum(h[key] for h in sections) == sum(getattr(s, field) for s in sources)
        for h in sections:
            assert 0 <= h["lost"] <= h["missing"]

    def test_a_vanished_worker_and_a_silent_host_are_named(self):
        """web2's owner vanished; web1 sent no report: neither counts as reported."""
        fleet = two_hosts()
        vanished = {"b": fleet.workers["b"]}
        web1, web2 = host_sections(fleet, [], vanished, {"b": 50})
        assert web1["state"] == "sent no report"
        assert web2["state"].startswith("worker disappeared: b (index 1)")
        assert web2["unverified_sent_last_report"] == 50

    def test_verdict_prints_hosts_and_fails_on_a_vanished_worker(self):
        """The rendered verdict has a host table, the unverified line, and two failed fleet expectations."""
        fleet = two_hosts()
        fleet.receive_report("a", {"host": "web1", "rows_per_s": 900.0, "collector_exit": 0, "faults": ["x"]})
        vanished = {"b": fleet.workers["b"]}
        sources = [source("p0u0", 10, 10)]
        verdict = Verdict(
            run_id="r1",
            scenario="fleet",
            totals=totals_of(sources),
            sources=sources,
            latency=Latency(),
            rows_per_s=900.0,
            lines_per_s=1.0,
            duration_s=1.0,
            hosts=host_sections(fleet, sources, vanished, {}),
            unverified=[
                {
                    "host": "web2",
                    "workers": [{"client_id": "b", "index": 1}],
                    "sources": 3,
                    "source_names": [],
                    "rows": 7,
                    "sent_last_report": 5,
                }
            ],
        )
        options = argparse.Namespace(
            max_lost=0,
            max_duplicated=0,
            max_torn=0,
            min_torn=0,
            min_rows_per_s=0,
            max_unaccounted_bytes=-1,
            hostile_every=0,
            max_unexplained_rejections=None,
            max_bad_accepted=None,
            max_collector_rss_mib=-1,
        )
        verdict.expectations = check(verdict, options)
        text = render(verdict)
        assert "web1" in text
        assert "  web1 fault: x" in text
        assert "unverified: host web2 lost worker b (index 1) mid-run" in text
        assert {f.split(":")[0] for f in verdict.failures} == {"vanished_workers", "hosts_reported"}


class TestFleetMaster:
    """A fleet's master runs no collector: it refuses what it could not do."""

    def test_needs_master_and_refuses_faults(self):
        """Not a master: refused; a collector or database fault on the master: refused naming the fault."""
        quiet = argparse.Namespace(
            pause_collector_at=-1,
            pause_collector_for=0,
            kill_collector_at="",
            restart_collector_at=-1,
            db_outage_at=-1,
            statement_timeout_at=-1,
        )
        assert fleet_master_problem(quiet, True) == ""
        assert "--master" in fleet_master_problem(quiet, False)
        kill = argparse.Namespace(**{**vars(quiet), "kill_collector_at": "5"})
        assert "--kill-collector-at" in fleet_master_problem(kill, True)
        outage = argparse.Namespace(**{**vars(quiet), "db_outage_at": 3.0})
        assert "--db-outage-at" in fleet_master_problem(outage, True)

    def test_two_owners_of_one_host_are_an_error(self):
        """Two machines with one --host-id each start a collector: the host's section says so, not 'reported'."""
        fleet = Fleet()
        fleet.receive_hello("a", {"host": "web", "owner": True}, 0)
        fleet.receive_hello("b", {"host": "web", "owner": True}, 1)
        fleet.receive_report("a", {"host": "web", "rows_per_s": 1.0, "collector_exit": 0, "faults": []})
        [web] = host_sections(fleet, [], {}, {})
        assert "share a --host-id" in web["state"]


class TestHostOptions:
    """Host ids name folders; --local-host-args names hosts that exist."""

    def test_host_id_defaults_to_the_hostname_and_refuses_a_path(self):
        """Empty: the hostname; '../x' would leave the run folder: refused with the option's name."""
        assert host_id(argparse.Namespace(host_id=""))
        with pytest.raises(ValueError, match="--host-id"):
            host_id(argparse.Namespace(host_id="../x"))

    def test_local_host_args(self):
        """Entries per host, split like a shell; an unknown host or a missing colon is refused."""
        assert parse_host_args("host2: --kill-collector-at 4 ; host1:--seed 3", ["host1", "host2"]) == {
            "host2": ["--kill-collector-at", "4"],
            "host1": ["--seed", "3"],
        }
        with pytest.raises(ValueError, match="host3"):
            parse_host_args("host3: --seed 1", ["host1", "host2"])
        with pytest.raises(ValueError, match="HOST: OPTIONS"):
            parse_host_args("--seed 1", ["host1"])

    def test_launcher_argv_carries_no_secret_and_ends_in_a_locust_worker(self, tmp_path):
        """unshare with mount and PID namespaces, then `locust --worker --host-id`; no DSN on either command line."""
        args = argparse.Namespace(host_id="h1", master_host="127.0.0.1", master_port=5600, fleet_dir=tmp_path)
        outer = unshare_argv(args, ["--report-dir", "r"])
        assert outer[:2] == ["unshare", "--mount"]
        assert "--pid" in outer
        assert "--kill-child" in outer
        inner = worker_argv(args, ["--report-dir", "r"])
        assert "--worker" in inner
        assert inner[inner.index("--host-id") + 1] == "h1"
        assert not any("dsn" in a.lower() or "postgres" in a for a in outer + inner)


class TestOwnership:
    """The first worker of a host to lock its run folder owns the FIFO and collector; the others wait for it."""

    def test_a_held_lock_makes_the_next_worker_wait_for_the_owner(self, tmp_path):
        """Lock taken by another worker: this one is no owner, and gives up with the owner's error when told."""
        options = argparse.Namespace(host_id="h1", fleet_dir=str(tmp_path), ready_timeout=0.1, report_dir="r")
        host = FleetHost(options, "run1", "", 0)
        host.folder.mkdir(parents=True)
        fd = os.open(host.folder / OWNER_LOCK, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            (host.folder / "ready").write_text("error: collector not found")
            with pytest.raises(CollectorError, match="collector not found"):
                host.join()
            assert host.owner is False
        finally:
            os.close(fd)

    def test_a_hosts_own_fifo_wins(self, tmp_path):
        """A host with --fifo (its collector runs beside it, as in docker-compose) writes there; else its run folder."""
        given = argparse.Namespace(host_id="h1", fleet_dir=str(tmp_path), fifo=str(tmp_path / "app.fifo"))
        assert FleetHost(given, "run1", "", 0).fifo == str(tmp_path / "app.fifo")
        default = argparse.Namespace(host_id="h1", fleet_dir=str(tmp_path), fifo="")
        assert FleetHost(default, "run1", "", 0).fifo == str(tmp_path / "run1" / "h1" / "logs.fifo")


class TestPrivateFolders:
    """The hosts' run folders sit in a shared /tmp under a predictable name: only a folder of ours, closed, will do."""

    def test_new_folders_are_private(self, tmp_path):
        """Created with mode 0700 at each level the fleet adds."""
        folder = tmp_path / "fleet" / "run1" / "h1"
        private_folders(folder)
        for level in (folder, folder.parent, folder.parent.parent):
            assert stat.S_IMODE(level.stat().st_mode) == 0o700

    def test_a_folder_others_may_write_or_a_symlink_is_refused(self, tmp_path):
        """A world-writable fleet folder, or a symlink planted in its place: refused, naming the fix."""
        open_dir = tmp_path / "open"
        open_dir.mkdir()
        open_dir.chmod(0o777)
        with pytest.raises(OSError, match="--fleet-dir"):
            private_folders(open_dir / "run1" / "h1")
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        (tmp_path / "link").symlink_to(target)
        with pytest.raises(OSError, match="not a folder of this user"):
            private_folders(tmp_path / "link" / "run1" / "h1")


class TestDatabaseListen:
    """--db-listen: off unless given, loopback unless allowed, and TCP always asks for a password."""

    def test_parse_listen(self):
        """Empty: off; loopback v4/v6 and localhost pass; anything else needs the explicit flag."""
        assert parse_listen("") is None
        assert parse_listen("127.0.0.1:55432") == ("127.0.0.1", 55432)
        assert parse_listen("[::1]:5432") == ("::1", 5432)
        assert parse_listen("localhost:5432") == ("localhost", 5432)
        for bad in ("0.0.0.0:5432", "10.1.2.3:5432"):
            with pytest.raises(ValueError, match="--db-listen-allow-remote"):
                parse_listen(bad)
        assert parse_listen("0.0.0.0:5432", allow_remote=True) == ("0.0.0.0", 5432)
        for bad in ("127.0.0.1", "127.0.0.1:0", "127.0.0.1:x", "db.example:5432"):
            with pytest.raises(ValueError, match="--db-listen"):
                parse_listen(bad)

    def test_pg_hba_asks_every_tcp_connection_for_a_password(self, tmp_path):
        """initdb's trust stays for local (unix) lines only; host lines and the catch-all rules use scram."""
        hba = tmp_path / "pg_hba.conf"
        hba.write_text(
            "# comment trust\nlocal   all   all   trust\nhost    all   all   127.0.0.1/32   trust\n"
            "host    all   all   ::1/128   trust\n"
        )
        assert require_password_on_tcp(hba) is True
        lines = [line.split() for line in hba.read_text().splitlines() if line and not line.startswith("#")]
        assert [f[-1] for f in lines if f[0] == "local"] == ["trust"]
        assert {f[-1] for f in lines if f[0] == "host"} == {"scram-sha-256"}
        assert [f[3] for f in lines if f[0] == "host"][-2:] == ["0.0.0.0/0", "::/0"]
        assert require_password_on_tcp(hba) is False  # idempotent


class TestUntrustedMessages:
    """Anyone who reaches the master port can send messages: the master takes nothing from them on trust."""

    def test_a_report_counts_only_from_the_hosts_collector_owner(self):
        """A report from another client, or a second one, is ignored."""
        fleet = two_hosts()
        fleet.receive_report("c", {"host": "web2", "rows_per_s": 123456789.0, "collector_exit": 0, "faults": []})
        fleet.receive_report("x", {"host": "web1", "rows_per_s": 123456789.0, "collector_exit": 0, "faults": []})
        assert fleet.reports == {}
        fleet.receive_report("b", {"host": "web2", "rows_per_s": 800.0, "collector_exit": 0, "faults": []})
        fleet.receive_report("b", {"host": "web2", "rows_per_s": 1.0, "collector_exit": 0, "faults": ["FORGED"]})
        assert fleet.reports["web2"]["rows_per_s"] == 800.0

    @pytest.mark.parametrize("host", ["evil\n  ✓ forged_line  0 = 0", "host1\n", "../x", "", "x" * 64])
    def test_an_announcement_with_no_host_id_is_ignored(self, host):
        """A host id that could not name a folder (newlines included) never reaches the verdict."""
        fleet = Fleet()
        fleet.receive_hello("spy", {"host": host, "owner": True}, 7)
        assert fleet.workers == {}

    def test_clients_that_never_announced_are_listed(self):
        """A client of the master port that said nothing gets a section of its own, with the index it was given."""
        fleet = two_hosts()
        found = fleet.note_unannounced({"a": 0, "b": 1, "c": 2, "spy": 3})
        assert [(w.client_id, w.index, w.host) for w in found] == [("spy", 3, UNANNOUNCED)]
        assert "spy" in fleet.workers
