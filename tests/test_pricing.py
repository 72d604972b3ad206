"""Tests for the pricing service: table contents, name resolution and exact costs."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from importlib import resources

import pytest

from lcm_jupyter.core.pricing import ModelPrice, PriceTable, PricingError, cost_for
from lcm_jupyter.core.usage import Usage

D = Decimal


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.bundled()


def _raw_table() -> dict:
    text = resources.files("lcm_jupyter.core").joinpath("prices.json").read_text("utf-8")
    return json.loads(text)


# --- the bundled table --------------------------------------------------------------------

REQUIRED_MODELS = {
    "openai": [
        "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
        "gpt-4o", "gpt-4o-mini", "chatgpt-4o-latest", "o1", "o1-mini", "o1-pro", "o3",
        "o3-mini", "o3-pro", "o4-mini", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo",
        "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
    ],
    "anthropic": [
        "claude-opus-4-1", "claude-opus-4", "claude-opus-4-5", "claude-sonnet-4-5",
        "claude-sonnet-4", "claude-3-7-sonnet", "claude-3-5-sonnet", "claude-haiku-4-5",
        "claude-3-5-haiku", "claude-3-opus", "claude-3-haiku",
    ],
    "google": [
        "gemini-3-pro-preview", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite",
        "gemini-2.0-flash", "gemini-2.0-flash-lite", "gemini-1.5-pro", "gemini-1.5-flash",
        "gemini-1.5-flash-8b", "gemini-embedding-001", "text-embedding-004", "gemma-3",
    ],
}  # fmt: skip


PRICE_FIELDS = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "input_long",
    "output_long",
    "cached_input_long",
)


def test_bundled_header(table: PriceTable) -> None:
    raw = _raw_table()
    assert raw["version"] == "2026-11-01" == table.version
    assert raw["currency"] == "USD"
    assert raw["unit"] == "per_million_tokens"


def test_bundled_is_loaded_once() -> None:
    assert PriceTable.bundled() is PriceTable.bundled()


def test_bundled_has_enough_models_from_every_provider(table: PriceTable) -> None:
    rows = table.rows()
    assert len(rows) >= 45
    assert {r.provider for r in rows} == {"openai", "anthropic", "google"}
    assert all(r.source == "bundled" for r in rows)


@pytest.mark.parametrize(
    ("provider", "model"),
    [(p, m) for p, models in REQUIRED_MODELS.items() for m in models],
)
def test_required_model_present(table: PriceTable, provider: str, model: str) -> None:
    price = table.resolve(model)
    assert price is not None and price.model == model and price.provider == provider


def test_prices_are_strings_in_json() -> None:
    # Strings keep Decimal exact; a JSON float would pass through binary floating point.
    for entry in _raw_table()["models"]:
        for key in PRICE_FIELDS:
            value = entry.get(key)
            assert value is None or isinstance(value, str), (entry["model"], key)


def test_all_prices_non_negative(table: PriceTable) -> None:
    for row in table.rows():
        for key in PRICE_FIELDS:
            value = getattr(row, key)
            assert value is None or (isinstance(value, Decimal) and value >= 0), (row.model, key)


def test_every_family_id_resolves_to_itself(table: PriceTable) -> None:
    for row in table.rows():
        assert table.resolve(row.model) is row
        assert table.resolve(row.model.upper()).model == row.model


def test_every_alias_resolves_to_its_family(table: PriceTable) -> None:
    aliases = table.aliases()
    assert aliases  # the table does carry aliases
    for alias, family in aliases.items():
        assert table.resolve(alias).model == family


def test_rows_sorted_by_provider_then_model(table: PriceTable) -> None:
    rows = table.rows()
    assert rows == sorted(rows, key=lambda r: (r.provider, r.model))


def test_anthropic_cache_multipliers_hold(table: PriceTable) -> None:
    # 5-minute cache write = 1.25x input, cache read = 0.1x input, for every Claude row
    # except Haiku 3, whose published cache prices are rounded (0.30 / 0.03, not 0.3125 / 0.025).
    haiku_3 = table.resolve("claude-3-haiku")
    assert (haiku_3.cache_write, haiku_3.cached_input) == (D("0.30"), D("0.03"))
    for row in table.rows():
        if row.provider == "anthropic" and row is not haiku_3:
            assert row.cache_write == row.input * D("1.25"), row.model
            assert row.cached_input == row.input * D("0.1"), row.model


def test_long_context_tiers_encoded(table: PriceTable) -> None:
    expected = {
        "gemini-3-pro-preview": 200_000,
        "gemini-2.5-pro": 200_000,
        "gemini-1.5-pro": 128_000,
        "claude-sonnet-4": 200_000,
        "claude-sonnet-4-5": 200_000,
    }
    for model, threshold in expected.items():
        price = table.resolve(model)
        assert price.long_context_threshold == threshold
        assert price.input_long > price.input and price.output_long > price.output


def test_free_model_is_priced_zero_not_unknown(table: PriceTable) -> None:
    assert table.is_known("gemma-3")
    cost = table.cost("gemma-3-27b-it", Usage(input_tokens=5000, output_tokens=700))
    assert cost is not None and cost == 0


# --- resolution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # the launch snapshot kept its own price
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-5-chat-latest", "gpt-5"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("o1-2024-12-17", "o1"),
        ("o1-mini-2024-09-12", "o1-mini"),
        ("o1-preview-2024-09-12", "o1"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o3-2025-04-16", "o3"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4-1106-preview", "gpt-4-turbo"),
        ("gpt-4-0125-preview", "gpt-4-turbo"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-4-32k-0613", "gpt-4-32k"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-3-opus-20240229", "claude-3-opus"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-1.5-flash-8b-001", "gemini-1.5-flash-8b"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("gemini-2.5-pro-preview-06-05", "gemini-2.5-pro"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"),
        ("gemma-3-27b-it", "gemma-3"),
        ("gemma-3n-e4b-it", "gemma-3n"),
        # prefixes the SDKs and routers add
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("models/text-embedding-004", "text-embedding-004"),
        ("openai/gpt-4o", "gpt-4o"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("anthropic/claude-3.5-sonnet", "claude-3-5-sonnet"),
        ("google/gemini-2.0-flash", "gemini-2.0-flash"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        # case-insensitive
        ("GPT-4o-Mini", "gpt-4o-mini"),
        ("  Claude-3-Opus-20240229 ", "claude-3-opus"),
    ],
)
def test_resolves_real_names(table: PriceTable, name: str, family: str) -> None:
    price = table.resolve(name)
    assert price is not None, name
    assert price.model == family


@pytest.mark.parametrize(
    "name",
    [
        "gpt-6-ultra",
        "gpt-4o-realtime-preview",  # realtime text is priced differently from gpt-4o
        "gpt-4o-mini-realtime-preview-2024-12-17",
        "gpt-4o-audio-preview",
        "gpt-4o-mini-search-preview",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",  # fine-tunes cost more than the base
        "claude-opus-4-6",  # a new minor version must not price as claude-opus-4
        "claude-sonnet-4-7-20260101",
        "gemini-2.0-flash-exp",  # experimental models were free
        "gemini-2.5-flash-image",
        "gemini-1.5-flash-8b-exp-0924",
        "gpt-4-turbo-ultra",
        "o5",
        "llama-3-70b",
        "",
        "gpt",
    ],
)
def test_unknown_names_stay_unpriced(table: PriceTable, name: str) -> None:
    assert table.resolve(name) is None
    assert not table.is_known(name)
    assert table.cost(name, Usage(input_tokens=100, output_tokens=10)) is None


def test_no_cross_family_resolution(table: PriceTable) -> None:
    assert table.resolve("gpt-4o-mini-2024-07-18").model != "gpt-4o"
    assert table.resolve("gpt-4o-2024-08-06").model != "gpt-4"
    assert table.resolve("o1-mini").model == "o1-mini"
    assert table.resolve("o1-pro").model == "o1-pro"
    assert table.resolve("claude-sonnet-4-5-20250929").model != "claude-sonnet-4"
    assert table.resolve("gemini-2.5-flash-lite").model == "gemini-2.5-flash-lite"


def test_resolution_is_memoized(table: PriceTable) -> None:
    name = "gpt-4o-mini-2024-07-18"
    first = table.resolve(name)
    assert table._memo[name] is first
    assert table.resolve(name) is first
    table.resolve("never-heard-of-it")
    assert table._memo["never-heard-of-it"] is None


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = PriceTable.bundled().with_overrides(
        [ModelPrice("x-model", "openai", D("1"), D("1"), source="override")]
    )
    monkeypatch.setattr(PriceTable, "_MEMO_LIMIT", 50)
    for i in range(500):
        fresh.resolve(f"junk-{i}")
    assert len(fresh._memo) <= 50
    assert fresh.resolve("gpt-4o").model == "gpt-4o"


def test_non_string_model_is_unpriced(table: PriceTable) -> None:
    assert table.resolve(None) is None  # type: ignore[arg-type]


# --- costs (expected figures computed by hand from the table's prices) --------------------


def test_gpt_4o_mini_plain(table: PriceTable) -> None:
    price = table.resolve("gpt-4o-mini")
    assert (price.input, price.output) == (D("0.15"), D("0.60"))
    # 1000 x 0.15 + 500 x 0.60 = 150 + 300 = 450 -> /1e6
    assert table.cost("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=500)) == D("0.00045")


def test_dated_name_costs_like_its_family(table: PriceTable) -> None:
    usage = Usage(input_tokens=1000, output_tokens=500)
    assert table.cost("gpt-4o-mini-2024-07-18", usage) == D("0.00045")
    # gpt-4o proper: 1000 x 2.50 + 500 x 10 = 7500 -> 0.0075 (not the mini price)
    assert table.cost("gpt-4o-2024-08-06", usage) == D("0.0075")


def test_result_is_decimal_and_exact(table: PriceTable) -> None:
    cost = table.cost("gpt-4.1-nano", Usage(input_tokens=1, output_tokens=1))
    assert isinstance(cost, Decimal)
    # 1 x 0.10 + 1 x 0.40 = 0.50 per million -> 0.0000005 exactly
    assert cost == D("0.0000005")
    assert cost_for(table.resolve("o3"), Usage(input_tokens=3, output_tokens=7)) == D("0.000062")


def test_openai_cached_input(table: PriceTable) -> None:
    price = table.resolve("gpt-4o")
    assert (price.input, price.cached_input, price.output) == (D("2.50"), D("1.25"), D("10.00"))
    usage = Usage(input_tokens=10_000, output_tokens=1000, cached_tokens=4000)
    # 6000 x 2.50 + 4000 x 1.25 + 1000 x 10 = 15000 + 5000 + 10000 = 30000 -> 0.03
    assert table.cost("gpt-4o-2024-08-06", usage) == D("0.03")


def test_openai_reasoning_is_not_double_counted(table: PriceTable) -> None:
    price = table.resolve("o3")
    assert (price.input, price.output) == (D("2.00"), D("8.00"))
    usage = Usage(input_tokens=2000, output_tokens=5000, reasoning_tokens=4000)
    # reasoning is inside output_tokens: 2000 x 2 + 5000 x 8 = 44000 -> 0.044
    assert table.cost("o3-2025-04-16", usage) == D("0.044")


def test_no_cached_discount_means_input_price(table: PriceTable) -> None:
    price = table.resolve("gpt-4-turbo")
    assert price.cached_input is None and price.input == D("10.00")
    with_cache = Usage(input_tokens=1000, output_tokens=0, cached_tokens=600)
    without = Usage(input_tokens=1000, output_tokens=0)
    assert table.cost("gpt-4-turbo", with_cache) == table.cost("gpt-4-turbo", without) == D("0.01")


def test_anthropic_cache_read_and_write(table: PriceTable) -> None:
    price = table.resolve("claude-sonnet-4-5")
    assert (price.input, price.output) == (D("3.00"), D("15.00"))
    assert (price.cached_input, price.cache_write) == (D("0.30"), D("3.75"))
    # input_tokens is the total: 2000 uncached + 3000 written + 5000 read
    usage = Usage(
        input_tokens=10_000, output_tokens=1000, cached_tokens=5000, cache_write_tokens=3000
    )
    # 2000 x 3 + 3000 x 3.75 + 5000 x 0.30 + 1000 x 15 = 6000 + 11250 + 1500 + 15000 = 33750
    assert table.cost("claude-sonnet-4-5-20250929", usage) == D("0.03375")


def test_anthropic_thinking_tokens_bill_as_output(table: PriceTable) -> None:
    usage = Usage(input_tokens=1000, output_tokens=3000, reasoning_tokens=2500)
    # claude-haiku-4-5: 1000 x 1 + 3000 x 5 = 16000 -> 0.016
    assert table.cost("claude-haiku-4-5-20251001", usage) == D("0.016")


def test_anthropic_long_context_tier(table: PriceTable) -> None:
    price = table.resolve("claude-sonnet-4")
    assert price.long_context_threshold == 200_000
    assert (price.input_long, price.output_long, price.cached_input_long) == (
        D("6.00"),
        D("22.50"),
        D("0.60"),
    )
    # 250k total input: 150k uncached, 40k cache write, 60k cache read; 2k output.
    usage = Usage(
        input_tokens=250_000, output_tokens=2000, cached_tokens=60_000, cache_write_tokens=40_000
    )
    # 150000 x 6 + 40000 x 7.50 (1.25 x 6) + 60000 x 0.60 + 2000 x 22.50
    # = 900000 + 300000 + 36000 + 45000 = 1281000 -> 1.281
    assert table.cost("claude-sonnet-4-20250514", usage) == D("1.281")


def test_anthropic_just_below_threshold_uses_base_rates(table: PriceTable) -> None:
    usage = Usage(input_tokens=200_000, output_tokens=1000, cached_tokens=100_000)
    # 100000 x 3 + 100000 x 0.30 + 1000 x 15 = 300000 + 30000 + 15000 = 345000
    assert table.cost("claude-sonnet-4-5", usage) == D("0.345")


def test_gemini_long_context_tier_applies_to_whole_call(table: PriceTable) -> None:
    price = table.resolve("gemini-2.5-pro")
    assert (price.input, price.output, price.input_long, price.output_long) == (
        D("1.25"),
        D("10.00"),
        D("2.50"),
        D("15.00"),
    )
    at = Usage(input_tokens=200_000, output_tokens=1000)
    over = Usage(input_tokens=200_001, output_tokens=1000)
    # 200000 x 1.25 + 1000 x 10 = 260000 -> 0.26
    assert table.cost("gemini-2.5-pro", at) == D("0.26")
    # 200001 x 2.50 + 1000 x 15 = 500002.5 + 15000 = 515002.5 -> 0.5150025
    assert table.cost("gemini-2.5-pro", over) == D("0.5150025")


def test_gemini_long_tier_cached_tokens_count_toward_threshold(table: PriceTable) -> None:
    price = table.resolve("gemini-1.5-pro")
    assert (price.input_long, price.cached_input_long, price.output_long) == (
        D("2.50"),
        D("0.625"),
        D("10.00"),
    )
    # 130k prompt (over the 128k threshold) of which 100k cached
    usage = Usage(input_tokens=130_000, output_tokens=100, cached_tokens=100_000)
    # 30000 x 2.50 + 100000 x 0.625 + 100 x 10 = 75000 + 62500 + 1000 = 138500
    assert table.cost("gemini-1.5-pro-002", usage) == D("0.1385")


def test_gemini_cached_and_thinking(table: PriceTable) -> None:
    price = table.resolve("gemini-2.5-flash")
    assert (price.input, price.cached_input, price.output) == (D("0.30"), D("0.03"), D("2.50"))
    usage = Usage(input_tokens=10_000, output_tokens=500, cached_tokens=8000, reasoning_tokens=300)
    # 2000 x 0.30 + 8000 x 0.03 + 500 x 2.50 = 600 + 240 + 1250 = 2090
    assert table.cost("models/gemini-2.5-flash", usage) == D("0.00209")


def test_embedding_cost(table: PriceTable) -> None:
    # 1,000,000 x 0.02 = exactly 2 cents
    assert table.cost("text-embedding-3-small", Usage(input_tokens=1_000_000)) == D("0.02")


def test_zero_usage_costs_zero(table: PriceTable) -> None:
    assert table.cost("gpt-5", Usage()) == 0


def test_negative_tokens_rejected(table: PriceTable) -> None:
    with pytest.raises(PricingError):
        table.cost("gpt-5", Usage(input_tokens=-1))


# --- overrides ----------------------------------------------------------------------------


def _override(model: str = "gpt-4o-mini", **prices: str) -> ModelPrice:
    d = {"model": model, "provider": "openai", "input": "1", "output": "2", **prices}
    return ModelPrice.from_dict(d)


def test_override_replaces_price_and_version(table: PriceTable) -> None:
    custom = table.with_overrides([_override()])
    assert re.fullmatch(r"2026-11-01\+[0-9a-f]{8}", custom.version)
    price = custom.resolve("gpt-4o-mini-2024-07-18")
    assert price.source == "override" and price.input == D("1")
    # 1000 x 1 + 500 x 2 = 2000 -> 0.002
    assert custom.cost("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=500)) == D("0.002")
    # the bundled table is untouched
    assert table.version == "2026-11-01"
    assert table.cost("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=500)) == D("0.00045")
    assert len(custom.rows()) == len(table.rows())


def test_override_version_is_deterministic(table: PriceTable) -> None:
    a, b = _override("gpt-4o-mini"), _override("gpt-5")
    v1 = table.with_overrides([a, b]).version
    assert v1 == table.with_overrides([b, a]).version
    assert v1 == table.with_overrides([a]).with_overrides([b]).version
    # same figures written differently hash the same
    same = ModelPrice.from_dict(
        {"model": "GPT-4o-mini", "provider": "openai", "input": "1.00", "output": 2}
    )
    assert table.with_overrides([same]).version == table.with_overrides([a]).version
    # different figures hash differently
    other = _override("gpt-4o-mini", input="1.01")
    assert table.with_overrides([other]).version != table.with_overrides([a]).version
    # no overrides, no change
    assert table.with_overrides([]) is table


def test_override_adds_model(table: PriceTable) -> None:
    custom = table.with_overrides(
        [
            ModelPrice.from_dict(
                {"model": "my-proxy-model", "provider": "openai", "input": "0.5", "output": "1.5"}
            )
        ]
    )
    assert table.resolve("my-proxy-model") is None
    assert custom.resolve("my-proxy-model-2025-01-01").model == "my-proxy-model"
    assert custom.cost("my-proxy-model", Usage(input_tokens=2000, output_tokens=1000)) == D(
        "0.0025"
    )


def test_override_applies_through_aliases(table: PriceTable) -> None:
    custom = table.with_overrides(
        [
            ModelPrice.from_dict(
                {"model": "claude-opus-4", "provider": "anthropic", "input": "10", "output": "50"}
            )
        ]
    )
    assert custom.resolve("claude-opus-4-0").input == D("10")
    # without cache prices the override bills cached/written tokens at the input rate
    usage = Usage(input_tokens=1000, output_tokens=0, cached_tokens=500, cache_write_tokens=200)
    assert custom.cost("claude-opus-4-20250514", usage) == D("0.01")


def test_override_can_shadow_an_alias(table: PriceTable) -> None:
    custom = table.with_overrides([_override("gpt-5-codex", input="3", output="30")])
    assert custom.resolve("gpt-5-codex").input == D("3")
    assert custom.resolve("gpt-5").input == D("1.25")


def test_override_must_be_model_price(table: PriceTable) -> None:
    with pytest.raises(PricingError):
        table.with_overrides([{"model": "gpt-5"}])  # type: ignore[list-item]


# --- ModelPrice validation ----------------------------------------------------------------


def test_round_trip(table: PriceTable) -> None:
    for row in table.rows():
        d = row.to_dict()
        json.dumps(d)  # JSON-safe
        assert ModelPrice.from_dict(d, source="bundled") == row


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


def test_pricing_error_is_value_error() -> None:
    assert issubclass(PricingError, ValueError)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(PricingError):
        ModelPrice("m", "openai", 0.1, D("1"))  # type: ignore[arg-type]
    with pytest.raises(PricingError):
        ModelPrice("m", "openai", D("1"), D("-1"))


def test_from_json_rejects_bad_tables() -> None:
    good = {"version": "x", "currency": "USD", "unit": "per_million_tokens", "models": []}
    assert PriceTable.from_json(json.dumps(good)).version == "x"
    with pytest.raises(PricingError, match="currency"):
        PriceTable.from_json(json.dumps({**good, "currency": "EUR"}))
    entry = {"model": "a", "provider": "openai", "input": "1", "output": "1"}
    with pytest.raises(PricingError, match="duplicate"):
        PriceTable.from_json(json.dumps({**good, "models": [entry, entry]}))
    shadow = {**entry, "model": "b", "aliases": ["a"]}
    with pytest.raises(PricingError, match="shadow"):
        PriceTable.from_json(json.dumps({**good, "models": [entry, shadow]}))


# --- speed --------------------------------------------------------------------------------


def test_hot_path_is_fast(table: PriceTable) -> None:
    # Generous bound (CI machines vary); measured ~0.06 us resolve, ~1 us cost locally.
    usage = Usage(input_tokens=1234, output_tokens=567, cached_tokens=200)
    table.cost("gpt-4o-mini-2024-07-18", usage)
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        table.cost("gpt-4o-mini-2024-07-18", usage)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 50e-6
