"""Gemini through the proxy with google-genai: generate, stream (SSE and JSON array), embed."""

from __future__ import annotations

import json

import httpx
import pytest
from google import genai
from google.genai import types

from .conftest import PROVIDER_KEY, expected_cost


@pytest.fixture
def gemini(base_url, make_key):
    async def make(route="google", **key_fields):
        record = await make_key(**key_fields)
        client = genai.Client(
            api_key=record["key"],
            http_options=types.HttpOptions(base_url=f"{base_url}lcm/proxy/{route}"),
        )
        return client.aio, record

    return make


def _check_row(row, usage, model):
    cached = usage.cached_content_token_count or 0
    thoughts = usage.thoughts_token_count or 0
    assert row["input_tokens"] == usage.prompt_token_count
    assert row["cached_tokens"] == cached
    assert row["output_tokens"] == (usage.candidates_token_count or 0) + thoughts
    assert row["reasoning_tokens"] == thoughts
    assert row["cost_usd"] == expected_cost(
        model, uncached=usage.prompt_token_count - cached, cached=cached, out=row["output_tokens"]
    )


async def test_generate_content(gemini, logs, sim):
    client, record = await gemini()
    resp = await client.models.generate_content(
        model="gemini-2.0-flash", contents="Hello Gemini, through the proxy"
    )
    assert resp.text
    (row,) = await logs()
    assert (row["provider"], row["endpoint"], row["status"]) == ("google", "generateContent", 200)
    assert row["requested_model"] == "gemini-2.0-flash"
    _check_row(row, resp.usage_metadata, "gemini-2.0-flash")
    upstream = sim.requests[-1]
    assert upstream.path.startswith("/v1/models/gemini-2.0-flash")  # forwarded as sent
    assert upstream.headers["x-goog-api-key"] == PROVIDER_KEY
    assert record["key"] not in str(upstream.headers) + upstream.query


async def test_thinking_model_counts_thoughts_as_output(gemini, logs):
    client, _ = await gemini()
    resp = await client.models.generate_content(
        model="gemini-2.5-flash", contents="Think: what is 12 squared?"
    )
    assert resp.usage_metadata.thoughts_token_count > 0
    (row,) = await logs()
    _check_row(row, resp.usage_metadata, "gemini-2.5-flash")


async def test_stream_generate_content_sse(gemini, logs):
    client, _ = await gemini()
    chunks = [
        c
        async for c in await client.models.generate_content_stream(
            model="gemini-2.5-pro", contents="Stream a few sentences"
        )
    ]
    assert "".join(c.text or "" for c in chunks)
    (row,) = await logs()
    assert (row["endpoint"], row["stream"]) == ("streamGenerateContent", True)
    _check_row(row, chunks[-1].usage_metadata, "gemini-2.5-pro")


async def test_stream_generate_content_json_array(make_key, base_url, logs):
    record = await make_key()
    url = f"{base_url}lcm/proxy/google/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "Stream as a JSON array"}]}]}
    async with httpx.AsyncClient() as http:
        resp = await http.post(url, params={"key": record["key"]}, json=body)
    assert resp.status_code == 200
    items = json.loads(resp.text)  # the whole stream is one valid JSON array
    usage = items[-1]["usageMetadata"]
    (row,) = await logs()
    assert row["stream"] is True
    assert row["input_tokens"] == usage["promptTokenCount"]
    assert row["output_tokens"] == usage["candidatesTokenCount"] + usage.get(
        "thoughtsTokenCount", 0
    )
    assert row["cost_usd"] == expected_cost(
        "gemini-2.0-flash", uncached=usage["promptTokenCount"], out=row["output_tokens"]
    )


async def test_embed_content(gemini, logs):
    client, _ = await gemini()
    resp = await client.models.embed_content(
        model="gemini-embedding-001", contents=["embed this", "and this"]
    )
    assert len(resp.embeddings) == 2
    (row,) = await logs()
    assert row["endpoint"] in ("embedContent", "batchEmbedContents")
    assert row["input_tokens"] > 0
    assert row["cost_usd"] == expected_cost(
        "gemini-embedding-001", uncached=row["input_tokens"], out=0
    )


async def test_v2_route_detects_google(gemini, logs):
    client, _ = await gemini(route="v2")
    resp = await client.models.generate_content(model="gemini-2.0-flash", contents="v2")
    (row,) = await logs()
    assert row["provider"] == "google"
    _check_row(row, resp.usage_metadata, "gemini-2.0-flash")
