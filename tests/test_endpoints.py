"""Classification of forwarded request paths."""

from __future__ import annotations

import pytest

from lcm_jupyter.core.providers import (
    COSTLY,
    FREE,
    METERED,
    Endpoint,
    classify,
    is_stream,
    request_model,
    stream_format,
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # OpenAI, with and without the version prefix, slashes, query strings.
        ("v1/chat/completions", Endpoint("chat.completions", "openai.chat", None, "openai")),
        ("/v1/chat/completions/", Endpoint("chat.completions", "openai.chat", None, "openai")),
        ("chat/completions?x=1", Endpoint("chat.completions", "openai.chat", None, "openai")),
        ("v1/completions", Endpoint("completions", "openai.completions", None, "openai")),
        ("v1/responses", Endpoint("responses", "openai.responses", None, "openai")),
        ("v1/embeddings", Endpoint("embeddings", "openai.embeddings", None, "openai")),
        # Gemini's OpenAI-compatible API speaks the OpenAI wire but is Google's.
        (
            "v1beta/openai/chat/completions",
            Endpoint("chat.completions", "openai.chat", None, "google"),
        ),
        ("v1beta/openai/embeddings", Endpoint("embeddings", "openai.embeddings", None, "google")),
        (
            "v1/projects/p/locations/us-central1/endpoints/openapi/chat/completions",
            Endpoint("chat.completions", "openai.chat", None, "google"),
        ),
        # Azure OpenAI names the deployment in the path.
        (
            "openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
            Endpoint("chat.completions", "openai.chat", "gpt-4o-mini", "openai"),
        ),
        # Anthropic.
        ("v1/messages", Endpoint("messages", "anthropic.messages", None, "anthropic")),
        ("v1/messages?beta=true", Endpoint("messages", "anthropic.messages", None, "anthropic")),
        (
            "v1/messages/count_tokens",
            Endpoint("v1/messages/count_tokens", None, None, "anthropic"),
        ),
        ("v1/messages/batches", Endpoint("v1/messages/batches", None, None, "anthropic")),
        (
            "v1/messages/batches/msgbatch_01/results",
            Endpoint(
                "v1/messages/batches/msgbatch_01/results",
                "anthropic.batch_results",
                None,
                "anthropic",
            ),
        ),
        # Gemini.
        (
            "v1beta/models/gemini-2.0-flash:generateContent",
            Endpoint("generateContent", "google.generate", "gemini-2.0-flash", "google"),
        ),
        (
            "v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            Endpoint("streamGenerateContent", "google.stream", "gemini-2.5-pro", "google"),
        ),
        (
            "v1/models/gemini-1.5-flash-002:streamGenerateContent",
            Endpoint("streamGenerateContent", "google.stream", "gemini-1.5-flash-002", "google"),
        ),
        (
            "v1beta/models/text-embedding-004:embedContent",
            Endpoint("embedContent", "google.embed", "text-embedding-004", "google"),
        ),
        (
            "v1beta/models/gemini-embedding-001:batchEmbedContents",
            Endpoint("batchEmbedContents", "google.embed", "gemini-embedding-001", "google"),
        ),
        (
            "v1beta/tunedModels/my-tuned-abc123:generateContent",
            Endpoint("generateContent", "google.generate", "tunedModels/my-tuned-abc123", "google"),
        ),
        (
            "v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
            Endpoint("generateContent", "google.generate", "gemini-2.0-flash", "google"),
        ),
        (
            "v1beta/models/gemini-2.0-flash:countTokens",
            Endpoint(
                "v1beta/models/gemini-2.0-flash:countTokens", None, "gemini-2.0-flash", "google"
            ),
        ),
        # Passthrough.
        ("v1/responses/resp_123", Endpoint("v1/responses/resp_123", None, None, "openai")),
        (
            "v1/responses/resp_123/input_items",
            Endpoint("v1/responses/resp_123/input_items", None, None, "openai"),
        ),
        (
            "v1/chat/completions/chatcmpl-1",
            Endpoint("v1/chat/completions/chatcmpl-1", None, None, "openai"),
        ),
        ("v1beta/models", Endpoint("v1beta/models", None, None, "google")),
        (
            "v1/threads/thread_abc/messages",
            Endpoint("v1/threads/thread_abc/messages", None, None, "openai"),
        ),
        (
            "v1/organization/usage/completions",
            Endpoint("v1/organization/usage/completions", None, None, "openai"),
        ),
        (
            "v1/organizations/usage_report/messages",
            Endpoint("v1/organizations/usage_report/messages", None, None, "anthropic"),
        ),
        ("v1beta/cachedContents", Endpoint("v1beta/cachedContents", None, None, "google")),
        ("v1/models", Endpoint("v1/models", None, None, None)),
        ("v1/files", Endpoint("v1/files", None, None, None)),
        ("", Endpoint("", None, None, None)),
    ],
)
def test_classify(path, expected):
    got = classify(path)
    assert (got.name, got.wire, got.path_model, got.provider_hint) == (
        expected.name,
        expected.wire,
        expected.path_model,
        expected.provider_hint,
    )
    assert got.charge == (METERED if expected.wire else got.charge)


@pytest.mark.parametrize(
    ("method", "path", "wire", "charge"),
    [
        # Billed endpoints beyond text: images, speech, transcription, moderation (free).
        ("POST", "v1/images/generations", "openai.images", METERED),
        ("POST", "v1/images/edits", "openai.images", METERED),
        ("POST", "v1/audio/speech", "openai.speech", METERED),
        ("POST", "v1/audio/transcriptions", "openai.transcription", METERED),
        ("POST", "v1/audio/translations", "openai.transcription", METERED),
        ("POST", "v1/moderations", None, FREE),
        # Work billed when its result is fetched.
        ("GET", "v1/responses/resp_123", "openai.response_get", METERED),
        ("GET", "v1/files/file-abc/content", "openai.batch_output", METERED),
        ("GET", "v1/messages/batches/msgbatch_01/results", "anthropic.batch_results", METERED),
        # Costs money, not metered: refused for budgeted keys unless allowed.
        ("POST", "v1/batches", None, COSTLY),
        ("POST", "v1/fine_tuning/jobs", None, COSTLY),
        ("POST", "v1/vector_stores", None, COSTLY),
        ("POST", "v1/messages/batches", None, COSTLY),
        ("POST", "v1beta/models/imagen-4.0-generate-001:predict", None, COSTLY),
        ("POST", "v1beta/models/gemini-2.5-flash:batchGenerateContent", None, COSTLY),
        ("POST", "v1beta/cachedContents", None, COSTLY),
        ("POST", "v1/unknown/thing", None, COSTLY),
        # Free: reading state, counting tokens, uploads.
        ("GET", "v1/batches/batch_1", None, FREE),
        ("GET", "v1/models", None, FREE),
        ("POST", "v1/messages/count_tokens", None, FREE),
        ("POST", "v1beta/models/gemini-2.0-flash:countTokens", None, FREE),
        ("POST", "v1/files", None, FREE),
        ("POST", "v1/responses/input_tokens", None, FREE),
        ("POST", "v1/batches/batch_1/cancel", None, FREE),
        ("DELETE", "v1/responses/resp_1", None, FREE),
    ],
)
def test_classify_charge(method, path, wire, charge):
    got = classify(path, method)
    assert (got.wire, got.charge) == (wire, charge)


def test_is_stream():
    chat = classify("v1/chat/completions")
    assert is_stream(chat, {"stream": True})
    assert not is_stream(chat, {"stream": "true"})  # only the JSON boolean
    assert not is_stream(chat, {})
    assert not is_stream(chat, None)
    assert is_stream(classify("v1/messages"), {"stream": True})
    assert is_stream(classify("v1beta/models/g:streamGenerateContent"), None)
    assert not is_stream(classify("v1beta/models/g:generateContent"), {"stream": True})


def test_stream_format():
    stream = classify("v1beta/models/gemini-2.0-flash:streamGenerateContent")
    assert stream_format(stream, "alt=sse") == "sse"
    assert stream_format(stream, "?key=AIza&alt=sse") == "sse"
    assert stream_format(stream, "") == "json-array"
    assert stream_format(stream, "alt=json") == "json-array"
    assert stream_format(classify("v1/chat/completions"), "") == "sse"


def test_request_model():
    gemini = classify("v1beta/models/gemini-2.0-flash:generateContent")
    assert request_model(gemini, None) == "gemini-2.0-flash"
    assert request_model(gemini, {"model": "models/gemini-2.5-pro"}) == "gemini-2.5-pro"
    chat = classify("v1/chat/completions")
    assert request_model(chat, {"model": "gpt-4o-mini"}) == "gpt-4o-mini"
    assert request_model(chat, {"model": ""}) is None
    assert request_model(chat, {"model": 42}) is None
    assert request_model(chat, None) is None
    azure = classify("openai/deployments/my-gpt/chat/completions")
    assert request_model(azure, {}) == "my-gpt"
