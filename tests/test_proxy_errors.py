"""Bad input and bad upstreams: each gets a clear error in the provider's shape and a log row."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from .conftest import PROVIDER_KEY, anthropic_via, expected_cost, openai_via

_openai = openai_via


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_missing_and_invalid_keys_are_401_in_each_shape(base_url, logs, lcm):
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{base_url}lcm/proxy/openai/v1/chat/completions", json=CHAT)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
    assert "No proxy key" in resp.json()["error"]["message"]

    with pytest.raises(openai.AuthenticationError) as exc:
        await _openai(base_url, "lcm-not-a-real-key").chat.completions.create(**CHAT)
    assert "Invalid proxy key" in exc.value.message

    claude = anthropic_via(base_url, "lcm-nope")
    with pytest.raises(anthropic.AuthenticationError):
        await claude.messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
        )

    gem = genai.Client(
        api_key="lcm-nope", http_options=types.HttpOptions(base_url=f"{base_url}lcm/proxy/google")
    ).aio
    with pytest.raises(genai_errors.ClientError) as gexc:
        await gem.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert gexc.value.code == 401

    # Refused without a valid key: counted, never logged (a flood must not fill the log).
    assert await logs() == []
    assert lcm.pipeline.unauthenticated == 4


async def test_revoked_key_is_refused(base_url, make_key, api, logs):
    record = await make_key()
    client = _openai(base_url, record["key"])
    await client.chat.completions.create(**CHAT)
    status, revoked = await api("DELETE", f"keys/{record['id']}")
    assert status == 200 and revoked["revoked"] is True
    with pytest.raises(openai.AuthenticationError) as exc:
        await client.chat.completions.create(**CHAT)
    assert "revoked" in exc.value.message
    rejected, ok = await logs()
    assert (ok["status"], rejected["status"]) == (200, 401)
    assert rejected["key_id"] == record["id"]


async def test_malformed_json_is_400(base_url, make_key, logs):
    record = await make_key()
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{base_url}lcm/proxy/anthropic/v1/messages",
            content=b'{"model": "claude-3-5-haiku-latest", "messages": [',
            headers={"x-api-key": record["key"], "content-type": "application/json"},
        )
    assert resp.status_code == 400
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"]
    assert resp.headers["x-lcm-request-id"]
    (row,) = await logs()
    assert (row["status"], row["key_id"], row["id"]) == (
        400,
        record["id"],
        resp.headers["x-lcm-request-id"],
    )


async def test_oversized_body_is_413(base_url, make_key, logs, lcm_config):
    record = await make_key()
    huge = "x" * (lcm_config["max_request_body_bytes"] + 10)
    with pytest.raises(openai.APIStatusError) as exc:
        await _openai(base_url, record["key"]).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": huge}]
        )
    assert exc.value.status_code == 413
    assert "larger than this proxy's limit" in exc.value.message
    (row,) = await logs()
    assert row["status"] == 413


async def test_undetectable_provider_is_400_with_hints(base_url, make_key, logs):
    record = await make_key()  # provider "auto": nothing to fall back on
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{base_url}lcm/proxy/v2/v1/generate",
            json={"model": "my-private-model", "text": "hi"},
            headers={"authorization": f"Bearer {record['key']}"},
        )
    assert resp.status_code == 400
    error = resp.json()["error"]  # OpenAI's shape
    assert error["code"] == "provider_not_detected"
    assert "Could not tell which provider" in error["message"]
    assert "my-private-model" in error["message"]  # says what it looked at
    assert "lcm/proxy/openai/" in error["message"]  # and how to fix it
    (row,) = await logs()
    assert (row["status"], row["provider"]) == (400, None)


async def test_v2_falls_back_to_the_keys_own_provider(base_url, make_key, logs):
    record = await make_key(provider="openai", provider_api_keys={"openai": PROVIDER_KEY})
    resp = await _openai(base_url, record["key"], route="v2").chat.completions.create(
        model="my-fine-tune", messages=[{"role": "user", "content": "hi"}]
    )
    assert resp.choices
    (row,) = await logs()
    assert (row["provider"], row["status"]) == ("openai", 200)


async def test_key_for_another_provider_is_403(base_url, make_key, logs):
    record = await make_key(provider="anthropic", provider_api_keys={"anthropic": "sk-ant-x"})
    with pytest.raises(openai.PermissionDeniedError) as exc:
        await _openai(base_url, record["key"]).chat.completions.create(**CHAT)
    assert "is for anthropic" in exc.value.message
    (row,) = await logs()
    assert row["status"] == 403


async def test_upstream_error_is_passed_through_and_logged(base_url, make_key, sim, logs):
    record = await make_key()
    sim.inject_error(500, message="the model fell over")
    with pytest.raises(openai.InternalServerError) as exc:
        await _openai(base_url, record["key"]).chat.completions.create(**CHAT)
    assert "the model fell over" in exc.value.message
    sim.inject_error(429, provider="anthropic", message="slow down")
    claude = anthropic_via(base_url, record["key"])
    with pytest.raises(anthropic.RateLimitError):
        await claude.messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
        )
    rate_limited, failed = await logs()
    assert (failed["status"], failed["error"]) == (500, "the model fell over")
    assert (rate_limited["status"], rate_limited["error"]) == (429, "slow down")
    assert failed["cost_usd"] == 0


async def test_upstream_down_is_502(base_url, make_key, sim, logs):
    record = await make_key()
    await sim.stop()
    with pytest.raises(openai.InternalServerError) as exc:
        await _openai(base_url, record["key"]).chat.completions.create(**CHAT)
    assert exc.value.status_code == 502
    assert "could not be reached" in exc.value.message
    (row,) = await logs()
    assert row["status"] == 502


async def test_upstream_timeout_is_504(base_url, make_key, sim, logs, lcm_config):
    record = await make_key()
    sim.latency = lcm_config["upstream_read_timeout"] + 1
    gem = genai.Client(
        api_key=record["key"],
        http_options=types.HttpOptions(base_url=f"{base_url}lcm/proxy/google"),
    ).aio
    with pytest.raises(genai_errors.ServerError) as exc:
        await gem.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert exc.value.code == 504
    assert exc.value.status == "DEADLINE_EXCEEDED"
    sim.latency = 0
    # and the server keeps serving
    await _openai(base_url, record["key"]).chat.completions.create(**CHAT)
    ok, timed_out = await logs()
    assert (timed_out["status"], ok["status"]) == (504, 200)


async def test_client_disconnect_mid_stream_is_logged_with_partial_usage(
    base_url, make_key, sim, logs
):
    record = await make_key()
    sim.chunk_delay = 0.3
    body = {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 500,
        "stream": True,
        "messages": [{"role": "user", "content": "a long streamed answer please"}],
    }
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST",
            f"{base_url}lcm/proxy/anthropic/v1/messages",
            json=body,
            headers={"x-api-key": record["key"], "anthropic-version": "2023-06-01"},
        ) as resp,
    ):
        assert resp.status_code == 200
        async for chunk in resp.aiter_bytes():
            assert b"message_start" in chunk
            break  # hang up after the first chunk
    await asyncio.sleep(0.5)
    sim.chunk_delay = 0
    (row,) = await logs()
    assert row["status"] == 499
    assert "disconnected" in row["error"]
    assert row["input_tokens"] > 0  # message_start had arrived: the input is billed
    assert row["cost_usd"] == expected_cost(
        "claude-3-5-haiku-latest", uncached=row["input_tokens"], out=row["output_tokens"]
    )
    # the server keeps serving
    resp = await _openai(base_url, record["key"]).chat.completions.create(**CHAT)
    assert resp.choices


async def test_openai_stream_cut_before_usage_is_logged_with_an_estimate(
    base_url, make_key, sim, logs, api
):
    record = await make_key(monthly_budget_usd=5.0)
    sim.chunk_delay = 0.3
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "a long streamed answer please " * 20}],
    }
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST",
            f"{base_url}lcm/proxy/openai/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {record['key']}"},
        ) as resp,
    ):
        async for _ in resp.aiter_bytes():
            break  # gone before OpenAI's final usage chunk
    await asyncio.sleep(0.5)
    sim.chunk_delay = 0
    (row,) = await logs()
    assert row["status"] == 499 and row["usage_estimated"] is True
    assert row["input_tokens"] > 100 and row["output_tokens"] >= 1
    assert row["cost_usd"] == expected_cost(
        "gpt-4o-mini", uncached=row["input_tokens"], out=row["output_tokens"]
    )
    status, budget = await api("GET", f"budgets/{record['id']}")
    assert status == 200
    assert budget["spent_usd"] == row["cost_usd"]  # the budget saw it too
