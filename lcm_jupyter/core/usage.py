"""Token usage, normalized across providers.

Each provider counts differently (OpenAI's prompt_tokens include cached tokens,
Anthropic's input_tokens exclude them, Gemini's candidatesTokenCount excludes
thoughts). `Usage` holds one meaning for all: totals, with the cached,
cache-write and reasoning parts as subsets, and the provider's own usage
object kept verbatim in `raw`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(slots=True)
class Usage:
    """Tokens of one call: totals with their billed-differently subsets."""

    input_tokens: int = 0
    """All prompt tokens, including cached and cache-write ones."""
    output_tokens: int = 0
    """All generated tokens, including reasoning/thinking ones."""
    cached_tokens: int = 0
    """Part of input_tokens read from the provider's prompt cache."""
    cache_write_tokens: int = 0
    """Part of input_tokens written to the provider's prompt cache (Anthropic)."""
    reasoning_tokens: int = 0
    """Part of output_tokens spent on reasoning/thinking."""
    raw: dict[str, Any] | None = field(default=None, compare=False)
    """The provider's usage object exactly as reported (last one seen in a stream)."""

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the full input price."""
        return max(self.input_tokens - self.cached_tokens - self.cache_write_tokens, 0)


# ---------------------------------------------------------------------------
# Extraction: provider usage objects -> Usage
# ---------------------------------------------------------------------------

_EMPTY: Mapping[str, Any] = MappingProxyType({})

# Wires whose usage object follows OpenAI's naming (chat/completions use prompt_/completion_,
# Responses uses input_/output_; embeddings only prompt_tokens).
_OPENAI_WIRES = frozenset(
    {"openai.chat", "openai.completions", "openai.responses", "openai.embeddings"}
)
_GOOGLE_WIRES = frozenset({"google.generate", "google.stream", "google.embed"})


# No call has this many tokens; a larger count is garbage that SQLite's int64 can't hold.
MAX_TOKENS_COUNT = 10**12


def _count(value: Any) -> int:
    """A token count as int; missing, null, malformed or absurd counts are 0."""
    if type(value) is int:
        count = value
    elif isinstance(value, float) and value > 0 and value < MAX_TOKENS_COUNT:
        count = int(value)
    elif isinstance(value, str) and value.isdigit() and len(value) < 16:
        # Some OpenAI-compatible servers (and Gemini's int64 JSON mapping) send strings.
        count = int(value)
    else:
        return 0
    return count if 0 < count <= MAX_TOKENS_COUNT else 0


def _obj(container: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    """The first of `keys` holding a JSON object, else an empty mapping."""
    for key in keys:
        value = container.get(key)
        if isinstance(value, Mapping):
            return value
    return _EMPTY


def _first(container: Mapping[str, Any], *keys: str) -> int:
    """The count under the first of `keys` that is present (camelCase or snake_case)."""
    for key in keys:
        value = container.get(key)
        if value is not None:
            return _count(value)
    return 0


def _openai_usage(u: Mapping[str, Any]) -> Usage:
    """Normalize an OpenAI usage object (chat/completions, Responses or embeddings)."""
    inp = _first(u, "prompt_tokens", "input_tokens")
    out = _first(u, "completion_tokens", "output_tokens")
    total = _first(u, "total_tokens")
    # OpenAI's totals are exactly input + output. Some OpenAI-compatible servers (Gemini's
    # compat layer) leave reasoning out of completion_tokens but not out of total_tokens:
    # bill what the total says was generated.
    if total > inp + out:
        out = total - inp
    cached = _first(_obj(u, "prompt_tokens_details", "input_tokens_details"), "cached_tokens")
    reasoning = _first(
        _obj(u, "completion_tokens_details", "output_tokens_details"), "reasoning_tokens"
    )
    return Usage(
        input_tokens=inp,
        output_tokens=max(out, reasoning),
        cached_tokens=min(cached, inp),
        reasoning_tokens=reasoning,
        raw=dict(u),
    )


def _anthropic_usage(u: Mapping[str, Any], prior: Usage | None = None) -> Usage:
    """Normalize an Anthropic usage object, keeping `prior`'s fields it leaves out or zero."""
    # Anthropic's input_tokens exclude cache reads and writes; Usage.input_tokens includes them.
    if prior is None:
        base = write = read = out = reasoning = 0
    else:
        write, read = prior.cache_write_tokens, prior.cached_tokens
        base = prior.input_tokens - write - read
        out, reasoning = prior.output_tokens, prior.reasoning_tokens
    # message_delta repeats the input fields (cumulative) in the current API, as 0 or absent
    # in older ones: only a non-zero value replaces what message_start said.
    base = _count(u.get("input_tokens")) or base
    write = _count(u.get("cache_creation_input_tokens")) or write
    read = _count(u.get("cache_read_input_tokens")) or read
    if u.get("output_tokens") is not None:
        out = _count(u.get("output_tokens"))
    details = _obj(u, "output_tokens_details")
    if details.get("thinking_tokens") is not None:
        reasoning = _count(details.get("thinking_tokens"))
    return Usage(
        input_tokens=base + write + read,
        output_tokens=max(out, reasoning),
        cached_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=reasoning,
        raw=dict(u),
    )


def _google_usage(u: Mapping[str, Any]) -> Usage:
    """Normalize Gemini usageMetadata (camelCase on the wire, snake_case tolerated)."""
    prompt = _first(u, "promptTokenCount", "prompt_token_count")
    tool_prompt = _first(u, "toolUsePromptTokenCount", "tool_use_prompt_token_count")
    # generateContent reports candidatesTokenCount; embedContent's UsageMetadata responseTokenCount.
    visible = _first(
        u,
        "candidatesTokenCount",
        "candidates_token_count",
        "responseTokenCount",
        "response_token_count",
    )
    thoughts = _first(u, "thoughtsTokenCount", "thoughts_token_count")
    cached = _first(u, "cachedContentTokenCount", "cached_content_token_count")
    return Usage(
        input_tokens=prompt + tool_prompt,
        output_tokens=visible + thoughts,
        cached_tokens=min(cached, prompt + tool_prompt),
        reasoning_tokens=thoughts,
        raw=dict(u),
    )


def _google_metadata(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The usageMetadata object of a Gemini response or stream chunk, if any."""
    u = body.get("usageMetadata")
    if u is None:
        u = body.get("usage_metadata")
    return u if isinstance(u, Mapping) else None


def usage_from_body(wire: str, body: Mapping[str, Any]) -> Usage | None:
    """Usage of a complete (non-streamed) JSON response body; None when it reports none."""
    if not isinstance(body, Mapping):
        return None
    if wire in _GOOGLE_WIRES:
        u = _google_metadata(body)
        return None if u is None else _google_usage(u)
    u = body.get("usage")
    if not isinstance(u, Mapping):
        return None
    if wire in _OPENAI_WIRES:
        return _openai_usage(u)
    if wire == "anthropic.messages":
        return _anthropic_usage(u)
    return None


def usage_from_event(wire: str, event: Mapping[str, Any], prior: Usage | None) -> Usage | None:
    """Usage known after one streamed event/chunk, given what was known before it."""
    if not isinstance(event, Mapping):
        return prior
    if wire == "anthropic.messages":
        kind = event.get("type")
        if kind == "message_start":
            u = _obj(_obj(event, "message"), "usage")
            return _anthropic_usage(u) if u else prior
        u = _obj(event, "usage")
        # message_delta: cumulative output, possibly repeated input/cache counts.
        return _anthropic_usage(u, prior) if u else prior
    if wire == "openai.responses":
        # response.completed / .incomplete / .failed carry the final usage in `response`.
        u = _obj(_obj(event, "response"), "usage")
        return _openai_usage(u) if u else prior
    # Chat/completions: the final chunk; Gemini: every chunk, the last one wins.
    return usage_from_body(wire, event) or prior


def response_model(wire: str, body: Mapping[str, Any]) -> str | None:
    """The model the upstream says answered (``model``, ``message.model``, ``modelVersion``)."""
    if not isinstance(body, Mapping):
        return None
    if wire in _GOOGLE_WIRES:
        keys: tuple[str, ...] = ("modelVersion", "model_version", "model")
    else:
        keys = ("model",)
    # Stream events nest the response (Responses) or message (Anthropic message_start).
    for container in (body, _obj(body, "response"), _obj(body, "message")):
        for key in keys:
            value = container.get(key)
            if isinstance(value, str) and value:
                return value
    return None
