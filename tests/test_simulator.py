"""The simulated provider, exercised through the official SDKs and raw HTTP.

Expected token numbers are recomputed here from the documented rule (not with the simulator's
own helpers): a text costs ceil(len / 4) tokens, each message adds 4, the reply is
"Simulated reply from {model}: {prompt}".

Like the rest of the suite, async tests run on pytest-jupyter's loop and fixtures are sync.
The `sim` fixture here is a key-less simulator; conftest's `sim` (which demands a key) is not
used by this module.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from lcm_jupyter.testing import RecordedRequest, SimulatedProvider

OVERHEAD = 4
REPO = Path(__file__).resolve().parents[1]


def tok(text: str) -> int:
    return math.ceil(len(text) / 4)


def reply(model: str, prompt: str) -> str:
    return f"Simulated reply from {model}: {' '.join(prompt.split())}"


def snip(prompt: str) -> str:
    """The prompt as the simulator quotes it: whitespace collapsed, cut to 200 characters."""
    text = " ".join(prompt.split())
    return text if len(text) <= 200 else text[:200] + "..."


@pytest.fixture
def sim(jp_asyncio_loop):
    provider = SimulatedProvider()
    jp_asyncio_loop.run_until_complete(provider.start())
    yield provider
    jp_asyncio_loop.run_until_complete(provider.stop())


_OPEN_CLIENTS: list = []


@pytest.fixture(autouse=True)
def _close_clients(jp_asyncio_loop):
    """Close the SDK clients a test made, so no socket outlives the test's loop."""
    yield
    while _OPEN_CLIENTS:
        client = _OPEN_CLIENTS.pop()
        close = client.aclose if hasattr(client, "aclose") else client.close
        jp_asyncio_loop.run_until_complete(close())


def oai(sim: SimulatedProvider, key: str = "sk-test") -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key=key, max_retries=0)
    _OPEN_CLIENTS.append(client)
    return client


def ant(sim: SimulatedProvider, key: str = "sk-ant-test") -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=sim.url, api_key=key, max_retries=0)
    _OPEN_CLIENTS.append(client)
    return client


def gem(sim: SimulatedProvider, key: str = "g-test", base: str | None = None):
    options = types.HttpOptions(base_url=base or sim.url)
    client = genai.Client(api_key=key, http_options=options).aio
    _OPEN_CLIENTS.append(client)
    return client


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


# --- OpenAI ---------------------------------------------------------------------------------


async def test_openai_chat_usage_and_recording(sim):
    result = await oai(sim).chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello   there"}]},
        ],
    )
    text = reply("gpt-4o-mini", "Hello there")
    assert result.choices[0].message.content == text
    assert result.choices[0].finish_reason == "stop"
    assert result.model == "gpt-4o-mini"
    prompt = OVERHEAD + tok("Be brief.") + OVERHEAD + tok("Hello   there")
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, tok(text))
    assert usage.total_tokens == prompt + tok(text)
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert usage.completion_tokens_details.accepted_prediction_tokens == 0

    [record] = sim.requests
    assert isinstance(record, RecordedRequest)
    assert (record.method, record.path, record.provider) == (
        "POST",
        "/v1/chat/completions",
        "openai",
    )
    assert record.headers["authorization"] == "Bearer sk-test"
    assert record.body["model"] == "gpt-4o-mini"


async def test_openai_chat_stream_usage_only_when_asked(sim):
    client = oai(sim)
    messages = [{"role": "user", "content": "Stream this please"}]
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply("gpt-4o", "Stream this please")
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == OVERHEAD + tok("Stream this please")
    assert chunks[-1].usage.completion_tokens == tok(text)
    assert chunks[-2].choices[0].finish_reason == "stop"

    async with httpx.AsyncClient(base_url=sim.url) as http:
        body = {"model": "gpt-4o", "messages": messages, "stream": True}
        raw = await http.post("/v1/chat/completions", json=body)
        body["stream_options"] = {"include_usage": True}
        with_usage = await http.post("/v1/chat/completions", json=body)
    assert raw.headers["content-type"].startswith("text/event-stream")
    data = sse_data(raw.text)
    assert data[-1] == "[DONE]"
    assert all("usage" not in json.loads(d) for d in data[:-1])
    data = sse_data(with_usage.text)
    events = [json.loads(d) for d in data[:-1]]
    assert all("usage" in e and e["usage"] is None for e in events[:-1])
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] > 0
    assert len(events) == 1 + 4 + 1 + 1  # role, 4 deltas, finish, usage


async def test_openai_reasoning_model_and_cap(sim):
    client = oai(sim)
    messages = [{"role": "user", "content": "Think hard"}]
    result = await client.chat.completions.create(model="o3-mini", messages=messages)
    visible = tok(reply("o3-mini", "Think hard"))
    details = result.usage.completion_tokens_details
    assert details.reasoning_tokens == 2 * visible
    assert result.usage.completion_tokens == 3 * visible

    capped = await client.chat.completions.create(
        model="gpt-5", messages=messages, max_completion_tokens=25
    )
    full = tok(reply("gpt-5", "Think hard"))
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage.completion_tokens == 25
    assert capped.usage.completion_tokens_details.reasoning_tokens == min(2 * full, 25)
    assert capped.choices[0].message.content == reply("gpt-5", "Think hard")[: (25 - 2 * full) * 4]


async def test_openai_prompt_caching(sim):
    client = oai(sim)
    long_text = "cache me " * 1000  # 9000 chars -> 2250 tokens
    messages = [{"role": "user", "content": long_text}]
    first = await client.chat.completions.create(model="gpt-4.1", messages=messages)
    second = await client.chat.completions.create(model="gpt-4.1", messages=messages)
    prompt = OVERHEAD + tok(long_text)
    shared_chars = len("user: " + long_text + "\n")
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == prompt
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    expected = min(shared_chars // 4, prompt) // 128 * 128
    assert second.usage.prompt_tokens_details.cached_tokens == expected == 2176
    other_model = await client.chat.completions.create(model="gpt-4o", messages=messages)
    assert other_model.usage.prompt_tokens_details.cached_tokens == 0
    short = [{"role": "user", "content": "short"}]
    await client.chat.completions.create(model="gpt-4.1", messages=short)
    again = await client.chat.completions.create(model="gpt-4.1", messages=short)
    assert again.usage.prompt_tokens_details.cached_tokens == 0


async def test_openai_legacy_completions(sim):
    client = oai(sim)
    story = "Tell me a story about a brave little toaster"
    result = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt=story)
    assert result.choices[0].finish_reason == "length"  # max_tokens defaults to 16
    assert result.usage.completion_tokens == 16
    assert result.usage.prompt_tokens == tok(story)
    assert result.choices[0].text == reply("gpt-3.5-turbo-instruct", story)[:64]

    stream = await client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Say hi",
        max_tokens=100,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply(
        "gpt-3.5-turbo-instruct", "Say hi"
    )
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == tok(reply("gpt-3.5-turbo-instruct", "Say hi"))


async def test_openai_responses_create_and_stream(sim):
    client = oai(sim)
    result = await client.responses.create(model="gpt-4.1", input="Hi there", instructions="Terse")
    text = reply("gpt-4.1", "Hi there")
    assert result.object == "response" and result.status == "completed"
    assert result.output_text == text
    assert result.usage.input_tokens == OVERHEAD + tok("Hi there") + OVERHEAD + tok("Terse")
    assert result.usage.output_tokens == tok(text)
    assert result.usage.input_tokens_details.cached_tokens == 0
    assert result.usage.output_tokens_details.reasoning_tokens == 0
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens

    stream = await client.responses.create(model="gpt-4.1", input="Hi there", stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.usage.output_tokens == tok(text)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text

    async with client.responses.stream(
        model="o4-mini", input=[{"role": "user", "content": "Q"}]
    ) as s:
        async for _ in s:
            pass
        final = await s.get_final_response()
    visible = tok(reply("o4-mini", "Q"))
    assert final.output_text == reply("o4-mini", "Q")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.usage.output_tokens_details.reasoning_tokens == 2 * visible
    assert final.usage.output_tokens == 3 * visible


async def test_openai_responses_incomplete_when_capped(sim):
    result = await oai(sim).responses.create(model="gpt-4o", input="Hello", max_output_tokens=3)
    assert result.status == "incomplete"
    assert result.incomplete_details.reason == "max_output_tokens"
    assert result.usage.output_tokens == 3


async def test_openai_embeddings_base64_and_float(sim):
    client = oai(sim)
    result = await client.embeddings.create(model="text-embedding-3-small", input=["abc", "hello"])
    assert sim.requests[-1].body["encoding_format"] == "base64"  # the SDK's default
    assert len(result.data) == 2 and len(result.data[0].embedding) == 1536
    assert result.usage.prompt_tokens == result.usage.total_tokens == tok("abc") + tok("hello")
    assert math.isclose(sum(v * v for v in result.data[0].embedding), 1.0, rel_tol=1e-4)

    floats = await client.embeddings.create(
        model="text-embedding-3-small", input="abc", encoding_format="float", dimensions=8
    )
    assert len(floats.data[0].embedding) == 8
    async with httpx.AsyncClient(base_url=sim.url) as http:
        raw = await http.post(
            "/v1/embeddings",
            json={"model": "m", "input": "abc", "dimensions": 8, "encoding_format": "base64"},
        )
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    decoded = struct.unpack("<8f", packed)
    assert decoded == pytest.approx(floats.data[0].embedding, rel=1e-6)


async def test_openai_models_list(sim):
    models = [model.id async for model in oai(sim).models.list()]
    assert "gpt-4o" in models


async def test_openai_responses_background_create_poll_and_stream(sim):
    client = oai(sim)
    question = "What is 2 + 2?"
    created = await client.responses.create(model="gpt-4o", input=question, background=True)
    assert (created.status, created.background, created.service_tier) == ("queued", True, "auto")
    assert created.usage is None and created.output == []

    first = await client.responses.retrieve(created.id)
    assert (first.status, first.usage, first.service_tier) == ("in_progress", None, "auto")
    done = await client.responses.retrieve(created.id)
    text = reply("gpt-4o", question)
    assert (done.status, done.service_tier, done.background) == ("completed", "default", True)
    assert done.output_text == text
    assert done.usage.input_tokens == OVERHEAD + tok(question)
    assert done.usage.output_tokens == tok(text)
    assert done.usage.total_tokens == OVERHEAD + tok(question) + tok(text)
    assert (await client.responses.retrieve(created.id)).status == "completed"
    assert sim.requests[-1].method == "GET"
    assert sim.requests[-1].path == f"/v1/responses/{created.id}"

    stream = await client.responses.retrieve(created.id, stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0].response.status == "queued" and events[0].response.service_tier == "auto"
    assert events[-1].response.usage == done.usage
    assert events[-1].response.service_tier == "default"
    resumed = await client.responses.retrieve(created.id, stream=True, starting_after=10)
    assert [e.sequence_number async for e in resumed] == [11, 12]

    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.retrieve("resp_unknown")
    assert missing.value.body == {
        "message": "Response with id 'resp_unknown' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }

    # The wire form: usage is an explicit null, and gpt-4o sends neither cache writes nor
    # tool_usage.
    async with httpx.AsyncClient(base_url=sim.url) as http:
        body = {"model": "gpt-4o", "input": question, "background": True}
        queued = (await http.post("/v1/responses", json=body)).json()
        polled = (await http.get(f"/v1/responses/{queued['id']}?stream=false")).json()
        final = (await http.get(f"/v1/responses/{queued['id']}")).json()
    assert "usage" in queued and queued["usage"] is None
    assert (queued["status"], polled["status"], final["status"]) == (
        "queued",
        "in_progress",
        "completed",
    )
    assert final["usage"] == {
        "input_tokens": OVERHEAD + tok(question),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": tok(text),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": OVERHEAD + tok(question) + tok(text),
    }
    assert "tool_usage" not in final

    streamed = await client.responses.create(
        model="gpt-4o", input=question, background=True, stream=True
    )
    events = [event async for event in streamed]
    assert [e.type for e in events[:3]] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == tok(text)
    # A streamed background run is finished: the first poll already has the usage.
    after = await client.responses.retrieve(events[-1].response.id)
    assert after.status == "completed" and after.usage.output_tokens == tok(text)


async def test_openai_cache_writes_on_newer_models(sim):
    client = oai(sim)
    long_text = "cache me " * 1000  # 9000 chars -> 2250 tokens
    messages = [{"role": "user", "content": long_text}]
    prompt = OVERHEAD + tok(long_text)
    rendered_chars = len("user: " + long_text + "\n")
    cacheable = min(rendered_chars // 4, prompt) // 128 * 128
    assert cacheable == 2176

    first = await client.chat.completions.create(model="gpt-5.6-luna", messages=messages)
    second = await client.chat.completions.create(model="gpt-5.6-luna", messages=messages)
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == prompt
    assert first.usage.prompt_tokens_details.cache_write_tokens == cacheable
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cache_write_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == cacheable
    short = await client.chat.completions.create(
        model="gpt-5.6-luna", messages=[{"role": "user", "content": "What is 2+2?"}]
    )
    assert short.usage.prompt_tokens_details.cache_write_tokens == 0

    first_r = await client.responses.create(model="gpt-6", input=long_text)
    second_r = await client.responses.create(model="gpt-6", input=long_text)
    assert first_r.usage.input_tokens_details.cache_write_tokens == cacheable
    assert first_r.usage.input_tokens_details.cached_tokens == 0
    assert second_r.usage.input_tokens_details.cache_write_tokens == 0
    assert second_r.usage.input_tokens_details.cached_tokens == cacheable

    # Older models keep the shapes they were recorded with.
    async with httpx.AsyncClient(base_url=sim.url) as http:
        chat_body = {"model": "gpt-4.1", "messages": messages}
        old_chat = (await http.post("/v1/chat/completions", json=chat_body)).json()
        # The prompt cache is per model, shared by both APIs: gpt-6 has seen this prompt.
        new_chat = (
            await http.post("/v1/chat/completions", json={**chat_body, "model": "gpt-6-mini"})
        ).json()
        five = (await http.post("/v1/responses", json={"model": "gpt-5.5", "input": "Hi"})).json()
        mini = (
            await http.post("/v1/responses", json={"model": "gpt-5-mini", "input": "Hi"})
        ).json()
    assert old_chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert new_chat["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 0,
        "cache_write_tokens": cacheable,
        "audio_tokens": 0,
    }
    assert five["usage"]["input_tokens_details"] == {"cache_write_tokens": 0, "cached_tokens": 0}
    assert five["tool_usage"]["web_search"] == {"num_requests": 0}
    assert mini["usage"]["input_tokens_details"] == {"cached_tokens": 0}
    assert "tool_usage" not in mini


async def test_openai_responses_server_tools(sim):
    client = oai(sim)
    question = "What are the latest news in Iceland?"
    text = reply("gpt-4o", question)
    searched = await client.responses.create(
        model="gpt-4o", input=question, tools=[{"type": "web_search_preview"}]
    )
    assert [item.type for item in searched.output] == ["web_search_call", "message"]
    call = searched.output[0]
    assert (call.status, call.action.type, call.action.query) == ("completed", "search", question)
    assert searched.output_text == text
    assert searched.output[1].content[0].annotations[0].type == "url_citation"
    assert searched.usage.input_tokens == OVERHEAD + tok(question) + 300
    assert searched.usage.output_tokens == tok(text)
    assert searched.tool_usage.web_search.num_requests == 1
    assert searched.tool_usage.image_gen.total_tokens == 0
    assert searched.tool_usage.image_gen.input_tokens_details.text_tokens == 0

    stream = await client.responses.create(
        model="gpt-5.6-sol", input=question, tools=[{"type": "web_search"}], stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds[:9] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # reasoning
        "response.output_item.done",
        "response.output_item.added",  # web_search_call
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
    ]
    assert kinds[-1] == "response.completed"

    found = await client.responses.create(
        model="gpt-5-mini",
        input=question,
        tools=[{"type": "file_search", "vector_store_ids": ["vs_docs"]}],
        include=["file_search_call.results"],
    )
    assert [item.type for item in found.output] == ["reasoning", "file_search_call", "message"]
    assert found.output[1].queries == [question]
    assert found.output[1].results[0].filename == "document.txt"
    assert found.usage.input_tokens == OVERHEAD + tok(question) + 300
    assert found.tool_usage is None  # gpt-5-mini, and no web search
    plain = await client.responses.create(
        model="gpt-5-mini", input=question, tools=[{"type": "file_search", "vector_store_ids": []}]
    )
    assert plain.output[1].results is None  # results only come back when included


async def test_openai_images_usage(sim):
    client = oai(sim)
    prompt = "A watercolor lighthouse at dusk"
    cases = [
        ({"size": "1024x1024", "quality": "low"}, 272),
        ({"size": "1024x1536", "quality": "medium"}, 1584),
        ({"size": "1536x1024", "quality": "high", "n": 2}, 2 * 6208),
        ({}, 4160),  # auto: high quality, 1024x1024
    ]
    for options, output in cases:
        result = await client.images.generate(model="gpt-image-1", prompt=prompt, **options)
        usage = result.usage
        assert (usage.input_tokens, usage.output_tokens) == (tok(prompt), output)
        assert usage.input_tokens_details.text_tokens == tok(prompt)
        assert usage.input_tokens_details.image_tokens == 0
        assert usage.total_tokens == tok(prompt) + output
        assert len(result.data) == options.get("n", 1)
        assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG\r\n\x1a\n")
    assert result.size == "1024x1024" and result.quality == "high"

    async with httpx.AsyncClient(base_url=sim.url) as http:
        raw = await http.post(
            "/v1/images/generations",
            json={"model": "gpt-image-1", "prompt": prompt, "quality": "low", "n": 3},
        )
    assert raw.json()["usage"] == {
        "input_tokens": tok(prompt),
        "input_tokens_details": {"text_tokens": tok(prompt), "image_tokens": 0},
        "output_tokens": 3 * 272,
        "total_tokens": tok(prompt) + 3 * 272,
    }

    dalle = await client.images.generate(model="dall-e-3", prompt=prompt)
    assert dalle.usage is None and dalle.data[0].url.endswith(".png")
    assert dalle.data[0].revised_prompt == prompt
    small = await client.images.generate(
        model="dall-e-2", prompt=prompt, n=2, response_format="b64_json"
    )
    assert small.usage is None and len(small.data) == 2 and small.data[0].b64_json
    with pytest.raises(openai.BadRequestError):
        await client.images.generate(model="gpt-image-1", prompt=prompt, size="512x512")


async def test_openai_speech_audio_and_sse_usage(sim):
    client = oai(sim)
    words = "Hello there, this is the simulator speaking."
    audio = await client.audio.speech.create(model="gpt-4o-mini-tts", input=words, voice="alloy")
    assert audio.response.headers["content-type"] == "audio/mpeg"
    assert audio.content.startswith(b"ID3") and len(audio.content) > 100
    again = await client.audio.speech.create(model="gpt-4o-mini-tts", input=words, voice="alloy")
    assert again.content == audio.content  # deterministic

    streamed = await client.audio.speech.create(
        model="gpt-4o-mini-tts", input=words, voice="alloy", stream_format="sse"
    )
    assert streamed.response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(data) for data in sse_data(streamed.text)]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == audio.content
    assert events[-1] == {
        "type": "speech.audio.done",
        "usage": {
            "input_tokens": tok(words),
            "output_tokens": 5 * tok(words),
            "total_tokens": 6 * tok(words),
        },
    }
    with pytest.raises(openai.BadRequestError):
        await client.audio.speech.create(
            model="tts-1", input=words, voice="alloy", stream_format="sse"
        )


async def test_openai_transcriptions_duration_and_token_usage(sim):
    client = oai(sim)
    clip = ("clip.mp3", b"\xff\xfb" * 20000, "audio/mpeg")  # 40000 bytes: 2.5 s, billed as 3
    text = "Simulated transcription of clip.mp3 (40000 bytes)."
    whisper = await client.audio.transcriptions.create(model="whisper-1", file=clip)
    assert whisper.text == text
    assert (whisper.usage.type, whisper.usage.seconds) == ("duration", 3)
    record = sim.requests[-1]
    assert record.headers["content-type"].startswith("multipart/form-data")
    assert record.body["model"] == "whisper-1"
    assert record.body["file"] == {
        "filename": "clip.mp3",
        "content_type": "audio/mpeg",
        "size": 40000,
    }

    verbose = await client.audio.transcriptions.create(
        model="whisper-1",
        file=clip,
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert verbose.duration == 2.5 and verbose.usage.seconds == 3
    assert [w.word for w in verbose.words] == text.split()
    plain = await client.audio.transcriptions.create(
        model="whisper-1", file=clip, response_format="text"
    )
    assert plain.strip() == text

    hint = "Names: Reykjavik, Galileo"
    tokens = await client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=clip, prompt=hint
    )
    usage = tokens.usage
    assert usage.type == "tokens"
    assert usage.input_token_details.audio_tokens == 10 * 3
    assert usage.input_token_details.text_tokens == tok(hint)
    assert usage.input_tokens == 30 + tok(hint)
    assert usage.output_tokens == tok(text)
    assert usage.total_tokens == 30 + tok(hint) + tok(text)
    stream = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=clip, stream=True
    )
    events = [event async for event in stream]
    assert "".join(e.delta for e in events[:-1]) == text
    assert events[-1].type == "transcript.text.done" and events[-1].usage.output_tokens == tok(text)
    with pytest.raises(openai.BadRequestError):
        await client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=clip, response_format="verbose_json"
        )

    async with httpx.AsyncClient(base_url=sim.url) as http:
        as_json = await http.post("/v1/audio/transcriptions", json={"model": "whisper-1"})
        form_to_chat = await http.post(
            "/v1/chat/completions", data={"model": "gpt-4o"}, files={"file": ("a", b"1")}
        )
    assert as_json.status_code == 400
    assert "multipart/form-data" in as_json.json()["error"]["message"]
    assert form_to_chat.status_code == 400  # only upload endpoints take multipart bodies


# --- Anthropic ------------------------------------------------------------------------------


async def test_anthropic_message_usage(sim):
    client = ant(sim)
    result = await client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=1000,
        system="You are terse.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello Claude"}]}],
    )
    text = reply("claude-sonnet-4-5", "Hello Claude")
    assert result.type == "message" and result.stop_reason == "end_turn"
    assert result.content[0].text == text
    assert result.usage.input_tokens == OVERHEAD + tok("You are terse.") + OVERHEAD + tok(
        "Hello Claude"
    )
    assert result.usage.output_tokens == tok(text)
    assert result.usage.cache_creation_input_tokens == 0
    assert result.usage.cache_read_input_tokens == 0

    count = await client.messages.count_tokens(
        model="claude-sonnet-4-5",
        system="You are terse.",
        messages=[{"role": "user", "content": "Hello Claude"}],
    )
    assert count.input_tokens == result.usage.input_tokens


async def test_anthropic_stream_events_and_usage(sim):
    async with httpx.AsyncClient(base_url=sim.url) as http:
        raw = await http.post(
            "/v1/messages",
            json={
                "model": "claude-haiku-4-5",
                "max_tokens": 300,
                "stream": True,
                "messages": [{"role": "user", "content": "Stream it"}],
            },
        )
    kinds = [line[7:] for line in raw.text.splitlines() if line.startswith("event: ")]
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(d) for d in sse_data(raw.text)]
    start_usage, delta_usage = data[0]["message"]["usage"], data[-2]["usage"]
    prompt = OVERHEAD + tok("Stream it")
    assert start_usage["input_tokens"] == prompt and start_usage["output_tokens"] == 1
    assert delta_usage["input_tokens"] == prompt
    assert delta_usage["output_tokens"] == tok(reply("claude-haiku-4-5", "Stream it"))
    assert delta_usage["cache_read_input_tokens"] == 0

    async with ant(sim).messages.stream(
        model="claude-haiku-4-5",
        max_tokens=300,
        messages=[{"role": "user", "content": "Stream it"}],
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == reply("claude-haiku-4-5", "Stream it")
    assert final.usage.output_tokens == tok(text) and final.usage.input_tokens == prompt


async def test_anthropic_thinking(sim):
    client = ant(sim)
    kwargs = {
        "model": "claude-opus-4-5",
        "max_tokens": 4000,
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": [{"role": "user", "content": "Ponder"}],
    }
    result = await client.messages.create(**kwargs)
    thought = "The user wrote: Ponder. A short, direct answer will do."
    text = reply("claude-opus-4-5", "Ponder")
    assert [b.type for b in result.content] == ["thinking", "text"]
    assert result.content[0].thinking == thought and result.content[0].signature
    assert result.usage.output_tokens == tok(thought) + tok(text)

    async with client.messages.stream(**kwargs) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_message()
    assert final.content[0].thinking == thought
    assert final.content[0].signature == result.content[0].signature
    assert final.content[1].text == text
    assert final.usage.output_tokens == tok(thought) + tok(text)

    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(**{**kwargs, "max_tokens": 1500})


async def test_anthropic_prompt_caching(sim):
    client = ant(sim)
    system = [
        {"type": "text", "text": "Rules. " * 500, "cache_control": {"type": "ephemeral"}},
    ]
    first = await client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        system=system,
        messages=[{"role": "user", "content": "First question"}],
    )
    second = await client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        system=system,
        messages=[{"role": "user", "content": "Second question"}],
    )
    cached = OVERHEAD + tok("Rules. " * 500)
    assert first.usage.cache_creation_input_tokens == cached
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == cached
    assert first.usage.input_tokens == OVERHEAD + tok("First question")
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == cached
    assert second.usage.input_tokens == OVERHEAD + tok("Second question")


def sse_events(text: str) -> list[dict]:
    return [json.loads(data) for data in sse_data(text)]


async def test_anthropic_web_search_two_sampling_steps(sim):
    client = ant(sim)
    question = "What is the weather in Paris?"
    kwargs = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": question}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
    }
    prompt = OVERHEAD + tok(question)
    call = json.dumps({"query": question}, separators=(",", ":"))
    first_output = tok("Let me search the web for that.") + tok(call)
    text = reply("claude-sonnet-4-5", question)
    total_input = prompt + (prompt + first_output + 5000)  # step 2 also reads the results

    result = await client.messages.create(**kwargs)
    assert [b.type for b in result.content] == [
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert result.content[1].input == {"query": question}
    assert result.content[2].tool_use_id == result.content[1].id
    assert result.content[3].text == text
    assert result.usage.input_tokens == total_input
    assert result.usage.output_tokens == first_output + tok(text)
    assert result.usage.server_tool_use.web_search_requests == 1
    assert result.usage.server_tool_use.web_fetch_requests == 0

    async with httpx.AsyncClient(base_url=sim.url) as http:
        raw = await http.post("/v1/messages", json={**kwargs, "stream": True})
    events = sse_events(raw.text)
    start, delta = events[0]["message"]["usage"], events[-2]["usage"]
    assert start["input_tokens"] == prompt and start["output_tokens"] == 1
    assert delta == {
        "input_tokens": total_input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": first_output + tok(text),
        "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0},
    }

    async with client.messages.stream(**kwargs) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_message()
    assert final.content[1].input == {"query": question}
    assert final.usage.input_tokens == total_input


async def test_anthropic_compaction_iterations(sim):
    client = ant(sim)
    model = "claude-sonnet-4-6"
    context = "The quick brown fox jumps over the lazy dog. " * 200  # 2250 tokens
    content = [
        {"type": "text", "text": context, "cache_control": {"type": "ephemeral", "ttl": "5m"}},
        {"type": "text", "text": "Now say hello."},
    ]
    kwargs = {
        "model": model,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": content}],
        "context_management": {
            "edits": [
                {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 2000}}
            ]
        },
        "betas": ["compact-2026-01-12"],
    }
    cached = OVERHEAD + tok(context)  # through the cache_control block
    summary = (
        f"Summary of the conversation so far: the user wrote: {snip(context)}."
        " Next step: answer it."
    )
    text = f"Simulated reply from {model}: {snip(context)}"
    after = OVERHEAD + tok(summary)  # no system prompt: one message holding the summary

    result = await client.beta.messages.create(**kwargs)
    assert [b.type for b in result.content] == ["compaction", "text"]
    assert result.content[0].content == summary and result.content[1].text == text
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens) == (after, tok(text))
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
    compaction, message = usage.iterations
    assert compaction.type == "compaction" and message.type == "message"
    assert compaction.input_tokens == tok("Now say hello.")
    assert compaction.cache_creation_input_tokens == cached
    assert compaction.cache_creation.ephemeral_5m_input_tokens == cached
    assert compaction.output_tokens == tok(summary)
    assert (message.input_tokens, message.output_tokens) == (after, tok(text))
    assert usage.server_tool_use.web_search_requests == 0
    assert result.context_management.applied_edits == []

    # Streamed (and now reading the cache): message_start reports the compaction step,
    # message_delta the final step plus the iterations.
    async with httpx.AsyncClient(base_url=sim.url) as http:
        body = {k: v for k, v in kwargs.items() if k != "betas"}
        raw = await http.post("/v1/messages?beta=true", json={**body, "stream": True})
    events = sse_events(raw.text)
    assert events[0]["message"]["usage"] == {
        "input_tokens": tok("Now say hello."),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 1,
        "service_tier": "standard",
    }
    assert events[1]["content_block"] == {"type": "compaction", "content": None}
    delta = events[-2]
    assert delta["context_management"] == {"applied_edits": []}
    assert {k: v for k, v in delta["usage"].items() if k != "iterations"} == {
        "input_tokens": after,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": tok(text),
    }
    assert [(i["type"], i["cache_read_input_tokens"]) for i in delta["usage"]["iterations"]] == [
        ("compaction", cached),
        ("message", 0),
    ]

    async with client.beta.messages.stream(**kwargs) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_message()
    assert final.content[0].content == summary
    assert final.usage.input_tokens == after and len(final.usage.iterations) == 2

    below = await client.beta.messages.create(
        **{**kwargs, "messages": [{"role": "user", "content": "Short chat"}]}
    )
    assert below.usage.iterations is None and [b.type for b in below.content] == ["text"]


async def test_anthropic_advisor_iterations(sim):
    client = ant(sim)
    question = "What's 2+2? Consult your advisor first."
    kwargs = {
        "model": "claude-sonnet-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}],
        "tools": [
            {
                "type": "advisor_20260301",
                "name": "advisor",
                "model": "claude-opus-4-8",
                "max_tokens": 1024,
            }
        ],
    }
    prompt = OVERHEAD + tok(question)
    first_output = tok("Let me consult the advisor first.")
    advice = f"Advice from claude-opus-4-8: answer directly. The user wrote: {question}"
    text = reply("claude-sonnet-5", question)
    second_input = prompt + first_output + tok(advice)

    result = await client.beta.messages.create(**kwargs)
    assert [b.type for b in result.content] == [
        "text",
        "server_tool_use",
        "advisor_tool_result",
        "text",
    ]
    assert result.content[2].content.text == advice
    usage = result.usage
    assert [(i.type, i.input_tokens, i.output_tokens) for i in usage.iterations] == [
        ("message", prompt, first_output),
        ("advisor_message", prompt + first_output, tok(advice)),
        ("message", second_input, tok(text)),
    ]
    assert usage.iterations[1].model == "claude-opus-4-8"
    assert usage.input_tokens == prompt + second_input  # the two message steps only
    assert usage.output_tokens == first_output + tok(text)
    assert usage.server_tool_use.web_search_requests == 0

    async with httpx.AsyncClient(base_url=sim.url) as http:
        raw = await http.post("/v1/messages", json={**kwargs, "stream": True})
    events = sse_events(raw.text)
    assert events[0]["message"]["usage"]["input_tokens"] == prompt
    delta = events[-2]["usage"]
    assert delta["input_tokens"] == prompt + second_input
    assert delta["output_tokens"] == first_output + tok(text)
    assert delta["server_tool_use"] == {"web_search_requests": 0, "web_fetch_requests": 0}
    assert [i["type"] for i in delta["iterations"]] == ["message", "advisor_message", "message"]
    assert delta["iterations"][1]["model"] == "claude-opus-4-8"
    assert "model" not in delta["iterations"][0]


async def test_anthropic_cache_ttl_split_and_automatic_caching(sim):
    client = ant(sim)
    system = [
        {
            "type": "text",
            "text": "Rules. " * 400,
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    content = [
        {"type": "text", "text": "Doc " * 300, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Q?"},
    ]
    kwargs = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "system": system,
        "messages": [{"role": "user", "content": content}],
    }
    long_part = OVERHEAD + tok("Rules. " * 400)  # through the 1h breakpoint
    short_part = OVERHEAD + tok("Doc " * 300)  # from there through the 5m one
    first = await client.messages.create(**kwargs)
    assert first.usage.cache_creation_input_tokens == long_part + short_part
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == long_part
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == short_part
    assert first.usage.input_tokens == tok("Q?")

    async with httpx.AsyncClient(base_url=sim.url) as http:
        changed = [{**content[0], "text": "Other " * 300}, content[1]]
        body = {**kwargs, "messages": [{"role": "user", "content": changed}], "stream": True}
        raw = await http.post("/v1/messages", json=body)
    events = sse_events(raw.text)
    start, delta = events[0]["message"]["usage"], events[-2]["usage"]
    written = OVERHEAD + tok("Other " * 300)
    assert start["cache_read_input_tokens"] == long_part  # the 1h system prefix is reused
    assert start["cache_creation"] == {
        "ephemeral_5m_input_tokens": written,
        "ephemeral_1h_input_tokens": 0,
    }
    assert delta == {
        "input_tokens": tok("Q?"),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": long_part,
        "output_tokens": tok(f"Simulated reply from claude-sonnet-4-6: {snip('Other ' * 300)}"),
    }

    # Automatic caching: a top-level cache_control caches through the end of the prompt.
    turn = [{"role": "user", "content": "Explain Python. " * 100}]
    one = await client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        messages=turn,
        cache_control={"type": "ephemeral"},
    )
    assert one.usage.cache_creation_input_tokens == OVERHEAD + tok("Explain Python. " * 100)
    assert (one.usage.input_tokens, one.usage.cache_read_input_tokens) == (0, 0)
    answer = one.content[0].text
    turn += [{"role": "assistant", "content": answer}, {"role": "user", "content": "And Rust?"}]
    two = await client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        messages=turn,
        cache_control={"type": "ephemeral"},
    )
    assert two.usage.cache_read_input_tokens == one.usage.cache_creation_input_tokens
    assert two.usage.cache_creation_input_tokens == 2 * OVERHEAD + tok(answer) + tok("And Rust?")
    assert two.usage.input_tokens == 0


# --- Google Gemini --------------------------------------------------------------------------


async def test_gemini_generate_usage(sim):
    client = gem(sim)
    flash = await client.models.generate_content(model="gemini-2.0-flash", contents="Hello Gemini")
    text = reply("gemini-2.0-flash", "Hello Gemini")
    usage = flash.usage_metadata
    assert flash.text == text
    assert flash.candidates[0].finish_reason == types.FinishReason.STOP
    assert usage.prompt_token_count == OVERHEAD + tok("Hello Gemini")
    assert usage.candidates_token_count == tok(text)
    assert usage.total_token_count == usage.prompt_token_count + tok(text)
    assert usage.thoughts_token_count is None
    assert sim.requests[-1].path == "/v1/models/gemini-2.0-flash:generateContent"
    assert sim.requests[-1].headers["x-goog-api-key"] == "g-test"

    thinking = await client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Hello Gemini",
        config=types.GenerateContentConfig(system_instruction="Be nice"),
    )
    text = reply("gemini-2.5-flash", "Hello Gemini")
    usage = thinking.usage_metadata
    assert usage.prompt_token_count == OVERHEAD + tok("Hello Gemini") + OVERHEAD + tok("Be nice")
    assert usage.candidates_token_count == tok(text)
    assert usage.thoughts_token_count == 2 * tok(text)
    assert usage.total_token_count == usage.prompt_token_count + 3 * tok(text)

    budget = await client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Hello Gemini",
        config=types.GenerateContentConfig(
            thinking_config=types.ThinkingConfig(thinking_budget=5), max_output_tokens=8
        ),
    )
    assert budget.usage_metadata.thoughts_token_count == 5
    assert budget.usage_metadata.candidates_token_count == 3
    assert budget.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_gemini_sse_stream(sim):
    chunks = [
        chunk
        async for chunk in await gem(sim).models.generate_content_stream(
            model="gemini-2.5-pro", contents="Stream Gemini"
        )
    ]
    text = reply("gemini-2.5-pro", "Stream Gemini")
    assert len(chunks) == 4
    assert "".join(c.text for c in chunks) == text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    final = chunks[-1].usage_metadata
    assert final.candidates_token_count == tok(text)
    assert final.thoughts_token_count == 2 * tok(text)
    assert final.total_token_count == OVERHEAD + tok("Stream Gemini") + 3 * tok(text)
    assert sim.requests[-1].query == "alt=sse"

    async with httpx.AsyncClient(base_url=sim.url) as http:
        raw = await http.post(
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            json={"contents": [{"parts": [{"text": "x"}]}]},
        )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.startswith("data: {") and raw.text.endswith("}\r\n\r\n")
    assert raw.text.count("\r\n\r\n") == 4


async def test_gemini_json_array_stream_arrives_in_chunks(sim):
    sim.chunk_delay = 0.05
    body = {"contents": [{"role": "user", "parts": [{"text": "Array please"}]}]}
    pieces: list[bytes] = []
    async with (
        httpx.AsyncClient(base_url=sim.url) as http,
        http.stream(
            "POST", "/proxy/v1beta/models/gemini-2.0-flash:streamGenerateContent", json=body
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        async for piece in response.aiter_raw():
            pieces.append(piece)
    assert len(pieces) >= 4
    document = b"".join(pieces).decode()
    assert document.startswith("[{") and "\n,\r\n" in document and document.endswith("\n]")
    responses = json.loads(document)
    assert len(responses) == 4
    text = "".join(r["candidates"][0]["content"]["parts"][0]["text"] for r in responses)
    assert text == reply("gemini-2.0-flash", "Array please")
    usage = responses[-1]["usageMetadata"]
    assert usage["candidatesTokenCount"] == tok(text)
    assert usage["totalTokenCount"] == OVERHEAD + tok("Array please") + tok(text)
    assert responses[-1]["candidates"][0]["finishReason"] == "STOP"


async def test_gemini_embed_count_and_cache(sim):
    client = gem(sim)
    embedded = await client.models.embed_content(
        model="gemini-embedding-001", contents=["abc", "hello world"]
    )
    assert sim.requests[-1].path.endswith(":batchEmbedContents")
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0].values) == 3072
    assert embedded.usage_metadata.prompt_token_count == tok("abc") + tok("hello world")

    async with httpx.AsyncClient(base_url=sim.url) as http:
        single = await http.post(
            "/v1beta/models/text-embedding-004:embedContent",
            json={"content": {"parts": [{"text": "abc"}]}, "outputDimensionality": 16},
        )
    assert len(single.json()["embedding"]["values"]) == 16

    counted = await client.models.count_tokens(model="gemini-2.5-flash", contents="Count me")
    assert counted.total_tokens == OVERHEAD + tok("Count me")

    cache = await client.caches.create(
        model="gemini-2.5-flash",
        config=types.CreateCachedContentConfig(contents=["doc " * 1000]),
    )
    cached_tokens = OVERHEAD + tok("doc " * 1000)
    assert cache.name.startswith("cachedContents/")
    assert cache.usage_metadata.total_token_count == cached_tokens
    result = await client.models.generate_content(
        model="gemini-2.0-flash",
        contents="Use the doc",
        config=types.GenerateContentConfig(cached_content=cache.name),
    )
    usage = result.usage_metadata
    assert usage.cached_content_token_count == cached_tokens
    assert usage.prompt_token_count == cached_tokens + OVERHEAD + tok("Use the doc")


async def test_gemini_v1beta_and_prefixed_paths(sim):
    client = gem(sim, base=sim.url + "/gateway/google")
    options = types.GenerateContentConfig(http_options=types.HttpOptions(api_version="v1beta"))
    result = await client.models.generate_content(
        model="gemini-2.0-flash", contents="Hi", config=options
    )
    assert result.text == reply("gemini-2.0-flash", "Hi")
    assert sim.requests[-1].path == "/gateway/google/v1beta/models/gemini-2.0-flash:generateContent"
    assert sim.requests[-1].provider == "google"


async def test_gemini_google_search_grounding_and_service_tier(sim):
    client = gem(sim)
    question = "What is the weather in San Francisco today?"
    search = types.GenerateContentConfig(tools=[types.Tool(google_search=types.GoogleSearch())])
    result = await client.models.generate_content(
        model="gemini-2.5-flash", contents=question, config=search
    )
    assert sim.requests[-1].body["tools"] == [{"googleSearch": {}}]
    text = reply("gemini-2.5-flash", question)
    usage = result.usage_metadata
    assert usage.prompt_token_count == OVERHEAD + tok(question)  # search results not included
    assert usage.tool_use_prompt_token_count == 100
    assert usage.candidates_token_count == tok(text)
    assert usage.thoughts_token_count == 2 * tok(text)
    assert usage.total_token_count == OVERHEAD + tok(question) + 100 + 3 * tok(text)
    grounding = result.candidates[0].grounding_metadata
    assert grounding.web_search_queries == [question]
    assert grounding.grounding_chunks[0].web.uri.startswith("https://")
    assert grounding.search_entry_point.rendered_content

    chunks = [
        chunk
        async for chunk in await client.models.generate_content_stream(
            model="gemini-2.0-flash", contents=question, config=search
        )
    ]
    assert [c.candidates[0].grounding_metadata is not None for c in chunks] == [
        False,
        False,
        False,
        True,
    ]
    assert all(c.usage_metadata.tool_use_prompt_token_count == 100 for c in chunks)

    # serviceTier is not in the SDK's model: check the wire form.
    async with httpx.AsyncClient(base_url=sim.url) as http:
        body = {"contents": [{"parts": [{"text": question}]}], "tools": [{"google_search": {}}]}
        recent = await http.post("/v1beta/models/gemini-3-flash:generateContent", json=body)
        older = await http.post(
            "/v1beta/models/gemini-2.0-flash:generateContent", json={"contents": body["contents"]}
        )
    metadata = recent.json()["usageMetadata"]
    recent_text = reply("gemini-3-flash", question)
    assert metadata == {
        "promptTokenCount": OVERHEAD + tok(question),
        "candidatesTokenCount": tok(recent_text),
        "totalTokenCount": OVERHEAD + tok(question) + 100 + 3 * tok(recent_text),
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": OVERHEAD + tok(question)}],
        "toolUsePromptTokenCount": 100,
        "toolUsePromptTokensDetails": [{"modality": "TEXT", "tokenCount": 100}],
        "thoughtsTokenCount": 2 * tok(recent_text),
        "serviceTier": "standard",
    }
    assert recent.json()["candidates"][0]["groundingMetadata"]["webSearchQueries"] == [question]
    assert "serviceTier" not in older.json()["usageMetadata"]
    assert "groundingMetadata" not in older.json()["candidates"][0]


# --- errors, keys, latency and controls -----------------------------------------------------


async def test_injected_errors_raise_sdk_exceptions(sim):
    sim.inject_error(401, provider="openai", message="bad key")
    with pytest.raises(openai.AuthenticationError) as caught:
        await oai(sim).chat.completions.create(model="gpt-4o", messages=[])
    assert caught.value.body["message"] == "bad key"
    assert caught.value.response.headers["x-request-id"].startswith("req_")

    sim.inject_error(500, times=2, provider="openai")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await oai(sim).embeddings.create(model="m", input="x")
    await oai(sim).embeddings.create(model="m", input="x")  # both used up

    sim.inject_error(401, provider="anthropic")
    await oai(sim).embeddings.create(model="m", input="x")  # other providers are unaffected
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError) as caught_ant:
        await ant(sim).messages.create(model="claude-x", max_tokens=10, messages=messages)
    assert caught_ant.value.body["error"]["type"] == "authentication_error"
    assert caught_ant.value.body["request_id"].startswith("req_")
    assert caught_ant.value.response.headers["request-id"] == caught_ant.value.body["request_id"]

    sim.inject_error(529, provider="anthropic")
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        await ant(sim).messages.create(model="claude-x", max_tokens=10, messages=messages)
    assert overloaded.value.body["error"]["type"] == "overloaded_error"

    sim.inject_error(429, provider="google", message="slow down")
    with pytest.raises(genai_errors.ClientError) as caught_g:
        await gem(sim).models.generate_content(model="gemini-2.0-flash", contents="x")
    assert (caught_g.value.code, caught_g.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert caught_g.value.message == "slow down"

    sim.inject_error(503)
    with pytest.raises(genai_errors.ServerError) as unavailable:
        await gem(sim).models.generate_content(model="gemini-2.0-flash", contents="x")
    assert unavailable.value.status == "UNAVAILABLE"


async def test_injected_error_on_gemini_array_stream_is_wrapped(sim):
    sim.inject_error(500, provider="google")
    async with httpx.AsyncClient(base_url=sim.url) as http:
        raw = await http.post(
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            json={"contents": [{"parts": [{"text": "x"}]}]},
        )
    assert raw.status_code == 500
    assert raw.json() == [
        {"error": {"code": 500, "message": "Simulated upstream error", "status": "INTERNAL"}}
    ]


async def test_api_keys_are_enforced():
    sim = SimulatedProvider(api_keys=["good-key"])
    await sim.start()
    try:
        messages = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.AuthenticationError) as bad_openai:
            await oai(sim, "wrong").chat.completions.create(model="gpt-4o", messages=messages)
        assert bad_openai.value.code == "invalid_api_key"
        await oai(sim, "good-key").chat.completions.create(model="gpt-4o", messages=messages)

        with pytest.raises(anthropic.AuthenticationError):
            await ant(sim, "wrong").messages.create(
                model="claude-x", max_tokens=10, messages=messages
            )
        await ant(sim, "good-key").messages.create(
            model="claude-x", max_tokens=10, messages=messages
        )

        with pytest.raises(genai_errors.ClientError) as bad_google:
            await gem(sim, "wrong").models.generate_content(model="gemini-2.0-flash", contents="x")
        assert bad_google.value.code == 400  # what the real API answers for a wrong key
        assert bad_google.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        await gem(sim, "good-key").models.generate_content(model="gemini-2.0-flash", contents="x")

        async with httpx.AsyncClient(base_url=sim.url) as http:
            anth_body = {"model": "claude-x", "max_tokens": 5, "messages": messages}
            gem_path = "/v1beta/models/gemini-2.0-flash:generateContent"
            gem_body = {"contents": [{"parts": [{"text": "x"}]}]}
            assert (await http.post(gem_path + "?key=good-key", json=gem_body)).status_code == 200
            missing = await http.post(gem_path, json=gem_body)
            assert missing.status_code == 403
            assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
            ok = await http.post("/v1/messages", json=anth_body, headers={"x-api-key": "good-key"})
            assert ok.status_code == 200
            no_key = await http.post("/v1/messages", json=anth_body)
            assert no_key.status_code == 401
            assert no_key.json()["error"]["type"] == "authentication_error"
            assert (await http.post("/v1/chat/completions", json={})).status_code == 401
    finally:
        await sim.stop()


async def test_latency_delays_response_and_reset_restores_it():
    sim = SimulatedProvider(latency=0.0)
    await sim.start()
    try:
        client = oai(sim)
        sim.latency = 0.3
        started = time.perf_counter()
        await client.embeddings.create(model="m", input="x")
        assert time.perf_counter() - started >= 0.3
        sim.inject_error(500)
        sim.reset()
        assert sim.latency == 0.0 and sim.requests == []
        started = time.perf_counter()
        await client.embeddings.create(model="m", input="x")  # no error left after reset
        assert time.perf_counter() - started < 0.25
    finally:
        await sim.stop()


async def test_chunk_delay_spaces_stream_frames(sim):
    sim.chunk_delay = 0.05
    started = time.perf_counter()
    stream = await oai(sim).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) == 6  # role, 4 deltas, finish (+ [DONE]): 6 gaps
    assert time.perf_counter() - started >= 6 * 0.05


async def test_http_control_endpoints(sim):
    async with httpx.AsyncClient(base_url=sim.url) as http:
        response = await http.post("/_sim/config", json={"latency": 0.2, "chunk_delay": 0.01})
        assert response.json()["latency"] == 0.2 and sim.chunk_delay == 0.01
        errors = {"status": 500, "times": 1, "provider": "openai"}
        assert (await http.post("/_sim/errors", json=errors)).status_code == 200
        failed = await http.post("/v1/embeddings", json={"model": "m", "input": "x"})
        assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"
        requests = (await http.get("/_sim/requests")).json()
        assert [r["path"] for r in requests] == ["/v1/embeddings"]
        assert requests[0]["body"] == {"model": "m", "input": "x"}
        assert requests[0]["provider"] == "openai"
        assert (await http.post("/_sim/errors", json={"provider": "nope"})).status_code == 400
        assert (await http.post("/_sim/reset")).status_code == 200
        assert sim.latency == 0.0 and (await http.get("/_sim/requests")).json() == []


def test_run_in_thread_serves_sync_clients():
    with SimulatedProvider.run_in_thread(stream_chunks=2) as sim:
        with openai.OpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0) as client:
            result = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "sync"}]
            )
        assert result.choices[0].message.content == reply("gpt-4o", "sync")
        assert len(sim.requests) == 1
    instance = SimulatedProvider()
    with instance.run_in_thread() as same:
        assert same is instance
        assert httpx.get(instance.url + "/_sim/requests").json() == []


def test_cli_prints_url_and_stops_on_sigterm():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "lcm_jupyter.testing", "--port", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/_sim/requests").json() == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()


async def test_stop_is_idempotent_and_url_requires_start():
    sim = SimulatedProvider()
    with pytest.raises(RuntimeError):
        _ = sim.url
    await sim.start()
    await sim.stop()
    await sim.stop()
    await asyncio.sleep(0)
