"""Anthropic through the proxy with the official SDK: messages, stream or not, cache tokens."""

from __future__ import annotations

import anthropic
import pytest

from .conftest import PROVIDER_KEY, expected_cost


@pytest.fixture
def claude(base_url, make_key):
    async def make(route="anthropic", **key_fields):
        record = await make_key(**key_fields)
        prefix = "lcm/proxy/anthropic" if route == "anthropic" else "lcm/proxy/v2"
        return anthropic.AsyncAnthropic(
            base_url=base_url + prefix, api_key=record["key"], max_retries=0
        ), record

    return make


def _check_row(row, usage, model):
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    assert row["input_tokens"] == usage.input_tokens + cache_read + cache_write
    assert row["cached_tokens"] == cache_read
    assert row["cache_write_tokens"] == cache_write
    assert row["output_tokens"] == usage.output_tokens
    assert row["cost_usd"] == expected_cost(
        model,
        uncached=usage.input_tokens,
        cached=cache_read,
        cache_write=cache_write,
        out=usage.output_tokens,
    )


async def test_messages(claude, logs, sim):
    client, record = await claude()
    msg = await client.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=200,
        messages=[{"role": "user", "content": "Hello Claude, through the proxy"}],
    )
    assert msg.content[0].text
    (row,) = await logs()
    assert (row["provider"], row["endpoint"], row["status"]) == ("anthropic", "messages", 200)
    _check_row(row, msg.usage, "claude-3-5-haiku-latest")
    upstream = sim.requests[-1]
    assert upstream.headers["x-api-key"] == PROVIDER_KEY
    assert "authorization" not in upstream.headers  # the SDK sent the proxy key as a Bearer
    assert record["key"] not in str(upstream.headers)


async def test_prompt_cache_tokens_are_priced_at_cache_rates(claude, logs):
    client, _ = await claude()
    system = [
        {
            "type": "text",
            "text": "You are a careful assistant. " * 400,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    first = await client.messages.create(
        model="claude-sonnet-4-20250514",
        max_tokens=50,
        system=system,
        messages=[{"role": "user", "content": "first"}],
    )
    second = await client.messages.create(
        model="claude-sonnet-4-20250514",
        max_tokens=50,
        system=system,
        messages=[{"role": "user", "content": "second"}],
    )
    assert first.usage.cache_creation_input_tokens > 0
    assert second.usage.cache_read_input_tokens > 0
    newer, older = await logs()
    _check_row(older, first.usage, "claude-sonnet-4")
    _check_row(newer, second.usage, "claude-sonnet-4")


async def test_messages_stream(claude, logs):
    client, _ = await claude()
    async with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=300,
        messages=[{"role": "user", "content": "Stream a short poem"}],
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text
    (row,) = await logs()
    assert row["stream"] is True
    _check_row(row, final.usage, "claude-sonnet-4-5")


async def test_v2_route_detects_anthropic(claude, logs):
    client, _ = await claude(route="v2")
    msg = await client.messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "v2"}]
    )
    (row,) = await logs()
    assert row["provider"] == "anthropic"
    _check_row(row, msg.usage, "claude-haiku-4-5")


async def test_count_tokens_is_passed_through_free(claude, logs):
    client, _ = await claude()
    count = await client.messages.count_tokens(
        model="claude-3-5-haiku-latest", messages=[{"role": "user", "content": "count me"}]
    )
    assert count.input_tokens > 0
    (row,) = await logs()
    assert row["endpoint"] == "v1/messages/count_tokens"
    assert row["cost_usd"] == 0


async def test_stream_chunks_reach_the_client_as_they_arrive(claude, sim):
    """Nothing is buffered: with the provider pausing between events, so does the client."""
    import time

    client, _ = await claude()
    sim.chunk_delay = 0.15
    arrivals = []
    async with client.messages.stream(
        model="claude-3-5-haiku-latest",
        max_tokens=200,
        messages=[{"role": "user", "content": "stream slowly"}],
    ) as stream:
        async for _ in stream.text_stream:
            arrivals.append(time.monotonic())
    sim.chunk_delay = 0
    assert len(arrivals) >= 3
    # Buffered, every text delta would arrive at once at the end.
    assert arrivals[-1] - arrivals[0] >= 0.15 * (len(arrivals) - 1) * 0.8
