"""Headless Chromium for the web view's tests: Playwright from PyPI driving Debian's chromium
(Playwright cannot download its own browsers here). `browser()` skips with the reason when
either is missing; `make setup` installs both."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import pytest

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def browser():
    """A new page (1400x900) in headless Chromium; page errors fail the test at the end."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium; make setup)")
    from playwright.sync_api import sync_playwright
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses root
    errors: list[str] = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = b.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page
        finally:
            b.close()
    assert not errors, f"the page raised: {errors}"
