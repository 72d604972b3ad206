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

from .providers import classify

__all__ = ["Detection", "detect_provider", "provider_for_model"]


@dataclass(frozen=True, slots=True)
class Detection:
    """The provider chosen (or None), the deciding signal, and every signal examined."""

    provider: str | None
    reason: str
    looked_at: tuple[str, ...]


_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("ft:", "openai"),  # fine-tuned: ft:gpt-4o-mini:org::id
    ("text-embedding-3", "openai"),
    ("text-embedding-ada", "openai"),
    ("text-davinci", "openai"),
    ("davinci", "openai"),
    ("babbage", "openai"),
    ("omni-moderation", "openai"),
    ("text-moderation", "openai"),
    ("codex-", "openai"),
    ("computer-use-", "openai"),
    ("claude-", "anthropic"),
    ("gemini-", "google"),
    ("gemma-", "google"),
    ("text-embedding-00", "google"),
    ("text-multilingual-embedding-", "google"),
    ("embedding-", "google"),
    ("imagen-", "google"),
    ("veo-", "google"),
    ("learnlm-", "google"),
    ("models/", "google"),
    ("tunedmodels/", "google"),
)
# OpenAI's reasoning series, as the whole first segment only: o1, o3-mini, o4-mini-2025-04-16.
_O_SERIES = re.compile(r"o[1-9][0-9]?(?:-|$)")
_MODEL_HELP = (
    "openai: gpt-, o1/o3/o4, chatgpt-, text-embedding-3/-ada, davinci, babbage, ft:; "
    "anthropic: claude-; google: gemini-, gemma-, text-embedding-00x, embedding-, models/"
)

_GOOGLE_BODY_KEYS = (
    "contents",
    "generationConfig",
    "generation_config",
    "systemInstruction",
    "system_instruction",
    "safetySettings",
    "cachedContent",
)
# Top-level fields of Anthropic's Messages API that OpenAI's APIs do not have.
_ANTHROPIC_BODY_KEYS = (
    "system",
    "stop_sequences",
    "top_k",
    "thinking",
    "anthropic_version",
    "anthropic_beta",
    "max_tokens_to_sample",
    "mcp_servers",
    "container",
)
# Top-level fields of OpenAI's chat/completions/Responses/embeddings APIs that Anthropic lacks.
_OPENAI_BODY_KEYS = (
    "input",
    "instructions",
    "prompt",
    "max_completion_tokens",
    "max_output_tokens",
    "response_format",
    "stream_options",
    "reasoning_effort",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "n",
    "seed",
    "modalities",
    "parallel_tool_calls",
    "prediction",
    "previous_response_id",
    "encoding_format",
    "dimensions",
)
_ANTHROPIC_BLOCKS = frozenset(
    {
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "document",
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
    }
)
_OPENAI_BLOCKS = frozenset({"image_url", "input_audio", "input_text", "input_image", "refusal"})
_OPENAI_ROLES = frozenset({"system", "developer", "tool", "function"})
_ANTHROPIC_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})

_BODY_HELP = (
    "google: contents/generationConfig/systemInstruction; anthropic: top-level system, "
    "stop_sequences, top_k, thinking, tool_use/tool_result blocks, tools with input_schema; "
    "openai: input, instructions, max_completion_tokens, response_format, system/tool roles "
    "in messages, tool_calls, image_url blocks"
)

# Header -> provider; names compared lower-cased.
_HEADER_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("anthropic-version", "anthropic"),
    ("anthropic-beta", "anthropic"),
    ("x-goog-api-key", "google"),
    ("x-goog-api-client", "google"),
    ("openai-organization", "openai"),
    ("openai-project", "openai"),
    ("openai-beta", "openai"),
)
# Provider API key shapes (only the prefix is ever reported, never the key).
_KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("sk-ant-", "anthropic"),
    ("AIza", "google"),
    ("sk-", "openai"),
)
_AGENTS: tuple[tuple[str, str], ...] = (
    ("anthropic/", "anthropic"),
    ("openai/", "openai"),
    ("google-genai-sdk", "google"),
)
_HEADER_HELP = (
    "anthropic-version/anthropic-beta or x-api-key alone -> anthropic; "
    "x-goog-api-key -> google; openai-organization/openai-project -> openai"
)
_ROUTE_HELP = "to choose, call the provider route lcm/proxy/{openai|anthropic|google}/..."


def _model_match(model: str) -> tuple[str, str] | None:
    """(provider, matched prefix) for a model name, or None."""
    name = model.strip().lower()
    if _O_SERIES.match(name):
        return "openai", name.split("-", 1)[0]
    for prefix, provider in _MODEL_PREFIXES:
        if name.startswith(prefix):
            return provider, prefix
    return None


def provider_for_model(model: str) -> str | None:
    """The provider whose naming scheme `model` follows, or None."""
    match = _model_match(model) if isinstance(model, str) else None
    return match[0] if match else None


def _types(items: Any) -> set[str]:
    """The ``type`` values of a list of JSON objects."""
    if not isinstance(items, list):
        return set()
    return {i["type"] for i in items if isinstance(i, Mapping) and isinstance(i.get("type"), str)}


def _message_signals(messages: list[Any], found: dict[str, list[str]]) -> None:
    """Add what the messages' roles, fields and content blocks say about their API."""
    for msg in messages:
        if not isinstance(msg, Mapping):
            continue
        role = msg.get("role")
        if role in _OPENAI_ROLES:
            found["openai"].append(f"a message with role {role!r}")
        if "tool_calls" in msg or "tool_call_id" in msg:
            found["openai"].append("tool_calls/tool_call_id in a message")
        blocks = _types(msg.get("content"))
        if blocks & _ANTHROPIC_BLOCKS:
            found["anthropic"].append(f"{sorted(blocks & _ANTHROPIC_BLOCKS)[0]} content block")
        if blocks & _OPENAI_BLOCKS:
            found["openai"].append(f"{sorted(blocks & _OPENAI_BLOCKS)[0]} content block")
        if "image" in blocks:  # Anthropic: {"type": "image", "source": {...}}
            found["anthropic"].append("image content block")


def _body_signals(body: Mapping[str, Any]) -> dict[str, list[str]]:
    """Provider -> the body features that only that provider's API has."""
    found: dict[str, list[str]] = {"google": [], "anthropic": [], "openai": []}
    for provider, keys in (
        ("google", _GOOGLE_BODY_KEYS),
        ("anthropic", _ANTHROPIC_BODY_KEYS),
        ("openai", _OPENAI_BODY_KEYS),
    ):
        found[provider].extend(f"top-level {k!r}" for k in keys if k in body)
    content = body.get("content")
    if isinstance(content, Mapping) and "parts" in content:  # Gemini embedContent
        found["google"].append("'content' with 'parts'")
    requests = body.get("requests")
    first = requests[0] if isinstance(requests, list) and requests else None
    if isinstance(first, Mapping) and ("content" in first or "contents" in first):
        found["google"].append("'requests' of contents")  # batchEmbedContents
    messages = body.get("messages")
    if isinstance(messages, list):
        _message_signals(messages, found)
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, Mapping):
            continue
        if "input_schema" in tool or re.search(r"_\d{8}$", str(tool.get("type", ""))):
            found["anthropic"].append("a tool with input_schema or a dated tool type")
        elif "function" in tool or tool.get("type") == "function":
            found["openai"].append("a function tool")
        elif "functionDeclarations" in tool or "function_declarations" in tool:
            found["google"].append("a tool with functionDeclarations")
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") in _ANTHROPIC_TOOL_CHOICES:
        found["anthropic"].append(f"tool_choice of type {choice.get('type')!r}")
    return found


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers keyed by lower-cased name (callers may pass any mapping)."""
    try:
        return {str(k).lower(): str(v) for k, v in headers.items()}
    except (AttributeError, TypeError):
        return {}


def _header_signal(h: dict[str, str]) -> tuple[str, str] | None:
    """(provider, reason) from provider-specific headers or the shape of an API key."""
    for name, provider in _HEADER_PROVIDERS:
        if name in h:
            return provider, f"header {name!r} is sent only to {provider}"
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
    for marker, provider in _AGENTS:
        if marker in agent:
            reason = f"user-agent {h['user-agent']!r} is {provider}'s SDK"
            return Detection(provider, reason, tuple(looked))
    looked.append("user-agent names no provider SDK")
    return Detection(None, "no signal identifies the provider", tuple(looked))
