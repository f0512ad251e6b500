"""Headless Chromium for the pages' browser tests (Debian's chromium and chromium-driver)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Debian's chromium-driver puts the driver here.
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_driver(profile_dir: Path):
    chromium = shutil.which("chromium")
    if not (chromium and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "Debian chromium and chromium-driver are needed: `make test` installs them "
            "(apt-get install -y chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1100",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def text_of(driver, selector: str) -> str:
    """The element's text, read in one step inside the page: the page replaces its table rows
    every frame, so an element found first and read after may be gone by then (stale)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
    return str(driver.execute_script(script, selector)).strip()
