"""Which provider API a forwarded request path calls, and how its answer arrives.

Paths are matched by their suffix so that any prefix works (``v1/``, ``v1beta/``,
Gemini's OpenAI-compatible ``v1beta/openai/``, Azure's ``openai/deployments/{d}/``).
Only the endpoints whose responses carry token usage get a ``wire``; everything
else is passthrough (forwarded, not metered).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["Endpoint", "classify", "is_stream", "request_model", "stream_format"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A classified request path: its log name, wire format, model and provider hint."""

    name: str
    wire: str | None
    path_model: str | None
    provider_hint: str | None


# Suffix (as path segments) -> (name, wire, provider the bare path implies).
# Longest suffixes first: "chat/completions" must win over "completions".
_OPENAI_SHAPED: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("chat", "completions"), "chat.completions", "openai.chat", "openai"),
    (("completions",), "completions", "openai.completions", "openai"),
    (("responses",), "responses", "openai.responses", "openai"),
    (("embeddings",), "embeddings", "openai.embeddings", "openai"),
    (("messages",), "messages", "anthropic.messages", "anthropic"),
)

# Gemini "{resource}:{method}" methods that return usage.
_GOOGLE_METHODS = {
    "generateContent": "google.generate",
    "streamGenerateContent": "google.stream",
    "embedContent": "google.embed",
    "batchEmbedContents": "google.embed",
}

# Path segments that only Google's APIs use.
_GOOGLE_VERSIONS = frozenset({"v1beta", "v1alpha", "v1beta1", "v1beta2", "v1beta3"})
# Segments of passthrough paths that only one provider uses (messages/count_tokens,
# messages/batches, legacy v1/complete; responses/{id}, chat/completions/{id}, ...).
_ANTHROPIC_SEGMENTS = frozenset({"messages", "complete"})
_OPENAI_SEGMENTS = frozenset(
    {
        "responses",
        "chat",
        "completions",
        "embeddings",
        "assistants",
        "threads",
        "moderations",
        "audio",
        "images",
        "fine_tuning",
        "vector_stores",
        "realtime",
        "conversations",
        "organization",
    }
)
# Prefixes under which an inference-like suffix is something else: Assistants thread
# messages, OpenAI's usage API (organization/usage/completions), Anthropic's admin API.
_NOT_INFERENCE = frozenset({"threads", "organization", "organizations"})


def _normalize(path: str) -> str:
    """Drop the query string and surrounding slashes."""
    return path.split("?", 1)[0].split("#", 1)[0].strip("/")


def _google_compat(prefix: list[str]) -> bool:
    """Whether the segments before an OpenAI-shaped suffix are a Google OpenAI-compat base."""
    # Gemini API: v1beta/openai/...; Vertex AI: .../endpoints/openapi/...
    if len(prefix) >= 2 and prefix[-1] == "openai" and prefix[-2].startswith("v1"):
        return True
    return len(prefix) >= 2 and prefix[-2:] == ["endpoints", "openapi"]


def _hint_for_other(segments: list[str]) -> str | None:
    """Provider implied by a passthrough path that has no ``:method``."""
    present = set(segments)
    if present & _GOOGLE_VERSIONS:
        return "google"
    # OpenAI first: its thread messages (threads/{id}/messages) are not Anthropic's.
    if present & _OPENAI_SEGMENTS:
        return "openai"
    if present & _ANTHROPIC_SEGMENTS:
        return "anthropic"
    # e.g. v1/models, v1/files: every provider has them.
    return None


def _model_from_resource(segments: list[str]) -> str | None:
    """The model in a Gemini resource path like ``models/x`` or ``projects/.../models/x``."""
    if len(segments) < 2 or not segments[-1]:
        return None
    if segments[-2] == "models":
        return segments[-1]
    # Tuned models are addressed by their full resource name.
    return f"tunedModels/{segments[-1]}" if segments[-2] == "tunedModels" else None


def classify(path: str) -> Endpoint:
    """Classify a forwarded path such as ``v1/chat/completions`` into an `Endpoint`."""
    norm = _normalize(path)
    segments = norm.split("/") if norm else []
    last = segments[-1] if segments else ""

    resource, colon, method = last.rpartition(":")
    if colon and resource:
        model = _model_from_resource([*segments[:-1], resource])
        wire = _GOOGLE_METHODS.get(method)
        if wire is not None:
            return Endpoint(method, wire, model, "google")
        # Vertex AI's Claude (rawPredict) and other ":method" calls are not metered here.
        hint = "anthropic" if "anthropic" in segments else "google"
        return Endpoint(norm, None, model, hint)

    for suffix, name, wire, hint in _OPENAI_SHAPED:
        n = len(suffix)
        if tuple(segments[-n:]) == suffix:
            prefix = segments[:-n]
            if _NOT_INFERENCE.intersection(prefix):
                break
            deployment = None
            if len(prefix) >= 2 and prefix[-2] == "deployments":
                # Azure OpenAI names the deployment (usually the model) in the path.
                deployment = prefix[-1]
            elif _google_compat(prefix):
                hint = "google"
            return Endpoint(name, wire, deployment, hint)

    return Endpoint(norm, None, None, _hint_for_other(segments))


def is_stream(endpoint: Endpoint, body: Mapping[str, Any] | None) -> bool:
    """Whether the response will be streamed (Gemini by method, the others by ``stream``)."""
    wire = endpoint.wire
    if wire == "google.stream":
        return True
    if wire is not None and wire.startswith("google."):
        return False
    return isinstance(body, Mapping) and body.get("stream") is True


def stream_format(endpoint: Endpoint, query: str) -> str:
    """``"json-array"`` for Gemini streaming without ``alt=sse``, else ``"sse"``."""
    if endpoint.wire != "google.stream":
        return "sse"
    for key, value in parse_qsl(query.lstrip("?"), keep_blank_values=True):
        if key == "alt" and value.lower() == "sse":
            return "sse"
    return "json-array"


def request_model(endpoint: Endpoint, body: Mapping[str, Any] | None) -> str | None:
    """The model the client asked for: ``body["model"]`` or the one named in the path."""
    model = body.get("model") if isinstance(body, Mapping) else None
    if not isinstance(model, str) or not model.strip():
        model = endpoint.path_model
    if not model:
        return None
    model = model.strip()
    return model[len("models/") :] if model.startswith("models/") else model
