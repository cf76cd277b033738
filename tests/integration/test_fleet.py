"""scenarios/fleet.conf for real: a Locust master and two worker hosts, each in its own mount and PID namespace with
its own FIFO and reference collector, one central PostgreSQL (issue 15)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest
from harness import Harness, clean_env, latest_verdict, master_port_args

# A short load still spans a fault at second 3 and a kill at second 4 (Locust needs ~2 s to see a missing worker).
RUN_TIME = "9s"
# Locust start, two hosts' collectors, the load, the drains and the verification fit well inside this.
FLEET_TIMEOUT_S = 110

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="local fleet hosts need root and unshare"
)


def start_fleet(dsn: str, tmp_path: Path, *extra: str) -> Harness:
    """`locust --config scenarios/fleet.conf` shortened, against the test's database."""
    return Harness(
        [
            "--config",
            "scenarios/fleet.conf",
            "--run-time",
            RUN_TIME,
            "--report-dir",
            str(tmp_path / "reports"),
            "--drain-timeout",
            "20",
            *master_port_args(),
            *extra,
        ],
        tmp_path / "locust.log",
        env=clean_env(NAMEDPIPER_DSN=dsn),
    )


def finished(harness: Harness, tmp_path: Path) -> tuple[int, dict]:
    """Wait for the master to exit (bounded); its status and verdict. Everything it started is gone after."""
    try:
        code = harness.wait(FLEET_TIMEOUT_S)
    finally:
        harness.stop()
    verdict = latest_verdict(tmp_path / "reports")
    assert verdict is not None, harness.output()[-4000:]
    assert "Traceback" not in harness.output(), harness.output()[-4000:]
    return code, verdict


def host(verdict: dict, name: str) -> dict:
    return next(h for h in verdict["hosts"] if h["host"] == name)


class TestFleet:
    """Two hosts, one verdict: per-host sections that add up, faults and lost workers where they happened."""

    def test_two_hosts_pass_and_a_fault_shows_only_on_its_host(self, dsn, tmp_path):
        """host2's collector restarts mid-run: PASS, the restart is in host2's section only, nothing lost."""
        harness = start_fleet(dsn, tmp_path, "--local-host-args", "host2: --restart-collector-at 3 --restart-gap 1")
        code, verdict = finished(harness, tmp_path)
        assert verdict["passed"], (verdict["failures"], harness.output()[-3000:])
        assert code == 0
        assert [h["host"] for h in verdict["hosts"]] == ["host1", "host2"]
        h1, h2 = host(verdict, "host1"), host(verdict, "host2")
        assert h1["faults"] == []
        assert any("collector stopped" in f for f in h2["faults"]), h2["faults"]
        assert verdict["faults"] == []  # not in the run's own fault list either
        t = verdict["totals"]
        assert t["sent"] > 1000
        assert t["landed"] == t["sent"]
        assert t["lost"] == 0
        for h in (h1, h2):
            assert h["state"] == "reported"
            assert h["collector_exit"] == 0
            assert h["sent"] > 0
            assert h["landed"] == h["sent"]
            assert h["rows_per_s"] > 0
            assert h["collector_peak_rss_mib"] > 0
        assert h1["sent"] + h2["sent"] == t["sent"]
        # Each host's collector wrote its own log, in the host's folder of the run.
        for name in ("host1", "host2"):
            assert (tmp_path / "reports" / verdict["run_id"] / name / "collector.log").exists()
        out = harness.output()
        assert "host2 fault: collector stopped" in out
        assert "host1 fault" not in out

    def test_a_killed_worker_is_named_and_its_lines_unverified(self, dsn, tmp_path):
        """SIGKILL host2's worker mid-run (its namespace, collector included, dies with it): FAIL naming it, its
        lines unverified, host1's verified, nothing counted as lost."""
        harness = start_fleet(dsn, tmp_path)
        try:
            harness.wait_for("Sending spawn jobs", timeout=90)  # the master's line: the load starts
            time.sleep(4)
            worker = next(
                p
                for p in harness.descendants()
                if "--worker" in p.cmdline() and "host2" in p.cmdline() and "unshare" not in p.name()
            )
            worker.send_signal(signal.SIGKILL)
        except BaseException:
            harness.stop()
            raise
        code, verdict = finished(harness, tmp_path)
        assert code == 1
        assert verdict["status"] == "FAIL"
        assert any(f.startswith("vanished_workers") for f in verdict["failures"]), verdict["failures"]
        [gone] = verdict["unverified"]
        assert gone["host"] == "host2"
        assert gone["rows"] > 0
        assert gone["sources"] > 0
        assert "worker disappeared" in host(verdict, "host2")["state"]
        assert host(verdict, "host1")["state"] == "reported"
        names = {s["source"] for s in verdict["sources"]}
        assert not names & set(gone["source_names"])  # its sources are not judged as landed or lost
        t = verdict["totals"]
        assert t["lost"] == 0
        assert t["sent"] == host(verdict, "host1")["sent"] == t["landed"]
        assert "unverified: host host2 lost worker" in harness.output()
        # The killed host's collector died with its PID namespace: no process of the run is left.
        left = [p for p in psutil.process_iter(["cmdline"]) if verdict["run_id"] in " ".join(p.info["cmdline"] or [])]
        assert left == []
