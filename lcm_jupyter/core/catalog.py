"""The model catalog: prices from genai-prices, and the model facts routing and budgets need.

Prices come from pydantic's genai-prices, a maintained, dated dataset made for exactly
this job (price history by request date, long-context tiers, service tiers and batch
prices, cache reads and writes, audio/image/video tokens, per-call tool fees). Its
bundled snapshot ships with the package; `jupyter lcm pricing update` stores a newer one
in the data directory (`Catalog.load` prefers it). A model's prices are compiled into a
`RateCard` once per model, day and service tier, so the request path never walks the
dataset: a cost is a dictionary lookup and a few Decimal multiplications.

The facts genai-prices does not carry (output cap, the cheaper sibling a simple request
may be routed to, which reasoning parameters a model takes) sit beside it in
`models.json`, keyed by the catalog's own model ids, so one name identifies a model for
prices, limits and routing alike.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .pricing import CardSource, PriceTable, Rate, RateCard
from .providers import ADAPTERS

__all__ = ["Catalog", "ModelFacts", "default_table", "facts_for", "ladder"]

# Our providers are also genai-prices' ids for them.
PROVIDERS = tuple(ADAPTERS)
STORED_NAME = "genai-prices.json"
"""The file `jupyter lcm pricing update` writes in the lcm data directory."""


def _dataset_version() -> str:
    from importlib.metadata import version

    return version("genai-prices")


class Catalog(CardSource):
    """Rate cards from a genai-prices snapshot (the bundled one, or a stored update)."""

    def __init__(self, providers: list | None = None, *, updated: str | None = None) -> None:
        self._providers = providers
        self._updated = updated
        self._lock = threading.Lock()
        self._compiled: dict[tuple, RateCard] = {}
        self._found: dict[tuple[str, str | None], tuple[Any, Any] | None] = {}
        ver = _dataset_version()
        self.version = f"genai-prices-{ver}" + (f"@{updated}" if updated else "")

    @classmethod
    def bundled(cls) -> Catalog:
        """The snapshot shipped in the genai-prices wheel."""
        return _bundled()

    @classmethod
    def load(cls, stored: Path | None) -> Catalog:
        """The stored update at `stored` when there is a valid one, else the bundled snapshot."""
        if stored is not None and stored.is_file():
            try:
                return cls.from_file(stored)
            except (OSError, ValueError) as exc:
                import logging

                logging.getLogger("lcm_jupyter").warning(
                    "lcm: ignoring the stored price update %s (%s); using the bundled prices",
                    stored,
                    exc,
                )
        return cls.bundled()

    @classmethod
    def from_file(cls, path: Path) -> Catalog:
        """A catalog from a genai-prices data file (the v2 JSON the package updates from)."""
        doc = json.loads(path.read_text(encoding="utf-8"))
        providers, stamp = _parse_document(doc)
        return cls(providers, updated=stamp)

    @property
    def providers(self) -> list:
        """genai-prices Provider objects."""
        if self._providers is None:
            from genai_prices import data_snapshot

            self._providers = data_snapshot.get_snapshot().providers
        return self._providers

    # -- lookup ------------------------------------------------------------------------------

    def _find(self, model: str, provider: str | None) -> tuple[Any, Any] | None:
        """(genai Provider, ModelInfo) for a model name as sent, or None."""
        key = (model, provider)
        if key in self._found:
            return self._found[key]
        found = None
        name = _strip_name(model)
        wanted = [provider] if provider in PROVIDERS else list(PROVIDERS)
        by_id = {p.id: p for p in self.providers}
        for pid in wanted:
            gp = by_id.get(pid)
            if gp is None:
                continue
            info = gp.find_model(name, all_providers=self.providers)
            if info is not None:
                found = (gp, info)
                break
        with self._lock:
            if len(self._found) > 8192:
                self._found.clear()
            self._found[key] = found
        return found

    def card(
        self, model: str, provider: str | None, at: datetime | None, context: tuple
    ) -> RateCard | None:
        """The card of `model` served by `provider` at `at` with service `context`."""
        found = self._find(model, provider)
        if found is None:
            return None
        gp, info = found
        moment = at or datetime.now(timezone.utc)
        # Like genai-prices: service tiers and batch apply to a provider's own models only.
        own = any(info is m for m in gp.models)
        ctx = context if own else ()
        key = (gp.id, info.id, moment.date(), ctx)
        compiled = self._compiled.get(key)
        if compiled is None:
            prices = info.get_prices(moment, dict(ctx) if ctx else None)
            compiled = _compile(_our_provider(gp.id, info.id), info, prices)
            with self._lock:
                self._compiled[key] = compiled
        return compiled

    def cards(self, at: datetime | None = None) -> list[RateCard]:
        """Every model of our three providers (Claude on Vertex is listed once, as Anthropic)."""
        moment = at or datetime.now(timezone.utc)
        out = []
        for gp in self.providers:
            if gp.id not in PROVIDERS:
                continue
            for info in gp.models:
                if gp.id == "google" and info.id.startswith("claude"):
                    continue
                card = self.card(info.id, gp.id, moment, ())
                if card is not None and card.units:
                    out.append(card)
        return out

    def info(self, model: str, provider: str | None = None) -> Any | None:
        """The genai-prices ModelInfo of a model name, or None."""
        found = self._find(model, provider)
        return found[1] if found is not None else None


def _strip_name(model: str) -> str:
    """The bare model id: models/x, publishers/google/models/x, x@version (Vertex)."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    return name.replace("@", "-")


def _our_provider(genai_id: str, model_id: str) -> str:
    """Which of our providers a model belongs to (Claude listed under Google is Vertex's)."""
    if genai_id == "google" and model_id.startswith("claude"):
        return "anthropic"
    return genai_id


def _compile(provider: str, info: Any, prices: Any) -> RateCard:
    """A genai-prices ModelPrice as a RateCard, with the registry's unit dimensions."""
    from genai_prices.types import TieredPrices
    from genai_prices.units import _get_registry

    registry = _get_registry()
    entries = []
    for price_key, value in vars(prices).items():
        if value is None or price_key.startswith("_"):
            continue
        try:
            unit = registry.unit_for_price_key(price_key)
        except KeyError:
            continue  # a price kind newer than this code: genai-prices would warn and skip it
        if isinstance(value, TieredPrices):
            rate = Rate(value.base, tuple((t.start, t.price) for t in value.tiers))
        else:
            rate = Rate(value)
        entries.append((unit.usage_key, unit.per, unit.dimensions, rate))
    return RateCard.build(
        model=info.id,
        provider=provider,
        source="catalog",
        prices=entries,
        context_window=info.context_window,
        notes=info.price_comments,
    )


def _parse_document(doc: Any) -> tuple[list, str | None]:
    """genai-prices Provider objects from a data document, and its stamp if it has one."""
    stamp = None
    if isinstance(doc, Mapping):  # our stored form: {"updated": ..., "providers": [...]}
        stamp = doc.get("updated")
        doc = doc.get("providers")
    if not isinstance(doc, list) or not doc:
        raise ValueError("a genai-prices data file is a non-empty list of providers")
    from genai_prices import types

    parse = getattr(types, "_providers_from_raw", None)
    if parse is None:  # pragma: no cover - a genai-prices release that renamed it
        raise ValueError("this genai-prices release cannot read data files")
    return parse(doc), stamp


@cache
def _bundled() -> Catalog:
    return Catalog()


# --- model facts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a model accepts: the limits a routed request must still fit."""

    model: str
    context: int
    """Prompt plus output tokens."""
    max_output: int
    cheaper: str | None = None
    """The next cheaper model of the same provider that serves simple requests as well."""
    efforts: frozenset[str] = frozenset()
    """OpenAI-style ``reasoning_effort`` values accepted; empty: the parameter is refused."""
    sampling: bool = True
    """Whether temperature/top_p/penalties/logprobs are accepted (OpenAI reasoning models: no)."""
    thinking: str | None = None
    """Claude/Gemini thinking: "budget" (budget_tokens/thinkingBudget), "level" (Gemini 3
    thinkingLevel, budgets too), None (refused)."""


@cache
def _facts() -> Mapping[str, ModelFacts]:
    doc = json.loads(resources.files(__package__).joinpath("models.json").read_text("utf-8"))
    efforts = doc["efforts"]
    out = {}
    for model, entry in doc["models"].items():
        out[model] = ModelFacts(
            model=model,
            context=entry["context"],
            max_output=entry["max_output"],
            cheaper=entry.get("cheaper"),
            efforts=frozenset(efforts.get(entry.get("efforts", ""), ())),
            sampling=entry.get("sampling", True),
            thinking=entry.get("thinking"),
        )
    return MappingProxyType(out)


def facts_for(model_id: str) -> ModelFacts | None:
    """The facts of a catalog model id (as `RateCard.model` names it), or None."""
    return _facts().get(model_id)


def ladder() -> Mapping[str, str]:
    """Catalog model id -> its cheaper sibling, for every model that has one."""
    return MappingProxyType({m: f.cheaper for m, f in _facts().items() if f.cheaper})


def known_facts() -> Iterable[ModelFacts]:
    """Every model with facts."""
    return _facts().values()


def default_table() -> PriceTable:
    """The bundled catalog without overrides (for code that runs without a server)."""
    return _default_table()


@cache
def _default_table() -> PriceTable:
    return PriceTable(Catalog.bundled())


# --- updates ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceChange:
    """One model whose prices differ between two catalogs (a price of None: not listed)."""

    provider: str
    model: str
    before: dict[str, str] | None
    after: dict[str, str] | None


def _price_map(card: RateCard) -> dict[str, str]:
    out = {}
    for unit in card.units:
        value = format(unit.rate.base.normalize(), "f")
        tiers = "".join(f" >{start}:{format(p.normalize(), 'f')}" for start, p in unit.rate.tiers)
        out[unit.key] = value + tiers
    return out


def diff_catalogs(old: Catalog, new: Catalog, at: datetime | None = None) -> list[PriceChange]:
    """The models added, removed or repriced from `old` to `new`, by provider then model."""
    before = {(c.provider, c.model): _price_map(c) for c in old.cards(at)}
    after = {(c.provider, c.model): _price_map(c) for c in new.cards(at)}
    changes = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a != b:
            changes.append(PriceChange(key[0], key[1], a, b))
    return changes


def fetch_document(source: str | None = None, timeout: float = 20.0) -> dict[str, Any]:
    """The genai-prices data at `source` (a URL or a file; default: its published data),
    wrapped with the time it was fetched, as `Catalog.from_file` reads it."""
    import urllib.request

    from genai_prices.update_prices import DEFAULT_UPDATE_URL

    where = source or DEFAULT_UPDATE_URL
    if "://" in where:
        with urllib.request.urlopen(where, timeout=timeout) as response:
            raw = json.loads(response.read())
    else:
        raw = json.loads(Path(where).read_text(encoding="utf-8"))
    if isinstance(raw, Mapping) and "providers" in raw:
        raw = raw["providers"]
    _parse_document(raw)  # refuse what the server could not read
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    return {"updated": stamp, "source": where, "providers": raw}
