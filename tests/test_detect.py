"""Provider detection from model, body, headers and path."""

from __future__ import annotations

import pytest

from lcm_jupyter.core.detect import Detection, detect_provider, provider_for_model


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini", "openai"),
        ("gpt-5", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("o1", "openai"),
        ("o3-mini", "openai"),
        ("o4-mini-2025-04-16", "openai"),
        ("text-embedding-3-small", "openai"),
        ("text-embedding-ada-002", "openai"),
        ("davinci-002", "openai"),
        ("babbage-002", "openai"),
        ("ft:gpt-4o-mini-2024-07-18:org::9abc", "openai"),
        ("claude-3-5-haiku-latest", "anthropic"),
        ("claude-sonnet-4-5-20250929", "anthropic"),
        ("gemini-2.0-flash", "google"),
        ("gemini-embedding-001", "google"),
        ("text-embedding-004", "google"),
        ("embedding-001", "google"),
        ("gemma-3-27b-it", "google"),
        ("models/gemini-2.5-pro", "google"),
        ("tunedModels/my-model", "google"),
        ("o1x", None),
        ("omega", None),
        ("llama-3.1-70b", None),
        ("", None),
    ],
)
def test_provider_for_model(model, provider):
    assert provider_for_model(model) == provider


def detect(path="v1/models", model=None, body=None, headers=None) -> Detection:
    return detect_provider(path=path, model=model, body=body, headers=headers or {})


def test_model_decides_first():
    d = detect(
        path="v1/chat/completions",
        model="claude-3-5-haiku-latest",
        body={"contents": []},
        headers={"x-goog-api-key": "k"},
    )
    assert d.provider == "anthropic"
    assert d.reason == "model 'claude-3-5-haiku-latest' starts with 'claude-'"
    assert d.looked_at == ()


@pytest.mark.parametrize(
    ("body", "provider"),
    [
        ({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, "google"),
        ({"content": {"parts": [{"text": "embed me"}]}}, "google"),
        ({"requests": [{"model": "models/x", "content": {"parts": []}}]}, "google"),
        (
            {
                "max_tokens": 1024,
                "system": "You are terse.",
                "messages": [{"role": "user", "content": "Hello"}],
            },
            "anthropic",
        ),
        (
            {
                "max_tokens": 1024,
                "system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": "Hello"}],
            },
            "anthropic",
        ),
        (
            {
                "max_tokens": 100,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "w", "input": {}}],
                    },
                ],
            },
            "anthropic",
        ),
        (
            {
                "max_tokens": 100,
                "tools": [{"name": "w", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": "hi"}],
            },
            "anthropic",
        ),
        (
            {
                "max_tokens": 100,
                "thinking": {"type": "enabled", "budget_tokens": 2000},
                "messages": [{"role": "user", "content": "hi"}],
            },
            "anthropic",
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Hello"},
                ]
            },
            "openai",
        ),
        ({"messages": [{"role": "developer", "content": "x"}]}, "openai"),
        ({"input": "Tell me a story", "instructions": "Be brief"}, "openai"),
        ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5}, "openai"),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            },
            "openai",
        ),
    ],
)
def test_body_shape(body, provider):
    d = detect(body=body)
    assert d.provider == provider, d
    assert "body has" in d.reason
    assert d.looked_at[0].startswith("no model")


def test_openai_shaped_body_on_gemini_compat_path_is_google():
    body = {"messages": [{"role": "system", "content": "x"}], "model": "my-custom"}
    d = detect(path="v1beta/openai/chat/completions", model="my-custom", body=body)
    assert d.provider == "google"
    assert "path" in d.reason


def test_ambiguous_body_falls_through():
    # Valid for both OpenAI chat and Anthropic messages.
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert detect(path="v1/messages", body=body).provider == "anthropic"
    assert detect(path="v1/chat/completions", body=body).provider == "openai"


@pytest.mark.parametrize(
    ("headers", "provider"),
    [
        ({"anthropic-version": "2023-06-01", "x-api-key": "lcm-1"}, "anthropic"),
        ({"Anthropic-Version": "2023-06-01"}, "anthropic"),  # any case
        ({"x-api-key": "lcm-1"}, "anthropic"),
        ({"x-goog-api-key": "lcm-1"}, "google"),
        ({"x-goog-api-client": "google-genai-sdk/1.20.0 gl-python/3.11.7"}, "google"),
        ({"openai-organization": "org-1", "authorization": "Bearer lcm-1"}, "openai"),
        ({"authorization": "Bearer sk-ant-api03-xyz"}, "anthropic"),
        ({"authorization": "Bearer sk-proj-xyz"}, "openai"),
    ],
)
def test_headers(headers, provider):
    d = detect(headers=headers)
    assert d.provider == provider
    assert "xyz" not in d.reason  # never echo a key


def test_path_hint():
    d = detect(path="v1beta/models/some-model:generateContent")
    assert d.provider == "google"
    assert "path" in d.reason
    assert detect(path="v1/messages/count_tokens").provider == "anthropic"
    assert detect(path="v1/responses").provider == "openai"


def test_user_agent_is_the_last_resort():
    d = detect(path="v1/models", headers={"User-Agent": "Anthropic/Python 0.69.0"})
    assert d.provider == "anthropic"
    assert detect(headers={"user-agent": "OpenAI/Python 1.99.0"}).provider == "openai"


def test_nothing_decides():
    d = detect(
        path="v1/models",
        model="llama-3.1-70b",
        body={"messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": "Bearer lcm-abc", "user-agent": "curl/8.5"},
    )
    assert d.provider is None
    assert d.reason
    text = " | ".join(d.looked_at)
    assert "'llama-3.1-70b'" in text and "claude-" in text and "gemini-" in text
    assert "body" in text and "header" in text and "'v1/models'" in text
    assert "lcm/proxy/{openai|anthropic|google}/" in text
    assert len(d.looked_at) == 5


def test_conflicting_body_is_reported():
    body = {"system": "x", "messages": [{"role": "tool", "content": "y"}]}
    d = detect(body=body)
    assert d.provider is None
    assert any("not decisive" in s for s in d.looked_at)


def test_non_mapping_body_and_odd_headers():
    d = detect(body=None, headers={})
    assert d.provider is None
    assert "no JSON body to inspect" in d.looked_at
