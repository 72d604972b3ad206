"""Token usage, normalized across providers.

Each provider counts differently (OpenAI's prompt_tokens include cached tokens,
Anthropic's input_tokens exclude them, Gemini's candidatesTokenCount excludes
thoughts). `Usage` holds one meaning for all: totals, with the cached,
cache-write and reasoning parts as subsets, every other billed quantity (audio and
image tokens, web searches, characters, seconds) under the price catalog's own unit
names in `extra`, and the provider's usage object kept verbatim in `raw`.

Where a provider bills one call as several sampling steps (Anthropic's
`usage.iterations`: compaction, advisor sub-inferences), `steps` lists them: each is
priced on its own (its own model, its own long-context tier), and the totals are
their sums. How each provider's wire maps onto this lives in `core/providers/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

__all__ = ["MAX_TOKENS_COUNT", "Step", "Usage", "count", "first", "obj"]

# No call has this many tokens; a larger count is garbage that SQLite's int64 can't hold.
MAX_TOKENS_COUNT = 10**12

# Billed quantities other than the core token counts, by the catalog's usage keys
# (genai-prices units). Anything else a provider reports stays in `raw` only.
EXTRA_KEYS = frozenset(
    {
        "input_audio_tokens",
        "input_image_tokens",
        "input_video_tokens",
        "input_text_tokens",
        "cache_audio_read_tokens",
        "cache_image_read_tokens",
        "cache_video_read_tokens",
        "cache_text_read_tokens",
        "input_tool_tokens",
        "output_audio_tokens",
        "output_image_tokens",
        "output_video_tokens",
        "output_text_tokens",
        "web_searches",
        "storage_searches",
        "code_executions",
        "input_characters",
        "audio_seconds",
        "input_audio_seconds",
        "images",
    }
)
TOOL_KEYS = ("web_searches", "storage_searches", "code_executions")
"""Server-side tool calls, billed per call: the row's `tool_fees_usd`."""


@dataclass(frozen=True, slots=True)
class Step:
    """One separately billed sampling step of a call (an Anthropic usage iteration)."""

    kind: str
    """The provider's name for it: "message", "compaction", "advisor_message", ..."""
    model: str | None
    """The model that ran it, when not the call's own (an advisor)."""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0


@dataclass(slots=True)
class Usage:
    """Billed quantities of one call: totals with their billed-differently subsets."""

    input_tokens: int = 0
    """All prompt tokens, including cached, cache-write and media ones."""
    output_tokens: int = 0
    """All generated tokens, including reasoning/thinking, audio and image ones."""
    cached_tokens: int = 0
    """Part of input_tokens read from the provider's prompt cache."""
    cache_write_tokens: int = 0
    """Part of input_tokens written to the provider's prompt cache (every TTL)."""
    reasoning_tokens: int = 0
    """Part of output_tokens spent on reasoning/thinking."""
    cache_write_1h_tokens: int = 0
    """Part of cache_write_tokens written with a one-hour TTL (Anthropic)."""
    extra: dict[str, int] = field(default_factory=dict)
    """Other billed quantities by catalog unit name (input_audio_tokens, web_searches...)."""
    steps: tuple[Step, ...] = ()
    """Separately billed sampling steps; empty when the call is one step."""
    service_tier: str | None = None
    """The tier the provider says served the call (flex, priority, ...), when not standard."""
    raw: dict[str, Any] | None = field(default=None, compare=False)
    """The provider's usage object exactly as reported (last one seen in a stream)."""

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the full input price."""
        return max(self.input_tokens - self.cached_tokens - self.cache_write_tokens, 0)

    @property
    def tool_calls(self) -> dict[str, int]:
        """Server-side tool calls billed per call (web searches, code executions)."""
        return {k: self.extra[k] for k in TOOL_KEYS if self.extra.get(k)}

    def to_json(self) -> dict[str, Any]:
        """The normalized quantities (not `raw`) as a JSON-safe dict, zeros left out."""
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("input_tokens", self.input_tokens),
                ("output_tokens", self.output_tokens),
                ("cached_tokens", self.cached_tokens),
                ("cache_write_tokens", self.cache_write_tokens),
                ("cache_write_1h_tokens", self.cache_write_1h_tokens),
                ("reasoning_tokens", self.reasoning_tokens),
            )
            if v
        }
        out.update((k, v) for k, v in sorted(self.extra.items()) if v)
        if self.steps:
            out["steps"] = [
                {k: v for k, v in _step_items(s) if v not in (None, 0)} for s in self.steps
            ]
        if self.service_tier:
            out["service_tier"] = self.service_tier
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Usage:
        """The inverse of `to_json` (what the response cache stores)."""
        core = {
            k: int(d.get(k) or 0)
            for k in (
                "input_tokens",
                "output_tokens",
                "cached_tokens",
                "cache_write_tokens",
                "cache_write_1h_tokens",
                "reasoning_tokens",
            )
        }
        extra = {k: int(v) for k, v in d.items() if k in EXTRA_KEYS and v}
        steps = tuple(
            Step(**{k: v for k, v in s.items() if k in _STEP_FIELDS})
            for s in d.get("steps") or ()
            if isinstance(s, Mapping) and "kind" in s
        )
        return cls(
            input_tokens=core["input_tokens"],
            output_tokens=core["output_tokens"],
            cached_tokens=core["cached_tokens"],
            cache_write_tokens=core["cache_write_tokens"],
            cache_write_1h_tokens=core["cache_write_1h_tokens"],
            reasoning_tokens=core["reasoning_tokens"],
            extra=extra,
            steps=steps,
            service_tier=d.get("service_tier"),
        )


def _step_items(step: Step) -> list[tuple[str, Any]]:
    return [(name, getattr(step, name)) for name in _STEP_FIELDS]


# ---------------------------------------------------------------------------
# Reading counts from provider JSON (shared by the provider adapters)
# ---------------------------------------------------------------------------

EMPTY: Mapping[str, Any] = MappingProxyType({})


def count(value: Any) -> int:
    """A token count as int; missing, null, malformed or absurd counts are 0."""
    if type(value) is int:
        n = value
    elif isinstance(value, float) and value > 0 and value < MAX_TOKENS_COUNT:
        n = int(value)
    elif isinstance(value, str) and value.isdigit() and len(value) < 16:
        # Some OpenAI-compatible servers (and Gemini's int64 JSON mapping) send strings.
        n = int(value)
    else:
        return 0
    return n if 0 < n <= MAX_TOKENS_COUNT else 0


def obj(container: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    """The first of `keys` holding a JSON object, else an empty mapping."""
    for key in keys:
        value = container.get(key)
        if isinstance(value, Mapping):
            return value
    return EMPTY


def first(container: Mapping[str, Any], *keys: str) -> int:
    """The count under the first of `keys` that is present (camelCase or snake_case)."""
    for key in keys:
        value = container.get(key)
        if value is not None:
            return count(value)
    return 0


_STEP_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Step))
