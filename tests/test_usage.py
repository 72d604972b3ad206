"""Usage extraction from every wire's JSON bodies and stream events."""

from __future__ import annotations

import pytest

from lcm_jupyter.core.providers import response_model, usage_from_body, usage_from_event
from lcm_jupyter.core.usage import Usage

# Non-streamed bodies as the providers document them (abridged only where noted).
CHAT_BODY = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 20,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
}
COMPLETIONS_BODY = {
    "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
    "object": "text_completion",
    "created": 1589478378,
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"text": "\n\nThis is indeed a test", "index": 0, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}
RESPONSES_BODY = {
    "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
    "object": "response",
    "created_at": 1741476777,
    "status": "completed",
    "error": None,
    "model": "o4-mini-2025-04-16",
    "output": [{"type": "reasoning", "id": "rs_1", "summary": []}],
    "usage": {
        "input_tokens": 328,
        "input_tokens_details": {"cached_tokens": 128},
        "output_tokens": 52,
        "output_tokens_details": {"reasoning_tokens": 30},
        "total_tokens": 380,
    },
}
EMBEDDINGS_BODY = {
    "object": "list",
    "data": [{"object": "embedding", "embedding": [0.0023064255, -0.009327292], "index": 0}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}
ANTHROPIC_BODY = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 2095,
        "cache_creation_input_tokens": 2051,
        "cache_read_input_tokens": 10000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2051, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 503,
        "service_tier": "standard",
    },
}
GEMINI_BODY = {
    "candidates": [
        {
            "content": {"parts": [{"text": "AI learns patterns."}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 3000,
        "candidatesTokenCount": 120,
        "totalTokenCount": 4170,
        "cachedContentTokenCount": 2048,
        "toolUsePromptTokenCount": 50,
        "thoughtsTokenCount": 1000,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 3000}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 2048}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mAitaLmkHPPlz7IPvtfUqQ4",
}


@pytest.mark.parametrize(
    ("wire", "body", "expected"),
    [
        (
            "openai.chat",
            CHAT_BODY,
            Usage(input_tokens=1117, output_tokens=46, cached_tokens=1024, reasoning_tokens=20),
        ),
        ("openai.completions", COMPLETIONS_BODY, Usage(input_tokens=5, output_tokens=7)),
        (
            "openai.responses",
            RESPONSES_BODY,
            Usage(input_tokens=328, output_tokens=52, cached_tokens=128, reasoning_tokens=30),
        ),
        ("openai.embeddings", EMBEDDINGS_BODY, Usage(input_tokens=8)),
        (
            "anthropic.messages",
            ANTHROPIC_BODY,
            Usage(
                input_tokens=2095 + 2051 + 10000,
                output_tokens=503,
                cached_tokens=10000,
                cache_write_tokens=2051,
            ),
        ),
        (
            "google.generate",
            GEMINI_BODY,
            Usage(
                input_tokens=3050,
                output_tokens=1120,
                cached_tokens=2048,
                reasoning_tokens=1000,
                extra={"input_tool_tokens": 50},
            ),
        ),
    ],
)
def test_usage_from_body(wire, body, expected):
    usage = usage_from_body(wire, body)
    assert usage == expected
    key = "usageMetadata" if wire.startswith("google") else "usage"
    assert usage.raw == body[key]
    assert usage.raw is not body[key]  # a copy: later mutation of the body cannot change it


def test_anthropic_without_cache_fields_and_uncached_input():
    body = {"usage": {"input_tokens": 10, "output_tokens": 20}}
    assert usage_from_body("anthropic.messages", body) == Usage(input_tokens=10, output_tokens=20)
    full = usage_from_body("anthropic.messages", ANTHROPIC_BODY)
    assert full.uncached_input_tokens == 2095


def test_anthropic_thinking_tokens_detail():
    body = {
        "usage": {
            "input_tokens": 10,
            "output_tokens": 200,
            "output_tokens_details": {"thinking_tokens": 150},
        }
    }
    assert usage_from_body("anthropic.messages", body).reasoning_tokens == 150


def test_missing_and_null_fields_are_zero():
    body = {
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": None,
            "prompt_tokens_details": None,
            "completion_tokens_details": {"reasoning_tokens": None},
        }
    }
    assert usage_from_body("openai.chat", body) == Usage(input_tokens=7)
    assert usage_from_body("google.generate", {"usageMetadata": {}}) == Usage()
    assert usage_from_body("anthropic.messages", {"usage": {"input_tokens": "12"}}) == Usage(
        input_tokens=12
    )


def test_no_usage_is_none():
    assert usage_from_body("openai.chat", {"id": "x", "usage": None}) is None
    assert usage_from_body("anthropic.messages", {"type": "error", "error": {}}) is None
    assert usage_from_body("google.embed", {"embedding": {"values": [0.1]}}) is None
    assert usage_from_body("google.generate", []) is None  # type: ignore[arg-type]
    assert usage_from_body("unknown.wire", CHAT_BODY) is None


def test_gemini_snake_case_and_embed_response_tokens():
    snake = {"usage_metadata": {"prompt_token_count": 4, "candidates_token_count": 6}}
    assert usage_from_body("google.generate", snake) == Usage(input_tokens=4, output_tokens=6)
    embed = {"embeddings": [], "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}
    assert usage_from_body("google.embed", embed) == Usage(input_tokens=9)


def test_openai_compatible_total_covers_uncounted_reasoning():
    # Gemini's OpenAI layer has been seen to leave thoughts out of completion_tokens only.
    body = {"usage": {"prompt_tokens": 20, "completion_tokens": 424, "total_tokens": 1016}}
    assert usage_from_body("openai.chat", body) == Usage(input_tokens=20, output_tokens=996)


# --- stream events ----------------------------------------------------------------------------


def test_openai_chat_events_keep_prior_until_the_usage_chunk():
    prior = Usage(input_tokens=1)
    assert usage_from_event("openai.chat", {"choices": [{}], "usage": None}, prior) is prior
    assert usage_from_event("openai.chat", {"choices": [{}]}, None) is None
    final = {"choices": [], "usage": CHAT_BODY["usage"]}
    assert usage_from_event("openai.chat", final, prior).input_tokens == 1117


def test_responses_events():
    created = {"type": "response.created", "response": {**RESPONSES_BODY, "usage": None}}
    assert usage_from_event("openai.responses", created, None) is None
    for kind in ("response.completed", "response.incomplete", "response.failed"):
        event = {"type": kind, "sequence_number": 9, "response": RESPONSES_BODY}
        assert usage_from_event("openai.responses", event, None).output_tokens == 52
    delta = {"type": "response.output_text.delta", "delta": "usage"}
    assert usage_from_event("openai.responses", delta, Usage(input_tokens=3)).input_tokens == 3


def test_anthropic_events_merge():
    start = {
        "type": "message_start",
        "message": {"model": "claude-3-5-haiku-20241022", "usage": ANTHROPIC_BODY["usage"]},
    }
    u = usage_from_event("anthropic.messages", start, None)
    assert (u.input_tokens, u.output_tokens) == (14146, 503)
    delta = {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 700}}
    u = usage_from_event("anthropic.messages", delta, u)
    assert u == Usage(
        input_tokens=14146, output_tokens=700, cached_tokens=10000, cache_write_tokens=2051
    )
    assert u.raw == {"output_tokens": 700}
    # A field a message_delta repeats replaces message_start's, an explicit 0 included
    # (the delta's counts are the cumulative, final ones); absent fields are kept.
    zeros = {"type": "message_delta", "usage": {"input_tokens": 0, "output_tokens": 701}}
    assert usage_from_event("anthropic.messages", zeros, u).input_tokens == 10000 + 2051
    # A delta before any message_start still counts.
    alone = usage_from_event("anthropic.messages", delta, None)
    assert alone == Usage(output_tokens=700)
    ping = {"type": "ping"}
    assert usage_from_event("anthropic.messages", ping, u) is u


def test_gemini_events_last_wins():
    first = {"usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}
    u = usage_from_event("google.stream", first, None)
    assert u == Usage(input_tokens=9)
    u = usage_from_event("google.stream", GEMINI_BODY, u)
    assert u.output_tokens == 1120
    assert usage_from_event("google.stream", {"candidates": []}, u) is u


# --- response_model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "body", "model"),
    [
        ("openai.chat", CHAT_BODY, "gpt-4.1-2025-04-14"),
        ("openai.embeddings", EMBEDDINGS_BODY, "text-embedding-3-small"),
        ("openai.responses", RESPONSES_BODY, "o4-mini-2025-04-16"),
        (
            "openai.responses",
            {"type": "response.created", "response": RESPONSES_BODY},
            "o4-mini-2025-04-16",
        ),
        ("anthropic.messages", ANTHROPIC_BODY, "claude-sonnet-4-20250514"),
        (
            "anthropic.messages",
            {"type": "message_start", "message": ANTHROPIC_BODY},
            "claude-sonnet-4-20250514",
        ),
        ("google.generate", GEMINI_BODY, "gemini-2.5-flash"),
        ("google.stream", {"model_version": "gemini-2.0-flash-001"}, "gemini-2.0-flash-001"),
        ("openai.chat", {"model": None}, None),
        ("google.generate", "not a mapping", None),
    ],
)
def test_response_model(wire, body, model):
    assert response_model(wire, body) == model
