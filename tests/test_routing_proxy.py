"""Routing through the proxy: auto, manual, off; the decision on every row; feedback, the gate."""

from __future__ import annotations

import openai
import pytest
from google import genai
from google.genai import types

from .conftest import anthropic_via, expected_cost, openai_via

SIMPLE = "What is the capital of France?"
COMPLEX = (
    "Prove that there are infinitely many primes of the form 4k+3, then explain step by step "
    "why the same argument fails for primes of the form 4k+1, and compare both proofs."
)


@pytest.fixture
def lcm_config(lcm_config):
    lcm_config["quality_min_ratings"] = 3  # so a test can trip the gate
    return lcm_config


_client = openai_via


def _ask(text, model="gpt-4o", **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_auto_routes_a_simple_call_down_and_logs_savings(base_url, make_key, logs, sim):
    record = await make_key(routing_mode="auto")
    raw = await _client(base_url, record["key"]).chat.completions.with_raw_response.create(
        **_ask(SIMPLE)
    )
    resp = raw.parse()
    assert raw.headers["x-lcm-routed-model"] == "gpt-4o-mini"
    assert sim.requests[-1].body["model"] == "gpt-4o-mini"
    (row,) = await logs()
    assert (row["requested_model"], row["model"]) == ("gpt-4o", "gpt-4o-mini")
    decision = row["routing_decision"]
    assert decision["was_routed"] is True and decision["mode"] == "auto"
    assert decision["intent"] and 0 <= decision["confidence"] <= 1 and decision["reason"]
    u = resp.usage
    cached = u.prompt_tokens_details.cached_tokens or 0
    actual = expected_cost(
        "gpt-4o-mini", uncached=u.prompt_tokens - cached, cached=cached, out=u.completion_tokens
    )
    would = expected_cost(
        "gpt-4o", uncached=u.prompt_tokens - cached, cached=cached, out=u.completion_tokens
    )
    assert row["cost_usd"] == actual
    assert row["savings_usd"] == pytest.approx(would - actual, abs=1e-15)
    assert row["savings_usd"] > 0


async def test_auto_keeps_complex_and_tool_calls_on_the_requested_model(
    base_url, make_key, logs, sim
):
    record = await make_key(routing_mode="auto")
    client = _client(base_url, record["key"])
    raw = await client.chat.completions.with_raw_response.create(**_ask(COMPLEX))
    assert "x-lcm-routed-model" not in raw.headers
    tool = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}
    await client.chat.completions.create(**_ask(SIMPLE, tools=[tool]))
    assert [r.body["model"] for r in sim.requests] == ["gpt-4o", "gpt-4o"]
    with_tools, complex_row = await logs()
    for row in (with_tools, complex_row):
        assert row["routing_decision"]["was_routed"] is False
        assert row["model"] == "gpt-4o" and row["savings_usd"] == 0
    assert "tool" in with_tools["routing_decision"]["reason"].lower()


async def test_decision_is_stored_for_streams_cache_hits_and_refusals(base_url, make_key, logs):
    record = await make_key(routing_mode="auto", cache_ttl_seconds=60)
    client = _client(base_url, record["key"])
    stream = await client.chat.completions.create(**_ask(SIMPLE), stream=True)
    _ = [c async for c in stream]
    await client.chat.completions.create(**_ask("Name a primary colour."))
    hit = await client.chat.completions.with_raw_response.create(**_ask("Name a primary colour."))
    assert hit.headers["x-lcm-cache"] == "hit"
    bad = openai_via(base_url, "lcm-wrong")
    with pytest.raises(openai.AuthenticationError):
        await bad.chat.completions.create(**_ask(SIMPLE))
    cached, miss, streamed = await logs()  # a call without a valid key leaves no row
    assert streamed["stream"] is True and streamed["routing_decision"]["was_routed"] is True
    assert streamed["model"] == "gpt-4o-mini"
    assert cached["cache_hit"] is True
    assert cached["routing_decision"] == miss["routing_decision"]
    assert cached["savings_usd"] > miss["savings_usd"] > 0  # the whole call was saved


async def test_anthropic_and_gemini_route_down_their_own_ladders(base_url, make_key, logs, sim):
    record = await make_key(routing_mode="auto")
    claude = anthropic_via(base_url, record["key"])
    await claude.messages.create(
        model="claude-sonnet-4-20250514",
        max_tokens=100,
        messages=[{"role": "user", "content": SIMPLE}],
    )
    gem = genai.Client(
        api_key=record["key"],
        http_options=types.HttpOptions(base_url=f"{base_url}lcm/proxy/google"),
    ).aio
    await gem.models.generate_content(model="gemini-2.5-pro", contents=SIMPLE)
    claude_to = sim.requests[0].body["model"]
    assert claude_to.startswith("claude-") and "haiku" in claude_to
    assert "/models/gemini-2.5-flash:generateContent" in sim.requests[1].path
    gemini_row, claude_row = await logs()
    for row in (gemini_row, claude_row):
        assert row["routing_decision"]["was_routed"] is True and row["savings_usd"] > 0


async def test_manual_rules_and_off(base_url, make_key, logs, sim):
    manual = await make_key(
        routing_mode="manual",
        routing_rules=[
            {"from_model": "claude-*", "to_model": "claude-3-5-haiku", "condition": "always"},
            {"from_model": "gpt-4o*", "to_model": "gpt-4o-mini", "condition": "always"},
        ],
    )
    off = await make_key(routing_mode="off")
    await _client(base_url, manual["key"]).chat.completions.create(**_ask(COMPLEX))
    await _client(base_url, off["key"]).chat.completions.create(**_ask(SIMPLE))
    assert [r.body["model"] for r in sim.requests] == ["gpt-4o-mini", "gpt-4o"]
    off_row, manual_row = await logs()
    assert manual_row["routing_decision"]["was_routed"] is True
    assert manual_row["routing_decision"]["rule"] == 1  # the second rule matched
    assert off_row["routing_decision"]["was_routed"] is False
    assert off_row["routing_decision"]["mode"] == "off"


async def test_feedback_validation_and_replacement(base_url, make_key, api):
    record = await make_key(routing_mode="auto")
    raw = await _client(base_url, record["key"]).chat.completions.with_raw_response.create(
        **_ask(SIMPLE)
    )
    log_id = raw.headers["x-lcm-request-id"]
    assert (await api("POST", f"logs/{log_id}/feedback", {"score": 2}))[0] == 400
    assert (await api("POST", f"logs/{log_id}/feedback", {"score": True}))[0] == 400
    assert (await api("POST", "logs/nope/feedback", {"score": 1}))[0] == 404
    status, first = await api("POST", f"logs/{log_id}/feedback", {"score": 1, "comment": "good"})
    assert status == 200 and first["previous"] is None
    status, second = await api("POST", f"logs/{log_id}/feedback", {"score": -1})
    assert second["previous"] == 1
    status, row = await api("GET", f"logs/{log_id}")
    assert (row["feedback"], row["feedback_comment"]) == (-1, None)
    status, quality = await api("GET", "routing/quality")
    (pair,) = [s for s in quality["scores"] if s["intent"] is None]
    assert (pair["from_model"], pair["to_model"]) == ("gpt-4o", "gpt-4o-mini")
    assert (pair["positive"], pair["negative"]) == (0, 1)  # replaced, not added


async def test_bad_ratings_close_the_pair_until_it_recovers(base_url, make_key, api, sim, lcm):
    record = await make_key(routing_mode="auto")
    client = _client(base_url, record["key"])

    async def routed_call():
        raw = await client.chat.completions.with_raw_response.create(**_ask(SIMPLE))
        return raw.headers.get("x-lcm-routed-model"), raw.headers["x-lcm-request-id"]

    ids = []
    for _ in range(3):
        routed, log_id = await routed_call()
        assert routed == "gpt-4o-mini"
        ids.append(log_id)
    for log_id in ids:
        assert (await api("POST", f"logs/{log_id}/feedback", {"score": -1}))[0] == 200
    routed, log_id = await routed_call()
    assert routed is None  # the gate closed the pair
    status, row = await api("GET", f"logs/{log_id}")
    assert status == 200
    assert "quality" in row["routing_decision"]["reason"].lower()
    status, quality = await api("GET", "routing/quality")
    (pair,) = [s for s in quality["scores"] if s["intent"] is None]
    assert pair["gated"]
    for log_id in ids:  # users change their minds: the pair recovers
        await api("POST", f"logs/{log_id}/feedback", {"score": 1})
    routed, _ = await routed_call()
    assert routed == "gpt-4o-mini"
    # and a restarted server rebuilds the same board from the log
    await lcm.router.load()
    assert lcm.router.board.gate("gpt-4o", "gpt-4o-mini") is None


async def test_new_keys_pass_calls_through_and_log_what_auto_routing_would_save(
    base_url, make_key, api, logs, sim
):
    status, record = await api(
        "POST", "keys", {"name": "fresh", "provider_api_keys": {"openai": "sk-upstream-x"}}
    )
    assert status == 201 and record["routing_mode"] == "off"  # the default
    record = await make_key()  # off too, with the simulator's key
    client = _client(base_url, record["key"])
    easy = await client.chat.completions.with_raw_response.create(**_ask(SIMPLE))
    assert "x-lcm-routed-model" not in easy.headers
    await client.chat.completions.create(**_ask(COMPLEX))
    assert [r.body["model"] for r in sim.requests] == ["gpt-4o", "gpt-4o"]  # unchanged
    hard_row, easy_row = await logs()
    decision = easy_row["routing_decision"]
    assert decision["mode"] == "off" and decision["was_routed"] is False
    assert decision["shadow"]["to_model"] == "gpt-4o-mini"
    usage = easy.parse().usage
    would_cost = expected_cost(
        "gpt-4o-mini", uncached=usage.prompt_tokens, out=usage.completion_tokens
    )
    saving = easy_row["cost_usd"] - would_cost
    assert saving > 0
    assert easy_row["shadow_savings_usd"] == pytest.approx(saving, abs=1e-12)
    assert decision["shadow"]["saving_usd"] == easy_row["shadow_savings_usd"]
    assert "shadow" not in hard_row["routing_decision"] and hard_row["shadow_savings_usd"] == 0
    # Per key, as the dashboard and the report show it.
    status, body = await api("GET", "analytics/shadow", period="7d")
    assert status == 200
    (entry,) = body["keys"]
    assert (entry["key_id"], entry["calls"]) == (record["id"], 1)
    assert entry["saving_usd"] == pytest.approx(saving, abs=1e-12)
    assert body["calls"] == 1
