"""Rate limits, budgets, alerts, the response cache and reconcile, through a real server.

Budget tests run twice: with the in-memory counters and with a real Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging

import anthropic
import openai
import pytest
import tornado.web

from lcm_jupyter.core.budget import reservation_units, to_units
from lcm_jupyter.core.catalog import default_table
from lcm_jupyter.core.pricing import ModelPrice

from .conftest import PROVIDER_KEY, anthropic_via, openai_via, stored_rows


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    return request.param


@pytest.fixture
def lcm_config(lcm_config, backend, request):
    if backend == "redis":
        lcm_config["redis_url"] = request.getfixturevalue("redis_url")
    return lcm_config


_client = openai_via


def _chat(i=0, max_tokens=50):
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"question number {i}"}],
        "max_tokens": max_tokens,
    }


async def test_rate_limit_headers_and_429(base_url, make_key, logs, backend):
    record = await make_key(rate_limit_rpm=3)
    client = _client(base_url, record["key"])
    remaining = []
    for i in range(3):
        raw = await client.chat.completions.with_raw_response.create(**_chat(i))
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as exc:
        await client.chat.completions.create(**_chat(9))
    resp = exc.value.response
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert exc.value.code == "rate_limit_exceeded"
    claude = anthropic_via(base_url, record["key"])
    with pytest.raises(anthropic.RateLimitError):
        await claude.messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
        )
    rows = await logs()
    assert [r["status"] for r in rows] == [429, 429, 200, 200, 200]


async def test_concurrent_calls_cannot_overspend(base_url, make_key, logs, sim, lcm, api):
    body = _chat(0, max_tokens=100)
    price = default_table().resolve("gpt-4o-mini")
    per_call = reservation_units(price, body, default_output_tokens=4096, unpriced_units=0)
    budget_usd = per_call * 10 / 10**10  # room for exactly 10 worst-case calls
    record = await make_key(monthly_budget_usd=budget_usd)
    client = _client(base_url, record["key"])
    sim.latency = 0.3  # all 50 are in flight at once

    async def one(i):
        try:
            await client.chat.completions.create(**{**body, "messages": body["messages"]})
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded"
            return "budget"

    results = await asyncio.gather(*(one(i) for i in range(50)))
    sim.latency = 0
    assert results.count("ok") == 10
    rows = await logs(limit="100")
    assert len(rows) == 50
    logged = sum(to_units(r["cost_usd"]) for r in rows if r["status"] == 200)
    assert logged <= to_units(budget_usd)
    status, budget = await api("GET", f"budgets/{record['id']}")
    assert status == 200
    assert to_units(budget["spent_usd"]) == logged
    assert budget["reserved_usd"] == 0
    refused = [r for r in rows if r["status"] == 429]
    assert len(refused) == 40 and all("budget" in r["error"].lower() for r in refused)


async def test_budget_exceeded_says_spend_and_limit(base_url, make_key, api):
    record = await make_key(monthly_budget_usd=0.0000001)
    with pytest.raises(openai.RateLimitError) as exc:
        await _client(base_url, record["key"]).chat.completions.create(**_chat())
    assert exc.value.code == "budget_exceeded"
    # A budget of $0.0000001 is shown as such, not as "$0.00 of $0.00".
    assert "of $0.0000001" in exc.value.message


async def _one_call_cost(base_url, make_key, logs, **key_fields):
    record = await make_key(**key_fields)
    client = _client(base_url, record["key"])
    await client.chat.completions.create(**_chat(0, max_tokens=20))
    (row,) = await logs()
    return record, client, row["cost_usd"]


async def test_alerts_once_per_threshold(base_url, make_key, api, lcm, logs):
    record, client, cost = await _one_call_cost(
        base_url, make_key, logs, budget_alert_thresholds=[50, 80, 100]
    )
    # Set after the first call: the reconcile on PATCH counts it (25% of 4 calls).
    status, _ = await api("PATCH", f"keys/{record['id']}", {"monthly_budget_usd": cost * 3.99})
    assert status == 200
    refused = 0
    for _ in range(5):  # 50% at the 2nd call, then the budget runs out
        try:
            await client.chat.completions.create(**_chat(0, max_tokens=12))
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded"
            refused += 1
    assert refused >= 2  # refused again and again: still one alert per threshold
    assert await lcm.quiesce()
    rows = await logs()
    spent = sum(to_units(r["cost_usd"]) for r in rows if r["status"] == 200)
    budget = to_units(cost * 3.99)
    assert spent <= budget  # hard mode: never over
    # Alerts follow settled spend, once per threshold; the first call refused for budget
    # counts as reaching the limit, so the critical 100% alert fires once although the
    # settled spend stops short of it.
    assert spent * 100 < 100 * budget
    reached = [50, 80, 100]
    status, body = await api("GET", "alerts")
    alerts = sorted(body["alerts"], key=lambda a: a["threshold"])
    assert [a["threshold"] for a in alerts] == reached
    assert alerts[0]["severity"] == "info" and alerts[-1]["severity"] == "critical"
    assert "exhausted" in alerts[-1]["message"]
    assert all(a["key_id"] == record["id"] and not a["read"] for a in alerts)
    assert " / $" in alerts[0]["message"] and "50%" in alerts[0]["message"]
    assert body["unread"] == len(reached)
    status, marked = await api("POST", "alerts/read", {"ids": [alerts[0]["id"]]})
    assert marked == {"marked_read": 1}
    status, body = await api("GET", "alerts", unread="true")
    assert len(body["alerts"]) == len(reached) - 1


async def test_concurrent_crossings_make_one_alert(make_key, lcm, api):
    record = await make_key(monthly_budget_usd=1.0)
    key = await lcm.keys.lookup(record["key"])
    results = await asyncio.gather(
        *(lcm.alerts.check(key, "2026-11", to_units(0.7), to_units(0.95)) for _ in range(20))
    )
    assert sorted(i for ids in results for i in ids) == sorted(
        a["id"] for a in (await api("GET", "alerts"))[1]["alerts"]
    )
    assert sum(len(ids) for ids in results) == 2  # 80% and 90%, once each


async def test_cache_hit_costs_nothing_and_logs_savings(base_url, make_key, logs, api, sim):
    record = await make_key(cache_ttl_seconds=60, monthly_budget_usd=10.0)
    client = _client(base_url, record["key"])
    body = _chat(1)
    first = await client.chat.completions.with_raw_response.create(**body)
    second = await client.chat.completions.with_raw_response.create(**body)
    bypass = await client.chat.completions.with_raw_response.create(
        **body, extra_headers={"cache-control": "no-cache"}
    )
    other = await client.chat.completions.with_raw_response.create(**_chat(2))
    assert "x-lcm-cache" not in first.headers
    assert second.headers["x-lcm-cache"] == "hit"
    assert "x-lcm-cache" not in bypass.headers and "x-lcm-cache" not in other.headers
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert len(sim.requests) == 3  # the hit never reached the provider
    rows = {r["id"]: r for r in await logs()}
    miss, hit = rows[first.headers["x-lcm-request-id"]], rows[second.headers["x-lcm-request-id"]]
    assert hit["cache_hit"] is True and hit["cost_usd"] == 0
    assert hit["savings_usd"] == miss["cost_usd"] > 0
    assert hit["input_tokens"] == miss["input_tokens"]
    status, budget = await api("GET", f"budgets/{record['id']}")
    assert status == 200
    paid = [r["cost_usd"] for r in rows.values() if not r["cache_hit"]]
    assert to_units(budget["spent_usd"]) == sum(to_units(c) for c in paid)


async def test_streams_are_not_cached(base_url, make_key, sim):
    record = await make_key(cache_ttl_seconds=60)
    client = _client(base_url, record["key"])
    for _ in range(2):
        stream = await client.chat.completions.create(**_chat(3), stream=True)
        _ = [c async for c in stream]
    assert len(sim.requests) == 2


async def test_reconcile_reports_and_fixes_drift(base_url, make_key, lcm, api, logs, caplog):
    record, _, cost = await _one_call_cost(base_url, make_key, logs, monthly_budget_usd=5.0)
    from lcm_jupyter.core.budget import current_month

    month = current_month()
    # An empty counter (as at a start with in-memory counters) is loaded without a warning.
    await lcm.counters.set_spent(key_id=record["id"], month=month, spent=0)
    caplog.set_level(logging.INFO, logger="lcm_jupyter")
    caplog.clear()
    assert (await api("POST", "reconcile", {"key_id": record["id"]}))[0] == 200
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert "loaded 1 key(s)' spend" in caplog.text

    await lcm.counters.set_spent(key_id=record["id"], month=month, spent=to_units(1.5))
    status, report = await api("POST", "reconcile", {"key_id": record["id"]})
    assert "corrected 1 key(s)" in caplog.text
    assert status == 200 and report["month"] == month
    (entry,) = report["keys"]
    assert entry["counter_usd"] == 1.5
    assert entry["logged_usd"] == cost
    assert to_units(entry["drift_usd"]) == to_units(1.5) - to_units(cost)
    status, budget = await api("GET", f"budgets/{record['id']}")
    assert budget["spent_usd"] == cost and budget["remaining_usd"] == pytest.approx(5.0 - cost)
    # Every key's month in one call: the same record, with the key's name.
    other = await make_key(name="no-budget")
    status, every = await api("GET", "budgets")
    assert status == 200 and every["month"] == month
    by_id = {b["key_id"]: b for b in every["budgets"]}
    assert by_id[record["id"]] == {**budget, "name": record["name"], "revoked": False}
    assert by_id[other["id"]]["budget_usd"] is None and by_id[other["id"]]["spent_usd"] == 0
    assert (await api("POST", "reconcile", {"key_id": "x"}))[0] == 400


async def test_month_rollover_starts_a_fresh_budget(base_url, make_key, monkeypatch, lcm):
    import lcm_jupyter.server.budgets as budgets

    record = await make_key(monthly_budget_usd=1.0)
    client = _client(base_url, record["key"])
    await lcm.counters.set_spent(
        key_id=record["id"], month=budgets.current_month(), spent=to_units(1.0)
    )
    with pytest.raises(openai.RateLimitError):  # this month is spent
        await client.chat.completions.create(**_chat(0, max_tokens=20))
    # A call made in the next month (its log row's timestamp) is charged to that month.
    from datetime import datetime, timezone

    import lcm_jupyter.server.pipeline as pipeline

    next_month = datetime(2099, 1, 1, 0, 0, 0, 1000, tzinfo=timezone.utc)
    monkeypatch.setattr(pipeline, "_now", lambda: next_month)
    resp = await client.chat.completions.create(**_chat(0, max_tokens=20))
    assert resp.choices
    state = await lcm.counters.budget(key_id=record["id"], month="2099-01")
    assert state.spent > 0 and state.reserved == 0


async def test_webhook_receives_alerts(base_url, make_key, api, lcm, logs, jp_asyncio_loop):
    received = []

    class Hook(tornado.web.RequestHandler):
        def post(self):
            received.append(json.loads(self.request.body))

    app = tornado.web.Application([(r"/hook", Hook)])
    server = app.listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    lcm.alerts.webhook_url = f"http://127.0.0.1:{port}/hook"
    lcm.alerts.locale = "ko"
    try:
        record, client, cost = await _one_call_cost(
            base_url, make_key, logs, budget_alert_thresholds=[40, 60]
        )
        # Just room for the second call's worst case: its actual cost then takes the
        # spend from under 40% to over 60%.
        price = default_table().resolve("gpt-4o-mini")
        hold = reservation_units(price, _chat(0, 20), default_output_tokens=0, unpriced_units=0)
        budget = (to_units(cost) + hold) / 10**10
        assert to_units(cost) * 100 < 40 * to_units(budget) and 2 * cost >= 0.6 * budget
        await api("PATCH", f"keys/{record['id']}", {"monthly_budget_usd": budget})
        await client.chat.completions.create(**_chat(0, max_tokens=20))
        assert await lcm.quiesce()
    finally:
        server.stop()
    assert [r["lcm"]["percent"] for r in received] == [40, 60]
    texts = [r["text"] for r in received]
    assert all("예산" in t and " / $" in t for t in texts)
    assert stored_rows(lcm.settings, "SELECT count(*) AS n FROM alerts") == [{"n": 2}]
    assert PROVIDER_KEY not in json.dumps(received)


@pytest.fixture
def soft_config(lcm_config):
    lcm_config["budget_mode"] = "soft"
    return lcm_config


@pytest.mark.parametrize("backend", ["memory"], indirect=False)
async def test_soft_budget_checks_settled_spend_only(soft_config, base_url, make_key, lcm, logs):
    assert lcm.settings.budget_mode == "soft"
    record = await make_key(monthly_budget_usd=0.00001)
    client = _client(base_url, record["key"])
    # A worst case far over the budget is still admitted while settled spend is under it.
    await client.chat.completions.create(**_chat(0, max_tokens=100_000))
    spent = 0
    while spent < to_units(0.00001):
        await client.chat.completions.create(**_chat(0, max_tokens=20))
        spent = sum(to_units(r["cost_usd"]) for r in await logs())
    with pytest.raises(openai.RateLimitError) as exc:
        await client.chat.completions.create(**_chat(0, max_tokens=20))
    assert exc.value.code == "budget_exceeded"


@pytest.mark.parametrize("backend", ["memory"], indirect=False)
async def test_a_budgeted_key_may_not_call_a_model_without_a_price(base_url, make_key, lcm, logs):
    budgeted = _client(base_url, (await make_key(monthly_budget_usd=5.0))["key"])
    unknown = {**_chat(), "model": "gpt-99-experimental"}
    # Its cost would be logged as unknown and never counted: refused, with the ways out.
    with pytest.raises(openai.BadRequestError) as exc:
        await budgeted.chat.completions.create(**unknown)
    assert exc.value.code == "model_not_priced"
    assert "'gpt-99-experimental' has no price" in exc.value.message
    assert (
        "PUT lcm/api/pricing" in exc.value.message and "unpriced_reserve_usd" in exc.value.message
    )
    assert (await budgeted.chat.completions.create(**_chat())).choices  # priced models go on
    # Without a budget there is nothing to protect: the call runs and is logged unpriced.
    free = _client(base_url, (await make_key())["key"])
    assert (await free.chat.completions.create(**unknown)).choices
    # Once priced, the budgeted key may call it, and it counts.
    await lcm.pricing.set_prices(
        [
            ModelPrice.from_dict(
                {"model": "gpt-99-experimental", "provider": "openai", "input": "1", "output": "2"}
            )
        ]
    )
    assert (await budgeted.chat.completions.create(**unknown)).choices
    rows = await logs()
    assert [(r["model"], r["status"], r["unpriced"]) for r in rows] == [
        ("gpt-99-experimental", 200, 0),
        ("gpt-99-experimental", 200, 1),
        ("gpt-4o-mini", 200, 0),
        ("gpt-99-experimental", 400, 0),
    ]


@pytest.fixture
def reserve_config(lcm_config):
    lcm_config["unpriced_reserve_usd"] = 0.5
    return lcm_config


@pytest.mark.parametrize("backend", ["memory"], indirect=False)
async def test_a_flat_unpriced_reserve_lets_budgeted_keys_call_unpriced_models(
    reserve_config, base_url, make_key, logs
):
    budgeted = _client(base_url, (await make_key(monthly_budget_usd=5.0))["key"])
    unknown = {**_chat(), "model": "gpt-99-experimental"}
    assert (await budgeted.chat.completions.create(**unknown)).choices
    (row,) = await logs()
    assert row["unpriced"] == 1 and row["cost_usd"] is None


async def test_bookings_run_side_by_side_and_a_reconcile_runs_alone():
    from lcm_jupyter.server.budgets import _Books

    books, order = _Books(), []
    await books.enter()
    await books.enter()  # a second booking does not wait for the first (Redis round trips)

    async def reconcile():
        async with books:
            order.append("reconcile")

    async def late_booking():
        await books.enter()
        order.append("late booking")
        books.leave()

    task = asyncio.ensure_future(reconcile())
    await asyncio.sleep(0.01)
    late = asyncio.ensure_future(late_booking())
    await asyncio.sleep(0.01)
    assert order == []  # the reconcile waits for both bookings; the late one for it
    books.leave()
    books.leave()
    await asyncio.gather(task, late)
    assert order == ["reconcile", "late booking"]


def _worst_units(model, body, **context):
    card = default_table().resolve(model, "openai", context=context or None)
    assert card is not None
    return reservation_units(
        card, body, default_output_tokens=4096, unpriced_units=0, wire="openai.chat"
    )


async def test_a_call_routed_to_a_dearer_model_reserves_at_that_models_price(
    base_url, make_key, sim
):
    """A manual rule may send a call to a dearer model: the reservation must price the model
    the call goes to, or hard mode would overspend by the price ratio."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    mini, big = _worst_units("gpt-4o-mini", body), _worst_units("gpt-4o", body)
    assert big > 10 * mini
    budget = (mini * 2) / 1e10  # two mini worst cases, far below one gpt-4o worst case
    plain = await make_key(monthly_budget_usd=budget)
    upgraded = await make_key(
        monthly_budget_usd=budget,
        routing_mode="manual",
        routing_rules=[{"from_model": "gpt-4o-mini", "to_model": "gpt-4o"}],
    )
    await _client(base_url, plain["key"]).chat.completions.create(**body)
    with pytest.raises(openai.RateLimitError) as exc:
        await _client(base_url, upgraded["key"]).chat.completions.create(**body)
    assert exc.value.body["code"] == "budget_exceeded"
    assert [r.body["model"] for r in sim.requests] == ["gpt-4o-mini"]


async def test_a_priority_tier_call_reserves_at_the_priority_price(base_url, make_key, sim):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    standard = _worst_units("gpt-4o-mini", body)
    priority = _worst_units("gpt-4o-mini", body, service_tier="priority")
    assert priority > standard
    record = await make_key(monthly_budget_usd=((standard + priority) // 2) / 1e10)
    client = _client(base_url, record["key"])
    with pytest.raises(openai.RateLimitError) as exc:
        await client.chat.completions.create(**body, service_tier="priority")
    assert exc.value.body["code"] == "budget_exceeded"
    await client.chat.completions.create(**body)  # the standard tier fits
    assert len(sim.requests) == 1
