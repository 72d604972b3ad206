"""End to end in a real browser: JupyterLab with the extension, headless Chromium in a 1024 px
wide window, the dashboard notebook run as a user runs it. Its charts must render the seeded
data (the date axis labelled from the first day plotted), a click on a bar must filter the cost
trend, the recent calls must fit the notebook's width, filter by provider from the browser and
open a call's detail; every widget is screenshot (kept in the test's tmp dir; the README's
copies come from the same code: `python -m tests.browser_screenshots`).

Skipped when /usr/bin/chromium is missing, unless LCM_REQUIRE_BROWSER=1 (CI), which fails.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import re

import psutil
import pytest

from lcm_jupyter.ui._common import money
from lcm_jupyter.ui.logtable import SHORT_TIME, cost_text, local_time

from .browser_screenshots import (
    CHROMIUM,
    LIVE_CALLS,
    Notebook,
    browser_notebook,
    capture,
    chromium,
    open_routed_detail,
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

        # The date axis spans the days plotted: its first label is the first day's, under the
        # first point (not a day before the data starts).
        first_label, first_tick, first_point = dashboard.evaluate(
            """(w) => {
                const fig = w.querySelector('.bqplot');
                const tick = fig.querySelector('.axis .tick');
                const x = (e) => e.getBoundingClientRect().x + e.getBoundingClientRect().width / 2;
                const dot = fig.querySelector('.dot');  // the first day's cost
                return [tick.textContent, x(tick.querySelector('line')), x(dot)];
            }"""
        )
        assert first_label == datetime.date.fromisoformat(days[0]["date"]).strftime("%b %d")
        assert first_tick == pytest.approx(first_point, abs=1.5)

        # Hovering a bar: its cost in the widgets' one money format (the kernel fills the tip).
        dashboard.locator(".bqplot rect.bar").first.hover()
        tip = notebook.page.locator(".lcm-tip", has_text=models[0]["name"])
        tip.wait_for()
        assert f"Cost {money(models[0]['cost_usd'])}" in tip.inner_text()
        notebook.page.mouse.move(0, 0)

        # The recent calls start with the live ones (the kernel's clock formats the times).
        calls_widget = notebook.widget(shots["log-table"])
        table = calls_widget.inner_text()
        for row in lab.live_calls:
            assert local_time(row["created_at"], fmt=SHORT_TIME) in table, (row, table[:2000])
        # They fit the notebook at this width: no sideways scrolling, Status and Rate in view.
        fit = calls_widget.evaluate(
            """(w) => {
                const out = w.closest('.jp-OutputArea-output').getBoundingClientRect();
                const grid = w.querySelector('.lcm-calls .widget-gridbox');
                const edges = [...grid.children].map(c => c.getBoundingClientRect().right);
                return {scroll: grid.scrollWidth, width: grid.clientWidth,
                        right: Math.max(...edges), limit: out.right};
            }"""
        )
        assert fit["scroll"] <= fit["width"] and fit["right"] <= fit["limit"], fit

        # A call's detail, opened from its row: what GET lcm/api/logs/{id} holds, in full.
        panel = open_routed_detail(notebook, shots["log-table"])
        detail = panel.inner_text()
        shown_id = re.search(r"Id\s+([0-9a-f]{32})", detail).group(1)
        with lab.client() as lcm:
            call = lcm.log(shown_id)
        routed = call["routing_decision"]["was_routed"]
        # A failed call billed nothing (the seeded history has some) says so.
        failed = (call["status"] is None or call["status"] >= 400) and not call["cost_usd"]
        cost = "— (the call failed: nothing billed)" if failed else cost_text(call["cost_usd"])
        for text in (
            f"Routed\t{'yes' if routed else 'no'}",
            f"Cost\t{cost}\n",
            f"Asked for\t{call['requested_model']}",
            f"Answered by\t{call['model']}",
            f"Input\t{call['input_tokens']:,}",
            f"Output\t{call['output_tokens']:,}",
            f"Reason\t{call['routing_decision']['reason']}",
            "Latency\t",
        ):
            assert text in detail, (text, detail)

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

        # A filter picked in the browser: the table shows the API's calls for it, only those.
        with lab.client() as lcm:
            expected = lcm.logs(provider="anthropic", limit=20)
        assert expected and len({r["provider"] for r in expected}) == 1
        calls_widget.locator(".widget-dropdown", has_text="Provider").locator(
            "select"
        ).select_option("anthropic")
        calls_widget.locator(
            ".widget-html-content", has_text="matching provider anthropic"
        ).wait_for()
        times = calls_widget.evaluate(
            """(w) => [...w.querySelectorAll('.lcm-calls .widget-gridbox > .widget-html')]
                .map(c => c.innerText.trim()).filter(t => /^\\d\\d-\\d\\d \\d/.test(t))"""
        )
        assert times == [local_time(r["created_at"], fmt=SHORT_TIME) for r in expected], times
        assert "gpt-4o" not in calls_widget.inner_text()
        notebook.screenshot(shots["log-table"], shots_dir / "log-table-filtered.png")
    print(f"screenshots in {shots_dir}")
    # Every process the test started is gone, the kernel with its server (an orphan would
    # no longer be our child: each is checked by itself).
    _, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, alive
