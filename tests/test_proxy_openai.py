"""OpenAI through the proxy with the official SDK: chat, Responses, embeddings, stream or not."""

from __future__ import annotations

import openai
import pytest

from .conftest import PROVIDER_KEY, expected_cost


@pytest.fixture
def client(base_url, make_key, jp_asyncio_loop):
    async def make(route="openai", **key_fields):
        record = await make_key(**key_fields)
        prefix = "lcm/proxy/openai/v1" if route == "openai" else "lcm/proxy/v2/v1"
        return openai.AsyncOpenAI(
            base_url=base_url + prefix, api_key=record["key"], max_retries=0
        ), record

    return make


def _check_chat_row(row, usage, model):
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details else 0
    reasoning = usage.completion_tokens_details.reasoning_tokens or 0
    assert row["input_tokens"] == usage.prompt_tokens
    assert row["output_tokens"] == usage.completion_tokens
    assert row["cached_tokens"] == cached
    assert row["reasoning_tokens"] == reasoning
    assert row["cost_usd"] == expected_cost(
        model, uncached=usage.prompt_tokens - cached, cached=cached, out=usage.completion_tokens
    )
    assert row["pricing_version"].startswith("genai-prices-")
    assert row["unpriced"] is False


async def test_chat_completion(client, logs, sim):
    oai, record = await client()
    raw = await oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello to the proxy"}]
    )
    resp = raw.parse()
    assert resp.choices[0].message.content
    (row,) = await logs()
    assert row["id"] == raw.headers["x-lcm-request-id"]
    assert row["key_id"] == record["id"]
    assert (row["provider"], row["endpoint"], row["status"]) == ("openai", "chat.completions", 200)
    assert row["requested_model"] == "gpt-4o-mini"
    assert row["stream"] is False
    _check_chat_row(row, resp.usage, "gpt-4o-mini")
    # The provider saw its own key, never the proxy key.
    upstream = sim.requests[-1]
    assert upstream.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert record["key"] not in str(upstream.headers)


async def test_reasoning_model_counts_reasoning_as_output(client, logs):
    oai, _ = await client()
    resp = await oai.chat.completions.create(
        model="o3-mini", messages=[{"role": "user", "content": "Think about 17 * 23 step by step"}]
    )
    assert resp.usage.completion_tokens_details.reasoning_tokens > 0
    (row,) = await logs()
    _check_chat_row(row, resp.usage, "o3-mini")


async def test_stream_without_usage_requested_hides_usage_chunk(client, logs, sim):
    oai, _ = await client()
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Stream me a reply"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    assert all(c.choices for c in chunks)  # and so sees no usage-only chunk
    # ...but the proxy asked the provider for it, and logged it.
    assert sim.requests[-1].body["stream_options"] == {"include_usage": True}
    (row,) = await logs()
    assert row["stream"] is True
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0
    assert row["cost_usd"] == expected_cost(
        "gpt-4o",
        uncached=row["input_tokens"] - row["cached_tokens"],
        cached=row["cached_tokens"],
        out=row["output_tokens"],
    )


async def test_stream_with_usage_requested(client, logs):
    oai, _ = await client()
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Stream with usage"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    (row,) = await logs()
    _check_chat_row(row, usage, "gpt-4o-mini")


async def test_responses_api(client, logs):
    oai, _ = await client()
    resp = await oai.responses.create(model="gpt-4.1", input="Write one line about Jupyter")
    assert resp.output_text
    (row,) = await logs()
    assert row["endpoint"] == "responses"
    assert row["input_tokens"] == resp.usage.input_tokens
    assert row["output_tokens"] == resp.usage.output_tokens
    cached = resp.usage.input_tokens_details.cached_tokens
    assert row["cost_usd"] == expected_cost(
        "gpt-4.1",
        uncached=resp.usage.input_tokens - cached,
        cached=cached,
        out=resp.usage.output_tokens,
    )


async def test_responses_api_stream(client, logs):
    oai, _ = await client()
    stream = await oai.responses.create(model="gpt-4.1-mini", input="Stream a line", stream=True)
    events = [event async for event in stream]
    completed = [e for e in events if e.type == "response.completed"]
    assert completed
    usage = completed[0].response.usage
    (row,) = await logs()
    assert row["stream"] is True
    assert (row["input_tokens"], row["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert row["cost_usd"] == expected_cost(
        "gpt-4.1-mini",
        uncached=usage.input_tokens - usage.input_tokens_details.cached_tokens,
        cached=usage.input_tokens_details.cached_tokens,
        out=usage.output_tokens,
    )


async def test_embeddings(client, logs):
    oai, _ = await client()
    resp = await oai.embeddings.create(
        model="text-embedding-3-small", input=["first text", "second text"]
    )
    assert len(resp.data) == 2 and len(resp.data[0].embedding) > 0
    (row,) = await logs()
    assert row["endpoint"] == "embeddings"
    assert row["input_tokens"] == resp.usage.prompt_tokens
    assert row["cost_usd"] == expected_cost(
        "text-embedding-3-small", uncached=resp.usage.prompt_tokens, out=0
    )


async def test_unmetered_path_is_passed_through_and_logged_at_zero(client, logs):
    oai, _ = await client()
    models = await oai.models.list()
    assert models.data
    (row,) = await logs()
    assert row["endpoint"] == "v1/models"
    assert row["method"] == "GET"
    assert row["cost_usd"] == 0
    assert row["status"] == 200


async def test_unpriced_model_is_logged_with_null_cost(client, logs):
    oai, _ = await client()
    resp = await oai.chat.completions.create(
        model="gpt-99-experimental", messages=[{"role": "user", "content": "hi"}]
    )
    (row,) = await logs()
    assert row["input_tokens"] == resp.usage.prompt_tokens
    assert row["cost_usd"] is None
    assert row["unpriced"] is True


async def test_v2_route_detects_openai(client, logs):
    oai, _ = await client(route="v2")
    resp = await oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "via v2"}]
    )
    (row,) = await logs()
    assert row["provider"] == "openai"
    _check_chat_row(row, resp.usage, "gpt-4o-mini")
