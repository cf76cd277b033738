"""The system's headless Chromium through chromedriver, for tests that look at a page (skipped without one)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

SKIP_REASON = "no system chromium + chromedriver (apt-get install chromium chromium-driver; .ci/run installs them)"


def system_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) from the system, None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


needs_browser = pytest.mark.skipif(system_browser() is None, reason=SKIP_REASON)


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator:
    """A selenium driver of the system's Chromium, headless, with the page's console log readable; quit after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = system_browser()
    if found is None:
        pytest.skip(SKIP_REASON)
    chromium, driver_path = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
