"""Pure budget rules: months, money units, reservations, thresholds and alert texts."""

from __future__ import annotations

import ast
import re
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from lcm_jupyter.core import budget, media
from lcm_jupyter.core.budget import (
    MEDIA_TOKENS,
    MONEY_SCALE,
    REQUEST_OVERHEAD_TOKENS,
    TOOL_OVERHEAD_TOKENS,
    Threshold,
    alert_message,
    budget_exceeded_message,
    crossed_thresholds,
    current_month,
    estimate_input_tokens,
    max_output_tokens,
    month_bounds,
    month_of,
    reservation_units,
    severity_for,
    to_units,
    to_usd,
    webhook_payload,
)
from lcm_jupyter.core.catalog import default_table
from lcm_jupyter.core.pricing import ModelPrice
from lcm_jupyter.store.timeutil import to_iso

D = Decimal
KST = timezone(timedelta(hours=9))
PST = timezone(timedelta(hours=-8))


# --- purity -------------------------------------------------------------------------------


def _imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text("utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add("." * node.level + (node.module or ""))
    return modules


def test_module_imports_only_stdlib_and_pure_siblings() -> None:
    assert _imports(budget) <= {
        "__future__",
        ".media",
        ".money",
        "math",
        "re",
        "collections.abc",
        "dataclasses",
        "datetime",
        "decimal",
        "typing",
        ".pricing",
        ".prompt",
        ".providers.google",
    }
    # core/media.py reads payload headers with the standard library alone.
    assert _imports(media) <= {
        "__future__",
        "base64",
        "sys",
        "binascii",
        "math",
        "re",
        "struct",
        "zlib",
        "dataclasses",
    }


# --- months -------------------------------------------------------------------------------


def test_month_of_utc_and_naive() -> None:
    assert month_of(datetime(2026, 11, 26, 6, 29, tzinfo=timezone.utc)) == "2026-11"
    assert month_of(datetime(2026, 11, 26, 6, 29)) == "2026-11"  # naive: taken as UTC
    assert month_of(datetime(987, 3, 1, tzinfo=timezone.utc)) == "0987-03"


def test_month_of_converts_aware_datetimes_to_utc() -> None:
    # 08:59 on Jan 1 in Seoul is still Dec 31 in UTC.
    assert month_of(datetime(2027, 1, 1, 8, 59, 59, tzinfo=KST)) == "2026-12"
    assert month_of(datetime(2027, 1, 1, 9, 0, 0, tzinfo=KST)) == "2027-01"
    # 16:00 on Nov 30 in California is already Dec 1 in UTC.
    assert month_of(datetime(2026, 11, 30, 15, 59, 59, tzinfo=PST)) == "2026-11"
    assert month_of(datetime(2026, 11, 30, 16, 0, 0, tzinfo=PST)) == "2026-12"


def test_current_month_shape() -> None:
    month = current_month()
    assert re.fullmatch(r"\d{4}-\d{2}", month)
    assert month in {month_of(datetime.now(timezone.utc)), month_of(datetime.now(timezone.utc))}


def test_month_bounds() -> None:
    assert month_bounds("2026-11") == ("2026-11-01T00:00:00.000Z", "2026-12-01T00:00:00.000Z")
    assert month_bounds("2026-12") == ("2026-12-01T00:00:00.000Z", "2027-01-01T00:00:00.000Z")
    assert month_bounds("2028-02") == ("2028-02-01T00:00:00.000Z", "2028-03-01T00:00:00.000Z")


def test_month_bounds_compare_with_stored_timestamps() -> None:
    start, end = month_bounds("2028-02")
    inside = [
        datetime(2028, 2, 1, tzinfo=timezone.utc),
        datetime(2028, 2, 29, 23, 59, 59, 999000, tzinfo=timezone.utc),  # leap day
        datetime(2028, 3, 1, 8, 59, tzinfo=KST),  # Feb 29 23:59 UTC
    ]
    outside = [
        datetime(2028, 1, 31, 23, 59, 59, 999000, tzinfo=timezone.utc),
        datetime(2028, 3, 1, tzinfo=timezone.utc),
        datetime(2028, 2, 29, 16, 0, tzinfo=PST),  # Mar 1 00:00 UTC
    ]
    for moment in inside:
        assert start <= to_iso(moment) < end, moment
        assert month_of(moment) == "2028-02"
    for moment in outside:
        assert not start <= to_iso(moment) < end, moment
        assert month_of(moment) != "2028-02"
    assert to_iso(datetime(2026, 11, 26, 6, 29, 59, 123000, tzinfo=timezone.utc)) == (
        "2026-11-26T06:29:59.123Z"
    )


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "2026-1", "26-11", "2026-11-01", "", None])
def test_month_bounds_rejects_bad_months(bad) -> None:
    with pytest.raises(ValueError):
        month_bounds(bad)


# --- money --------------------------------------------------------------------------------


def test_to_units_exact() -> None:
    assert MONEY_SCALE == 10**10
    assert to_units(None) == 0
    assert to_units(D("0.00000375")) == 37_500
    assert to_units(0.1) == 1_000_000_000  # not 1000000000.0000000555
    assert to_units(10) == 100_000_000_000
    assert to_units(D("10.00")) == 100_000_000_000
    assert to_units(0.3) == 3_000_000_000
    assert to_units(1e-10) == 1
    assert to_units(D("1234567.8901234567")) == 12_345_678_901_234_567
    assert to_units("2.5") == 25_000_000_000
    assert to_units(D("-0.5")) == -5_000_000_000


def test_to_units_rounds_half_up() -> None:
    assert to_units(D("0.00000000005")) == 1
    assert to_units(D("0.00000000004999")) == 0
    assert to_units(D("0.00000000015")) == 2
    assert to_units(D("0.00000000025")) == 3  # half-up, not banker's rounding
    assert to_units(D("-0.00000000005")) == -1  # half away from zero


def test_to_units_matches_cost_for() -> None:
    table = default_table()
    from lcm_jupyter.core.usage import Usage

    cost = table.cost("gpt-4o-mini", Usage(input_tokens=1117, output_tokens=46, cached_tokens=1024))
    # 93 * 0.15 + 1024 * 0.075 + 46 * 0.60 per 1M = 0.00011835 USD
    assert cost == D("0.00011835")
    assert to_units(cost) == 1_183_500


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), D("NaN"), "abc"])
def test_to_units_rejects_non_finite(bad) -> None:
    with pytest.raises(ValueError):
        to_units(bad)


@pytest.mark.parametrize("bad", [True, [1], object()])
def test_to_units_rejects_non_numbers(bad) -> None:
    with pytest.raises(TypeError):
        to_units(bad)


def test_to_usd() -> None:
    assert to_usd(0) == 0.0
    assert to_usd(1_000_000_000) == 0.1
    assert to_usd(37_500) == 3.75e-6
    assert to_usd(to_units(9.02)) == 9.02
    assert isinstance(to_usd(5), float)


# --- prompt estimate ----------------------------------------------------------------------

CHAT_BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},  # 14 chars
        {"role": "user", "content": "Say hi"},  # 6 chars
    ],
    "max_tokens": 100,
}


def test_estimate_chat_by_hand() -> None:
    # ceil(20 / 3) = 7, plus 4 per message.
    assert estimate_input_tokens(CHAT_BODY) == 7 + 2 * 4


def test_estimate_openai_parts_and_images() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},  # 22
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64," + "A" * 90000},
                    },
                    {"type": "input_audio", "input_audio": {"data": "B" * 5000, "format": "wav"}},
                    {"type": "file", "file": {"file_data": "C" * 9000, "filename": "a.pdf"}},
                ],
            }
        ]
    }
    assert estimate_input_tokens(body) == 8 + 4 + 3 * MEDIA_TOKENS


def test_estimate_responses_input_and_instructions() -> None:
    assert estimate_input_tokens({"input": "abcdef", "instructions": "abc"}) == 3 + 4 + 4
    body = {
        "instructions": "Be brief.",  # 9
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]},  # 11
            {"type": "input_image", "image_url": "https://example.com/cat.png"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},  # 2 + 2
        ],
    }
    # chars 9 + 11 + 2 ("c1") + 2 ("42") = 24 -> 8; instructions 4; 3 items * 4; one image.
    assert estimate_input_tokens(body) == 8 + 4 + 12 + MEDIA_TOKENS


def test_estimate_embeddings() -> None:
    assert estimate_input_tokens({"input": "hello world!"}) == 4 + 4
    assert estimate_input_tokens({"input": ["abc", "def"]}) == 2  # no message overhead
    # Token-id arrays count one token per id.
    assert estimate_input_tokens({"input": [1, 2, 3, 4, 5]}) == 5
    assert estimate_input_tokens({"input": [[1, 2], [3, 4, 5]]}) == 5


def test_estimate_anthropic() -> None:
    body = {
        "system": [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "S" * 3000},
                    {"type": "tool_use", "id": "tu", "name": "f", "input": {"q": "x"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "tu", "content": "ok"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "Z" * 10},
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "abcdef"},
                    },
                    {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}},
                ],
            },
        ],
    }
    # Sys 3, Hi 2, hmm 3, tu 2, f 1, x 1, tu 2, ok 2, abcdef 6 -> 22 chars -> 8 tokens;
    # system 4 + 3 messages * 4; one image and one PDF.
    assert estimate_input_tokens(body) == 8 + 4 + 12 + 2 * MEDIA_TOKENS


def test_estimate_gemini() -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "Be kind"}]},  # 7
        "contents": [
            {"role": "user", "parts": [{"text": "Describe"}, {"inlineData": {"data": "Q" * 999}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "g", "args": {"a": "bc"}}}]},
            {"role": "user", "parts": [{"fileData": {"fileUri": "gs://b/f"}}]},
        ],
        "generationConfig": {"maxOutputTokens": 50},
    }
    # 7 + 8 + 1 + 2 = 18 chars -> 6; system 4 + 3 contents * 4; two media parts.
    assert estimate_input_tokens(body) == 6 + 4 + 12 + 2 * MEDIA_TOKENS
    snake = {"system_instruction": {"parts": [{"text": "abc"}]}, "contents": "abc"}
    assert estimate_input_tokens(snake) == 2 + 4 + 4
    embed = {"content": {"parts": [{"text": "abcdef"}]}}
    assert estimate_input_tokens(embed) == 2 + 4
    batch = {"requests": [{"model": "m", "content": {"parts": [{"text": "abc"}]}}] * 2}
    # The model string counts too (cheap and conservative); a repeated object counts twice.
    assert estimate_input_tokens(batch) == 3 + 2 * 4


def test_estimate_counts_tool_definitions_with_keys() -> None:
    tools = [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}]
    without = estimate_input_tokens({"messages": [{"role": "user", "content": "x"}]})
    with_tools = estimate_input_tokens(
        {"messages": [{"role": "user", "content": "x"}], "tools": tools}
    )
    # keys and values: type function function name get parameters type object = 47 chars
    assert with_tools == -(-(1 + 47) // 3) + 4
    assert with_tools > without


def test_estimate_is_conservative_against_known_counts() -> None:
    # ~4 chars/token English: the estimate must not come in under the real count.
    text = "The quick brown fox jumps over the lazy dog. " * 200
    real_ish = len(text) // 4
    assert estimate_input_tokens({"messages": [{"role": "user", "content": text}]}) > real_ish


WEIRD_BODIES = [
    None,
    0,
    17,
    3.5,
    True,
    "just a string",
    b"bytes",
    [],
    [1, "two", {"three": 3}],
    {},
    {"messages": None},
    {"messages": 5},
    {"messages": "plain"},
    {"messages": [None, 1, "x", [], {"content": None}, {"content": {"nested": [[["deep"]]]}}]},
    {"messages": [{"content": [{"type": ["unhashable"]}, {"type": {"x": 1}}]}]},
    {"messages": [{"role": 1, "content": [{"type": None, "text": 5}]}]},
    {"input": {1: "int key", (1, 2): "tuple key"}},
    {"contents": [{"parts": "not a list"}, {"parts": [None, 3, {"text": None}]}]},
    {"system": 12, "instructions": ["a", 1, None], "tools": "nope", "text": 7},
    {"generationConfig": "x", "max_tokens": "lots", "n": -1},
    {"messages": [{"content": float("nan")}], "max_tokens": float("inf")},
]


@pytest.mark.parametrize("body", WEIRD_BODIES, ids=range(len(WEIRD_BODIES)))
def test_estimate_never_raises(body) -> None:
    assert estimate_input_tokens(body) >= 0
    assert max_output_tokens(body, 77) >= 1
    price = default_table().resolve("gpt-4o-mini")
    assert reservation_units(price, body, default_output_tokens=10, unpriced_units=5) >= 0


def test_estimate_survives_deep_and_cyclic_structures() -> None:
    deep: list = ["leaf"]
    for _ in range(100_000):
        deep = [deep]
    assert estimate_input_tokens({"messages": deep}) == 2  # "leaf": 4 chars -> 2
    cyclic: dict = {"content": "abc"}
    cyclic["self"] = cyclic
    cyclic["again"] = [cyclic, cyclic]
    start = time.perf_counter()
    assert estimate_input_tokens({"messages": [cyclic]}) > 4  # finite, counted up to the cap
    print(f"cyclic body gave up after {time.perf_counter() - start:.2f} s")


def test_estimate_survives_a_failing_mapping() -> None:
    from collections.abc import Mapping

    class Broken(Mapping):
        def __getitem__(self, key):
            raise RuntimeError("boom")

        def __iter__(self):
            return iter(["content"])

        def __len__(self):
            return 1

    assert estimate_input_tokens({"messages": [Broken()]}) == 4
    assert estimate_input_tokens(Broken()) == 0
    assert max_output_tokens(Broken(), 9) == 9


def test_estimate_is_fast() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 10},
            *(
                {
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": "Some message text. " * 20,
                }
                for i in range(10)
            ),
        ],
        "max_tokens": 512,
    }
    runs = 2000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(runs):
            estimate_input_tokens(body)
        best = min(best, (time.perf_counter() - start) / runs)
    print(f"estimate_input_tokens: {best * 1e6:.2f} us for an 11-message chat body")
    assert best < 200e-6  # generous: a few microseconds in practice


# --- output cap and reservation -----------------------------------------------------------


def test_max_output_tokens() -> None:
    assert max_output_tokens(None, 4096) == 4096
    assert max_output_tokens({}, 4096) == 4096
    assert max_output_tokens({"max_tokens": 100}, 4096) == 100
    assert max_output_tokens({"max_completion_tokens": 300}, 4096) == 300
    assert max_output_tokens({"max_output_tokens": 200}, 4096) == 200
    assert max_output_tokens({"generationConfig": {"maxOutputTokens": 50}}, 4096) == 50
    assert max_output_tokens({"generation_config": {"max_output_tokens": 60}}, 4096) == 60
    assert max_output_tokens({"generationConfig": {"maxOutputTokens": "70"}}, 4096) == 70
    assert max_output_tokens({"max_tokens": 100, "max_completion_tokens": 300}, 1) == 300
    assert max_output_tokens({"max_tokens": 64.0}, 1) == 64
    for bad in (0, -5, True, None, "x", 1.5, [], {}):
        assert max_output_tokens({"max_tokens": bad}, 4096) == 4096


def test_reservation_gpt_4o_mini_by_hand() -> None:
    price = default_table().resolve("gpt-4o-mini")
    assert price is not None
    assert (price.rate("input_tokens").base, price.rate("output_tokens").base) == (
        D("0.15"),
        D("0.60"),
    )
    # 15 prompt tokens and the 16 a provider adds to any chat at $0.15/1M = 1,500 units
    # each; 100 output at $0.60/1M = 6,000 each.
    prompt = 15 + REQUEST_OVERHEAD_TOKENS
    units = reservation_units(price, CHAT_BODY, default_output_tokens=4096, unpriced_units=0)
    assert units == prompt * 1_500 + 100 * 6_000 == 646_500
    assert to_usd(units) == 6.465e-5
    # Without a cap the configured default applies.
    no_cap = {k: v for k, v in CHAT_BODY.items() if k != "max_tokens"}
    units = reservation_units(price, no_cap, default_output_tokens=4096, unpriced_units=0)
    assert units == prompt * 1_500 + 4096 * 6_000
    # Tools add the provider's tool-use prompt.
    tools = {**CHAT_BODY, "tools": [{"type": "function", "function": {"name": "f"}}]}
    with_tools = reservation_units(price, tools, default_output_tokens=1, unpriced_units=0)
    assert with_tools > units - 4096 * 6_000 + 100 * 6_000 + TOOL_OVERHEAD_TOKENS * 1_500 - 1


def test_reservation_multiplies_output_by_choices() -> None:
    price = default_table().resolve("gpt-4o-mini")
    body = {**CHAT_BODY, "n": 3}
    units = reservation_units(price, body, default_output_tokens=1, unpriced_units=0)
    assert units == (15 + REQUEST_OVERHEAD_TOKENS) * 1_500 + 3 * 100 * 6_000
    gemini = {"contents": "abc", "generationConfig": {"maxOutputTokens": 10, "candidateCount": 2}}
    price = default_table().resolve("gemini-2.0-flash")
    assert price is not None
    # gemini-2.0-flash has an audio input rate ($0.70): the worst case takes the dearest.
    worst_in = price.rate("input_audio_tokens").base
    prompt = 5 + REQUEST_OVERHEAD_TOKENS
    expected = to_units((prompt * worst_in + 20 * price.rate("output_tokens").base) / 10**6)
    assert reservation_units(price, gemini, default_output_tokens=1, unpriced_units=0) == expected


def test_reservation_long_context_tier() -> None:
    price = default_table().resolve("gemini-2.5-pro")
    assert price is not None and price.long_context_threshold() == 200_000

    def body(chars: int) -> dict:
        return {"contents": "x" * chars, "generationConfig": {"maxOutputTokens": 1000}}

    # Exactly 200,000 tokens with the request overhead: standard rates.
    at = body(3 * (200_000 - 4 - REQUEST_OVERHEAD_TOKENS))
    assert estimate_input_tokens(at) + REQUEST_OVERHEAD_TOKENS == 200_000
    assert reservation_units(price, at, default_output_tokens=1, unpriced_units=0) == to_units(
        (200_000 * D("1.25") + 1000 * D("10.00")) / 10**6
    )
    over = body(3 * (200_000 - 4 - REQUEST_OVERHEAD_TOKENS) + 1)  # 200,001: all at long rates
    assert reservation_units(price, over, default_output_tokens=1, unpriced_units=0) == to_units(
        (200_001 * D("2.50") + 1000 * D("15.00")) / 10**6
    )


def test_reservation_unpriced_and_free() -> None:
    assert reservation_units(None, CHAT_BODY, default_output_tokens=10, unpriced_units=123) == 123
    free = ModelPrice(model="local", provider="openai", input=D(0), output=D(0)).card()
    assert reservation_units(free, CHAT_BODY, default_output_tokens=10, unpriced_units=123) == 0


# --- thresholds ---------------------------------------------------------------------------

BUDGET = to_units(10)  # $10


def test_severity_mapping() -> None:
    assert [severity_for(p) for p in (1, 50, 89, 90, 95, 99, 100, 150)] == [
        "info",
        "info",
        "info",
        "warning",
        "warning",
        "warning",
        "critical",
        "critical",
    ]


def test_crossing_one() -> None:
    assert crossed_thresholds(to_units(4.9), to_units(5.1), BUDGET, [50, 80, 100]) == [
        Threshold(50, "info")
    ]


def test_crossing_several_in_one_jump() -> None:
    crossed = crossed_thresholds(to_units(1), to_units(12), BUDGET, [100, 50, 90, 80, 50])
    assert crossed == [
        Threshold(50, "info"),
        Threshold(80, "info"),
        Threshold(90, "warning"),
        Threshold(100, "critical"),
    ]


def test_exactly_at_threshold_counts_once() -> None:
    assert crossed_thresholds(to_units(8), to_units(9), BUDGET, [90]) == [Threshold(90, "warning")]
    # Already at 90%: moving further does not cross it again.
    assert crossed_thresholds(to_units(9), to_units(9.5), BUDGET, [90]) == []
    # One unit short of 90% -> exactly 90%.
    assert crossed_thresholds(to_units(9) - 1, to_units(9), BUDGET, [90]) == [
        Threshold(90, "warning")
    ]


def test_no_crossing_when_already_past_or_not_reached() -> None:
    assert crossed_thresholds(to_units(9.5), to_units(9.9), BUDGET, [50, 80, 90]) == []
    assert crossed_thresholds(to_units(1), to_units(2), BUDGET, [50, 80, 90]) == []
    assert crossed_thresholds(to_units(5), to_units(5), BUDGET, [50]) == []
    assert crossed_thresholds(to_units(6), to_units(4), BUDGET, [50]) == []  # reconcile down


def test_crossing_uses_exact_integer_fractions() -> None:
    budget = 3  # units: 1/3 of a unit per percent; 33% is at 0.99 units
    assert crossed_thresholds(0, 1, budget, [33, 34]) == [Threshold(33, "info")]
    assert crossed_thresholds(1, 2, budget, [33, 34, 66, 67]) == [
        Threshold(34, "info"),
        Threshold(66, "info"),
    ]


def test_crossing_edge_cases() -> None:
    assert crossed_thresholds(0, 100, 0, [50]) == []
    assert crossed_thresholds(0, 100, -5, [50]) == []
    assert crossed_thresholds(0, 100, 100, []) == []
    assert crossed_thresholds(0, 100, 100, [0, -10]) == []
    assert crossed_thresholds(0, to_units(20), BUDGET, [150, 200]) == [
        Threshold(150, "critical"),
        Threshold(200, "critical"),
    ]


# --- messages -----------------------------------------------------------------------------

FIGURES = re.compile(r"\$\d[\d,]*\.\d{2,10} / \$\d[\d,]*\.\d{2,10}")


def test_alert_message_english() -> None:
    text = alert_message(
        key_name="team-a", percent=90, spent_usd=9.02, budget_usd=10, month="2026-11"
    )
    assert text == (
        "Budget alert for key 'team-a': 90% of the monthly budget used ($9.02 / $10.00) in 2026-11."
    )
    full = alert_message(
        key_name="team-a", percent=100, spent_usd=10.004, budget_usd=10, month="2026-11"
    )
    assert "exhausted" in full and "($10.00 / $10.00)" in full and "2026-11" in full


def test_alert_message_korean() -> None:
    text = alert_message(
        key_name="team-a", percent=90, spent_usd=9.02, budget_usd=10, month="2026-11", locale="ko"
    )
    assert text == "예산 알림: 'team-a' 키가 2026-11 월 예산의 90%를 사용했습니다 ($9.02 / $10.00)."
    full = alert_message(
        key_name="team-a",
        percent=100,
        spent_usd=10.5,
        budget_usd=10,
        month="2026-11",
        locale="ko-KR",
    )
    assert "예산 소진" in full and "($10.50" not in full and "$10.50 / $10.00" in full
    assert FIGURES.search(full)
    en = alert_message(
        key_name="k", percent=50, spent_usd=1, budget_usd=2, month="2026-11", locale="en-US"
    )
    assert en.startswith("Budget alert")


@pytest.mark.parametrize(
    ("spent", "expected"),
    [
        (9.025, "$9.03"),  # float 9.025 is 9.0249999...; rounded as the decimal a person reads
        (9.024999, "$9.02"),
        (0.005, "$0.00500"),  # below a cent, the figure is not hidden in "$0.00"
        (0.00425, "$0.00425"),
        (0.0000004, "$0.000000400"),
        (1234.5, "$1,234.50"),
        (to_usd(to_units(D("2.345"))), "$2.35"),
    ],
)
def test_money_figures_round_half_up(spent, expected) -> None:
    for locale in ("en", "ko"):
        text = alert_message(
            key_name="k", percent=80, spent_usd=spent, budget_usd=10, month="2026-11", locale=locale
        )
        assert f"({expected} / $10.00)" in text
        assert FIGURES.search(text)


def test_budget_exceeded_message() -> None:
    text = budget_exceeded_message(spent_usd=10, reserved_usd=0.4, budget_usd=10, month="2026-11")
    assert text == (
        "Monthly budget exhausted for 2026-11: $10.00 spent (+$0.40 reserved by calls in flight)"
        " of $10.00. Raise monthly_budget_usd or wait for next month."
    )
    text = budget_exceeded_message(spent_usd=10.2, reserved_usd=0, budget_usd=10, month="2026-11")
    assert "reserved" not in text and "$10.20 spent of $10.00" in text
    text = budget_exceeded_message(spent_usd=9.8, reserved_usd=0.1, budget_usd=10, month="2026-11")
    assert "too little left for this call" in text and "$9.80 spent (+$0.10 reserved" in text


def test_webhook_payload() -> None:
    message = alert_message(
        key_name="<!channel>", percent=100, spent_usd=10.2, budget_usd=10, month="2026-11"
    )
    payload = webhook_payload(
        key_name="<!channel>",
        key_id=7,
        percent=100,
        severity="critical",
        message=message,
        spent_usd=10.2,
        budget_usd=10,
        month="2026-11",
    )
    assert "<!channel>" not in payload["text"] and "&lt;!channel&gt;" in payload["text"]
    attachment = payload["attachments"][0]
    assert attachment["color"] == "danger"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields["Spent"] == "$10.20" and fields["Budget"] == "$10.00"
    assert payload["lcm"] == {
        "event": "budget_alert",
        "key_id": 7,
        "key_name": "<!channel>",
        "month": "2026-11",
        "percent": 100,
        "severity": "critical",
        "spent_usd": 10.2,
        "budget_usd": 10,
        "message": message,
    }
    import json

    json.dumps(payload)  # JSON-serializable as is
