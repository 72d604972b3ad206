"""The seeded history (lcm_jupyter.testing.history): realistic, exactly priced, rolled up as
the proxy's own rows are, reproducible, and what the REST API then reports."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

import lcm_jupyter
from lcm_jupyter.client import LCMClient
from lcm_jupyter.testing.history import ALERT_THRESHOLDS, seed_history

from .conftest import PROVIDER_KEY, expected_cost

NOW = datetime(2026, 3, 18, 15, 30, tzinfo=timezone.utc)  # a Wednesday


def _seed(path, **kwargs):
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("days", 14)
    return seed_history(path / "lcm.sqlite3", secret_key_file=path / "secret.key", **kwargs)


def _rows(path, sql):
    conn = sqlite3.connect(path / "lcm.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def _cost(model, row):
    cached = row["cached_tokens"]
    uncached = row["input_tokens"] - cached
    return expected_cost(model, uncached=uncached, cached=cached, out=row["output_tokens"])


def test_same_seed_same_history(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    first, second, other = _seed(a), _seed(b), _seed(c, seed=1)
    logs = "SELECT * FROM proxy_logs ORDER BY id"
    budgets = "SELECT name, monthly_budget_usd, routing_rules FROM proxy_keys ORDER BY id"
    alerts = "SELECT key_id, threshold, message FROM alerts ORDER BY id"
    assert _rows(a, logs) == _rows(b, logs)
    assert _rows(a, budgets) == _rows(b, budgets)
    assert _rows(a, alerts) == _rows(b, alerts)
    assert first.cost_usd == second.cost_usd and first.calls == second.calls
    assert _rows(a, logs) != _rows(c, logs)
    assert other.calls != first.calls or other.cost_usd != first.cost_usd
    # The proxy keys themselves are fresh secrets every time.
    assert {k.key for k in first.keys}.isdisjoint(k.key for k in second.keys)


def test_history_is_realistic_and_priced_exactly(tmp_path):
    history = _seed(tmp_path)
    rows = _rows(tmp_path, "SELECT * FROM proxy_logs")
    assert len(rows) == history.calls > 1000
    assert {r["provider"] for r in rows} == {"openai", "anthropic", "google"}
    assert len({r["key_id"] for r in rows}) == len(history.keys) >= 4
    assert len(history.models) >= 6
    # Every day of the period has calls, none after `now`; working days are busier.
    days = {r["created_at"][:10] for r in rows}
    first = NOW.date() - timedelta(days=13)
    assert days == {str(first + timedelta(days=i)) for i in range(14)}
    assert max(r["created_at"] for r in rows) < NOW.strftime("%Y-%m-%dT%H:%M:%S")
    per_day = {d: sum(r["created_at"].startswith(d) for r in rows) for d in days}
    saturday, tuesday = "2026-03-14", "2026-03-17"
    assert per_day[saturday] * 2 < per_day[tuesday]
    # Ids sort as created, as the proxy's own do (the log table pages by id).
    ordered = sorted(rows, key=lambda r: r["id"])
    assert [r["created_at"] for r in ordered] == sorted(r["created_at"] for r in rows)

    failed = [r for r in rows if r["status"] >= 400]
    assert len(failed) == history.errors and 0 < history.errors < history.calls * 0.1
    assert all(r["error"] and r["cost_usd"] == 0 and r["input_tokens"] == 0 for r in failed)

    routed = cache_hits = 0
    for row in rows:
        decision = json.loads(row["routing_decision"])
        assert decision["was_routed"] == (row["model"] != row["requested_model"])
        routed += decision["was_routed"]
        if row["status"] >= 400:
            continue  # routed before it failed: the model it went to is logged, at no cost
        cost = _cost(row["model"], row)
        saved = _cost(row["requested_model"], row) - cost if decision["was_routed"] else 0.0
        if row["cache_hit"]:
            cache_hits += 1
            cost, saved = 0.0, saved + cost
        assert row["cost_usd"] == pytest.approx(cost, abs=1e-12), row
        assert row["savings_usd"] == pytest.approx(saved, abs=1e-12), row
        if decision["was_routed"]:
            assert row["savings_usd"] > 0
            assert decision["reason"] and decision["to_model"] == row["model"]
        else:
            assert row["feedback"] is None  # only routed answers are rated
    assert routed == history.routed > 100 and cache_hits == history.cache_hits > 10
    assert any(r["feedback"] == 1 for r in rows) and any(r["feedback"] == -1 for r in rows)
    assert history.savings_usd == pytest.approx(math.fsum(r["savings_usd"] for r in rows))


def test_rollup_kept_with_the_rows(served, tmp_path):
    """Rows went through the LogWriter, so the analytics (which read the rollup, not the log)
    count every one: per day and per model, as summed straight from proxy_logs."""
    seed_history(tmp_path / "lcm.sqlite3", secret_key_file=tmp_path / "secret.key", days=30)
    by_day = _rows(
        tmp_path,
        "SELECT substr(created_at, 1, 10) AS day, COUNT(*) AS requests, SUM(cost_usd) AS cost, "
        "SUM(savings_usd) AS savings FROM proxy_logs GROUP BY 1",
    )
    by_model = _rows(
        tmp_path,
        "SELECT model, COUNT(*) AS requests, SUM(cost_usd) AS cost, "
        "AVG(status >= 400) AS error_rate FROM proxy_logs GROUP BY 1",
    )
    with LCMClient() as lcm:
        points = {p["date"]: p for p in lcm.timeseries("30d")["points"]}
        items = {i["name"]: i for i in lcm.breakdown(by="model", limit=50)["items"]}
    # 30 days up to now, today included: just after midnight UTC today may have no call yet.
    assert len(by_day) in (29, 30) and len(by_model) > 5
    for row in by_day:
        point = points[row["day"]]
        assert point["requests"] == row["requests"], row
        assert point["cost_usd"] == pytest.approx(row["cost"], abs=1e-9)
        assert point["savings_usd"] == pytest.approx(row["savings"], abs=1e-9)
    assert set(items) == {r["model"] for r in by_model}
    for row in by_model:
        item = items[row["model"]]
        assert item["requests"] == row["requests"], row
        assert item["cost_usd"] == pytest.approx(row["cost"], abs=1e-9)
        assert item["error_rate"] == pytest.approx(row["error_rate"])


def test_budgets_and_alerts_follow_the_month(tmp_path):
    history = _seed(tmp_path)
    keys = {k["name"]: k for k in _rows(tmp_path, "SELECT * FROM proxy_keys")}
    spent = {
        r["key_id"]: r["cost"]
        for r in _rows(
            tmp_path,
            "SELECT key_id, SUM(cost_usd) AS cost FROM proxy_logs "
            "WHERE created_at >= '2026-03-01' GROUP BY key_id",
        )
    }
    alerts = _rows(tmp_path, "SELECT * FROM alerts")
    assert len(alerts) == history.alerts > 0
    for name, key in keys.items():
        if key["monthly_budget_usd"] is None:
            continue
        share = spent[key["id"]] / key["monthly_budget_usd"]
        assert 0.4 < share < 1, name  # under budget: live calls with the key still pass
        crossed = sorted(a["threshold"] for a in alerts if a["key_id"] == key["id"])
        assert crossed == [t for t in ALERT_THRESHOLDS if share * 100 >= t], name
    assert any(k["monthly_budget_usd"] is None for k in keys.values())


def test_served_history_through_the_api(served, tmp_path):
    """Seeded into a running server's database: its API reports it, its keys still call."""
    history = seed_history(
        tmp_path / "lcm.sqlite3",
        secret_key_file=tmp_path / "secret.key",
        days=30,
        provider_api_key=PROVIDER_KEY,
    )
    with LCMClient() as lcm:
        points = lcm.timeseries("30d")["points"]
        assert len(points) == 30
        assert math.fsum(p["cost_usd"] for p in points) == pytest.approx(history.cost_usd)
        assert sum(p["requests"] for p in points) == history.calls
        # Every day has calls; just after midnight UTC today may have none yet.
        empty = [p["date"] for p in points if not p["requests"]]
        assert empty in ([], [points[-1]["date"]])
        providers = lcm.breakdown(by="provider")["items"]
        assert {p["name"] for p in providers} == {"openai", "anthropic", "google"}
        models = lcm.breakdown(by="model", limit=50)["items"]
        assert {m["name"] for m in models} >= history.models
        assert len(lcm.alerts()) == history.alerts
        # The server counted spend from the log at its start (empty then): reconcile.
        lcm.reconcile()
        support = history.key("support-bot")
        month = lcm.budget(support.id)
        assert 0 < month["spent_usd"] < month["budget_usd"]

        chat = lcm_jupyter.openai_client(support.key, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        assert chat.choices[0].message.content
        newest = _newest_after(lcm, support.id, history.now)
    assert newest["status"] == 200
    usage = chat.usage
    assert newest["cost_usd"] == pytest.approx(
        expected_cost("gpt-4o-mini", uncached=usage.prompt_tokens, out=usage.completion_tokens)
    )


def _newest_after(lcm, key_id, moment, timeout=10.0):
    """The key's newest call once one after `moment` is logged (rows are written in batches)."""
    deadline = time.monotonic() + timeout
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")
    while True:
        newest = lcm.logs(key_id=key_id, limit=1)[0]
        if newest["created_at"] > stamp or time.monotonic() > deadline:
            return newest
        time.sleep(0.1)
