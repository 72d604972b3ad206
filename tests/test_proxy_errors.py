"""Bad input and bad upstreams: each gets a clear error in the provider's shape and a log row."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import openai
import pytest
from aiohttp import web
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from .conftest import PROVIDER_KEY, anthropic_via, expected_cost, openai_via
from .upstreams import LocalUpstream

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


async def test_a_base_url_without_v1_gets_the_providers_404_with_a_hint(
    base_url, make_key, sim, logs
):
    record = await make_key()
    # The mistake users make: the SDK's base_url without /v1, so it posts /chat/completions.
    sdk = openai.AsyncOpenAI(
        base_url=f"{base_url}lcm/proxy/openai", api_key=record["key"], max_retries=0
    )
    with pytest.raises(openai.NotFoundError) as exc:
        await sdk.chat.completions.create(**CHAT)
    assert exc.value.status_code == 404
    message = exc.value.message
    assert "lcm/proxy/openai/v1" in message and "base URL" in message
    assert "POST /chat/completions" in message
    assert exc.value.response.headers["x-lcm-request-id"]
    assert exc.value.response.headers["content-type"].startswith("application/json")
    assert [r.path for r in sim.requests] == ["/chat/completions"]  # the provider was asked
    (row,) = await logs()
    assert row["status"] == 404 and "lcm/proxy/openai/v1" in row["error"]

    # A 404 on a versioned path is the provider's own (an unknown id, say): no hint added.
    good = openai.AsyncOpenAI(
        base_url=f"{base_url}lcm/proxy/openai/v1", api_key=record["key"], max_retries=0
    )
    with pytest.raises(openai.NotFoundError) as exc:
        await good.responses.retrieve("resp_missing")
    assert "base URL" not in exc.value.message


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


# -- broken upstream answers: a raw upstream answers exactly what a test gives it ---------------

_NGINX_500 = (
    b"<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
    b"<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class RawUpstream(LocalUpstream):
    """Answers each request with the next (status, headers, body) of `answers`, as given."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        self.seen: list[str] = []

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append(request.path)
        status, headers, body = self.answers.pop(0)
        return web.Response(status=status, body=body, headers=headers)


@pytest.fixture
def raw(jp_asyncio_loop):
    upstream = RawUpstream()
    jp_asyncio_loop.run_until_complete(upstream.start())
    yield upstream
    jp_asyncio_loop.run_until_complete(upstream.stop())


@pytest.fixture
def lcm_config(lcm_config, request):
    """Every provider at the raw upstream, for the tests that ask for it."""
    if "raw" not in request.fixturenames:
        return lcm_config
    url = request.getfixturevalue("raw").url
    return {**lcm_config, **{f"{p}_base_url": url for p in ("openai", "anthropic", "google")}}


def _gemini(base_url: str, key: str):
    return genai.Client(
        api_key=key, http_options=types.HttpOptions(base_url=f"{base_url}lcm/proxy/google")
    ).aio


CLAUDE = {
    "model": "claude-3-5-haiku-latest",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


async def test_an_upstream_error_that_is_not_json_comes_in_the_providers_shape(
    base_url, make_key, raw, logs
):
    # A rate limit on the key: its own rate headers go back, and the provider's retry-after too.
    record = await make_key(rate_limit_rpm=1000)
    origin = raw.url
    upstream_ids = {"x-request-id": "req_upstream_1", "retry-after": "7"}
    raw.answers = [
        (500, {"content-type": "text/html", **upstream_ids}, _NGINX_500),
        (502, {"content-type": "text/plain", "request-id": "req_upstream_2"}, b""),
        (503, {"content-type": "text/plain"}, b"upstream connect error or disconnect/reset"),
        (429, {"content-type": "text/html", "retry-after": "3"}, b"<body><p>Slow &amp; down"),
    ]

    with pytest.raises(openai.InternalServerError) as exc:
        await _openai(base_url, record["key"]).chat.completions.create(**CHAT)
    first = exc.value
    assert first.status_code == 500
    assert first.body["message"] == (
        f"The provider at {origin} answered 500 with an HTML page: 500 Internal Server Error"
    )
    assert first.body["type"] == "server_error" and first.body["code"] == "upstream_error"
    headers = first.response.headers
    assert headers["content-type"] == "application/json"
    assert (headers["x-request-id"], headers["retry-after"]) == ("req_upstream_1", "7")
    assert headers["x-ratelimit-limit-requests"] == "1000"  # the key's own
    assert headers["x-lcm-request-id"]

    with pytest.raises(anthropic.InternalServerError) as aexc:
        await anthropic_via(base_url, record["key"]).messages.create(**CLAUDE)
    assert aexc.value.status_code == 502
    body = aexc.value.body
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert body["error"]["message"] == f"The provider at {origin} answered 502 with an empty body"
    assert aexc.value.response.headers["request-id"] == "req_upstream_2"

    with pytest.raises(genai_errors.ServerError) as gexc:
        await _gemini(base_url, record["key"]).models.generate_content(
            model="gemini-2.0-flash", contents="hi"
        )
    assert (gexc.value.code, gexc.value.status) == (503, "UNAVAILABLE")
    assert gexc.value.message == (
        f"The provider at {origin} answered 503 with a body that is not JSON (text/plain): "
        "upstream connect error or disconnect/reset"
    )

    with pytest.raises(openai.RateLimitError) as rexc:
        await _openai(base_url, record["key"]).chat.completions.create(**CHAT)
    assert rexc.value.body["message"].endswith("answered 429 with an HTML page: Slow & down")
    assert rexc.value.response.headers["retry-after"] == "3"

    rate_limited, text, empty, page = await logs()
    assert [r["status"] for r in (page, empty, text, rate_limited)] == [500, 502, 503, 429]
    assert page["error"] == first.body["message"]
    assert empty["error"] == body["error"]["message"]
    assert text["error"] == gexc.value.message
    assert all(r["cost_usd"] == 0 for r in (page, empty, text, rate_limited))
    assert [r["id"] for r in (page, empty)] == [
        headers["x-lcm-request-id"],
        aexc.value.response.headers["x-lcm-request-id"],
    ]


async def test_a_json_error_from_the_provider_passes_through_byte_for_byte(
    base_url, make_key, raw, logs
):
    record = await make_key()
    odd = b'{"error" : {"message": "the model fell over", "type": "server_error"},\n "x": 1}'
    plain_json = b'{"error": {"message": "plain but JSON"}}'
    raw.answers = [
        (500, {"content-type": "application/json", "x-request-id": "req_9"}, odd),
        (400, {"content-type": "text/plain"}, plain_json),
    ]
    async with httpx.AsyncClient() as http:
        answers = [
            await http.post(
                f"{base_url}lcm/proxy/openai/v1/chat/completions",
                json=CHAT,
                headers={"authorization": f"Bearer {record['key']}"},
            )
            for _ in range(2)
        ]
    assert (answers[0].status_code, answers[0].content) == (500, odd)
    assert answers[0].headers["x-request-id"] == "req_9"
    assert (answers[1].status_code, answers[1].content) == (400, plain_json)
    assert answers[1].headers["content-type"] == "text/plain"
    plain, failed = await logs()
    assert (failed["status"], failed["error"]) == (500, "the model fell over")
    assert (plain["status"], plain["error"]) == (400, "plain but JSON")


def _cut(body: dict) -> bytes:
    whole = json.dumps(body).encode()
    return whole[: len(whole) // 2]


async def test_a_json_answer_cut_short_is_a_502_booked_at_an_estimate(
    base_url, make_key, raw, logs, api
):
    record = await make_key(monthly_budget_usd=5.0)
    origin = raw.url
    cut = _cut({"id": "chatcmpl-1", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello there"}}]})  # fmt: skip
    raw.answers = [
        (200, {"content-type": "application/json", "x-request-id": "req_cut"}, cut),
        (200, {"content-type": "application/json"}, b""),
        (200, {"content-type": "application/json; charset=UTF-8"}, b'{"candidates": [{"con'),
    ]
    with pytest.raises(openai.InternalServerError) as exc:
        await _openai(base_url, record["key"]).chat.completions.create(**CHAT)
    assert exc.value.status_code == 502
    message = exc.value.body["message"]
    assert message.startswith(
        f"The provider at {origin} answered 200, but its answer was cut short or is not "
        f"valid JSON ({len(cut)} bytes; Unterminated string"
    )
    assert exc.value.body["code"] == "upstream_invalid_json"
    assert exc.value.response.headers["x-request-id"] == "req_cut"

    with pytest.raises(anthropic.InternalServerError) as aexc:
        await anthropic_via(base_url, record["key"]).messages.create(**CLAUDE)
    assert aexc.value.status_code == 502
    assert "answered 200, but its answer was cut short" in aexc.value.body["error"]["message"]

    with pytest.raises(genai_errors.ServerError) as gexc:
        await _gemini(base_url, record["key"]).models.generate_content(
            model="gemini-2.0-flash", contents="hi"
        )
    assert gexc.value.code == 502 and "cut short or is not valid JSON" in gexc.value.message

    gemini, claude, gpt = await logs()
    for row in (gpt, claude, gemini):
        # The provider may have billed it: booked as a stream cut short is, at an estimate.
        assert row["status"] == 502 and row["usage_estimated"] is True
        assert "cut short or is not valid JSON" in row["error"]
        assert "usage estimated" in row["error"]
        assert row["input_tokens"] > 0 and row["cost_usd"] > 0
    assert gpt["error"].startswith(message)
    assert gpt["cost_usd"] == expected_cost("gpt-4o-mini", uncached=gpt["input_tokens"], out=0)
    status, budget = await api("GET", f"budgets/{record['id']}")
    assert status == 200
    assert budget["spent_usd"] == pytest.approx(sum(r["cost_usd"] for r in (gpt, claude, gemini)))
    assert budget["reserved_usd"] == 0


async def test_an_html_404_on_a_path_without_v1_keeps_the_base_url_hint(
    base_url, make_key, raw, logs
):
    record = await make_key()
    raw.answers = [(404, {"content-type": "text/html"}, b"<title>404 Not Found</title>")]
    sdk = openai.AsyncOpenAI(
        base_url=f"{base_url}lcm/proxy/openai", api_key=record["key"], max_retries=0
    )
    with pytest.raises(openai.NotFoundError) as exc:
        await sdk.chat.completions.create(**CHAT)
    message = exc.value.body["message"]
    assert message.startswith(f"The provider at {raw.url} answered 404 with an HTML page: 404")
    assert "lcm/proxy/openai/v1" in message and "base URL" in message
    assert raw.seen == ["/chat/completions"]
    (row,) = await logs()
    assert (row["status"], row["error"]) == (404, message)
