"""GET lcm/api/logs with filters (model, provider, status, days, instants) and GET
lcm/api/logs/{id}, against the real Jupyter server with the extension: calls made with
the official SDKs through the proxy, so the costs are the ones it metered."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import anthropic
import openai
import pytest

from lcm_jupyter.store.timeutil import to_iso

from .conftest import anthropic_via, expected_cost, openai_via
from .test_analytics import log_row

CHAT = [{"role": "user", "content": "Which calls failed yesterday?"}]


@pytest.fixture
def lcm_config(lcm_config, request):
    """The extension's config; parametrize indirectly with a timezone name to set one."""
    tz = getattr(request, "param", None)
    return {**lcm_config, "analytics_timezone": tz} if tz else lcm_config


def _row(created_at: datetime, **fields) -> dict:
    return log_row(to_iso(created_at), **fields)


async def _ids(api, **params) -> list[str]:
    status, body = await api("GET", "logs", **params)
    assert status == 200, body
    return [r["id"] for r in body["logs"]]


async def test_filters_keep_the_calls_they_name_at_their_metered_cost(
    api, make_key, base_url, logs, sim
):
    team = await make_key(name="team")
    other = await make_key(name="other")
    gpt = openai_via(base_url, team["key"])
    raw = await gpt.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    mini_id, mini = raw.headers["x-lcm-request-id"], raw.parse().usage
    raw = await gpt.chat.completions.with_raw_response.create(model="gpt-4.1", messages=CHAT)
    big_id, big = raw.headers["x-lcm-request-id"], raw.parse().usage
    claude = anthropic_via(base_url, other["key"])
    raw = await claude.messages.with_raw_response.create(
        model="claude-3-5-haiku", max_tokens=50, messages=CHAT
    )
    haiku_id, haiku = raw.headers["x-lcm-request-id"], (await raw.parse()).usage
    sim.inject_error(429, provider="openai", message="Slow down: 3 requests per minute.")
    with pytest.raises(openai.RateLimitError) as refused:
        await gpt.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    failed_id = refused.value.response.headers["x-lcm-request-id"]
    sim.inject_error(529, provider="anthropic", message="Overloaded")
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        await claude.messages.create(model="claude-3-5-haiku", max_tokens=50, messages=CHAT)
    overloaded_id = overloaded.value.response.headers["x-lcm-request-id"]
    everything = await logs()
    assert [r["id"] for r in everything] == [overloaded_id, failed_id, haiku_id, big_id, mini_id]

    assert await _ids(api, model="gpt-4o-mini") == [failed_id, mini_id]
    assert await _ids(api, model="gpt-4.1") == [big_id]
    assert await _ids(api, model="gpt-5") == []
    assert await _ids(api, provider="anthropic") == [overloaded_id, haiku_id]
    assert await _ids(api, status="ok") == [haiku_id, big_id, mini_id]
    assert await _ids(api, status="error") == [overloaded_id, failed_id]
    assert await _ids(api, status="4xx") == [failed_id]
    assert await _ids(api, status="5xx") == [overloaded_id]
    assert await _ids(api, status="429") == [failed_id]
    assert await _ids(api, status="cache_hit") == []
    assert await _ids(api, status="ok", key_id=str(team["id"])) == [big_id, mini_id]
    assert await _ids(api, provider="openai", status="error") == [failed_id]
    today = datetime.now(timezone.utc).date()
    assert await _ids(api, start=today.isoformat(), end=today.isoformat()) == [
        r["id"] for r in everything
    ]
    assert await _ids(api, start=(today + timedelta(1)).isoformat()) == []

    # Each row as metered: its cost to the genai-prices figure, the failures at none.
    status, body = await api("GET", "logs", status="ok")
    rows = {r["id"]: r for r in body["logs"]}
    assert rows[mini_id]["cost_usd"] == expected_cost(
        "gpt-4o-mini", uncached=mini.prompt_tokens, out=mini.completion_tokens
    )
    assert rows[big_id]["cost_usd"] == expected_cost(
        "gpt-4.1", uncached=big.prompt_tokens, out=big.completion_tokens
    )
    assert rows[haiku_id]["cost_usd"] == expected_cost(
        "claude-3-5-haiku", uncached=haiku.input_tokens, out=haiku.output_tokens
    )
    status, body = await api("GET", "logs", status="error")
    assert [(r["status"], r["cost_usd"]) for r in body["logs"]] == [(529, 0.0), (429, 0.0)]
    assert "Slow down: 3 requests per minute." in body["logs"][1]["error"]

    # One call in full, as the detail view reads it.
    status, one = await api("GET", f"logs/{big_id}")
    assert status == 200 and one == rows[big_id]
    assert one["routing_decision"]["mode"] == "off" and one["usage"]["prompt_tokens"] > 0


async def test_pages_walk_back_through_the_filtered_calls(api, write):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows = [
        _row(now - timedelta(minutes=n), model="gpt-4o" if n % 3 else "gpt-4o-mini",
             status=500 if n % 4 == 0 else 200)
        for n in range(1, 24)
    ]  # fmt: skip
    # Two calls in one millisecond: the page boundary falls between them.
    rows.append(_row(now - timedelta(minutes=5), model="gpt-4o", status=200))
    await write(*rows)
    for params in ({"model": "gpt-4o"}, {"status": "ok"}, {"model": "gpt-4o", "status": "5xx"}):
        expected = await _ids(api, limit="1000", **params)
        assert expected, params
        seen, before = [], None
        while True:
            cursor = {"before": before} if before else {}
            status, page = await api("GET", "logs", limit="3", **cursor, **params)
            assert status == 200, page
            seen += [r["id"] for r in page["logs"]]
            if page["next_before"] is None:
                break
            before = page["next_before"]
        assert seen == expected, params
    status, body = await api("GET", "logs", before="not-a-call-id")
    assert status == 400 and body["error"]["param"] == "before"


async def test_instants_and_days_bound_the_listing(api, write):
    base = datetime.combine(date(2026, 1, 10), time(12), timezone.utc)
    rows = [_row(base + timedelta(hours=h)) for h in (-13, -1, 0, 11, 12)]
    await write(*rows)
    ids = [r["id"] for r in rows]
    # since included, until excluded; offsets honoured.
    assert await _ids(api, since="2026-01-10T12:00:00Z", until="2026-01-11T00:00:00Z") == [
        ids[3], ids[2]
    ]  # fmt: skip
    assert await _ids(api, since="2026-01-10T20:00:00+09:00") == [ids[4], ids[3], ids[2], ids[1]]
    # Days in the analytics timezone (UTC here), the last one included.
    assert await _ids(api, start="2026-01-10", end="2026-01-10") == [ids[3], ids[2], ids[1]]
    assert await _ids(api, end="2026-01-09") == [ids[0]]


@pytest.mark.parametrize("lcm_config", ["Asia/Seoul"], indirect=True)
async def test_days_are_the_analytics_timezone_days(api, write):
    # 14:59 and 15:00 UTC on 9 January are 23:59 on the 9th and 00:00 on the 10th in Seoul.
    late, midnight = (datetime(2026, 1, 9, 14, 59, 59, tzinfo=timezone.utc), timedelta(seconds=1))
    rows = [_row(late), _row(late + midnight)]
    await write(*rows)
    assert await _ids(api, start="2026-01-10", end="2026-01-10") == [rows[1]["id"]]
    assert await _ids(api, end="2026-01-09") == [rows[0]["id"]]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"status": "failed"}, "status"),
        ({"status": "700"}, "status"),
        ({"provider": "mistral"}, "provider"),
        ({"model": "x" * 201}, "model"),
        ({"start": "2026-02-30"}, "start"),
        ({"start": "2026-02-10", "end": "2026-02-01"}, "start"),
        ({"end": "tomorrow"}, "end"),
        ({"since": "2026-01-10T12:00:00"}, "since"),
        ({"until": "noon"}, "until"),
        ({"since": "2026-01-10T12:00:00Z", "until": "2026-01-10T11:00:00Z"}, "since"),
        ({"start": "2026-01-10", "until": "2026-01-11T00:00:00Z"}, "until"),
        ({"key_id": "one"}, "key_id"),
        ({"limit": "1001"}, "limit"),
    ],
)
async def test_bad_parameters_are_400_naming_them(api, params, param):
    status, body = await api("GET", "logs", **params)
    assert status == 400, body
    assert body["error"]["param"] == param and body["error"]["code"] == "invalid_request"
    assert param in body["error"]["message"]
