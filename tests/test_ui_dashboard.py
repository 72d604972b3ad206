"""The dashboard widget, against the extension served in this process (`served`).

Calls go through the official SDKs, so the figures the widget shows are the ones the
proxy metered. Clicks on the bar chart arrive as the frontend sends them: a custom
message to the Bars mark (`{"event": "element_click", "data": {...}}`, or
`background_click`), which bqplot hands to the mark's click callbacks.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from urllib.parse import parse_qsl

import numpy as np
import pytest

import lcm_jupyter
from lcm_jupyter import magics
from lcm_jupyter.client import LCMClient
from lcm_jupyter.ui import Dashboard
from lcm_jupyter.ui import dashboard as dash
from lcm_jupyter.ui._common import local_time

from .conftest import PROVIDER_KEY, expected_cost, wait_until
from .servers import free_port

BUDGET = 0.0005  # USD a month: room for one call's worst case; its cost crosses 1% to 6%
THRESHOLDS = [1, 2, 3, 4, 5, 6]
PROVIDERS = ("openai", "anthropic", "google")
CHAT = [{"role": "user", "content": "Say hello to the dashboard."}]


def _key(lcm: LCMClient, name: str, **fields) -> dict:
    return lcm.create_key(
        name=name,
        routing_mode="off",  # the model asked for is the model priced
        provider_api_keys=dict.fromkeys(PROVIDERS, PROVIDER_KEY),
        **fields,
    )


def _openai(key: dict, model: str) -> float:
    """One chat call through the openai SDK; the cost it must be logged with."""
    sdk = lcm_jupyter.openai_client(key["key"], max_retries=0)
    usage = sdk.chat.completions.create(model=model, messages=CHAT, max_tokens=20).usage
    return expected_cost(model, uncached=usage.prompt_tokens, out=usage.completion_tokens)


def _anthropic(key: dict, model: str) -> float:
    sdk = lcm_jupyter.anthropic_client(key["key"], max_retries=0)
    usage = sdk.messages.create(model=model, messages=CHAT, max_tokens=20).usage
    return expected_cost(model, uncached=usage.input_tokens, out=usage.output_tokens)


def _logged(lcm: LCMClient, n: int) -> list[dict]:
    # GET logs writes the queued rows first, so the analytics rollup has them too.
    assert wait_until(lambda: len(lcm.logs()) == n), lcm.logs()
    return lcm.logs()


class Requests:
    """The REST calls a client makes (an httpx event hook: observed, not replaced)."""

    def __init__(self, client: LCMClient) -> None:
        self.seen: list[tuple[str, dict]] = []
        client._http.event_hooks["request"].append(self._record)

    def _record(self, request) -> None:
        path = request.url.path.split("/lcm/api/", 1)[1]
        self.seen.append((path, dict(parse_qsl(request.url.query.decode()))))

    def take(self) -> list[tuple[str, dict]]:
        seen, self.seen = self.seen, []
        return seen


def _bar(board: Dashboard, name: str) -> int:
    return [b.name for b in board.bar_items].index(name)


def _click(board: Dashboard, index: int) -> None:
    bar = board.bar_items[index]
    data = {"index": index, "subIndex": 0, "x": bar.label, "y": bar.cost, "y0": 0, "y1": bar.cost}
    board.bars._handle_custom_msg({"event": "element_click", "data": data}, [])


def _background(mark) -> None:
    mark._handle_custom_msg({"event": "background_click", "data": None}, [])


def _close(values, expected) -> bool:
    return list(values) == pytest.approx(list(expected), abs=1e-12)


@pytest.fixture
def calls(served):
    """Two keys, four calls to three models of two providers; key b has a tiny budget."""
    with LCMClient() as lcm:
        a = _key(lcm, "team-a")
        b = _key(
            lcm,
            "team-b",
            monthly_budget_usd=BUDGET,
            budget_alerts_enabled=True,
            budget_alert_thresholds=THRESHOLDS,
        )
        costs = defaultdict(float)  # by (key name, model)
        costs["team-a", "gpt-4o-mini"] += _openai(a, "gpt-4o-mini")
        costs["team-a", "gpt-4o-mini"] += _openai(a, "gpt-4o-mini")
        costs["team-a", "gpt-4o"] += _openai(a, "gpt-4o")
        costs["team-b", "claude-3-5-haiku"] += _anthropic(b, "claude-3-5-haiku")
        rows = _logged(lcm, 4)
        assert wait_until(lambda: len(lcm.alerts(unread=True)) == len(THRESHOLDS))
    assert {r["model"] for r in rows} == {"gpt-4o-mini", "gpt-4o", "claude-3-5-haiku"}
    return {"a": a, "b": b, "costs": dict(costs), "rows": rows}


def test_the_dashboard_shows_what_the_calls_cost(calls):
    costs = calls["costs"]
    by_model = defaultdict(float)
    for (_key_name, model), cost in costs.items():
        by_model[model] += cost
    lcm = LCMClient()
    board = Dashboard(lcm)
    assert board.messages.kind == "" and f"Updated {board.updated:%H:%M:%S}." in board.summary.value
    assert board.state == "data" and board.body.layout.display == ""
    assert board.states.note.layout.display == "none"

    # The bar chart: top models by cost, as the API ranks them, at the metered cost.
    api = lcm.breakdown("model", "30d", limit=10)["items"]
    assert [b.name for b in board.bar_items] == [i["name"] for i in api]
    assert sorted(by_model, key=by_model.get, reverse=True) == [i["name"] for i in api]
    assert list(board.bars.x) == [i["name"] for i in api]
    assert list(board.bars.y) == [i["cost_usd"] for i in api]
    assert _close(board.bars.y, [by_model[i["name"]] for i in api])
    assert board.breakdown_figure.title == "Models by cost"

    # The trend: every day of the period, ending today (its days hold all four calls: one
    # unless the test ran over midnight); no routing, so no savings.
    points = lcm.timeseries("30d")["points"]
    cost, savings = board.trend_lines["cost"], board.trend_lines["savings"]
    assert len(cost.y) == len(savings.y) == 30
    assert list(cost.y) == [p["cost_usd"] for p in points]
    assert sum(cost.y) == pytest.approx(sum(costs.values()), abs=1e-12)
    assert sum(1 for c in cost.y if c) in (1, 2) and not any(savings.y)
    assert cost.x[-1] == np.datetime64(points[-1]["date"], "ms") == savings.x[-1]
    # Hovering a day's point or a bar: money as the tables show it (the hover callback
    # fills the tooltip widget, as the frontend's hover message makes it).
    day = len(points) - 1
    board.trend_dots._handle_custom_msg({"event": "hover", "point": {"index": day}}, [])
    tip = board.trend_tip.value
    assert f"Cost {dash.money(points[-1]['cost_usd'])}<" in tip and "Savings $0.00" in tip
    board.trend_dots._handle_custom_msg({"event": "hover", "point": {"index": 0}}, [])
    assert date.fromisoformat(points[0]["date"]).strftime("%a %b %d %Y") in board.trend_tip.value
    top = board.bar_items[0]
    board.bars._handle_custom_msg({"event": "hover", "data": {"index": 0, "x": top.label}}, [])
    assert board.bars.tooltip.value == dash.bar_tip(top)
    assert f"<b>{top.name}</b><br>Cost {dash.money(top.cost)}<" in board.bars.tooltip.value
    # The date axis spans the days plotted: no label left of the first day's point.
    first, last = (datetime.fromisoformat(points[i]["date"]) for i in (0, -1))
    assert (board.trend_x.min, board.trend_x.max) == (first - dash.HALF_DAY, last + dash.HALF_DAY)
    assert board.trend_x_axis.tick_values[0] == np.datetime64(points[0]["date"], "ms")
    assert board.trend_figure.title == "Cost and savings per day"
    assert isinstance(cost.scales["x"], dash.bq.DateScale)
    ticks = list(board.trend_y_axis.tick_values)
    assert ticks[0] == 0 and ticks[-1] >= 1.25 * max(cost.y) > 0
    assert cost.scales["y"].max == ticks[-1] and board.trend_y_axis.tick_format.startswith("$")
    total = sum(costs.values())
    assert f"{dash.money(round(total, 10))} spent" in board.summary.value
    assert "4 calls" in board.summary.value

    # The key table, in the API's order (by cost); budget used from GET budgets.
    table = board.key_table
    cost_b = costs["team-b", "claude-3-5-haiku"]
    cost_a = total - cost_b
    by_key = sorted([("team-a", cost_a), ("team-b", cost_b)], key=lambda kc: -kc[1])
    assert [r["key"] for r in table.rows] == [k for k, _ in by_key]
    row_a, row_b = sorted(table.rows, key=lambda r: r["key"])
    assert (row_a["requests"], row_b["requests"]) == (3, 1)
    assert row_a["cost_usd"] == pytest.approx(cost_a, abs=1e-12)
    assert row_b["cost_usd"] == pytest.approx(cost_b, abs=1e-12)
    assert row_a["budget_used"] is None
    spent = lcm.budget(calls["b"]["id"])["spent_usd"]
    assert spent == pytest.approx(cost_b, abs=1e-12)
    assert row_b["budget_used"] == pytest.approx(cost_b / BUDGET * 100, rel=1e-9)
    tokens_a = sum(
        r["input_tokens"] + r["output_tokens"]
        for r in calls["rows"]
        if r["key_id"] == row_a["key_id"]
    )
    assert row_a["tokens"] == tokens_a
    text = {cells[0]: cells for cells in table.text()}
    assert text["team-a"][6] == "—" and text["team-b"][6] == f"{row_b['budget_used']:.1f}%"
    # Routing is off for both keys: what auto routing would have saved team-a (gpt-4o ->
    # gpt-4o-mini on its gpt-4o call), and nothing for team-b (no cheaper Claude step).
    (shadow,) = lcm.shadow_savings("30d")["keys"]
    assert shadow["key_id"] == row_a["key_id"] and shadow["calls"] == 1
    assert text["team-a"][5] == dash.money(shadow["saving_usd"]) and text["team-b"][5] == "—"
    assert "Auto routing would have saved" in board.summary.value
    assert text["team-b"][3] == dash.money(cost_b)

    # Sorting: click a header to sort, again to reverse; no budget sorts last either way.
    table.header_buttons["requests"].click()
    assert [r["key"] for r in table.rows] == ["team-b", "team-a"]
    assert table.header_buttons["requests"].description == "Requests ▲"
    table.header_buttons["requests"].click()
    assert [r["key"] for r in table.rows] == ["team-a", "team-b"]
    for _ in range(2):
        table.header_buttons["budget_used"].click()
        assert [r["key"] for r in table.rows] == ["team-b", "team-a"]

    # The alerts panel: key b's unread alerts, the newest five shown, and marking all read.
    assert [a["threshold"] for a in board.alerts] == THRESHOLDS[::-1]
    assert "Budget alerts (6 unread)" in board.alerts_heading.value
    assert board.alerts_list.value.count('class="lcm-alert"') == dash.ALERTS_SHOWN == 5
    assert "and 1 more" in board.alerts_list.value
    assert "key 'team-b': 6% of the monthly budget" in board.alerts_list.value
    assert "key 'team-b': 1% of" not in board.alerts_list.value
    # Shown in the kernel's local time, as the log table shows calls.
    newest = board.alerts[0]["created_at"]
    assert local_time(newest)[:16] in board.alerts_list.value
    assert board.mark_read_button.layout.display == ""
    board.mark_read_button.click()
    assert lcm.alerts(unread=True) == [] and len(lcm.alerts()) == 6
    assert board.alerts == [] and "No unread budget alerts" in board.alerts_list.value
    assert board.mark_read_button.layout.display == "none"
    assert board.messages.kind == "ok" and board.messages.text == "Marked 6 alerts read."

    # A refresh makes the same six calls however many keys there are (budgets: one call).
    requests = Requests(lcm)
    board.refresh()
    assert [path for path, _ in requests.take()] == [
        "analytics/timeseries",
        "analytics/breakdown",
        "analytics/breakdown",
        "budgets",
        "analytics/shadow",
        "alerts",
    ]


def test_clicking_a_bar_filters_the_cost_trend(calls):
    costs = calls["costs"]
    lcm = LCMClient()
    board = Dashboard(lcm)
    requests = Requests(lcm)
    everything = list(board.trend_lines["cost"].y)
    assert "Click a bar to show only that model" in board.filter_label.value
    assert board.clear_button.layout.display == "none" and board.bars.selected is None

    mini = _bar(board, "gpt-4o-mini")
    _click(board, mini)
    assert board.filter == ("model", "gpt-4o-mini")
    assert requests.take() == [("analytics/timeseries", {"period": "30d", "model": "gpt-4o-mini"})]
    trend = board.trend_lines["cost"].y
    expected = lcm.timeseries("30d", model="gpt-4o-mini")["points"]
    assert list(trend) == [p["cost_usd"] for p in expected]
    assert sum(trend) == pytest.approx(costs["team-a", "gpt-4o-mini"], abs=1e-12)
    assert sum(trend) < sum(everything)
    assert "filtered to <b>model gpt-4o-mini</b>" in board.filter_label.value
    assert board.trend_figure.title == "Cost and savings per day: model gpt-4o-mini"
    assert list(board.bars.selected) == [mini]
    assert board.clear_button.layout.display == ""
    requests.take()

    # The same bar again: everything again.
    _click(board, mini)
    assert board.filter is None
    assert requests.take() == [("analytics/timeseries", {"period": "30d"})]
    assert list(board.trend_lines["cost"].y) == everything
    assert board.bars.selected is None and board.clear_button.layout.display == "none"

    # Another bar, then the chart's background; the trend chart's background clears too.
    _click(board, _bar(board, "gpt-4o"))
    assert board.filter == ("model", "gpt-4o")
    assert sum(board.trend_lines["cost"].y) == pytest.approx(costs["team-a", "gpt-4o"], abs=1e-12)
    _background(board.bars)
    assert board.filter is None and list(board.trend_lines["cost"].y) == everything
    _click(board, _bar(board, "claude-3-5-haiku"))
    assert board.filter == ("model", "claude-3-5-haiku")
    _background(board.trend_lines["cost"])
    assert board.filter is None
    requests.take()
    _background(board.bars)  # nothing to clear: no call made
    assert requests.take() == []

    # By provider: the bars are providers; a click filters on the provider. Only the bars
    # depend on the grouping, so only they are fetched.
    board.breakdown_selector.value = "provider"
    assert requests.take() == [
        ("analytics/breakdown", {"by": "provider", "period": "30d", "limit": "10"})
    ]
    assert [b.name for b in board.bar_items] == [
        i["name"] for i in lcm.breakdown("provider", "30d")["items"]
    ]
    assert sorted(board.bar_items, key=lambda b: b.name)[0].name == "anthropic"
    assert board.breakdown_figure.title == "Providers by cost"
    _click(board, _bar(board, "anthropic"))
    assert board.filter == ("provider", "anthropic")
    assert sum(board.trend_lines["cost"].y) == pytest.approx(
        costs["team-b", "claude-3-5-haiku"], abs=1e-12
    )

    # By key: a new breakdown clears the filter (the trend shows all again); a key's bar
    # filters on its id.
    requests.take()
    board.breakdown_selector.value = "key"
    assert requests.take() == [
        ("analytics/breakdown", {"by": "key", "period": "30d", "limit": "10"}),
        ("analytics/timeseries", {"period": "30d"}),
    ]
    assert board.filter is None and list(board.trend_lines["cost"].y) == everything
    assert "Click a bar to show only that key" in board.filter_label.value
    assert {b.name for b in board.bar_items} == {"team-a", "team-b"}
    key_a = calls["a"]["id"]
    requests.take()
    _click(board, _bar(board, "team-a"))
    assert board.filter == ("key_id", key_a)
    assert requests.take() == [("analytics/timeseries", {"period": "30d", "key_id": str(key_a)})]
    assert sum(board.trend_lines["cost"].y) == pytest.approx(
        costs["team-a", "gpt-4o-mini"] + costs["team-a", "gpt-4o"], abs=1e-12
    )
    assert f"key 'team-a' (#{key_a})" in board.filter_label.value

    # Another period keeps the filter: everything is fetched again for 7 days.
    board.period_selector.value = "7d"
    seen = requests.take()
    assert ("analytics/timeseries", {"period": "7d", "key_id": str(key_a)}) in seen
    assert ("analytics/breakdown", {"by": "key", "period": "7d", "limit": "10"}) in seen
    assert len(board.trend_lines["cost"].y) == 7
    assert board.filter == ("key_id", key_a) and list(board.bars.selected) == [
        _bar(board, "team-a")
    ]
    assert "Last 7 days" in board.summary.value
    board.clear_button.click()
    assert board.filter is None
    assert sum(board.trend_lines["cost"].y) == pytest.approx(sum(costs.values()), abs=1e-12)


def test_the_rest_beyond_the_top_ten_is_one_bar_that_does_not_filter(served):
    models = [
        "gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-3.5-turbo",
        "gpt-4-turbo", "gpt-4", "gpt-5-nano", "gpt-5-mini", "o3-mini",
    ]  # fmt: skip
    with LCMClient() as lcm:
        key = _key(lcm, "many")
        cost = {m: _openai(key, m) for m in models}
        _logged(lcm, len(models))
    board = Dashboard()
    ranked = sorted(models, key=lambda m: -cost[m])
    assert [b.name for b in board.bar_items] == [*ranked[:10], "other"]
    assert board.breakdown_figure.title == "Top 10 models by cost"
    rest = board.bar_items[-1]
    assert rest.filter is None and rest.cost == pytest.approx(cost[ranked[10]], abs=1e-12)
    assert board.bars.colors[-1] == dash.REST_COLOR and board.bars.colors[0] == dash.BAR_COLOR
    _click(board, 10)
    assert board.filter is None
    assert board.messages.text == "'other' is the rest, summed: it cannot filter the cost trend."
    _click(board, 0)
    assert board.filter == ("model", ranked[0])
    _click(board, 10)  # the filter stays
    assert board.filter == ("model", ranked[0])


def test_a_fresh_server_shows_what_to_do(served):
    board = Dashboard()
    assert board.state == "empty" and board.messages.kind == ""
    note = board.states.note
    assert note.layout.display == "" and board.body.layout.display == "none"
    assert "No calls logged in the last 30 days" in note.value
    assert "ProxyKeyForm()" in note.value
    assert "lcm_jupyter.openai_client(key)" in note.value
    assert board.bar_items == [] and list(board.bars.x) == []
    assert not any(board.trend_lines["cost"].y)
    board.period_selector.value = "90d"
    assert "No calls logged in the last 90 days" in board.states.note.value


def test_errors_show_in_the_widget_not_as_tracebacks(monkeypatch):
    closed = f"http://127.0.0.1:{free_port()}/"
    board = Dashboard(LCMClient(closed, "x"))
    assert board.state == "error" and board.messages.kind == "error"
    assert board.messages.text.startswith(f"Could not load the dashboard: cannot reach {closed}")
    # The error alone: no figures, and no "No calls logged" beside it.
    assert board.body.layout.display == "none" and board.states.note.layout.display == "none"
    board.refresh_button.click()
    board.period_selector.value = "7d"
    assert board.state == "error" and board.filter is None

    monkeypatch.delenv("LCM_SERVER_URL", raising=False)
    board = Dashboard()
    assert board.client is None and board.messages.kind == "error"
    assert "LCM_SERVER_URL is not set" in board.messages.text

    with pytest.raises(ValueError, match="7d, 30d, 90d"):
        Dashboard(LCMClient(closed), period="1y")
    with pytest.raises(ValueError, match="after To"):
        Dashboard(LCMClient(closed), start="2026-02-02", end="2026-02-01")


def test_the_server_going_away_shows_the_error_alone(served):
    with LCMClient() as lcm:
        _openai(_key(lcm, "k"), "gpt-4o-mini")
        _logged(lcm, 1)
    board = Dashboard()
    assert board.state == "data" and list(board.bars.x) == ["gpt-4o-mini"]
    served.stop()
    _click(board, 0)
    assert board.state == "error" and "Could not filter the cost trend" in board.messages.text
    assert board.filter is None  # the filter changes only with its figures
    assert board.body.layout.display == "none"
    board.breakdown_selector.value = "provider"
    assert board.state == "error" and "cannot reach" in board.messages.text
    board.refresh()
    assert board.state == "error" and board.body.layout.display == "none"
    assert board.states.note.layout.display == "none"


def test_a_custom_range_of_days(calls):
    lcm = LCMClient()
    today = date.fromisoformat(lcm.timeseries("7d")["end"])  # the server's analytics day
    board = Dashboard(lcm, start=today.isoformat(), end=today.isoformat())
    assert (board.period, board.start, board.end) == ("custom", today, today)
    assert board.range_box.layout.display == "" and board.state == "data"
    cost = board.trend_lines["cost"]
    assert len(cost.y) == 1 and cost.y[0] == pytest.approx(sum(calls["costs"].values()), abs=1e-12)
    midnight = datetime.combine(today, datetime.min.time())
    half = timedelta(hours=12)  # the axis holds the day with half a day either side
    assert (board.trend_x.min, board.trend_x.max) == (midnight - half, midnight + half)
    assert (
        f"Days ({today} to {today}): " in board.summary.value and "4 calls" in board.summary.value
    )

    # Every analytics call asks for those days, not a period, while the board says loading.
    requests = Requests(lcm)
    states = []
    lcm._http.event_hooks["request"].append(lambda _r: states.append(board.state))
    board.refresh()
    days = {"start": today.isoformat(), "end": today.isoformat()}
    analytics = [(p, q) for p, q in requests.take() if p.startswith("analytics/")]
    assert len(analytics) == 4 and all(q.items() >= days.items() for _, q in analytics)
    assert not any("period" in q for _, q in analytics)
    assert set(states) == {"loading"}

    # Days with no call: the empty state names them.
    board.set_range(today - timedelta(10), today - timedelta(9))
    assert board.state == "empty"
    assert f"from {today - timedelta(10)} to {today - timedelta(9)}" in board.states.note.value
    # The wrong way round: said in the widget, nothing asked.
    requests.take()
    board.from_picker.value = today + timedelta(1)
    assert board.state == "error" and "is after To" in board.messages.text
    assert requests.take() == []
    board.period_selector.value = "7d"  # back to a period: the days go out of sight
    assert board.range_box.layout.display == "none" and board.state == "data"
    assert requests.take()[0] == ("analytics/timeseries", {"period": "7d"})

    # Choosing "custom" starts from the days shown.
    fresh = Dashboard(lcm, period="7d")
    fresh.period_selector.value = "custom"
    assert (fresh.start, fresh.end) == (today - timedelta(6), today)
    assert fresh.state == "data" and len(fresh.trend_lines["cost"].y) == 7


def test_the_magic_shows_the_dashboard(served, capsys):
    with LCMClient() as lcm:
        _openai(_key(lcm, "k"), "gpt-4o-mini")
        _logged(lcm, 1)
    board = magics.run("dashboard --period 7d --by provider")
    assert isinstance(board, Dashboard)
    assert (board.period, board.by) == ("7d", "provider")
    assert [b.name for b in board.bar_items] == ["openai"]
    assert board.state == "data" and board.messages.kind == ""
    closed = f"http://127.0.0.1:{free_port()}/"
    board = magics.run(f"dashboard --url {closed} --token x")
    assert board.messages.kind == "error" and "cannot reach" in board.messages.text
    assert magics.run("dashboard --period 1y") is None
    assert "invalid choice: '1y'" in capsys.readouterr().err


# -- the data shaping, directly ------------------------------------------------------------------


def _item(name, cost, **more):
    return {"name": name, "cost_usd": cost, "savings_usd": 0.0, "requests": 1, **more}


def test_breakdown_bars():
    items = [_item("gpt-4o", 0.5), _item("(none)", 0.25), _item("other", 0.125)]
    assert dash.breakdown_bars("model", items, limit=3) == [
        dash.Bar("gpt-4o", "gpt-4o", 0.5, ("model", "gpt-4o")),
        dash.Bar("(none)", "(none)", 0.25, None),
        dash.Bar("other", "other", 0.125, ("model", "other")),  # a model, within the limit
    ]
    rest = dash.breakdown_bars("provider", [_item("openai", 1.0), _item("other", 0.5)], limit=1)
    assert [b.filter for b in rest] == [("provider", "openai"), None]

    keys = [
        _item("team", 3.0, key_id=7),
        _item("team", 2.0, key_id=9),
        _item("(no key)", 1.0, key_id=None),
    ]
    bars = dash.breakdown_bars("key", keys)
    assert [(b.label, b.filter) for b in bars] == [
        ("team #7", ("key_id", 7)),
        ("team #9", ("key_id", 9)),
        ("(no key)", None),
    ]
    long = "x" * 40
    bars = dash.breakdown_bars("model", [_item(long + "a", 2.0), _item(long + "b", None)])
    assert [len(b.label) for b in bars] == [dash.LABEL_WIDTH] * 2
    assert bars[0].label.endswith("… (1)") and bars[1].label.endswith("… (2)")
    assert (bars[1].name, bars[1].cost) == (long + "b", 0.0)


def test_filters_toggle_and_read():
    model = ("model", "gpt-4o")
    assert dash.toggle_filter(None, model) == model
    assert dash.toggle_filter(model, model) is None
    assert dash.toggle_filter(model, ("model", "o3")) == ("model", "o3")
    assert dash.toggle_filter(model, None) == model
    assert dash.filter_params(None) == {} and dash.filter_params(model) == {"model": "gpt-4o"}
    assert dash.describe_filter(None) == ""
    assert dash.describe_filter(model) == "model gpt-4o"
    bars = [dash.Bar("a #3", "a", 1.0, ("key_id", 3))]
    assert dash.describe_filter(("key_id", 3), bars) == "key 'a' (#3)"
    assert dash.describe_filter(("key_id", 4), bars) == "key #4"


def test_custom_ranges_and_the_date_axis():
    assert dash.range_params("30d") == {"period": "30d"}
    first, last = date(2026, 1, 1), date(2026, 1, 31)
    assert dash.range_params("custom", first, last) == {
        "period": None,
        "start": "2026-01-01",
        "end": "2026-01-31",
    }
    with pytest.raises(ValueError, match="Pick the first and the last day"):
        dash.range_params("custom", first, None)
    with pytest.raises(ValueError, match=r"From \(2026-01-31\) is after To \(2026-01-01\)"):
        dash.range_params("custom", last, first)
    with pytest.raises(ValueError, match="at most 366 days"):
        dash.range_params("custom", date(2025, 1, 1), date(2026, 1, 2))
    assert dash.range_params("custom", date(2025, 1, 1), date(2026, 1, 1))["end"] == "2026-01-01"
    assert dash.day_domain([]) is None
    assert dash.day_domain(["2026-11-25", "2026-11-26", "2026-11-27"]) == (
        datetime(2026, 11, 24, 12),
        datetime(2026, 11, 27, 12),
    )
    assert dash.day_domain(["2026-11-25"]) == (
        datetime(2026, 11, 24, 12),
        datetime(2026, 11, 25, 12),
    )
    assert dash.empty_message("custom", "2026-01-01", "2026-01-31").startswith(
        "No calls logged from 2026-01-01 to 2026-01-31."
    )
    answer = {"period": "custom", "start": "2026-01-01", "end": "2026-01-31"}
    assert dash.period_summary(answer, [_item("a", 0.004, input_tokens=1, output_tokens=2)]) == (
        "Days (2026-01-01 to 2026-01-31): $0.00400 spent, $0.00 saved by routing and caching, "
        "1 call, 3 tokens"
    )


def test_hover_texts_are_money():
    assert dash.day_tip("2026-11-24", 1.847, 0.00042) == (
        '<div class="lcm-tip" style="padding:4px 8px;font-size:12px;background:white;'
        'border:1px solid #ccc"><b>Tue Nov 24 2026</b><br>Cost $1.85<br>Savings $0.000420</div>'
    )
    bar = dash.Bar("a <b>", "a <b>", 0.0123, None)
    assert "<b>a &lt;b&gt;</b><br>Cost $0.01</div>" in dash.bar_tip(bar)
    assert dash.day_ticks([f"2026-11-{d:02d}" for d in range(1, 31)]) == [
        "2026-11-01", "2026-11-06", "2026-11-11", "2026-11-16", "2026-11-21", "2026-11-26",
    ]  # fmt: skip
    assert dash.day_ticks(["2026-11-01"]) == ["2026-11-01"] and dash.day_ticks([]) == []
    assert len(dash.day_ticks([f"d{n}" for n in range(90)])) <= 8


def test_trend_arrays_and_formats():
    points = [
        {"date": "2026-11-25", "cost_usd": 0.25, "savings_usd": None},
        {"date": "2026-11-26", "cost_usd": 0.0, "savings_usd": 0.5},
    ]
    assert dash.trend_arrays(points) == (["2026-11-25", "2026-11-26"], [0.25, 0.0], [0.0, 0.5])
    x = dash.day_axis(["2026-11-25", "2026-11-26"])
    assert x.dtype == np.dtype("datetime64[ms]")
    assert x.astype("int64").tolist() == [1795564800000, 1795651200000]  # UTC midnights
    assert dash.dollar_axis(39.57, 4) == ([0, 10, 20, 30, 40], "$,.0f")
    assert dash.dollar_axis(2.06) == ([0, 0.5, 1, 1.5, 2, 2.5], "$.2f")
    assert dash.dollar_axis(5.0) == ([0, 1, 2, 3, 4, 5], "$,.0f")
    assert dash.dollar_axis(0.000825) == ([0, 0.0002, 0.0004, 0.0006, 0.0008, 0.001], "$.4f")
    assert dash.dollar_axis(0.03, 4) == ([0, 0.01, 0.02, 0.03], "$.2f")
    assert dash.dollar_axis(0.024, 4) == ([0, 0.01, 0.02, 0.03], "$.2f")
    assert dash.dollar_axis(0.0042, 4) == ([0, 0.002, 0.004, 0.006], "$.3f")
    assert dash.dollar_axis(0.0) == ([0.0, 0.01], "$.2f")


def test_key_rows_budget_summary_and_empty_text():
    assert dash.budget_used(None) is None
    assert dash.budget_used({"budget_usd": None, "spent_usd": 1.0}) is None
    assert dash.budget_used({"budget_usd": 4.0, "spent_usd": 1.0}) == 25.0
    assert dash.budget_used({"budget_usd": 0.0, "spent_usd": 0.0}) == 100.0
    items = [
        _item("a", 0.75, key_id=1, input_tokens=10, output_tokens=5, savings_usd=0.25),
        _item("(no key)", 0.25, key_id=None, input_tokens=None, output_tokens=2),
    ]
    rows = dash.key_rows(items, {1: {"budget_usd": 1.5, "spent_usd": 0.75}})
    assert rows == [
        {
            "key": "a",
            "key_id": 1,
            "requests": 1,
            "tokens": 15,
            "cost_usd": 0.75,
            "savings_usd": 0.25,
            "would_save_usd": None,
            "budget_used": 50.0,
        },
        {
            "key": "(no key)",
            "key_id": None,
            "requests": 1,
            "tokens": 2,
            "cost_usd": 0.25,
            "savings_usd": 0.0,
            "would_save_usd": None,
            "budget_used": None,
        },
    ]
    shadowed = dash.key_rows(items[:1], {}, {1: {"saving_usd": 0.5, "calls": 3}})
    assert shadowed[0]["would_save_usd"] == 0.5
    assert dash.shadow_summary({"calls": 3, "saving_usd": 0.5}) == (
        "Auto routing would have saved $0.50 on 3 calls made with routing off "
        "(turn it on per key in ProxyKeyForm)."
    )
    assert dash.shadow_summary({"calls": 0, "saving_usd": 0}) == ""
    answer = {"period": "7d", "start": "2026-11-20", "end": "2026-11-26"}
    items[1]["unpriced_requests"] = 1
    assert dash.period_summary(answer, items) == (
        "Last 7 days (2026-11-20 to 2026-11-26): $1.00 spent, "
        "$0.25 saved by routing and caching, 2 calls, 17 tokens, 1 without a price"
    )
    assert dash.empty_message("90d").startswith("No calls logged in the last 90 days.")
