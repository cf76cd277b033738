"""A real run's timeline, timeline.csv and report.html, opened in a real headless Chromium."""

from __future__ import annotations

import csv
import itertools
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg2.extensions
import pytest
from browser import headless_chromium, needs_browser
from conftest import _on_server
from harness import locust_path
from test_scenarios import ROOT, run_scenario
from test_web_ui import WebHarness

# Charts a run with the reference collector draws (the journal chart shows the database's state without one).
CHARTS = {"rate", "cumulative", "pipe", "latency", "collector", "journal"}
# Plotly draws a chart asynchronously after the page loads; a few seconds covers a slow CI machine.
RENDER_TIMEOUT_S = 30
# The page's height grows with the charts; the screenshot takes the whole of it (capped for a sane PNG).
MAX_SCREENSHOT_HEIGHT_PX = 4000


@pytest.fixture(scope="module")
def run(database, tmp_path_factory) -> tuple[Path, dict]:
    """One short steady run with a 2 s collector pause from its first second: its report folder and verdict."""
    report_dir = tmp_path_factory.mktemp("reports")
    name = f"np_test_{secrets.token_hex(4)}"
    _on_server(database, "CREATE DATABASE {}", name)
    try:
        code, output, verdict = run_scenario(
            "steady",
            psycopg2.extensions.make_dsn(database.dsn, dbname=name),
            report_dir,
            "--run-time",
            "10s",
            "--pause-collector-at",
            "1",
            "--pause-collector-for",
            "2",
            "--users",
            "4",
            "--spawn-rate",
            "4",
        )
    finally:
        _on_server(database, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    assert "Traceback" not in output, output[-4000:]
    assert code == 0, output[-4000:]
    return report_dir / verdict["run_id"], verdict


class TestTimeline:
    """Every run records the pipeline once a second from its start to the end of verification."""

    def test_samples_cover_the_run(self, run):
        """One sample a second, load then drain then verify, with the collector's own counters."""
        _, v = run
        samples = v["timeline"]
        assert len(samples) >= 6
        assert samples[0]["phase"] == "load"
        assert samples[-1]["phase"] == "verify"
        gaps = [b["t_s"] - a["t_s"] for a, b in itertools.pairwise(samples)]
        assert max(gaps[:-1]) < 2.5  # once a second (the last sample closes verification whenever it ends)
        assert samples[-1]["lines_written"] == v["totals"]["sent"]
        assert samples[-1]["rows_landed"] == v["totals"]["landed"]
        assert any(s["landed_from"] == "collector metrics" for s in samples)
        assert any((s["pipe_capacity"] or 0) >= 65536 for s in samples)
        assert any(s["collector_rss_mib"] for s in samples)
        assert any(s["latency_p99_ms"] is not None for s in samples)

    def test_the_pause_is_a_span(self, run):
        """The injected pause opens and closes a fault span, and its markers sit in the samples."""
        _, v = run
        (span,) = v["fault_spans"]
        assert span["fault"] == "collector paused"
        assert span["end_s"] - span["start_s"] == pytest.approx(2, abs=0.5)
        marks = [m for s in v["timeline"] for m in s["marks"]]
        assert marks == ["start: collector paused", "end: collector paused"]
        paused = [s for s in v["timeline"] if span["start_s"] + 0.3 < s["t_s"] < span["end_s"] - 0.2]
        assert paused
        # Nothing lands and nothing more is written while the collector is stopped: the pipe stays full.
        assert all(s["landed_per_s"] in (0, None) for s in paused)
        assert len({s["lines_written"] for s in paused}) == 1
        # Measured (a FIFO briefly unopenable is None: seen once on the shared test machine), the pipe holds bytes.
        assert all(s["pipe_bytes"] > 0 for s in paused if s["pipe_bytes"] is not None)
        assert all(s["collector_cpu_percent"] in (0, None) for s in paused[1:])

    def test_csv_has_every_sample(self, run):
        """timeline.csv holds the same samples as verdict.json."""
        run_dir, v = run
        with (run_dir / "timeline.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(v["timeline"])
        assert [float(r["t_s"]) for r in rows] == [s["t_s"] for s in v["timeline"]]
        assert rows[-1]["lines_written"] == str(v["totals"]["sent"])


class TestReportCommand:
    """python -m loadtests.report rebuilds a run's page and compares two runs."""

    def test_rebuild_and_compare(self, run, tmp_path):
        """The rebuilt page equals the run's own; a comparison page holds both run ids; no network reference."""
        run_dir, v = run
        original = (run_dir / "report.html").read_text()
        rebuilt = tmp_path / "rebuilt.html"
        subprocess.run(
            [sys.executable, "-m", "loadtests.report", str(run_dir), "-o", str(rebuilt)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        assert rebuilt.read_text() == original
        # Nothing loaded from elsewhere: no script, style or image by URL (plotly.js is inline; links to its
        # authors inside its code are not loaded).
        page = re.sub(r"<script>.*?</script>", "", original, flags=re.DOTALL)
        assert "<script" in original
        assert re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page) == []
        out = tmp_path / "compare.html"
        subprocess.run(
            [sys.executable, "-m", "loadtests.report", "--compare", str(run_dir), str(run_dir), "-o", str(out)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        assert out.read_text().count(v["run_id"]) >= 4

    def test_missing_folder_says_what_to_give(self, tmp_path):
        """A folder without verdict.json: exit 2 and one line naming the file."""
        done = subprocess.run(
            [sys.executable, "-m", "loadtests.report", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 2
        assert f"cannot read {tmp_path / 'verdict.json'}" in done.stderr


@needs_browser
class TestReportInBrowser:
    """Headless Chromium opens report.html from disk and finds every chart drawn, without console errors."""

    def test_charts_render(self, run, tmp_path):
        """Each chart has its plot with lines, the pause is a shaded shape, and a screenshot is saved."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        run_dir, v = run
        with headless_chromium() as driver:
            driver.get((run_dir / "report.html").as_uri())
            WebDriverWait(driver, RENDER_TIMEOUT_S).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= 2 * len(CHARTS)
            )
            charts = {e.get_attribute("data-chart") for e in driver.find_elements(By.CSS_SELECTOR, "section.chart")}
            assert charts == CHARTS
            for key in charts:
                plot = driver.find_element(By.ID, f"chart-{key}")
                assert plot.find_elements(By.CSS_SELECTOR, "g.trace.scatter path.js-line"), key
            rate = driver.find_element(By.ID, "chart-rate")
            assert rate.find_elements(By.CSS_SELECTOR, ".shapelayer path")  # the pause, shaded
            assert "collector paused" in rate.text
            body = driver.find_element(By.TAG_NAME, "body").text
            assert f"PASS · run {v['run_id']}" in body
            assert "p0u0" in body  # the per-source table
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
            height = min(MAX_SCREENSHOT_HEIGHT_PX, driver.execute_script("return document.body.scrollHeight"))
            driver.set_window_size(1400, height + 100)
            shot = tmp_path / "report.png"
            assert driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000


class TestWebCharts:
    """The web UI serves the current run's charts: live while it runs, the report once it has a verdict."""

    def test_live_then_final(self, tmp_path, dsn):
        """During the run /namedpiper/charts reloads itself and plots the samples so far; after, it is the report."""
        web = WebHarness(tmp_path, dsn)
        try:
            web.wait_until_up()
            status, _ = web.post("/swarm", {"user_count": "2", "spawn_rate": "2"})
            assert status == 200
            time.sleep(4)
            with urllib.request.urlopen(web.base + "/namedpiper/charts", timeout=30) as answer:
                live = answer.read().decode()
            assert 'http-equiv="refresh"' in live
            assert 'id="chart-rate"' in live
            rows = web.get_json("/stats/requests")["extended_stats"][0]["data"]
            assert rows[1]["item"] == "charts"
            web.post("/stop")
            (verdict,) = web.wait_for_verdicts(1)
            deadline = time.monotonic() + RENDER_TIMEOUT_S
            while True:
                with urllib.request.urlopen(web.base + "/namedpiper/charts", timeout=30) as answer:
                    final = answer.read().decode()
                if "refresh" not in final or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert 'http-equiv="refresh"' not in final
            assert f"PASS · run {verdict['run_id']}" in final
        finally:
            web.stop()


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_a_bad_timeline_interval_is_refused(bad, dsn, tmp_path):
    """A sampling interval that is not a positive number of seconds stops the run at once, saying so."""
    proc = subprocess.run(
        [
            locust_path(),
            "--config",
            "scenarios/steady.conf",
            "--timeline-interval",
            bad,
            "--dsn",
            dsn,
            "--report-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"--timeline-interval {float(bad)}: give the seconds between the timeline's samples" in proc.stderr
    assert not list(tmp_path.glob("*/verdict.json"))
