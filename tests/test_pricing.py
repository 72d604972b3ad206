"""Pricing: the catalog (genai-prices) compiled into rate cards, overrides, exact costs.

The catalog's own calculator (`genai_prices.calc_price`) is the reference: our compiled
cards must give the very same Decimal for any usage, on every model of our three
providers, with tiers, service tiers and batch prices. What genai-prices does not model
(one step's prompt deciding the tier, steps at another model's price) is checked by hand.
"""

from __future__ import annotations

import json
import random
import re
import warnings
from datetime import datetime, timezone
from decimal import Decimal

import genai_prices
import pytest

from lcm_jupyter.core.catalog import Catalog, default_table, diff_catalogs, facts_for, ladder
from lcm_jupyter.core.pricing import ModelPrice, PriceTable, PricingError, Rate
from lcm_jupyter.core.usage import Step, Usage

D = Decimal
NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return default_table()


def _genai_usage(u: Usage) -> genai_prices.Usage:
    return genai_prices.Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cached_tokens,
        cache_write_tokens=u.cache_write_tokens,
        cache_write_1h_tokens=u.cache_write_1h_tokens,
        output_reasoning_tokens=u.reasoning_tokens,
        **u.extra,
    )


def _random_usage(rng: random.Random) -> Usage:
    inp = rng.choice([0, 7, 1000, 150_000, 199_999, 200_001, 250_000, 300_000])
    cached = rng.randint(0, inp // 2)
    written = rng.randint(0, (inp - cached) // 2)
    hour = rng.randint(0, written)
    audio = rng.randint(0, (inp - cached - written) // 3)
    image = rng.randint(0, (inp - cached - written - audio) // 3)
    out = rng.randint(0, 5000)
    out_audio = rng.randint(0, out // 3)
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cached_tokens=cached,
        cache_write_tokens=written,
        cache_write_1h_tokens=hour,
        reasoning_tokens=rng.randint(0, out - out_audio),
        extra={
            "input_audio_tokens": audio,
            "input_image_tokens": image,
            "cache_audio_read_tokens": 0,
            "cache_image_read_tokens": 0,
            "output_audio_tokens": out_audio,
            "web_searches": rng.randint(0, 3),
        },
    )


CONTEXTS = [(), (("service_tier", "flex"),), (("service_tier", "priority"),)]
CONTEXTS += [(("processing", "batch"),)]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
def test_cards_cost_exactly_what_genai_prices_computes(provider: str) -> None:
    catalog = Catalog.bundled()
    rng = random.Random(provider)
    (gp,) = [p for p in catalog.providers if p.id == provider]
    checked = 0
    for info in gp.models:
        for ctx in CONTEXTS:
            card = catalog.card(info.id, provider, NOW, ctx)
            if card is None or card.model != info.id:
                continue  # a name its own entry does not match (fine-tune prefixes)
            for _ in range(8):
                usage = _random_usage(rng)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    expected = info.calc_price(
                        _genai_usage(usage),
                        gp,
                        genai_request_timestamp=NOW,
                        price_context=dict(ctx) or None,
                    ).total_price
                assert card.cost(usage) == expected, (info.id, ctx, usage)
                checked += 1
    assert checked > 500


@pytest.mark.parametrize(
    ("name", "provider", "model"),
    [
        ("gpt-4o-2024-08-06", "openai", "gpt-4o"),
        ("gpt-5.2-2025-12-11", "openai", "gpt-5.2"),
        ("o3-mini-2025-01-31", "openai", "o3-mini"),
        ("claude-sonnet-4-5-20250929", "anthropic", "claude-sonnet-4-5"),
        ("claude-sonnet-4-6", "anthropic", "claude-sonnet-4-6"),
        ("claude-opus-4-8", "anthropic", "claude-opus-4-8"),
        ("claude-3-5-haiku-20241022", "anthropic", "claude-3-5-haiku-latest"),
        ("claude-sonnet-4@20250514", "anthropic", "claude-sonnet-4-0"),  # Vertex AI
        ("models/gemini-2.0-flash-001", "google", "gemini-2.0-flash"),
        ("gemini-3-flash-preview", "google", "gemini-3-flash-preview"),
        ("gemini-3.1-pro-preview", "google", "gemini-3.1-pro-preview"),
        ("publishers/google/models/gemini-2.5-pro", "google", "gemini-2.5-pro"),
    ],
)
def test_real_names_resolve_to_their_catalog_model(name, provider, model, table) -> None:
    card = table.resolve(name, provider)
    assert card is not None and card.model == model and card.source == "catalog"
    # Without the provider the name still finds its model (detected by the catalog).
    assert table.resolve(name).model == model


@pytest.mark.parametrize("name", ["my-own-model", "", "   ", "gpt-99-ultra-mega"])
def test_unknown_names_stay_unpriced(table, name) -> None:
    assert table.resolve(name, "openai") is None
    assert table.price(Usage(input_tokens=10), name, "openai") is None


def test_non_string_model_is_unpriced(table) -> None:
    assert table.resolve(None) is None
    assert table.resolve(42) is None  # type: ignore[arg-type]


def test_exact_figures_by_hand(table) -> None:
    # gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out per 1M.
    usage = Usage(input_tokens=1117, output_tokens=46, cached_tokens=1024)
    assert table.cost("gpt-4o-mini", usage) == D("0.00011835")
    # Claude Sonnet 4.5: 5-minute writes at $3.75, 1-hour writes at $6, reads at $0.30.
    claude = Usage(
        input_tokens=2095 + 2051 + 10000,
        output_tokens=503,
        cached_tokens=10000,
        cache_write_tokens=2051,
        cache_write_1h_tokens=1000,
    )
    expected = 2095 * D(3) + 1051 * D("3.75") + 1000 * D(6) + 10000 * D("0.3") + 503 * D(15)
    assert table.cost("claude-sonnet-4-5", claude, "anthropic") == expected / 10**6


def test_long_context_tier_applies_to_the_whole_call_once_the_prompt_exceeds_it(table) -> None:
    card = table.resolve("gemini-2.5-pro", "google")
    assert card.long_context_threshold() == 200_000
    at = Usage(input_tokens=200_000, output_tokens=1000)
    over = Usage(input_tokens=200_001, output_tokens=1000)
    assert card.cost(at) == (200_000 * D("1.25") + 1000 * D(10)) / 10**6
    assert card.cost(over) == (200_001 * D("2.5") + 1000 * D(15)) / 10**6


def test_steps_are_priced_each_at_its_model_and_tier(table) -> None:
    # Sonnet 4.5 has a 200k tier: three steps of 150k stay at base rates although the
    # call's summed input (450k) is far above it.
    steps = tuple(Step("message", None, 150_000, 100) for _ in range(3))
    usage = Usage(input_tokens=450_000, output_tokens=300, steps=steps)
    priced = table.price(usage, "claude-sonnet-4-5", "anthropic", at=NOW)
    assert priced.cost == (450_000 * D(3) + 300 * D(15)) / 10**6
    # A compaction step and an advisor step on Opus 4.7, billed on top of the message.
    steps = (
        Step("compaction", None, 180_000, 3500),
        Step("advisor_message", "claude-opus-4-7", 20_000, 600),
        Step("message", None, 23_000, 1000),
    )
    usage = Usage(input_tokens=223_000, output_tokens=5100, steps=steps)
    priced = table.price(usage, "claude-sonnet-4-6", "anthropic", at=NOW)
    sonnet = (180_000 + 23_000) * D(3) + 4500 * D(15)
    opus = 20_000 * D(5) + 600 * D(25)
    assert priced.cost == (sonnet + opus) / 10**6


def test_tool_fees_are_a_component_of_the_cost(table) -> None:
    usage = Usage(input_tokens=1000, output_tokens=100, extra={"web_searches": 3})
    priced = table.price(usage, "claude-sonnet-4-5", "anthropic", at=NOW)
    assert priced.tool_fees == D("0.03")  # $10 per 1,000 searches
    assert priced.cost == (1000 * D(3) + 100 * D(15)) / 10**6 + D("0.03")
    # With steps the fees are still counted once.
    usage.steps = (Step("message", None, 500, 50), Step("message", None, 500, 50))
    assert table.price(usage, "claude-sonnet-4-5", "anthropic", at=NOW).cost == priced.cost


def test_service_tier_and_batch_prices(table) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    standard = table.price(usage, "gpt-5", "openai", at=NOW).cost
    usage.service_tier = "flex"
    flex = table.price(usage, "gpt-5", "openai", at=NOW).cost
    usage.service_tier = "priority"
    priority = table.price(usage, "gpt-5", "openai", at=NOW).cost
    assert (standard, flex, priority) == (D("11.25"), D("5.625"), D("22.5"))
    usage.service_tier = None
    assert table.price(usage, "gpt-5", "openai", at=NOW, batch=True).cost == D("5.625")


def test_price_history_by_request_date(table) -> None:
    # Opus 4.6 had a 200k tier until 2026-03-13, then one price for its 1M context.
    usage = Usage(input_tokens=300_000, output_tokens=0)
    before = datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert table.price(usage, "claude-opus-4-6", "anthropic", at=before).cost == D(3)
    assert table.price(usage, "claude-opus-4-6", "anthropic", at=NOW).cost == D("1.5")


def test_audio_tokens_are_billed_at_their_own_rate(table) -> None:
    usage = Usage(input_tokens=1000, output_tokens=0, extra={"input_audio_tokens": 400})
    # gemini-2.5-flash: text $0.30, audio $1.00 per 1M input tokens.
    assert table.cost("gemini-2.5-flash", usage, "google") == (600 * D("0.3") + 400) / 10**6


# --- overrides ------------------------------------------------------------------------------


def _override(model: str = "gpt-4o-mini", **prices: str) -> ModelPrice:
    d = {"model": model, "provider": "openai", "input": "1", "output": "2", **prices}
    return ModelPrice.from_dict(d)


def test_override_replaces_price_and_version(table: PriceTable) -> None:
    custom = table.with_overrides([_override()])
    assert re.fullmatch(rf"{re.escape(table.version)}\+[0-9a-f]{{8}}", custom.version)
    card = custom.resolve("gpt-4o-mini-2024-07-18")
    assert card.source == "override" and card.rate("input_tokens").base == D("1")
    assert custom.cost("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=500)) == D("0.002")
    # the catalog table is untouched
    assert table.cost("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=500)) == D("0.00045")
    assert len(custom.rows()) == len(table.rows())


def test_override_version_is_deterministic(table: PriceTable) -> None:
    a, b = _override("gpt-4o-mini"), _override("gpt-5")
    v1 = table.with_overrides([a, b]).version
    assert v1 == table.with_overrides([b, a]).version
    assert v1 == table.with_overrides([a]).with_overrides([b]).version
    same = ModelPrice.from_dict(
        {"model": "GPT-4o-mini", "provider": "openai", "input": "1.00", "output": 2}
    )
    assert table.with_overrides([same]).version == table.with_overrides([a]).version
    other = _override("gpt-4o-mini", input="1.01")
    assert table.with_overrides([other]).version != table.with_overrides([a]).version
    assert table.with_overrides([]).version == table.version


def test_override_adds_a_model_and_its_dated_ids(table: PriceTable) -> None:
    custom = table.with_overrides(
        [
            ModelPrice.from_dict(
                {"model": "my-model", "provider": "openai", "input": "0.5", "output": "1.5"}
            )
        ]
    )
    assert table.resolve("my-model") is None
    assert custom.resolve("my-model-2025-01-01").model == "my-model"
    assert custom.resolve("my-model-turbo") is None  # another model, not a version
    assert custom.cost("my-model", Usage(input_tokens=2000, output_tokens=1000)) == D("0.0025")


def test_override_without_cache_prices_bills_them_at_the_input_rate(table) -> None:
    custom = table.with_overrides(
        [
            ModelPrice.from_dict(
                {"model": "claude-opus-4-0", "provider": "anthropic", "input": "10", "output": "50"}
            )
        ]
    )
    usage = Usage(input_tokens=1000, output_tokens=0, cached_tokens=500, cache_write_tokens=200)
    assert custom.cost("claude-opus-4-0", usage) == D("0.01")


def test_override_long_tier_scales_cache_writes(table) -> None:
    price = ModelPrice.from_dict(
        {
            "model": "m",
            "provider": "anthropic",
            "input": "3",
            "output": "15",
            "cache_write": "3.75",
            "long_context_threshold": 200_000,
            "input_long": "6",
            "output_long": "22.5",
        }
    )
    card = price.card()
    assert card.rate("cache_write_tokens") == Rate(D("3.75"), ((200_000, D("7.5")),))
    assert card.to_dict()["long_context_threshold"] == 200_000


def test_override_must_be_model_price(table: PriceTable) -> None:
    with pytest.raises(PricingError):
        table.with_overrides([{"model": "gpt-5"}])  # type: ignore[list-item]


def test_resolution_is_memoized_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import lcm_jupyter.core.pricing as pricing

    monkeypatch.setattr(pricing, "_MEMO_LIMIT", 8)
    table = PriceTable(Catalog.bundled())
    first = table.resolve("gpt-4o", "openai", at=NOW)
    assert table.resolve("gpt-4o", "openai", at=NOW) is first
    for i in range(50):
        table.resolve(f"unknown-{i}")
    assert len(table._memo) <= 8


# --- ModelPrice validation ----------------------------------------------------------------


def test_override_round_trip() -> None:
    price = _override(cached_input="0.5", cache_write="1.25")
    d = price.to_dict()
    json.dumps(d)
    assert ModelPrice.from_dict(d) == price


def test_to_dict_prices_are_plain_strings() -> None:
    price = ModelPrice.from_dict(
        {"model": "m", "provider": "google", "input": "0.0000001", "output": "100"}
    )
    d = price.to_dict()
    assert d["input"] == "0.0000001" and d["output"] == "100"
    assert d["source"] == "override"


def test_from_dict_accepts_numbers() -> None:
    price = ModelPrice.from_dict({"model": "m", "provider": "openai", "input": 0.1, "output": 3})
    assert price.input == D("0.1") and price.output == D("3")


def _entry(**fields: object) -> dict:
    base: dict = {"model": "m", "provider": "google", "input": "1", "output": "1"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


LONG = {"long_context_threshold": 1000, "input_long": "2", "output_long": "2"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry(model=None), "model"),
        (_entry(provider=None), "provider"),
        (_entry(provider="mistral"), "unknown provider"),
        (_entry(input=None), "input"),
        (_entry(output=None), "output"),
        (_entry(input="-1"), "negative"),
        (_entry(output="abc"), "not a number"),
        (_entry(input="NaN"), "finite"),
        (_entry(input="Infinity"), "finite"),
        (_entry(input=True), "number"),
        (_entry(input=[1]), "number"),
        (_entry(cached="0.1"), "unknown field"),
        (_entry(cached_input="-0.1"), "negative"),
        (_entry(input_long="2"), "long_context_threshold"),
        (_entry(long_context_threshold=1000), "input_long"),
        (_entry(cached_input="0.1", **LONG), "cached_input_long"),
        (_entry(**{**LONG, "long_context_threshold": -5}), "positive integer"),
        (_entry(**{**LONG, "long_context_threshold": "many"}), "positive integer"),
    ],
)
def test_from_dict_rejects(entry: dict, message: str) -> None:
    with pytest.raises(PricingError, match=message):
        ModelPrice.from_dict(entry)


def test_direct_construction_is_validated() -> None:
    assert issubclass(PricingError, ValueError)
    with pytest.raises(PricingError):
        ModelPrice("m", "openai", 0.1, D("1"))  # type: ignore[arg-type]
    with pytest.raises(PricingError):
        ModelPrice("m", "openai", D("1"), D("-1"))


# --- the catalog's rows, facts and updates --------------------------------------------------


def _raw(value):
    """genai-prices objects back in the JSON form its data files (and updates) use."""
    import dataclasses
    from datetime import date, time

    from genai_prices.types import ModelPrice as GenaiPrice

    if isinstance(value, list):
        return [_raw(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, GenaiPrice):
        return {k: _raw(v) for k, v in vars(value).items() if v is not None and k[0] != "_"}
    if dataclasses.is_dataclass(value):
        return {
            f.name.rstrip("_"): _raw(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.init and f.name[0] != "_" and getattr(value, f.name) is not None
        }
    return value


def test_rows_list_every_provider_sorted_and_json_safe(table) -> None:
    rows = table.rows(NOW)
    assert len(rows) > 150
    assert {r.provider for r in rows} == {"openai", "anthropic", "google"}
    assert rows == sorted(rows, key=lambda r: (r.provider, r.model))
    for row in rows[:50]:
        json.dumps(row.to_dict())


def test_every_fact_names_a_catalog_model_and_a_cheaper_sibling() -> None:
    table = default_table()
    for source, target in ladder().items():
        src, dst = table.resolve(source), table.resolve(target)
        assert (src.model, dst.model) == (source, target)
        assert src.provider == dst.provider
        assert facts_for(target) is not None


def test_an_update_file_replaces_the_bundled_prices_and_the_diff_says_what_changed(
    tmp_path,
) -> None:
    bundled = Catalog.bundled()
    raw = _raw(bundled.providers)
    for provider in raw:
        if provider["id"] == "openai":
            for model in provider["models"]:
                if model["id"] == "gpt-4o-mini":
                    model["prices"]["input_mtok"] = "0.2"
    path = tmp_path / "genai-prices.json"
    path.write_text(json.dumps({"updated": "2026-12-01T00:00Z", "providers": raw}))
    updated = Catalog.load(path)
    assert updated.version.endswith("@2026-12-01T00:00Z")
    card = updated.card("gpt-4o-mini", "openai", NOW, ())
    assert card.rate("input_tokens").base == D("0.2")
    (change,) = diff_catalogs(bundled, updated, NOW)
    assert (change.provider, change.model) == ("openai", "gpt-4o-mini")
    assert (change.before["input_tokens"], change.after["input_tokens"]) == ("0.15", "0.2")
    # A broken file is ignored: the bundled prices stay.
    path.write_text("not json")
    assert Catalog.load(path) is bundled


def test_the_cli_updates_the_catalog_from_a_file_and_says_what_changed(
    tmp_path, monkeypatch, capsys
) -> None:
    from lcm_jupyter import cli

    raw = _raw(Catalog.bundled().providers)
    for provider in raw:
        if provider["id"] == "anthropic":
            provider["models"] = [m for m in provider["models"] if m["id"] != "claude-3-haiku"]
    source = tmp_path / "data.json"
    source.write_text(json.dumps(raw))
    target = tmp_path / "lcm" / "genai-prices.json"
    monkeypatch.setenv("LCM_PRICE_CATALOG_FILE", str(target))
    monkeypatch.setenv("LCM_DB_PATH", str(tmp_path / "lcm.sqlite3"))
    assert cli.main(["pricing", "update", "--from", str(source)]) == 0
    out = capsys.readouterr().out
    assert f"in {target}" in out and "- anthropic/claude-3-haiku" in out
    assert Catalog.load(target).card("claude-3-haiku", "anthropic", NOW, ()) is None
    # The listing now prices from the stored catalog.
    assert cli.main(["pricing", "--provider", "anthropic", "--model", "claude-3-*"]) == 0
    listed = capsys.readouterr().out
    assert "claude-3-5-sonnet" in listed and "claude-3-haiku " not in listed
    # Offline: nothing changes, the message says so, and --offline-ok keeps the exit code 0.
    missing = str(tmp_path / "nowhere.json")
    assert cli.main(["pricing", "update", "--from", missing]) == 1
    assert cli.main(["pricing", "update", "--from", missing, "--offline-ok"]) == 0
    assert "the current prices stay in use" in capsys.readouterr().err
    assert Catalog.load(target).version.startswith("genai-prices-")
