"""Debian's headless chromium driven by Selenium through Debian's chromium-driver, for the
browser tests and bench/report_bench.py: started with the flags a machine without a network
needs (no background connections), and ended with every process it started."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@contextmanager
def headless_chromium(user_data: Path, width: int = 1280, height: int = 900, console_log: bool = False) -> Iterator:
    """A Selenium driver of a fresh chromium (profile in USER_DATA) with a WIDTH x HEIGHT
    viewport; CONSOLE_LOG keeps the page's console for `get_log("browser")`. On leaving, the
    driver quits and chromedriver's whole tree is killed; one that outlives that is an error."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: scripts/test installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in [*CHROMIUM_ARGS, f"--user-data-dir={user_data}", f"--window-size={width},{height}"]:
        options.add_argument(argument)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    chromedriver = psutil.Process(service.process.pid)
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                      "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        started = [chromedriver, *chromedriver.children(recursive=True)]
        try:
            driver.quit()
        finally:
            for process in started:
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(started, timeout=10)
            if alive:
                raise RuntimeError(f"chromium processes outlived their driver: {alive}")
