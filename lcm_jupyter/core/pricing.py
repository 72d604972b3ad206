"""Exact cost of one call: compiled rate cards, and the table that finds a model's card.

A `RateCard` is what one model costs at one moment, compiled once: for each billed
unit (input tokens, cache reads, audio input tokens, web searches, ...) its price,
possibly tiered by the size of the prompt. Costs are `Decimal` end to end, so a cost
is exact (no float rounding creeps into budgets). A model nobody prices is
*unpriced* (`None`), never a silent 0: a free model has a real price of 0.

Cards come from two places. The catalog (`core/catalog.py`, pydantic's maintained
genai-prices dataset: price history, tiers, service tiers, cache reads and writes,
audio, per-call tool fees) gives every known model; the user's overrides
(`ModelPrice`, stored in `model_pricing`, set with `PUT lcm/api/pricing`) win over it.

How a usage is split over the units mirrors genai-prices: every reported quantity
is billed at its own unit's price when the card has one, else at the price of its
nearest priced ancestor (audio input tokens at the input price when the model has no
audio rate), so that the totals are never billed twice. A tier applies to every token
of its unit once the prompt (`input_tokens`) exceeds the tier's start.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from .providers import ADAPTERS
from .usage import Step, Usage

__all__ = [
    "CallCost",
    "ModelPrice",
    "PriceTable",
    "PricingError",
    "Rate",
    "RateCard",
]

PROVIDERS = frozenset(ADAPTERS)

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

# The units an override prices, with genai-prices' dimensions (a test checks they agree).
TOKENS_IN = (("direction", "input"), ("family", "tokens"))
UNIT_DIMS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "input_tokens": TOKENS_IN,
    "output_tokens": (("direction", "output"), ("family", "tokens")),
    "cache_read_tokens": (*TOKENS_IN, ("token_type", "cache_read")),
    "cache_write_tokens": (*TOKENS_IN, ("token_type", "cache_write")),
}
_TOKEN_PER = 1_000_000
_ZERO = Decimal(0)


class PricingError(ValueError):
    """A price entry or price table is invalid."""


def _canonical(value: Decimal) -> str:
    """Plain-notation string of a Decimal (never '1E+2'), trailing zeros dropped."""
    return format(value.normalize(), "f")


# --- rate cards ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """The price of one unit: a base price, and higher tiers by prompt size."""

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...] = ()
    """(start, price), ascending: `price` applies once the prompt exceeds `start` tokens."""

    def at(self, prompt_tokens: int) -> Decimal:
        """The price for a call whose prompt has `prompt_tokens` tokens."""
        for start, price in reversed(self.tiers):
            if prompt_tokens > start:
                return price
        return self.base


@dataclass(frozen=True, slots=True)
class _Unit:
    key: str
    per: int
    rate: Rate
    below: tuple[str, ...]
    """Priced units more specific than this one: their counts are billed there, not here."""


# Usage fields by catalog unit name.
_CORE_UNITS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cached_tokens"),
    ("cache_write_tokens", "cache_write_tokens"),
    ("cache_write_1h_tokens", "cache_write_1h_tokens"),
    ("output_reasoning_tokens", "reasoning_tokens"),
)


def _quantities(usage: Usage | Step) -> dict[str, int]:
    """The usage as catalog unit -> quantity."""
    out = {unit: getattr(usage, name, 0) for unit, name in _CORE_UNITS}
    extra = getattr(usage, "extra", None)
    if extra:
        out.update(extra)
    return out


@dataclass(frozen=True, slots=True)
class RateCard:
    """What one model costs (at one moment, for one service tier), ready to apply."""

    model: str
    """The catalog's id for the model, or the override's name."""
    provider: str
    source: str
    """"catalog" or "override"."""
    units: tuple[_Unit, ...]
    """Most specific first, so each unit's count can net out what is billed below it."""
    context_window: int | None = None
    notes: str | None = None
    _by_key: dict[str, _Unit] = field(default_factory=dict, compare=False, repr=False)
    # Per-token rates by direction, for worst-case reservations.
    _inputs: list[Rate] = field(default_factory=list, compare=False, repr=False)
    _outputs: list[Rate] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        *,
        model: str,
        provider: str,
        source: str,
        prices: Iterable[tuple[str, int, Mapping[str, str] | Iterable[tuple[str, str]], Rate]],
        context_window: int | None = None,
        notes: str | None = None,
    ) -> RateCard:
        """A card from (unit, per, dimensions, rate) entries."""
        entries = [
            (key, per, frozenset(dict(dims).items()), rate) for key, per, dims, rate in prices
        ]
        units = []
        for key, per, dims, rate in entries:
            below = tuple(k for k, _, d, _ in entries if k != key and dims <= d)
            units.append((len(dims), key, _Unit(key, per, rate, below)))
        units.sort(key=lambda u: (-u[0], u[1]))
        ordered = tuple(u for _, _, u in units)
        card = cls(model, provider, source, ordered, context_window, notes)
        card._by_key.update((u.key, u) for u in ordered)
        for u in ordered:
            if u.per == _TOKEN_PER and u.key.endswith("_tokens"):
                if u.key.startswith(("input", "cache")):
                    card._inputs.append(u.rate)
                elif u.key.startswith("output"):
                    card._outputs.append(u.rate)
        return card

    def rate(self, unit: str) -> Rate | None:
        """The rate of one unit, if this card prices it directly."""
        found = self._by_key.get(unit)
        return found.rate if found is not None else None

    def cost(self, usage: Usage | Step, *, prompt_tokens: int | None = None) -> Decimal:
        """Exact USD cost of `usage` billed at this card (one sampling step's worth)."""
        quantities = _quantities(usage)
        if any(v < 0 for v in quantities.values()):
            raise PricingError(f"negative quantity in {usage!r}")
        tier_basis = usage.input_tokens if prompt_tokens is None else prompt_tokens
        billed: dict[str, int] = {}
        # Summed per divisor and divided once: exact either way, and fewer Decimal divisions.
        sums: dict[int, Decimal] = {}
        for unit in self.units:
            key = unit.key
            if key == "requests":
                count = 1
            else:
                count = quantities.get(key, 0)
                if not count:
                    continue  # nothing of it, so nothing to net out of the units above
                for below in unit.below:
                    count -= billed.get(below, 0)
                # A detail larger than its total (a provider's rounding): bill nothing twice.
                if count <= 0:
                    billed[key] = 0
                    continue
            billed[key] = count
            sums[unit.per] = sums.get(unit.per, _ZERO) + unit.rate.at(tier_basis) * count
        return sum((total / per for per, total in sums.items()), _ZERO)

    def worst_rate(self, direction: str, prompt_tokens: int) -> Decimal:
        """The highest per-token price of any input or output token unit at this prompt size."""
        rates = self._inputs if direction == "input" else self._outputs
        return max((r.at(prompt_tokens) for r in rates), default=_ZERO)

    def tool_fee(self, unit: str) -> Decimal:
        """Price of one server-side tool call of `unit` (web_searches ...), 0 when unpriced."""
        found = self._by_key.get(unit)
        return found.rate.base / found.per if found is not None else Decimal(0)

    def long_context_threshold(self) -> int | None:
        """The prompt size above which the input price changes, if it does."""
        found = self._by_key.get("input_tokens")
        return found.rate.tiers[0][0] if found is not None and found.rate.tiers else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe display form: the common prices by name, the rest under `other`."""

        def price(key: str, tier: bool = False) -> str | None:
            unit = self._by_key.get(key)
            if unit is None:
                return None
            value = (unit.rate.tiers[0][1] if unit.rate.tiers else None) if tier else unit.rate.base
            return None if value is None else _canonical(value * _TOKEN_PER / unit.per)

        named = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        out: dict[str, Any] = {
            "model": self.model,
            "provider": self.provider,
            "input": price("input_tokens"),
            "output": price("output_tokens"),
            "cached_input": price("cache_read_tokens"),
            "cache_write": price("cache_write_tokens"),
            "long_context_threshold": self.long_context_threshold(),
            "input_long": price("input_tokens", True),
            "output_long": price("output_tokens", True),
            "cached_input_long": price("cache_read_tokens", True),
            "source": self.source,
        }
        other = {}
        for unit in self.units:
            if unit.key in named:
                continue
            per = {1_000_000: "per_million", 1000: "per_thousand", 3600: "per_hour"}.get(
                unit.per, f"per_{unit.per}"
            )
            other[unit.key] = {"price": _canonical(unit.rate.base), "unit": per}
        out["other"] = other
        if self.context_window:
            out["context_window"] = self.context_window
        return out


# --- overrides: the user's own prices ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """A price the user sets for one model (an override), USD per million tokens."""

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
    source: str = "override"

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

    def card(self) -> RateCard:
        """This price as a rate card."""
        threshold = self.long_context_threshold

        def rate(base: Decimal, long: Decimal | None) -> Rate:
            if threshold is None or long is None:
                return Rate(base)
            return Rate(base, ((threshold, long),))

        entries = [
            ("input_tokens", rate(self.input, self.input_long)),
            ("output_tokens", rate(self.output, self.output_long)),
        ]
        if self.cached_input is not None:
            entries.append(("cache_read_tokens", rate(self.cached_input, self.cached_input_long)))
        if self.cache_write is not None:
            long_write = None
            if threshold is not None and self.input_long is not None and self.input:
                # Cache writes are a multiplier on the input rate (Anthropic: 1.25x), so
                # they scale with the long input rate (3.75 -> 7.50 for Sonnet 4.x).
                long_write = self.cache_write * self.input_long / self.input
            entries.append(("cache_write_tokens", rate(self.cache_write, long_write)))
        return RateCard.build(
            model=self.model,
            provider=self.provider,
            source="override",
            prices=[(k, _TOKEN_PER, UNIT_DIMS[k], r) for k, r in entries],
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


def _overrides_digest(overrides: Mapping[str, ModelPrice]) -> str:
    """First 8 hex of a SHA-256 over the overrides, independent of their order."""
    entries = []
    for name in sorted(overrides):
        entry = overrides[name].to_dict()
        entry.pop("source", None)
        entries.append(entry)
    blob = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8]


# --- the table ------------------------------------------------------------------------------


class CardSource:
    """Where cards for models nobody overrode come from (the catalog); none by default."""

    version = "none"

    def card(
        self, model: str, provider: str | None, at: datetime | None, context: tuple
    ) -> RateCard | None:
        """The card of `model` as served by `provider` at `at`, or None if unknown."""
        return None

    def cards(self, at: datetime | None = None) -> list[RateCard]:
        """Every model's card, for listing."""
        return []


@dataclass(frozen=True, slots=True)
class Priced:
    """The cost of one call, with the parts worth showing on their own."""

    cost: Decimal
    tool_fees: Decimal
    card: RateCard


@dataclass(frozen=True, slots=True)
class CallCost:
    """A call's booking: `cost` None when its model is unpriced (`unpriced`)."""

    cost: float | None
    tool_fees: float
    savings: float
    unpriced: bool
    priced: Priced | None


_MEMO_LIMIT = 4096


class PriceTable:
    """The catalog with the user's overrides on top; resolution memoized per model and day."""

    __slots__ = ("_catalog", "_memo", "_overrides", "version")

    def __init__(
        self, catalog: CardSource | None = None, overrides: Iterable[ModelPrice] = ()
    ) -> None:
        self._catalog = catalog or CardSource()
        self._overrides: dict[str, ModelPrice] = {}
        for price in overrides:
            if not isinstance(price, ModelPrice):
                raise PricingError(
                    f"overrides must be ModelPrice objects, got {type(price).__name__}"
                )
            self._overrides[price.model.strip().lower()] = price  # later entries win
        base = self._catalog.version
        self.version = f"{base}+{_overrides_digest(self._overrides)}" if self._overrides else base
        # The cache keys are caller-supplied model names: bounded, so a client sending
        # endless distinct names cannot grow memory.
        self._memo: dict[tuple, RateCard | None] = {}

    def __repr__(self) -> str:
        return f"PriceTable(version={self.version!r}, overrides={len(self._overrides)})"

    @property
    def catalog(self) -> CardSource:
        """Where prices not overridden come from."""
        return self._catalog

    def with_overrides(self, overrides: Iterable[ModelPrice]) -> PriceTable:
        """A new table where `overrides` replace or add models (on top of the current ones)."""
        return PriceTable(self._catalog, [*self._overrides.values(), *overrides])

    def overrides(self) -> list[ModelPrice]:
        """The user's prices, sorted by provider then model."""
        return sorted(self._overrides.values(), key=lambda p: (p.provider, p.model))

    def resolve(
        self,
        model: str | None,
        provider: str | None = None,
        *,
        at: datetime | None = None,
        context: Mapping[str, str] | None = None,
    ) -> RateCard | None:
        """The card that prices `model` (served by `provider`, at `at`), or None if unpriced."""
        if not isinstance(model, str) or not model.strip():
            return None
        ctx = tuple(sorted(context.items())) if context else ()
        day = at.date() if at is not None else None
        memo_key = (model, provider, day, ctx)
        hit = self._memo.get(memo_key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        found = self._resolve(model, provider, at, ctx)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[memo_key] = found
        return found

    def _resolve(
        self, model: str, provider: str | None, at: datetime | None, ctx: tuple
    ) -> RateCard | None:
        name = model.strip().lower()
        override = self._override(name) or self._override(_last_segment(name))
        if override is not None:
            return override.card()
        return self._catalog.card(name, provider, at, ctx)

    def _override(self, name: str) -> ModelPrice | None:
        """The override named `name`, or one `name` extends with a date or version tag."""
        found = self._overrides.get(name)
        if found is not None or not self._overrides:
            return found
        cut = name.rfind("-")
        while cut > 0:
            found = self._overrides.get(name[:cut])
            if found is not None:
                return found if _VERSION_TAIL.fullmatch(name[cut + 1 :]) else None
            cut = name.rfind("-", 0, cut)
        return None

    def is_known(self, model: str, provider: str | None = None) -> bool:
        """Whether `model` resolves to a price."""
        return self.resolve(model, provider) is not None

    def price(
        self,
        usage: Usage,
        model: str | None,
        provider: str | None = None,
        *,
        at: datetime | None = None,
        batch: bool = False,
    ) -> Priced | None:
        """The exact cost of a call's usage, or None when its model is unpriced."""
        context: dict[str, str] = {}
        if usage.service_tier:
            context["service_tier"] = usage.service_tier
        if batch:
            context["processing"] = "batch"
        card = self.resolve(model, provider, at=at, context=context)
        if card is None:
            return None
        tools = Decimal(0)
        for unit, n in usage.tool_calls.items():
            tools += card.tool_fee(unit) * n
        if not usage.steps:
            return Priced(card.cost(usage), tools, card)
        # Each step at its own model's card and tier; tool fees once, at the call's card.
        total = tools
        for step in usage.steps:
            stepped = (
                self.resolve(step.model, provider, at=at, context=context) if step.model else card
            )
            if stepped is None:
                return None
            total += stepped.cost(step)
        return Priced(total, tools, card)

    def price_call(
        self,
        usage: Usage,
        *,
        model: str | None,
        requested_model: str | None,
        provider: str | None,
        at: datetime | None,
        routed: bool,
        cache_hit: bool = False,
        batch: bool = False,
    ) -> CallCost:
        """What one call cost and saved, as its log row books it (the pipeline and the
        history seeder both price through here): at the model that answered, else the one
        requested; a routed call saved what the requested model would have cost for the
        same usage, minus the actual; a cache hit spent nothing and saved its whole cost."""
        priced = None
        for name in (model, requested_model):
            priced = self.price(usage, name, provider, at=at, batch=batch)
            if priced is not None:
                break
        if priced is None:
            return CallCost(0.0 if cache_hit else None, 0.0, 0.0, True, None)
        cost, fees, savings = float(priced.cost), float(priced.tool_fees), 0.0
        if routed:
            requested = self.price(usage, requested_model, provider, at=at)
            if requested is not None:
                savings = float(requested.cost - priced.cost)
        if cache_hit:
            savings, cost, fees = savings + cost, 0.0, 0.0
        return CallCost(cost, fees, savings, False, priced)

    def cost(self, model: str, usage: Usage, provider: str | None = None) -> Decimal | None:
        """Exact USD cost of a call, or None when the model is unpriced."""
        priced = self.price(usage, model, provider)
        return None if priced is None else priced.cost

    def rows(self, at: datetime | None = None) -> list[RateCard]:
        """Every card (catalog then overrides replacing theirs), by provider then model."""
        cards = {(c.provider, c.model): c for c in self._catalog.cards(at)}
        for price in self._overrides.values():
            cards[(price.provider, price.model)] = price.card()
        return sorted(cards.values(), key=lambda c: (c.provider, c.model))


_MISS = object()
# What a dated or versioned id adds to its family's name: 20241022, 2024-08-06, 001, latest.
_TAG = r"(?:\d{4}-\d{2}-\d{2}|\d{2}-\d{2}|\d{8}|\d{3,4}|latest|preview|v\d+)"
_VERSION_TAIL = re.compile(rf"{_TAG}(?:-{_TAG})*")


def _last_segment(name: str) -> str:
    """models/gemini-2.5-pro, openai/gpt-4o -> the bare id."""
    return name.rsplit("/", 1)[-1]
