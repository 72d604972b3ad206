"""Which provider a request on the generic proxy route is meant for.

Signals are tried from the most to the least specific: the model name, the shape of
the JSON body, provider-specific headers, then the shape of the path. Every signal
examined is described in `Detection.looked_at`, so that a request nothing decides
can be answered with a 400 that tells the user what to change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .providers import ADAPTERS, classify

__all__ = ["Detection", "detect_provider", "provider_for_model"]


@dataclass(frozen=True, slots=True)
class Detection:
    """The provider chosen (or None), the deciding signal, and every signal examined."""

    provider: str | None
    reason: str
    looked_at: tuple[str, ...]


# Provider -> its signals, from the adapters; model and key prefixes longest first, so
# "sk-ant-" (Anthropic) wins over "sk-" (OpenAI).
_MODEL_PREFIXES = sorted(
    ((prefix, a.name) for a in ADAPTERS.values() for prefix in a.signals.model_prefixes),
    key=lambda item: -len(item[0]),
)
_KEY_PREFIXES = sorted(
    ((prefix, a.name) for a in ADAPTERS.values() for prefix in a.signals.key_prefixes),
    key=lambda item: -len(item[0]),
)
# OpenAI's reasoning series, as the whole first segment only: o1, o3-mini, o4-mini-2025-04-16.
_O_SERIES = re.compile(r"o[1-9][0-9]?(?:-|$)")
_MODEL_HELP = "; ".join(f"{a.name}: {a.signals.model_help}" for a in ADAPTERS.values())
_BODY_HELP = "; ".join(f"{a.name}: {a.signals.body_help}" for a in ADAPTERS.values())
_HEADER_HELP = (
    "; ".join(f"{'/'.join(a.signals.headers)} -> {a.name}" for a in ADAPTERS.values())
    + "; x-api-key alone -> anthropic"
)
_ROUTE_HELP = "to choose, call the provider route lcm/proxy/{openai|anthropic|google}/..."


def _model_match(model: str) -> tuple[str, str] | None:
    """(provider, matched prefix) for a model name, or None."""
    name = model.strip().lower()
    if _O_SERIES.match(name):
        return "openai", name.split("-", 1)[0]
    for prefix, provider in _MODEL_PREFIXES:
        if name.startswith(prefix.lower()):
            return provider, prefix
    return None


def provider_for_model(model: str) -> str | None:
    """The provider whose naming scheme `model` follows, or None."""
    match = _model_match(model) if isinstance(model, str) else None
    return match[0] if match else None


def _body_signals(body: Mapping[str, Any]) -> dict[str, list[str]]:
    """Provider -> the body features that only that provider's API has."""
    return {name: a.body_signals(body) for name, a in ADAPTERS.items()}


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers keyed by lower-cased name (callers may pass any mapping)."""
    try:
        return {str(k).lower(): str(v) for k, v in headers.items()}
    except (AttributeError, TypeError):
        return {}


def _header_signal(h: dict[str, str]) -> tuple[str, str] | None:
    """(provider, reason) from provider-specific headers or the shape of an API key."""
    for a in ADAPTERS.values():
        for name in a.signals.headers:
            if name in h:
                return a.name, f"header {name!r} is sent only to {a.name}"
    if "x-api-key" in h and "authorization" not in h:
        return "anthropic", "header 'x-api-key' without 'authorization' is Anthropic's auth"
    for name in ("x-api-key", "authorization"):
        key = h.get(name, "").removeprefix("Bearer ").removeprefix("bearer ").strip()
        for prefix, provider in _KEY_PREFIXES:
            if key.startswith(prefix):
                return provider, f"header {name!r} holds a {provider} key ({prefix}...)"
    return None


def detect_provider(
    *,
    path: str,
    model: str | None,
    body: Mapping[str, Any] | None,
    headers: Mapping[str, str],
) -> Detection:
    """Decide the provider of a request from its model, body, headers and path, in that order."""
    looked: list[str] = []
    endpoint = classify(path)
    hint = endpoint.provider_hint

    if model:
        match = _model_match(model)
        if match:
            return Detection(match[0], f"model {model!r} starts with {match[1]!r}", tuple(looked))
        looked.append(f"model {model!r} matches no known prefix ({_MODEL_HELP})")
    else:
        looked.append(f"no model in the body or path (known prefixes: {_MODEL_HELP})")

    if isinstance(body, Mapping):
        found = _body_signals(body)
        deciding = [p for p, signals in found.items() if signals]
        if len(deciding) == 1:
            provider = deciding[0]
            # Google's OpenAI-compatible endpoints take OpenAI-shaped bodies.
            if not (provider == "openai" and hint == "google"):
                reason = f"body has {found[provider][0]}, which only {provider}'s API uses"
                return Detection(provider, reason, tuple(looked))
        if deciding:
            signals = "; ".join(f"{p}: {', '.join(found[p])}" for p in deciding)
            looked.append(f"body shape is not decisive ({signals})")
        else:
            looked.append(f"body has no provider-specific fields ({_BODY_HELP})")
    else:
        looked.append("no JSON body to inspect")

    h = _lower_headers(headers)
    signal = _header_signal(h)
    if signal:
        return Detection(signal[0], signal[1], tuple(looked))
    looked.append(f"no provider-specific header ({_HEADER_HELP})")

    norm = path.split("?", 1)
    if len(norm) == 2 and re.search(r"(?:^|&)key=AIza", norm[1]):
        return Detection("google", "query parameter 'key' holds a Google API key", tuple(looked))
    if hint:
        return Detection(hint, f"path {endpoint.name!r} is {hint}'s API shape", tuple(looked))
    looked.append(f"path {path!r} does not imply a provider ({_ROUTE_HELP})")

    agent = h.get("user-agent", "").lower()
    for a in ADAPTERS.values():
        if a.signals.user_agent and a.signals.user_agent in agent:
            reason = f"user-agent {h['user-agent']!r} is {a.name}'s SDK"
            return Detection(a.name, reason, tuple(looked))
    looked.append("user-agent names no provider SDK")
    return Detection(None, "no signal identifies the provider", tuple(looked))
