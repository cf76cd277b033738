"""The collector's Prometheus endpoint (--metrics-port), scraped during a real load and checked against the database."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.timeline import scrape_metrics

# Lines the emitter writes; enough for several batches and a few seconds of load at the rate below.
LINES = 40_000
RATE = 10_000
# Bad lines written beside the emitter's, by kind: the metric must count each in its reason class.
BAD_LINES = {"json": (b"this is not json\n", 7), "encoding": (b"\xff\xfe not UTF-8\n", 3)}
SCRAPE_TIMEOUT_S = 5.0


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """Every sample of http://127.0.0.1:port/metrics by name and labels, e.g. 'x_total{reason=json}'."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


class TestMetricsEndpoint:
    """The counters at /metrics agree with the database after a load, and move during it."""

    def test_counters_match_the_database(self, fifo_path, dsn, collector, run_emitter, query, wait_for_rows, tmp_path):
        """Scraped during the load the counters grow; after it, rows and rejections equal the tables' counts."""
        port = free_port()
        proc = collector(fifo_path, dsn, "--journal", str(tmp_path / "journal"), "--metrics-port", str(port))
        assert f"metrics at http://127.0.0.1:{port}/metrics" in proc.log()
        summary: dict = {}
        load = threading.Thread(
            target=lambda: summary.update(
                run_emitter(fifo_path, "--count", str(LINES), "--rate", str(RATE), "--run-id", "m1")
            )
        )
        load.start()
        during = []
        try:
            fd = os.open(fifo_path, os.O_WRONLY)
            try:
                for line, count in BAD_LINES.values():
                    for _ in range(count):
                        os.write(fd, line)
            finally:
                os.close(fd)
            while load.is_alive():
                during.append(scrape(port))
                time.sleep(0.5)
        finally:
            load.join()
        assert summary["lines_sent"] == LINES
        assert len(during) >= 2
        read = [s["namedpiper_collector_lines_read_total"] for s in during]
        assert read == sorted(read)
        assert read[-1] > read[0]
        assert during[0]["namedpiper_collector_pipe_capacity_bytes"] == 65536
        wait_for_rows(dsn, "TRUE", LINES)
        bad = sum(count for _, count in BAD_LINES.values())
        wait_for_rows(dsn, "TRUE", bad, table="logs_rejected")
        deadline = time.monotonic() + SCRAPE_TIMEOUT_S
        while True:  # the counters follow the commit by a few instructions of the writer thread
            after = scrape(port)
            if after["namedpiper_collector_rows_written_total"] == LINES or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert after["namedpiper_collector_rows_written_total"] == query(dsn, "SELECT count(*) FROM logs")[0][0]
        assert after["namedpiper_collector_lines_read_total"] == LINES + bad
        for reason, (_, count) in BAD_LINES.items():
            assert after[f"namedpiper_collector_rejected_lines_total{{reason={reason}}}"] == count
        assert (
            sum(v for k, v in after.items() if k.startswith("namedpiper_collector_rejected_lines_total"))
            == query(dsn, "SELECT count(*) FROM logs_rejected")[0][0]
        )
        assert after["namedpiper_collector_copy_seconds_count"] == after["namedpiper_collector_batches_total"] > 0
        assert after["namedpiper_collector_database_up"] == 1
        assert after["namedpiper_collector_journal_uncommitted_bytes"] == 0
        assert after["namedpiper_collector_journal_bytes"] >= 0
        assert after["namedpiper_collector_last_commit_timestamp_seconds"] == pytest.approx(time.time(), abs=60)
        assert after["process_resident_memory_bytes"] > 0
        # The harness's scrape reads the same endpoint into its timeline.
        seen = scrape_metrics(f"http://127.0.0.1:{port}/metrics")
        assert seen is not None
        assert seen.rows_written == LINES
        assert seen.rejected == bad
        assert proc.stop() == 0

    def test_off_by_default(self, fifo_path, dsn, collector):
        """Without --metrics-port nothing listens and nothing is logged about metrics."""
        proc = collector(fifo_path, dsn)
        assert "metrics at" not in proc.log()
        assert proc.stop() == 0


class TestMetricsErrors:
    """A port the collector cannot serve on stops it at start with one clear line."""

    def test_busy_port(self, fifo_path, dsn, collector):
        """A port already bound: exit status 2, naming the port and the fix."""
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            proc = collector(fifo_path, dsn, "--metrics-port", str(port), ready=None)
            assert proc.wait() == 2
        assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.log()
        assert "pick another --metrics-port" in proc.log()

    @pytest.mark.parametrize("port", ["-1", "70000"])
    def test_bad_port(self, fifo_path, dsn, collector, port):
        """A port outside 0-65535 is refused before anything starts."""
        proc = collector(fifo_path, dsn, "--metrics-port", port, ready=None)
        assert proc.wait() == 2
        assert f"--metrics-port {port}: give a TCP port from 1 to 65535" in proc.log()
