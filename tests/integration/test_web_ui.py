"""The harness in Locust's web UI: bound to 127.0.0.1, not a shell for whoever posts the form, one run per start."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
from harness import Harness, free_port, latest_verdict

# Long enough for Locust to start and for a stopped run to drain and give its verdict.
UI_TIMEOUT_S = 90


class WebHarness(Harness):
    """locust -f loadtests/fifo.py with its web UI on a free port."""

    def __init__(self, tmp_path: Path, dsn: str, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.report_dir = tmp_path / "reports"
        super().__init__(
            [
                "-f",
                "loadtests/fifo.py",
                "--web-port",
                str(self.port),
                "--dsn",
                dsn,
                "--report-dir",
                str(self.report_dir),
                *extra,
            ],
            tmp_path / "locust.log",
        )

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + UI_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(self.base + "/", timeout=5).read()
                return
            except OSError:
                assert self.proc.poll() is None, self.output()[-3000:]
                assert time.monotonic() < deadline, self.output()[-3000:]
                time.sleep(0.2)

    def post(self, path: str, fields: dict[str, str] | None = None) -> tuple[int, dict]:
        """POST a form; (HTTP status, JSON answer)."""
        data = urllib.parse.urlencode(fields or {}).encode()
        request = urllib.request.Request(self.base + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"{}")

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=30) as answer:
            return json.loads(answer.read())

    def wait_for_verdicts(self, count: int) -> list[dict]:
        """Poll the report folder until count verdicts exist."""
        deadline = time.monotonic() + UI_TIMEOUT_S
        while len(found := list(self.report_dir.glob("*/verdict.json"))) < count:
            assert time.monotonic() < deadline, self.output()[-3000:]
            time.sleep(0.2)
        return [json.loads(p.read_text()) for p in found]


@pytest.fixture
def web(tmp_path, dsn):
    """A running web UI harness against the test's database, killed by pid at the end."""
    harness = WebHarness(tmp_path, dsn)
    try:
        harness.wait_until_up()
        yield harness
    finally:
        harness.stop()


class TestBinding:
    """The web UI faces only this machine unless Locust's --web-host says otherwise."""

    def test_binds_127_0_0_1_by_default(self, web):
        """The listening socket of the harness is on 127.0.0.1, not on every interface."""
        ports = [
            c.laddr
            for c in psutil.Process(web.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == web.port
        ]
        assert [addr.ip for addr in ports] == ["127.0.0.1"], ports


class TestAttack:
    """A POST /swarm carrying a command, a path or a DSN changes nothing and runs nothing."""

    def test_a_collector_command_from_the_form_is_refused_and_never_runs(self, web, tmp_path):
        """The attack of issue 9: collector_cmd=sh -c 'id > MARKER ...' is refused; no marker, no run, no folder."""
        marker = tmp_path / "pwned"
        elsewhere = tmp_path / "elsewhere"
        status, answer = web.post(
            "/swarm",
            {
                "user_count": "1",
                "spawn_rate": "1",
                "host": "",
                "collector_cmd": f'sh -c "id > {marker}; exec cat {{fifo}} >/dev/null"',
                "fifo": str(tmp_path / "other.fifo"),
                "report_dir": str(elsewhere),
                "dsn": "postgresql://attacker@203.0.113.1/x",
                "keep_runs": "0",
                "drain_timeout": "1",
            },
        )
        assert status == 403
        assert answer["success"] is False
        assert "collector_cmd" in answer["message"]
        time.sleep(3)  # time for a run to start if one had been let through
        assert not marker.exists()
        assert not elsewhere.exists()
        assert not (tmp_path / "other.fifo").exists()
        assert not web.report_dir.exists()
        assert web.get_json("/stats/requests")["state"] == "ready"
        assert [p for p in web.descendants() if "sh" in p.name()] == []
        # A legitimate start afterwards still uses the options given on the command line.
        status, _ = web.post("/swarm", {"user_count": "2", "spawn_rate": "2", "size_mix": "small"})
        assert status == 200
        time.sleep(2)
        web.post("/stop")
        verdict = web.wait_for_verdicts(1)[0]
        assert verdict["options"]["collector_cmd"].startswith("{python} -m reference.collector")
        assert not marker.exists()

    @pytest.mark.parametrize("field", ["np_fifo", "np_run_id", "pipe_size", "max_lost", "html_file", "locustfile"])
    def test_any_option_outside_the_load_shaping_ones_is_refused(self, web, field):
        """Not only the four named fields: every option that is not load-shaping, and internal ones, are refused."""
        status, answer = web.post("/swarm", {"user_count": "1", "spawn_rate": "1", field: "x"})
        assert status == 403, answer
        assert field in answer["message"]

    def test_changing_the_user_class_is_refused(self, web):
        """POST /user (Locust's user class editor) is disabled."""
        request = urllib.request.Request(
            web.base + "/user",
            data=b'{"user_class_name": "FifoUser", "host": "x"}',
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        err.value.close()
        assert err.value.code == 403

    def test_the_form_shows_only_load_shaping_options(self, web):
        """The custom parameters the UI offers are exactly the load-shaping ones."""
        page = urllib.request.urlopen(web.base + "/", timeout=10).read().decode()
        for hidden in ("collector_cmd", "report_dir", '"dsn"', '"fifo"', "keep_runs"):
            assert hidden not in page
        assert "size_mix" in page
        assert "fifo:a new FIFO per run" in page  # the host field shows where users write, no missing-host banner


class TestRuns:
    """Each start and stop is one run with its own report folder, verdict and HTML report."""

    def test_each_start_and_stop_is_one_run(self, web):
        """Two start/stop cycles: /stop returns at once, then two verdicts, two locust.html, shown at /namedpiper."""
        for _ in range(2):
            status, _ = web.post("/swarm", {"user_count": "4", "spawn_rate": "4"})
            assert status == 200
            time.sleep(3)
            started = time.monotonic()
            web.post("/stop")
            assert time.monotonic() - started < 2, "POST /stop waited for the drain"
            web.wait_for_verdicts(len(list(web.report_dir.glob("*/verdict.json"))) + 1)
            time.sleep(0.5)
        verdicts = web.wait_for_verdicts(2)
        assert all(v["passed"] and v["totals"]["landed"] == v["totals"]["sent"] > 0 for v in verdicts)
        assert len({v["run_id"] for v in verdicts}) == 2
        for v in verdicts:
            assert (web.report_dir / v["run_id"] / "locust.html").stat().st_size > 1000
            assert [s["source"] for s in v["sources"]] == ["p0u0", "p0u1", "p0u2", "p0u3"]  # restart every run
        shown = web.get_json("/namedpiper")
        assert shown["verdict"]["run_id"] == latest_verdict(web.report_dir)["run_id"]
        rows = web.get_json("/stats/requests")["extended_stats"][0]["data"]
        assert rows[0]["result"] == "PASS"
        assert web.output().count("PASS: every expectation holds") == 2

    def test_two_quick_starts_make_one_run_with_one_collector(self, web):
        """Start posted twice while the first still sets up: one run, one collector, none left after the harness."""
        for _ in range(2):
            status, _ = web.post("/swarm", {"user_count": "2", "spawn_rate": "2"})
            assert status == 200
        time.sleep(4)
        collectors = [p for p in web.descendants() if "reference.collector" in " ".join(p.cmdline())]
        assert len(collectors) == 1, [p.cmdline() for p in collectors]
        web.post("/stop")
        (verdict,) = web.wait_for_verdicts(1)
        assert verdict["passed"], verdict["failures"]
        assert len(list(web.report_dir.iterdir())) == 1  # no second run folder
        web.stop()
        assert not [p for p in collectors if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) from the system, None when either is missing.

    Debian's chromium first; GitHub's Ubuntu runners have Google Chrome and its driver in $CHROMEWEBDRIVER.
    """
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    chromium = next((found for name in names if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver") or shutil.which("chromedriver", path=os.environ.get("CHROMEWEBDRIVER", ""))
    return (chromium, driver) if chromium and driver else None


@pytest.mark.skipif(
    _browser() is None,
    reason="no system chromium + chromedriver (apt-get install chromium chromium-driver; .ci/run installs them)",
)
class TestBrowser:
    """A real headless Chromium starts a run from the form, stops it and finds the verdict in the UI."""

    def test_start_stop_and_read_the_verdict_in_the_browser(self, web):
        """Form -> Start, Stop, then the namedpiper tab shows PASS and the expectations."""
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        chromium, driver_path = _browser()  # type: ignore[misc]
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        try:
            wait = WebDriverWait(driver, UI_TIMEOUT_S)
            driver.get(web.base + "/")
            users = wait.until(ec.presence_of_element_located((By.NAME, "userCount")))
            for field, value in ((users, "3"), (driver.find_element(By.NAME, "spawnRate"), "3")):
                field.send_keys(Keys.CONTROL, "a")  # React keeps its value on clear(): select and type over it
                field.send_keys(value)
            driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            stop = wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Stop']")))
            time.sleep(3)
            stop.click()
            # The tab, opened right after the stop, fills in by itself (the page keeps polling while the run drains).
            wait.until(
                ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='namedpiper verdict']"))
            ).click()
            wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), ": PASS"))
            body = driver.find_element(By.TAG_NAME, "body").text
            verdict = web.wait_for_verdicts(1)[0]
            assert verdict["passed"]
            assert f"run {verdict['run_id']}: PASS" in body
            assert "max_lost" in body
            assert "✓" in body
            assert [s["source"] for s in verdict["sources"]] == ["p0u0", "p0u1", "p0u2"]
            for source in verdict["sources"]:
                assert f"source {source['source']}" in body
        finally:
            driver.quit()
