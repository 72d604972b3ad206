"""End to end in a real browser: JupyterLab with the extension, headless Chromium, the dashboard
notebook run as a user runs it. Its charts must render the seeded data, a click on a bar must
filter the cost trend, and every widget is screenshot (kept in the test's tmp dir; the README's
copies come from the same code: `python -m tests.browser_screenshots`).

Skipped when /usr/bin/chromium is missing, unless LCM_REQUIRE_BROWSER=1 (CI), which fails.
"""

from __future__ import annotations

import importlib.util
import os
import re

import psutil
import pytest

from lcm_jupyter.ui.logtable import local_time

from .browser_screenshots import (
    CHROMIUM,
    LIVE_CALLS,
    Notebook,
    browser_notebook,
    capture,
    chromium,
    running_lab,
)


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser_available():
    missing = _browser_missing()
    if missing:
        if os.environ.get("LCM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LCM_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)


def _points(path_d: str) -> int:
    """The number of points an SVG line path ("M x,y L x,y ...") joins."""
    return len(re.findall(r"[ML]", path_d))


def _children() -> dict[int, psutil.Process]:
    return {p.pid: p for p in psutil.Process().children(recursive=True)}


def test_dashboard_notebook_in_jupyterlab(browser_available, tmp_path):
    _, shots = browser_notebook()
    before = _children()
    with running_lab(tmp_path) as lab, chromium(tmp_path) as browser:
        notebook = Notebook(browser, lab)
        notebook.run_all()  # fails on any traceback, widget error line or unrendered widget
        # The server, its kernel, Chromium and its helpers.
        started = [p for pid, p in _children().items() if pid not in before]
        dashboard = notebook.widget(shots["dashboard"])

        # The kernel found the server by itself: the extension set LCM_SERVER_URL/TOKEN in
        # the server's environment (running_lab removed any from ours), so these figures are
        # the seeded history plus the live calls, read from this server.
        calls = lab.history.calls + len(LIVE_CALLS)
        assert f"{calls:,} calls" in dashboard.inner_text(), notebook.diagnostics()

        with lab.client() as lcm:
            days = lcm.timeseries("30d")["points"]
            models = lcm.breakdown(by="model", period="30d")["items"]
        assert len(models) == len(lab.history.models) >= 6

        # The cost trend: cost and savings lines through every day of the period.
        lines = dashboard.evaluate(
            """(w) => [...w.querySelectorAll('.bqplot g.curve path.line')]
                .map(p => p.getAttribute('d') || '')"""
        )
        assert [_points(d) for d in lines] == [len(days), len(days)] == [30, 30], lines

        # The breakdown: one bar per model, longest first, lengths in proportion to cost.
        bar_lengths = dashboard.evaluate(
            """(w) => [...w.querySelectorAll('.bqplot rect.bar')]
                .map(r => parseFloat(r.getAttribute('width')))"""
        )
        assert len(bar_lengths) == len(models), (bar_lengths, models)
        top = models[0]["cost_usd"]
        for length, model in zip(bar_lengths, models, strict=True):
            assert length == pytest.approx(bar_lengths[0] * model["cost_usd"] / top, rel=0.01)
        ticks = dashboard.evaluate(
            """(w) => [...w.querySelectorAll('.bqplot .axis .tick text')].map(t => t.textContent)"""
        )
        assert {m["name"] for m in models} <= set(ticks)

        # The recent calls start with the live ones (the kernel's clock formats the times).
        table = notebook.widget(shots["log-table"]).inner_text()
        for row in lab.live_calls:
            assert local_time(row["created_at"]) in table, (row, table[:2000])

        shots_dir = tmp_path / "screenshots"
        taken = capture(notebook, shots, shots_dir)
        assert set(taken) == {"dashboard", "log-table", "key-form", "rules-editor", "pricing-table"}
        assert all(path.stat().st_size > 10_000 for path in taken.values())

        # Click-to-filter, in the browser: the second bar (the second most expensive model).
        unfiltered = lines[0]
        second = models[1]["name"]
        dashboard.locator(".bqplot rect.bar").nth(1).click()
        label = dashboard.locator(".widget-html-content", has_text="Cost trend filtered to")
        label.wait_for()
        assert f"model {second}" in label.inner_text()
        title = dashboard.locator(".bqplot text.mainheading").first
        notebook.page.wait_for_function(
            "(t) => t.textContent.includes(':')", arg=title.element_handle()
        )
        assert title.text_content() == f"Cost and savings per day: model {second}"
        notebook.page.wait_for_timeout(500)  # the line's transition
        after = dashboard.locator(".bqplot g.curve path.line").first.get_attribute("d")
        assert after != unfiltered and _points(after) == 30
        notebook.screenshot(shots["dashboard"], shots_dir / "dashboard-filtered.png")
    print(f"screenshots in {shots_dir}")
    # Every process the test started is gone, the kernel with its server (an orphan would
    # no longer be our child: each is checked by itself).
    _, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, alive
