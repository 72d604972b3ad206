"""One adapter per provider, and the lookups the rest of the code makes through them.

`classify` turns a forwarded path into an `Endpoint` (by suffix, so any prefix works:
``v1/``, ``v1beta/``, Gemini's OpenAI-compatible ``v1beta/openai/``, Azure's
``openai/deployments/{d}/``), and the usage, stream and error functions dispatch on the
endpoint's wire to the adapter that reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from ..usage import Usage
from .anthropic import Anthropic
from .base import COSTLY, FREE, METERED, Adapter, Endpoint, Request
from .google import Google
from .openai import OpenAI

__all__ = [
    "ADAPTERS",
    "COSTLY",
    "FREE",
    "METERED",
    "PROVIDERS",
    "Adapter",
    "Endpoint",
    "Request",
    "adapter",
    "classify",
    "for_wire",
    "is_stream",
    "request_model",
    "response_model",
    "stream_format",
    "usage_from_body",
    "usage_from_event",
]

ADAPTERS: dict[str, Adapter] = {a.name: a for a in (OpenAI(), Anthropic(), Google())}
PROVIDERS: tuple[str, ...] = tuple(ADAPTERS)
# Tried in this order: OpenAI's shapes first (also spoken by Gemini's compatible API, and its
# thread messages are not Anthropic's), then Anthropic's, then Google's.
_ORDER = (ADAPTERS["openai"], ADAPTERS["anthropic"], ADAPTERS["google"])
_BY_WIRE: dict[str, Adapter] = {w: a for a in ADAPTERS.values() for w in a.wires}


def adapter(provider: str) -> Adapter:
    """The adapter of a provider ("openai", "anthropic", "google")."""
    return ADAPTERS[provider]


def for_wire(wire: str | None) -> Adapter | None:
    """The adapter that reads `wire`."""
    return _BY_WIRE.get(wire) if wire else None


def _normalize(path: str) -> str:
    """Drop the query string and surrounding slashes."""
    return path.split("?", 1)[0].split("#", 1)[0].strip("/")


def classify(path: str, method: str = "POST") -> Endpoint:
    """Classify a forwarded path such as ``v1/chat/completions`` into an `Endpoint`."""
    norm = _normalize(path)
    segments = norm.split("/") if norm else []
    if segments:
        for a in _ORDER:
            found = a.match(segments, method.upper())
            if found is not None:
                return found
    # v1/models, v1/files: every provider has them. Reading is free; anything else may cost.
    charge = FREE if method.upper() in ("GET", "HEAD", "DELETE", "OPTIONS") else COSTLY
    if segments and segments[-1] in ("models", "files", "uploads", "cancel"):
        charge = FREE
    return Endpoint(norm, None, None, None, charge)


def is_stream(endpoint: Endpoint, body: Mapping[str, Any] | None, query: str = "") -> bool:
    """Whether the answer will be streamed (Gemini by method, the others by ``stream``)."""
    wire = endpoint.wire
    if wire == "google.stream":
        return True
    if wire is not None and wire.startswith("google."):
        return False
    if wire == "openai.response_get":
        return any(k == "stream" and v == "true" for k, v in parse_qsl(query.lstrip("?")))
    if wire == "openai.speech":
        return isinstance(body, Mapping) and body.get("stream_format") == "sse"
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


def usage_from_body(wire: str, body: Mapping[str, Any], req: Request | None = None) -> Usage | None:
    """Usage of a complete (non-streamed) JSON answer; None when it reports none."""
    a = for_wire(wire)
    if a is None or not isinstance(body, Mapping):
        return None
    return a.usage_from_body(wire, body, req or Request())


def usage_from_event(wire: str, event: Mapping[str, Any], prior: Usage | None) -> Usage | None:
    """Usage known after one streamed event/chunk, given what was known before it."""
    a = for_wire(wire)
    if a is None or not isinstance(event, Mapping):
        return prior
    return a.usage_from_event(wire, event, prior)


def response_model(wire: str, body: Mapping[str, Any]) -> str | None:
    """The model the upstream says answered (``model``, ``message.model``, ``modelVersion``)."""
    a = for_wire(wire)
    if a is None or not isinstance(body, Mapping):
        return None
    return a.response_model(wire, body)
