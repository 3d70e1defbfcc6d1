"""The explorer's tests: the server on a loopback port in a thread, and Chromium driven by Playwright.

Chromium is Debian's (``apt-get install chromium``, from the package registry; Playwright's own browser
download is never used): ``SPARSE_CBM_CHROMIUM`` names another binary. When none is there and the tests run
as root with apt, the set-up installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager

import pytest

from sparse_cbm_app.explorer.server import serving

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium() -> str:
    path = os.environ.get("SPARSE_CBM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env,
                       check=False, capture_output=True)
        path = shutil.which("chromium")
    if path is None:
        pytest.fail("the explorer's browser tests need Chromium: `apt-get install chromium` (Debian), or set "
                    "SPARSE_CBM_CHROMIUM to a Chromium binary")
    return path


running = serving  # the server in a thread, on a free loopback port


@contextmanager
def browser_page(width: int = 1400, height: int = 900):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def draw_box(page, x0: float, y0: float, x1: float, y1: float) -> None:
    """Drag on the explorer's canvas from (x0, y0) to (x1, y1), in shares of its width and height."""
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + x1 * box["width"], box["y"] + y1 * box["height"], steps=5)
    page.mouse.up()


def set_slider(page, value: float) -> None:
    """Move the edit slider with the keyboard, as a person would, to ``value``."""
    slider = page.locator("#edit-slider")
    slider.focus()
    page.keyboard.press("Home" if value < 0 else "End")
    step = float(slider.get_attribute("step"))
    target = float(slider.get_attribute("min" if value < 0 else "max"))
    for _ in range(int(round(abs(target - value) / step))):
        page.keyboard.press("ArrowRight" if value < 0 else "ArrowLeft")
