"""`dvc plots show` draws offline: .dvc/config points DVC at a page with Vega inlined
(sparse_cbm_app/cli/plots_page.py), checked in a real Chromium with every non-file request refused."""

from __future__ import annotations

import re

import yaml

from sparse_cbm_app.cli.plots_page import PAGE, PLACEHOLDERS
from sparse_cbm_app.cli.repo import dvc
from tests.browser import browser_page
from tests.conftest import REPO


def test_dvc_uses_the_committed_offline_page():
    assert dvc(["config", "plots.html_template"], REPO).stdout.strip() == PAGE.name   # relative to .dvc/
    page = (REPO / PAGE).read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "{scripts}" not in page          # so DVC's CDN script tags are never added
    assert not re.search(r"<script[^>]+src=", page)
    assert "window.vegaEmbed=" in page.replace(" ", "")
    assert all(page.count(p) == 1 for p in PLACEHOLDERS if p != "{scripts}")


def test_plots_page_draws_offline(tmp_path):
    out = tmp_path / "plots"
    dvc(["plots", "show", "--out", str(out)], REPO)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html
    charts = html.count("vegaEmbed('#")
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    assert charts >= len(declared)
    # DVC writes each title, unescaped, into a JavaScript string ('#<title>'): a quote mark breaks its chart
    assert not [t for entry in declared for t in entry if "'" in t or '"' in t]
    refused, problems = [], []
    with browser_page(1400, 900) as page:
        def route(r):
            if r.request.url.startswith("file://"):
                r.continue_()
            else:
                refused.append(r.request.url)
                r.abort()
        page.route("**/*", route)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto((out / "index.html").as_uri())
        page.wait_for_function(f"document.querySelectorAll('.vega-embed svg.marks, .vega-embed canvas').length >= "
                               f"{charts}", timeout=30_000)
        titles = page.evaluate("Array.from(document.querySelectorAll('.vega-embed .role-title-text'), e => e.textContent)")
    assert refused == [] and problems == []
    assert "Losses per step" in titles and any(t.startswith("Intervention on the corrupted") for t in titles)
