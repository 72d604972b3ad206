"""No unmetered way around a budget: every endpoint that costs money is metered or refused.

Through a real server with the official SDKs: a key with a budget cannot reach the
provider on an endpoint nothing here meters (batches, fine-tuning, vector stores,
background responses) unless the operator lets it (`unmetered_endpoints`); metered ones
(images, speech) hold their worst case like a chat does, so an exhausted budget stops them.
"""

from __future__ import annotations

import dataclasses
import json

import anthropic
import httpx
import openai
import pytest

from lcm_jupyter.core.budget import current_month, to_units

from .conftest import anthropic_via, openai_via


async def _exhaust(lcm, record) -> None:
    await lcm.counters.set_spent(
        key_id=record["id"], month=current_month(), spent=to_units(record["monthly_budget_usd"])
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("batches", {"input_file_id": "file-1", "endpoint": "/v1/chat/completions"}),
        ("fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": "file-1"}),
        ("vector_stores", {"name": "docs"}),
    ],
)
async def test_a_budgeted_key_cannot_call_an_unmetered_endpoint(
    base_url, make_key, logs, sim, path, body
):
    record = await make_key(monthly_budget_usd=5.0)
    client = openai_via(base_url, record["key"])
    with pytest.raises(openai.PermissionDeniedError) as exc:
        await client.post(f"/{path}", cast_to=object, body=body)
    error = exc.value.body
    assert error["code"] == "endpoint_not_metered"
    assert "unmetered_endpoints" in error["message"]  # the way out is named
    assert sim.requests == []  # the provider never saw it
    (row,) = await logs()
    assert row["status"] == 403 and row["cost_usd"] == 0


async def test_a_key_without_budget_reaches_them_and_the_row_says_the_cost_is_unknown(
    base_url, make_key, logs, sim
):
    record = await make_key()
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{base_url}lcm/proxy/openai/v1/batches",
            json={"input_file_id": "file-1", "endpoint": "/v1/chat/completions"},
            headers={"authorization": f"Bearer {record['key']}"},
        )
    assert resp.status_code == 404  # the simulator has no batches: forwarded all the same
    assert sim.requests[-1].path.endswith("/v1/batches")
    (row,) = await logs()
    assert row["endpoint"] == "v1/batches"


async def test_the_operator_can_let_budgeted_keys_through(base_url, make_key, lcm, sim, logs):
    settings = lcm.pipeline.settings
    lcm.pipeline.settings = dataclasses.replace(settings, unmetered_endpoints=("v1/batches",))
    try:
        record = await make_key(monthly_budget_usd=5.0)
        client = openai_via(base_url, record["key"])
        with pytest.raises(openai.NotFoundError):  # forwarded; the simulator has no batches
            await client.post("/batches", cast_to=object, body={"input_file_id": "file-1"})
        assert sim.requests[-1].path.endswith("/v1/batches")
        with pytest.raises(openai.PermissionDeniedError):  # only what was allowed
            await client.post("/fine_tuning/jobs", cast_to=object, body={"model": "x"})
    finally:
        lcm.pipeline.settings = settings


async def test_anthropic_message_batches_are_refused_in_anthropics_shape(base_url, make_key, sim):
    record = await make_key(monthly_budget_usd=5.0)
    client = anthropic_via(base_url, record["key"])
    with pytest.raises(anthropic.PermissionDeniedError) as exc:
        await client.messages.batches.create(
            requests=[
                {
                    "custom_id": "a",
                    "params": {
                        "model": "claude-haiku-4-5",
                        "max_tokens": 10,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                }
            ]
        )
    assert exc.value.body["error"]["code"] == "endpoint_not_metered"
    assert sim.requests == []


async def test_background_responses_are_refused_for_a_budgeted_key(base_url, make_key, sim):
    record = await make_key(monthly_budget_usd=5.0)
    client = openai_via(base_url, record["key"])
    with pytest.raises(openai.PermissionDeniedError) as exc:
        await client.responses.create(model="gpt-4o-mini", input="hi", background=True)
    assert "responses.background" in exc.value.body["message"]
    assert sim.requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("images/generations", {"model": "gpt-image-1", "prompt": "a cat", "n": 10}),
        ("audio/speech", {"model": "tts-1", "input": "hello there", "voice": "alloy"}),
        ("embeddings", {"model": "text-embedding-3-small", "input": "hello"}),
    ],
)
async def test_an_exhausted_budget_stops_every_metered_endpoint(
    base_url, make_key, lcm, sim, path, body
):
    record = await make_key(monthly_budget_usd=1.0)
    await _exhaust(lcm, record)
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{base_url}lcm/proxy/openai/v1/{path}",
            json=body,
            headers={"authorization": f"Bearer {record['key']}"},
        )
    assert resp.status_code == 429
    assert resp.json()["error"]["code"] == "budget_exceeded"
    assert sim.requests == []


async def test_an_unpriced_image_model_is_refused_for_a_budgeted_key(base_url, make_key, sim):
    record = await make_key(monthly_budget_usd=5.0)
    client = openai_via(base_url, record["key"])
    with pytest.raises(openai.BadRequestError) as exc:
        await client.images.generate(model="dall-e-3", prompt="a cat", n=1)
    assert exc.value.body["code"] == "model_not_priced"
    assert sim.requests == []


async def test_free_endpoints_stay_open_to_a_budgeted_key(base_url, make_key, lcm, sim):
    record = await make_key(monthly_budget_usd=1.0)
    client = openai_via(base_url, record["key"])
    models = await client.models.list()
    assert [m.id async for m in models]
    body = json.dumps({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]})
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{base_url}lcm/proxy/anthropic/v1/messages/count_tokens",
            content=body,
            headers={"x-api-key": record["key"], "anthropic-version": "2023-06-01"},
        )
    assert resp.status_code == 200


async def test_tts_1_speech_is_billed_by_its_characters(base_url, make_key, lcm, sim, logs):
    """tts-1 answers audio bytes with no usage: the bill is the input's characters
    (genai-prices' input_characters rate), read from the request."""
    from lcm_jupyter.core.usage import Usage

    record = await make_key(monthly_budget_usd=5.0)
    client = openai_via(base_url, record["key"])
    text = "Hello there, this is a test of speech."
    audio = await client.audio.speech.create(model="tts-1", voice="alloy", input=text)
    assert audio.content
    (row,) = await logs()
    assert row["status"] == 200 and row["error"] is None
    expected = lcm.pipeline.pricing.table.price(
        Usage(extra={"input_characters": len(text)}), "tts-1", "openai"
    )
    assert expected is not None and expected.cost > 0
    assert row["cost_usd"] == float(expected.cost)
    assert not row["usage_estimated"]
