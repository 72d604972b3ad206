"""Pricing service: a dated price table and exact Decimal cost of one call.

Prices are USD per million tokens, kept as `Decimal` end to end so a cost is
exact (no float rounding creeps into budgets). A model the table cannot place
is *unpriced* (`None`), never a silent 0: a free model has a real price of 0.

Name resolution is deliberately conservative. After exact ids and aliases, a
name only resolves to the longest family id it starts with at a `-` boundary
when the rest of the name looks like a version tag (a date, a `-001`/`-0125`
snapshot, `-latest`, `-preview`, a Gemma size). Anything else (`-realtime`,
`-audio`, `-exp`, `claude-opus-4-6`, `gpt-6-ultra`) stays unpriced rather than
being billed at a neighbouring family's price.

Not modelled (the `Usage` object does not carry them): Anthropic 1-hour cache
writes (2x input; priced here as 5-minute writes, 1.25x), OpenAI Batch/Flex/
Priority tiers, Gemini cache storage per hour, and audio-input rates.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any

from .usage import Usage

__all__ = ["ModelPrice", "PriceTable", "PricingError", "cost_for"]

PROVIDERS = frozenset({"openai", "anthropic", "google"})
SOURCES = frozenset({"bundled", "override"})

_PRICE_FIELDS = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "input_long",
    "output_long",
    "cached_input_long",
)
_REQUIRED_PRICES = frozenset({"input", "output"})
_LONG_FIELDS = ("input_long", "output_long", "cached_input_long")
# Keys a price entry may carry besides the prices; anything else is most likely a
# typo ("cached" for "cached_input") that would silently drop a discount.
_META_FIELDS = frozenset(
    {"model", "provider", "long_context_threshold", "source", "notes", "aliases"}
)
_ALLOWED_FIELDS = _META_FIELDS | frozenset(_PRICE_FIELDS)

_MILLION_EXP = -6  # prices are per 1e6 tokens; scaleb shifts the exponent exactly

# Version-tag grammar for the prefix fallback. Dates appear as 20241022,
# 2024-08-06, 05-20 (preview-05-20), 09-2025; snapshots as 001 or 0125.
_DATE = r"(?:\d{4}-\d{2}-\d{2}|\d{2}-\d{2}|\d{2}-\d{4}|\d{8}|\d{3,4})"
_TAG = rf"(?:{_DATE}|latest|preview|v\d+)"
_SUFFIX_RE = re.compile(rf"{_TAG}(?:-{_TAG})*")
# Gemma ids add sizes and tuning (gemma-3-27b-it, gemma-3n-e4b-it). Sizes are only
# accepted for Gemma: elsewhere "-8b" names a different, cheaper model.
_GEMMA_TAG = rf"(?:{_TAG}|\d+(?:\.\d+)?[bm]|e\d+b|it|pt)"
_GEMMA_SUFFIX_RE = re.compile(rf"{_GEMMA_TAG}(?:-{_GEMMA_TAG})*")
# OpenRouter spells Claude versions with dots (claude-3.5-sonnet, claude-sonnet-4.5).
_CLAUDE_DOT_RE = re.compile(r"(?<=\d)\.(?=\d)")


class PricingError(ValueError):
    """A price entry or price table is invalid."""


def _canonical(value: Decimal) -> str:
    """Plain-notation string of a Decimal (never '1E+2'), trailing zeros dropped."""
    return format(value.normalize(), "f")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """List prices of one model family, USD per million tokens."""

    model: str
    provider: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    long_context_threshold: int | None = None
    input_long: Decimal | None = None
    output_long: Decimal | None = None
    cached_input_long: Decimal | None = None
    source: str = "bundled"

    def __post_init__(self) -> None:
        # Validate here, not only in from_dict, so a hand-built price cannot
        # smuggle a float or a negative figure into a bill.
        if not isinstance(self.model, str) or not self.model.strip():
            raise PricingError("model must be a non-empty string")
        name = self.model
        if self.provider not in PROVIDERS:
            raise PricingError(
                f"{name}: unknown provider {self.provider!r} (expected one of "
                f"{', '.join(sorted(PROVIDERS))})"
            )
        if self.source not in SOURCES:
            raise PricingError(f"{name}: source must be 'bundled' or 'override'")
        for key in _PRICE_FIELDS:
            value = getattr(self, key)
            if value is None:
                if key in _REQUIRED_PRICES:
                    raise PricingError(f"{name}: {key} price is required")
                continue
            if not isinstance(value, Decimal):
                raise PricingError(f"{name}: {key} must be a Decimal, got {type(value).__name__}")
            if not value.is_finite() or value < 0:
                raise PricingError(f"{name}: {key} must be a non-negative number, got {value}")
        threshold = self.long_context_threshold
        if threshold is None:
            extra = [k for k in _LONG_FIELDS if getattr(self, k) is not None]
            if extra:
                raise PricingError(
                    f"{name}: {', '.join(extra)} given without long_context_threshold"
                )
            return
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
            raise PricingError(f"{name}: long_context_threshold must be a positive integer")
        if self.input_long is None or self.output_long is None:
            raise PricingError(f"{name}: long_context_threshold needs input_long and output_long")
        if self.cached_input is not None and self.cached_input_long is None:
            # Otherwise long cached reads would be billed at an invented rate.
            raise PricingError(f"{name}: cached_input with a long tier needs cached_input_long")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; prices as plain decimal strings."""
        out: dict[str, Any] = {"model": self.model, "provider": self.provider}
        for key in ("input", "output", "cached_input", "cache_write"):
            value = getattr(self, key)
            out[key] = None if value is None else _canonical(value)
        out["long_context_threshold"] = self.long_context_threshold
        for key in _LONG_FIELDS:
            value = getattr(self, key)
            out[key] = None if value is None else _canonical(value)
        out["source"] = self.source
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "override") -> ModelPrice:
        """Build a validated price from a mapping; raise PricingError if it is wrong."""
        if not isinstance(d, Mapping):
            raise PricingError(f"a price entry must be a mapping, got {type(d).__name__}")
        model = d.get("model")
        if not isinstance(model, str) or not model.strip():
            raise PricingError("price entry is missing 'model' (a non-empty string)")
        model = model.strip().lower()
        unknown = sorted(str(k) for k in d if k not in _ALLOWED_FIELDS)
        if unknown:
            raise PricingError(f"{model}: unknown field(s) {', '.join(unknown)}")
        provider = d.get("provider")
        if provider is None:
            raise PricingError(f"{model}: missing 'provider'")
        if not isinstance(provider, str) or provider.strip().lower() not in PROVIDERS:
            raise PricingError(
                f"{model}: unknown provider {provider!r} (expected one of "
                f"{', '.join(sorted(PROVIDERS))})"
            )
        prices: dict[str, Decimal | None] = {}
        for key in _PRICE_FIELDS:
            if key in _REQUIRED_PRICES and d.get(key) is None:
                raise PricingError(f"{model}: missing '{key}' price")
            prices[key] = _parse_price(model, key, d.get(key))
        return cls(
            model=model,
            provider=provider.strip().lower(),
            long_context_threshold=_parse_threshold(model, d.get("long_context_threshold")),
            source=source,
            **prices,  # type: ignore[arg-type]
        )


def _parse_price(model: str, key: str, value: Any) -> Decimal | None:
    """Parse one price (str, int, Decimal or float) into a non-negative Decimal."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise PricingError(f"{model}: {key} must be a number, got {value!r}")
    if isinstance(value, Decimal):
        parsed = value
    elif isinstance(value, int):
        parsed = Decimal(value)
    elif isinstance(value, (str, float)):
        # str(float) is the shortest repr, so 0.1 becomes Decimal("0.1"), not 0.1000000000000000055.
        try:
            parsed = Decimal(str(value).strip())
        except InvalidOperation:
            raise PricingError(f"{model}: {key} is not a number: {value!r}") from None
    else:
        raise PricingError(f"{model}: {key} must be a number, got {type(value).__name__}")
    if not parsed.is_finite():
        raise PricingError(f"{model}: {key} must be finite, got {value!r}")
    if parsed < 0:
        raise PricingError(f"{model}: {key} must not be negative, got {value!r}")
    # "-0" is a valid zero; fold it so it serializes (and hashes) like "0".
    return Decimal(0) if parsed.is_zero() else parsed


def _parse_threshold(model: str, value: Any) -> int | None:
    """Parse long_context_threshold (int or digit string)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PricingError(f"{model}: long_context_threshold must be a positive integer")
    return value


def cost_for(price: ModelPrice, usage: Usage) -> Decimal:
    """Exact USD cost of one call's usage at the given price."""
    uncached = usage.uncached_input_tokens
    cached = usage.cached_tokens
    written = usage.cache_write_tokens
    output = usage.output_tokens  # reasoning tokens are already inside output_tokens
    if min(usage.input_tokens, output, cached, written) < 0:
        raise PricingError(f"negative token count in {usage!r}")
    threshold = price.long_context_threshold
    # Google and Anthropic bill the whole call at the long rates once the prompt
    # (cached and cache-write tokens included) exceeds the threshold.
    if threshold is not None and usage.input_tokens > threshold:
        in_p: Decimal = price.input_long  # type: ignore[assignment]
        out_p: Decimal = price.output_long  # type: ignore[assignment]
        cached_p = price.cached_input_long if price.cached_input is not None else in_p
        if price.cache_write is None:
            write_p = in_p
        elif price.input:
            # Cache writes are a multiplier on the input rate (Anthropic: 1.25x), so
            # they scale with the long input rate (3.75 -> 7.50 for Sonnet 4.x).
            write_p = price.cache_write * in_p / price.input
        else:
            write_p = price.cache_write
    else:
        in_p = price.input
        out_p = price.output
        cached_p = price.cached_input
        write_p = price.cache_write
        if cached_p is None:
            cached_p = in_p
        if write_p is None:
            write_p = in_p
    total = uncached * in_p + output * out_p
    if cached:
        total += cached * cached_p  # type: ignore[operator]
    if written:
        total += written * write_p
    return total.scaleb(_MILLION_EXP)


def _overrides_digest(overrides: Mapping[str, ModelPrice]) -> str:
    """First 8 hex of a SHA-256 over the overrides, independent of their order."""
    entries = []
    for name in sorted(overrides):
        entry = overrides[name].to_dict()
        entry.pop("source", None)  # all overrides; the figures are what matter
        entries.append(entry)
    blob = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8]


_MISS = object()


class PriceTable:
    """An immutable, dated set of model prices with memoized name resolution."""

    # The memo is keyed by caller-supplied model names; cap it so a client
    # sending endless distinct names cannot grow memory without bound.
    _MEMO_LIMIT = 4096

    __slots__ = ("_aliases", "_base_version", "_index", "_memo", "_overrides", "_prices", "version")

    def __init__(
        self,
        version: str,
        prices: Iterable[ModelPrice],
        aliases: Mapping[str, str] | None = None,
        *,
        _base_version: str | None = None,
        _overrides: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        """Build a table; aliases map extra names to family ids in `prices`."""
        self.version = version
        self._base_version = _base_version or version
        self._overrides: dict[str, ModelPrice] = dict(_overrides or {})
        self._prices: dict[str, ModelPrice] = {}
        for price in prices:
            key = price.model.strip().lower()
            if key in self._prices:
                raise PricingError(f"duplicate model {key!r} in price table {version}")
            self._prices[key] = price
        self._aliases: dict[str, str] = {}
        for alias, target in (aliases or {}).items():
            alias_key, target_key = alias.strip().lower(), target.strip().lower()
            if target_key not in self._prices:
                raise PricingError(f"alias {alias!r} points to unknown model {target!r}")
            if alias_key in self._prices:
                # A real entry of that name (e.g. an override) wins over the alias.
                continue
            self._aliases[alias_key] = target_key
        self._index: dict[str, ModelPrice] = dict(self._prices)
        for alias_key, target_key in self._aliases.items():
            self._index[alias_key] = self._prices[target_key]
        self._memo: dict[str, ModelPrice | None] = {}

    def __repr__(self) -> str:
        return f"PriceTable(version={self.version!r}, models={len(self._prices)})"

    def __len__(self) -> int:
        return len(self._prices)

    @classmethod
    def bundled(cls) -> PriceTable:
        """The price table shipped with the package (loaded once)."""
        return _load_bundled()

    @classmethod
    def from_json(cls, text: str, *, source: str = "bundled") -> PriceTable:
        """Parse a price table document (the prices.json format)."""
        # parse_float=Decimal keeps even unquoted numbers exact.
        try:
            doc = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise PricingError(f"price table is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise PricingError("price table must be a JSON object")
        version = doc.get("version")
        if not isinstance(version, str) or not version:
            raise PricingError("price table needs a 'version' string")
        if doc.get("currency") != "USD":
            raise PricingError(f"price table currency must be USD, got {doc.get('currency')!r}")
        if doc.get("unit") != "per_million_tokens":
            raise PricingError(
                f"price table unit must be per_million_tokens, got {doc.get('unit')!r}"
            )
        entries = doc.get("models")
        if not isinstance(entries, list):
            raise PricingError("price table needs a 'models' list")
        prices = []
        aliases: dict[str, str] = {}
        for entry in entries:
            price = ModelPrice.from_dict(entry, source=source)
            prices.append(price)
            entry_aliases = entry.get("aliases") or []
            if not isinstance(entry_aliases, list) or not all(
                isinstance(a, str) and a.strip() for a in entry_aliases
            ):
                raise PricingError(f"{price.model}: aliases must be a list of non-empty strings")
            for alias in entry_aliases:
                key = alias.strip().lower()
                if key in aliases:
                    raise PricingError(f"alias {key!r} listed twice in price table {version}")
                aliases[key] = price.model
        collisions = sorted(set(aliases) & {p.model for p in prices})
        if collisions:
            raise PricingError(f"aliases shadow model ids: {', '.join(collisions)}")
        return cls(version, prices, aliases)

    def with_overrides(self, overrides: Iterable[ModelPrice]) -> PriceTable:
        """A new table where `overrides` replace or add models; version records them."""
        merged = dict(self._overrides)
        for price in overrides:
            if not isinstance(price, ModelPrice):
                raise PricingError(
                    f"overrides must be ModelPrice objects, got {type(price).__name__}"
                )
            merged[price.model.strip().lower()] = price  # later entries win
        if not merged:
            return self
        prices = dict(self._prices)
        prices.update(merged)
        version = f"{self._base_version}+{_overrides_digest(merged)}"
        return PriceTable(
            version,
            prices.values(),
            self._aliases,
            _base_version=self._base_version,
            _overrides=merged,
        )

    def resolve(self, model: str) -> ModelPrice | None:
        """The price of the family `model` belongs to, or None if unknown."""
        hit = self._memo.get(model, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        if not isinstance(model, str):
            return None
        found = self._resolve_uncached(model)
        if len(self._memo) >= self._MEMO_LIMIT:
            self._memo.clear()
        self._memo[model] = found
        return found

    def _resolve_uncached(self, model: str) -> ModelPrice | None:
        """Resolution without the memo: exact, alias, normalized, then version-tag prefix."""
        name = model.strip().lower()
        if not name:
            return None
        # Exact first, so override ids containing '/' or '@' still match verbatim.
        found = self._index.get(name)
        if found is not None:
            return found
        # models/gemini-2.5-pro, openai/gpt-4o, publishers/google/models/... -> last segment.
        name = name.rsplit("/", 1)[-1]
        # Vertex AI writes versions with '@' (claude-sonnet-4@20250514).
        name = name.replace("@", "-")
        if name.startswith("claude"):
            name = _CLAUDE_DOT_RE.sub("-", name)
        found = self._index.get(name)
        if found is not None:
            return found
        return self._resolve_prefix(name)

    def _resolve_prefix(self, name: str) -> ModelPrice | None:
        """Longest known id that `name` extends at a '-' with only a version tag."""
        cut = name.rfind("-")
        while cut > 0:
            head = name[:cut]
            found = self._index.get(head)
            if found is not None:
                tail = name[cut + 1 :]
                grammar = _GEMMA_SUFFIX_RE if head.startswith("gemma") else _SUFFIX_RE
                # Only the longest match counts: a shorter family would be a
                # different model (gpt-4o for gpt-4o-mini-realtime...).
                return found if grammar.fullmatch(tail) else None
            cut = name.rfind("-", 0, cut)
        return None

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """Exact USD cost of a call, or None when the model is unpriced."""
        price = self.resolve(model)
        if price is None:
            return None
        return cost_for(price, usage)

    def rows(self) -> list[ModelPrice]:
        """All model prices sorted by provider, then model."""
        return sorted(self._prices.values(), key=lambda p: (p.provider, p.model))

    def is_known(self, model: str) -> bool:
        """Whether `model` resolves to a priced family."""
        return self.resolve(model) is not None

    def aliases(self) -> dict[str, str]:
        """Alias -> family id map (a copy)."""
        return dict(self._aliases)


@cache
def _load_bundled() -> PriceTable:
    """Read and validate the bundled prices.json once per process."""
    text = resources.files(__package__).joinpath("prices.json").read_text(encoding="utf-8")
    return PriceTable.from_json(text, source="bundled")
