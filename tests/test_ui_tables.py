"""ProxyLogTable and PricingTable against a real in-process server, driven as a user would:
calls through the official SDK, then the widgets' buttons; the API is the reference."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import openai
import pytest

import lcm_jupyter
from lcm_jupyter.client import LCMClient
from lcm_jupyter.ui._common import exact_money, money
from lcm_jupyter.ui.logtable import (
    LogFilters,
    ProxyLogTable,
    call_details,
    columns,
    cost_text,
    details_html,
    empty_text,
    full_time,
    local_time,
    log_record,
    media_tokens,
    model_label,
    model_names,
    status_label,
)
from lcm_jupyter.ui.pricing_table import (
    PricingTable,
    filter_prices,
    price,
    price_body,
    price_records,
    unpriced_records,
)

from .conftest import PROVIDER_KEY, expected_cost

RULE = {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "condition": "always"}
UTC = timezone.utc


@pytest.fixture
def rest(served):
    with LCMClient() as client:
        yield client


def make_key(rest: LCMClient, name: str = "team", **fields) -> dict:
    fields.setdefault("routing_mode", "manual")
    fields.setdefault("routing_rules", [RULE])
    return rest.create_key(
        name=name,
        provider="auto",
        provider_api_keys=dict.fromkeys(("openai", "anthropic", "google"), PROVIDER_KEY),
        **fields,
    )


def chat(rest: LCMClient, key: str, model: str, text: str = "hello there"):
    """One call through the proxy; (its log id, its usage), once its row is written."""
    raw = lcm_jupyter.openai_client(key, max_retries=0).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    log_id = raw.headers["x-lcm-request-id"]
    rest.request("GET", f"logs/{log_id}")  # waits for the row if it is still on its way
    return log_id, raw.parse().usage


def cost_at(usage, input_price: str, output_price: str) -> float:
    """A call's cost at the given prices per 1M tokens, computed exactly."""
    total = usage.prompt_tokens * Decimal(input_price) + usage.completion_tokens * Decimal(
        output_price
    )
    return float(total.scaleb(-6))


# -- pure shaping --------------------------------------------------------------------------------


def test_log_rows_are_shaped_for_display():
    routed = {
        "id": "a1",
        "key_id": 3,
        "created_at": "2025-01-02T03:04:05.678Z",
        "requested_model": "gpt-4o",
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": 0.0000135,
        "savings_usd": 0.0002,
        "latency_ms": 12.5,
        "status": 200,
        "cache_hit": True,
        "routing_decision": {"was_routed": True, "from_model": "gpt-4o"},
        "feedback": -1,
    }
    record = log_record(routed, {3: "team"}, tz=timezone.utc)
    assert record == {
        "id": "a1",
        "created_at": "2025-01-02T03:04:05.678Z",
        "time": "2025-01-02 03:04:05",
        "time_tip": "2025-01-02 03:04:05.678 UTC",
        "key": "team",
        "model": "gpt-4o-mini ← gpt-4o",
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": 0.0000135,
        "cost_tip": "$0.0000135",
        "savings_usd": 0.0002,
        "latency_ms": 12.5,
        "status": "200 cached",
        "status_tip": "HTTP 200 · answered from the cache",
        "routed": True,
        "cache_hit": True,
        "failed": False,
        "feedback": -1,
    }
    shown = dict(zip([c.label for c in columns(timezone.utc)], _cells(record), strict=True))
    assert shown == {
        "Time": "01-02 03:04:05",
        "Key": "team",
        "Model": "gpt-4o-mini ← gpt-4o",
        "In": "10",
        "Out": "20",
        "Cost": "$0.0000135",
        "Saved": "$0.000200",
        "Latency": "12 ms",
        "Status": "200 cached",
    }
    plain = {**routed, "routing_decision": {"was_routed": False}, "cache_hit": False}
    assert model_label(plain) == "gpt-4o-mini" and status_label(plain) == "200"

    # A failed call billed nothing: no cost ("—", never $0.00); its error whole in the tooltip.
    error = "budget exceeded: " + "x" * 60
    failed = log_record({"id": "f", "status": 429, "error": error, "cost_usd": 0.0})
    assert failed["cost_usd"] is None and money(failed["cost_usd"]) == "—"
    assert failed["cost_tip"] == "the call failed: nothing billed"
    assert failed["status"] == "429 ✕" and failed["status_tip"] == f"HTTP 429 · {error}"
    # No answer at all is a failure too; a price unknown is no cost either.
    lost = log_record({"id": "n", "status": None, "error": "upstream timed out"})
    assert (lost["status"], lost["failed"], lost["cost_usd"]) == ("no answer", True, None)
    unpriced = log_record({"id": "u", "status": 200, "cost_usd": None, "unpriced": True})
    assert unpriced["cost_usd"] is None and unpriced["cost_tip"].startswith("unknown: no price")
    # A stream cut off midway was billed for what arrived: its cost stays in sight.
    cut = log_record({"id": "c", "status": 499, "error": "client went away", "cost_usd": 4.2e-4})
    assert cut["cost_usd"] == 4.2e-4 and cut["cost_tip"] == "$0.00042" and cut["failed"]
    assert log_record({"id": "b", "key_id": 9}, {})["key"] == "#9"
    assert local_time(None) == "—" and local_time("garbage") == "garbage"
    assert full_time("garbage") == "garbage"


def _cells(record) -> list[str]:
    return [c.format(record.get(c.field)) for c in columns(timezone.utc)]


CALL = {
    "id": "0194f3a0c1d2",
    "key_id": 3,
    "created_at": "2025-01-02T03:04:05.678Z",
    "provider": "openai",
    "endpoint": "chat.completions",
    "method": "POST",
    "stream": True,
    "status": 200,
    "cache_hit": False,
    "requested_model": "gpt-4o",
    "model": "gpt-4o-mini",
    "input_tokens": 1200,
    "cached_tokens": 1000,
    "cache_write_tokens": 0,
    "output_tokens": 300,
    "reasoning_tokens": 128,
    "usage": {
        "prompt_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 50},
        "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 7},
    },
    "usage_estimated": False,
    "cost_usd": 0.0037912345,
    "tool_fees_usd": 0.0,
    "savings_usd": 0.0123,
    "shadow_savings_usd": 0.0,
    "pricing_version": "genai-prices 0.0.30",
    "latency_ms": 812.4,
    "ttfb_ms": 95.0,
    "error": None,
    "feedback": 1,
    "feedback_comment": "spot on",
    "routing_decision": {
        "mode": "auto",
        "intent": "chat",
        "complexity": "simple",
        "confidence": 0.81234,
        "reason": "simple request: a smaller model will do",
        "was_routed": True,
        "rule": None,
    },
}


def test_the_detail_of_a_call_has_its_tokens_costs_routing_and_timing():
    sections = {title: dict(lines) for title, lines in call_details(CALL, {3: "team"}, UTC)}
    assert list(sections) == ["Call", "Tokens", "Cost", "Routing", "Timing"]
    assert sections["Call"] == {
        "Time": "2025-01-02 03:04:05.678 UTC",
        "Key": "team (#3)",
        "Provider": "openai",
        "Endpoint": "POST chat.completions",
        "Streamed": "yes",
        "Status": "HTTP 200",
        "Cache hit": "no",
        "Feedback": "+1: spot on",
        "Id": "0194f3a0c1d2",
    }
    assert sections["Tokens"] == {
        "Input": "1,200",
        "  cached (read)": "1,000",
        "  cache write": "0",
        "Output": "300",
        "  reasoning": "128",
        "Input audio": "50",  # from the provider's own report
        "Output audio": "7",
    }
    assert sections["Cost"] == {
        "Cost": "$0.00379 ($0.0037912345)",
        "  server-tool fees": "$0.00",
        "Saved": "$0.01",
        "Price table": "genai-prices 0.0.30",
    }
    assert sections["Routing"] == {
        "Mode": "auto",
        "Asked for": "gpt-4o",
        "Answered by": "gpt-4o-mini",
        "Routed": "yes",
        "Reason": "simple request: a smaller model will do",
        "Confidence": "0.81",
        "Intent": "chat",
        "Complexity": "simple",
    }
    assert sections["Timing"] == {"Latency": "812 ms", "First byte": "95 ms"}
    # Every stored digit only where the table's figure hides some.
    assert cost_text(0.0037912345) == f"$0.00379 ({exact_money(0.0037912345)})"
    assert exact_money(0.0037912345) == "$0.0037912345"
    assert [cost_text(v) for v in (0.0, 1.5, 0.0000135, 0.012)] == [
        "$0.00",  # a cache hit: once, not "$0.00 ($0.00)"
        "$1.50",
        "$0.0000135",
        "$0.01 ($0.012)",
    ]

    # With routing off: what auto routing would have done; a failed call: its whole error.
    shadow = {"to_model": "gpt-4o-mini", "confidence": 0.9, "saving_usd": 0.00042}
    failed = {
        **CALL,
        "status": 502,
        "cost_usd": 0.0,
        "error": "<upstream> refused: " + "y" * 300,
        "shadow_savings_usd": 0.00042,
        "routing_decision": {"mode": "off", "was_routed": False, "shadow": shadow},
    }
    sections = {title: dict(lines) for title, lines in call_details(failed, {}, UTC)}
    assert sections["Cost"]["Cost"] == "— (the call failed: nothing billed)"
    assert sections["Cost"]["Auto routing would save"] == "$0.000420"
    assert sections["Routing"]["Auto routing"] == (
        "would send it to gpt-4o-mini (confidence 0.90, saving $0.000420)"
    )
    page = details_html(failed, {}, UTC)
    assert "&lt;upstream&gt; refused: " + "y" * 300 in page  # whole, escaped
    assert "The provider's usage report" in page and "&quot;audio_tokens&quot;: 50" in page
    unpriced = {**CALL, "cost_usd": None, "unpriced": True}
    assert dict(call_details(unpriced)[2][1])["Cost"] == "— (no price for gpt-4o-mini)"


def test_media_tokens_come_from_each_providers_report():
    gemini = {
        "promptTokenCount": 300,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 42},
            {"modality": "IMAGE", "tokenCount": 258},
        ],
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 30}],
    }
    assert media_tokens(gemini) == [("Input image", 258), ("Output audio", 30)]
    image = {"input_tokens_details": {"image_tokens": 323, "text_tokens": 12}}
    assert media_tokens(image) == [("Input images", 323)]
    claude = {"input_tokens": 10, "server_tool_use": {"web_search_requests": 2}}
    assert media_tokens(claude) == [("Web searches", 2)]
    assert media_tokens(None) == [] and media_tokens({"prompt_tokens": 3}) == []


def test_the_filters_become_the_query():
    seoul = ZoneInfo("Asia/Seoul")
    days = LogFilters(first=date(2025, 1, 2), last=date(2025, 1, 3))
    # The table's local days: from the first one's midnight to the one after the last.
    assert days.params(seoul) == {
        "key_id": None,
        "model": None,
        "provider": None,
        "status": None,
        "since": "2025-01-02T00:00:00+09:00",
        "until": "2025-01-04T00:00:00+09:00",
    }
    assert days.describe() == "2025-01-02 to 2025-01-03" and days.active
    with pytest.raises(ValueError, match=r"From \(2025-01-03\) is after To \(2025-01-02\)"):
        LogFilters(first=date(2025, 1, 3), last=date(2025, 1, 2)).params(seoul)
    picked = LogFilters(key_id=2, model="gpt-4o", provider="openai", status="error")
    assert picked.params() == {
        "key_id": 2,
        "model": "gpt-4o",
        "provider": "openai",
        "status": "error",
    }
    assert picked.describe() == "model gpt-4o, provider openai, errors"
    assert not LogFilters(key_id=2).active  # the key has its own picker
    assert empty_text(LogFilters()).startswith("No calls yet")
    assert empty_text(picked) == (
        "No calls match these filters (model gpt-4o, provider openai, errors). "
        "Clear them to see every call."
    )
    assert model_names([{"name": "b"}, {"name": "a"}, {"name": "(none)"}, {"name": "other"}]) == [
        "a",
        "b",
    ]


def test_price_rows_are_shaped_filtered_and_edited():
    answer = {
        "models": [
            {"model": "m-a", "provider": "openai", "input": "0.15", "output": "0.6",
             "cached_input": None, "source": "bundled"},
            {"model": "m-b", "provider": "google", "input": "1.25", "output": "10",
             "cached_input": "0.31", "cache_write": None, "long_context_threshold": 200000,
             "input_long": "2.5", "output_long": "15", "cached_input_long": "0.625",
             "source": "override"},
        ],
        "unpriced_models": [
            {"model": "x", "provider": "openai", "requests": 3,
             "last_seen": "2025-01-02T03:00:00.000Z"}
        ],
    }  # fmt: skip
    records = price_records(answer)
    # A price reads as it was set: a cost is this number times the tokens.
    assert [price(Decimal(p)) for p in ("0.3125", "0.01875", "2.5", "1234.5", "1E-7")] == [
        "$0.3125", "$0.01875", "$2.50", "$1,234.50", "$0.0000001",
    ]  # fmt: skip
    assert price(None) == "—"
    assert [(r["model"], r["input"], r["overridden"]) for r in records] == [
        ("m-a", Decimal("0.15"), False),
        ("m-b", Decimal("1.25"), True),
    ]
    assert records[0]["cached_input"] is None
    assert [r["model"] for r in filter_prices(records, "google")] == ["m-b"]
    assert [r["model"] for r in filter_prices(records, None, " M-A ")] == ["m-a"]
    assert filter_prices(records, "anthropic") == []
    assert unpriced_records(answer, tz=timezone.utc) == [
        {"model": "x", "provider": "openai", "requests": 3, "last_seen": "2025-01-02"}
    ]
    # Editing a listed model keeps what the editor does not show (the long-context tier).
    body = price_body(
        model="m-b", provider="google", input="2", output="12", base=records[1]["row"]
    )
    assert body["input"] == "2" and body["cached_input"] is None
    assert (body["input_long"], body["long_context_threshold"]) == ("2.5", 200000)
    assert "source" not in body
    fresh = price_body(
        model=" new ", provider="openai", input="1", output="", base=records[1]["row"]
    )
    assert fresh == {
        "model": "new",
        "provider": "openai",
        "input": "1",
        "output": None,
        "cached_input": None,
    }


# -- the log table -------------------------------------------------------------------------------


def test_log_table_shows_the_calls_as_the_api_logged_them(rest):
    key = make_key(rest)
    cached_key = make_key(
        rest, "cached", routing_mode="off", routing_rules=[], cache_ttl_seconds=60
    )
    routed_id, routed_usage = chat(rest, key["key"], "gpt-4o")
    plain_id, plain_usage = chat(rest, key["key"], "gpt-4.1")
    unpriced_id, _ = chat(rest, key["key"], "gpt-unknown-model")
    first_id, _ = chat(rest, cached_key["key"], "gpt-4o-mini", "same question")
    hit_id, _ = chat(rest, cached_key["key"], "gpt-4o-mini", "same question")

    table = ProxyLogTable(client=rest)
    api_rows = rest.logs(limit=100)
    api_ids = [r["id"] for r in api_rows]
    assert api_ids == [hit_id, first_id, unpriced_id, plain_id, routed_id]
    assert [r["id"] for r in table.records] == api_ids
    for record, row in zip(table.records, api_rows, strict=True):
        assert record["cost_usd"] == row["cost_usd"]  # exactly what the API logged
        assert record["savings_usd"] == row["savings_usd"]
        assert (record["input_tokens"], record["output_tokens"]) == (
            row["input_tokens"],
            row["output_tokens"],
        )
    by_id = {r["id"]: r for r in table.records}
    routed = by_id[routed_id]
    assert routed["model"] == "gpt-4o-mini ← gpt-4o" and routed["key"] == "team"
    mini = expected_cost(
        "gpt-4o-mini", uncached=routed_usage.prompt_tokens, out=routed_usage.completion_tokens
    )
    full = expected_cost(
        "gpt-4o", uncached=routed_usage.prompt_tokens, out=routed_usage.completion_tokens
    )
    assert routed["cost_usd"] == pytest.approx(mini, abs=1e-12)
    assert routed["savings_usd"] == pytest.approx(full - mini, abs=1e-12)
    assert by_id[plain_id]["cost_usd"] == pytest.approx(
        expected_cost(
            "gpt-4.1", uncached=plain_usage.prompt_tokens, out=plain_usage.completion_tokens
        ),
        abs=1e-12,
    )
    assert by_id[plain_id]["model"] == "gpt-4.1"
    assert by_id[hit_id]["status"] == "200 cached" and by_id[first_id]["status"] == "200"
    assert by_id[hit_id]["cost_usd"] == 0 and by_id[hit_id]["key"] == "cached"

    cells = {r["id"]: dict(zip([c.label for c in table.table.columns], t, strict=True))
             for r, t in zip(table.records, table.table.text(), strict=True)}  # fmt: skip
    assert cells[unpriced_id]["Cost"] == "—"  # unknown, never $0.00
    assert cells[routed_id]["Model"] == "gpt-4o-mini ← gpt-4o"
    assert (
        cells[routed_id]["Saved"] == money(routed["savings_usd"]) and cells[plain_id]["Saved"] == ""
    )
    assert cells[routed_id]["Cost"] == money(routed["cost_usd"])
    assert table.state == "data" and table.states.note.layout.display == "none"
    # Feedback buttons only where a model was routed.
    assert set(table.feedback_buttons) == {routed_id}
    assert table.page == 0 and not table.has_older and table.older_button.disabled
    assert table.key_picker.label == "All keys"
    assert "calls 1-5" in table.page_label.value
    assert table.messages.kind == ""


def test_feedback_buttons_record_and_replace_the_score(rest):
    key = make_key(rest)
    routed_id, _ = chat(rest, key["key"], "gpt-4o")
    chat(rest, key["key"], "gpt-4.1")
    table = ProxyLogTable(client=rest)
    plus, minus = table.feedback_buttons[routed_id]
    assert (plus.button_style, minus.button_style) == ("", "")

    plus.click()
    assert rest.request("GET", f"logs/{routed_id}")["feedback"] == 1
    assert (plus.button_style, minus.button_style) == ("success", "")
    assert table.messages.kind == "ok" and "+1" in table.messages.text

    # The recorded score comes back with the rows: a new table (or a refresh) shows it.
    again = ProxyLogTable(client=rest)
    plus2, minus2 = again.feedback_buttons[routed_id]
    assert (plus2.button_style, minus2.button_style) == ("success", "")

    minus2.click()
    assert rest.request("GET", f"logs/{routed_id}")["feedback"] == -1
    assert (plus2.button_style, minus2.button_style) == ("", "danger")
    table.refresh()
    plus, minus = table.feedback_buttons[routed_id]
    assert (plus.button_style, minus.button_style) == ("", "danger")
    # Sorting re-draws the rows: the buttons still show the score.
    table.table.sort("cost_usd")
    plus, minus = table.feedback_buttons[routed_id]
    assert minus.button_style == "danger"
    quality = rest.routing_quality()["scores"]
    assert [(s["from_model"], s["to_model"]) for s in quality] == [("gpt-4o", "gpt-4o-mini")]


def test_paging_walks_every_call_once(rest):
    team = make_key(rest)
    other = make_key(rest, "other", routing_mode="off", routing_rules=[])
    for i in range(5):
        chat(rest, team["key"], "gpt-4.1", f"call {i}")
        if i % 2:
            chat(rest, other["key"], "gpt-4o-mini", f"other {i}")
    everything = [r["id"] for r in rest.logs(limit=100)]
    assert len(everything) == 7

    table = ProxyLogTable(client=rest, page_size=3)
    seen, sizes = [], []
    while True:
        seen += [r["id"] for r in table.records]
        sizes.append(len(table.records))
        if table.older_button.disabled:
            break
        table.older_button.click()
    assert seen == everything and sizes == [3, 3, 1] and table.page == 2
    assert "Page 3 · calls 7-7" in table.page_label.value
    table.newer_button.click()
    assert [r["id"] for r in table.records] == everything[3:6] and table.page == 1
    table.refresh()  # stays on its page
    assert [r["id"] for r in table.records] == everything[3:6]
    table.newer_button.click()
    assert table.newer_button.disabled and [r["id"] for r in table.records] == everything[:3]

    # Picking a key shows its calls only, from its newest.
    table.key_picker.value = other["id"]
    assert table.page == 0 and {r["key"] for r in table.records} == {"other"}
    assert [r["id"] for r in table.records] == [
        r["id"] for r in rest.logs(key_id=other["id"], limit=100)
    ]
    assert ProxyLogTable(client=rest, key_id=team["id"]).key_picker.value == team["id"]


def test_widgets_without_a_server_say_so_and_find_it_once_it_is_there(
    kernel_env, monkeypatch, thread_sim, tmp_path
):
    monkeypatch.delenv("LCM_SERVER_URL")
    widgets = (ProxyLogTable(), PricingTable())
    for widget in widgets:
        assert widget.messages.kind == "error" and widget.client is None
        assert "LCM_SERVER_URL" in widget.messages.text
        widget.refresh()
        assert widget.messages.kind == "error"
    # `%lcm serve` started later in the kernel: Refresh finds it, no new widget needed.
    handle = lcm_jupyter.serve(
        db_path=tmp_path / "lcm.sqlite3", secret_key_file=tmp_path / "secret.key"
    )
    try:
        for widget in widgets:
            widget.refresh()
            assert widget.messages.kind == "" and widget.client is not None
        assert len(widgets[1].records) >= 40
    finally:
        widgets[0].client.close()
        widgets[1].client.close()
        handle.stop()


def test_a_key_picked_while_the_server_is_away_shows_the_error_alone(served):
    with LCMClient() as rest:
        team = make_key(rest)
        chat(rest, team["key"], "gpt-4.1")
        table = ProxyLogTable(client=rest)
        assert table.state == "data" and len(table.records) == 1
        served.stop()
        table.key_picker.value = team["id"]
        assert table.state == "error" and table.key_id == team["id"]
        assert table.messages.kind == "error" and "Could not load the calls" in table.messages.text
        # The error alone: no rows of another key under it, no "No calls yet", no pager.
        assert table.records == [] and _hidden(table.table) and _hidden(table.pager)
        assert _hidden(table.states.note)


def _hidden(widget) -> bool:
    return widget.layout.display == "none"


def test_log_table_shows_errors_instead_of_raising(served):
    with LCMClient(url="http://127.0.0.1:9/") as nowhere:
        table = ProxyLogTable(client=nowhere)
        assert table.state == "error" and table.messages.kind == "error"
        assert table.messages.text.startswith("Could not")
        assert table.records == [] and table.older_button.disabled
        assert _hidden(table.table) and _hidden(table.states.note)
        assert "No calls yet" not in table.states.note.value
        pricing = PricingTable(client=nowhere)
        assert pricing.messages.kind == "error" and pricing.records == []


def test_a_fresh_server_says_no_calls_yet_and_nothing_else(rest):
    table = ProxyLogTable(client=rest)
    assert table.state == "empty" and table.messages.kind == ""
    assert "No calls yet" in table.states.note.value and not _hidden(table.states.note)
    assert _hidden(table.table) and _hidden(table.pager)


class Requests:
    """The REST calls a client makes, and the table's state as each went out (an httpx event
    hook: observed, not replaced)."""

    def __init__(self, client: LCMClient, table=None) -> None:
        self.seen: list[tuple[str, dict, str]] = []
        self.table = table
        client._http.event_hooks["request"].append(self._record)

    def _record(self, request) -> None:
        path = request.url.path.split("/lcm/api/", 1)[1]
        state = self.table.state if self.table is not None else ""
        self.seen.append((path, dict(request.url.params), state))

    def take(self) -> list[tuple[str, dict, str]]:
        seen, self.seen = self.seen, []
        return seen


def test_filters_ask_the_api_and_show_what_it_keeps(rest, thread_sim):
    team = make_key(rest)
    other = make_key(rest, "other", routing_mode="off", routing_rules=[])
    mini_id, mini = chat(rest, other["key"], "gpt-4o-mini")
    big_id, _ = chat(rest, team["key"], "gpt-4.1")
    claude = lcm_jupyter.anthropic_client(other["key"], max_retries=0)
    claude_id = claude.messages.with_raw_response.create(
        model="claude-3-5-haiku", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ).headers["x-lcm-request-id"]
    thread_sim.inject_error(429, provider="openai", message="Slow down: " + "z" * 80)
    sdk = lcm_jupyter.openai_client(other["key"], max_retries=0)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    failed_id = refused.value.response.headers["x-lcm-request-id"]
    rest.log(failed_id)  # waits for its row

    table = ProxyLogTable(client=rest)
    requests = Requests(rest, table)
    assert [r["id"] for r in table.records] == [failed_id, claude_id, big_id, mini_id]
    assert table.clear_button.layout.display == "none"
    assert set(table.model_filter.options) >= {"gpt-4o-mini", "gpt-4.1", "claude-3-5-haiku"}

    # A model typed in: the API's answer for it, asked while the table said "loading".
    table.model_filter.value = "gpt-4o-mini"
    ((path, params, state),) = requests.take()
    assert (path, params, state) == ("logs", {"limit": "21", "model": "gpt-4o-mini"}, "loading")
    assert [r["id"] for r in table.records] == [failed_id, mini_id]
    assert [r["id"] for r in rest.logs(model="gpt-4o-mini")] == [failed_id, mini_id]
    assert table.state == "data" and table.clear_button.layout.display == ""
    assert "matching model gpt-4o-mini" in table.page_label.value
    text = {r["id"]: cells for r, cells in zip(table.records, table.table.text(), strict=True)}
    # The failed call: no cost, not $0.00; the metered one to the genai-prices figure.
    assert text[failed_id][5] == "—" and text[failed_id][8] == "429 ✕"
    assert table.records[1]["cost_usd"] == expected_cost(
        "gpt-4o-mini", uncached=mini.prompt_tokens, out=mini.completion_tokens
    )
    assert text[mini_id][5] == money(table.records[1]["cost_usd"])
    status_cell = table.table.row_widgets[0][1 + 8]  # after the detail button
    assert "Slow down: " + "z" * 80 in status_cell.value  # whole, in its tooltip

    # Filters add up; none kept says so, and only that.
    table.provider_picker.value = "anthropic"
    assert table.state == "empty" and table.records == [] and table.messages.kind == ""
    assert "model gpt-4o-mini, provider anthropic" in table.states.note.value
    assert _hidden(table.table) and _hidden(table.pager)
    table.clear_filters()
    assert table.model_filter.value == "" and table.provider_picker.value == "all"
    assert [r["id"] for r in table.records] == [failed_id, claude_id, big_id, mini_id]
    assert table.clear_button.layout.display == "none"

    table.status_picker.value = "error"
    assert [r["id"] for r in table.records] == [failed_id]
    table.status_picker.value = "ok"
    assert [r["id"] for r in table.records] == [claude_id, big_id, mini_id]
    table.provider_picker.value = "anthropic"
    assert [r["id"] for r in table.records] == [claude_id]
    table.clear_filters()

    # Days: the kernel's local days, as the Time column shows them.
    requests.take()
    today = datetime.now().astimezone().date()
    table.from_picker.value = today
    assert len(table.records) == 4
    table.to_picker.value = today - timedelta(1)  # To before From: said, nothing asked
    assert table.state == "error" and "is after To" in table.messages.text
    assert [p for p, _, _ in requests.take()] == ["logs"]
    table.from_picker.value = today - timedelta(3)
    assert table.state == "empty" and "No calls match" in table.states.note.value
    table.set_filters(first=None, last=None, model="gpt-4.1", key_id=team["id"])
    assert table.key_picker.value == team["id"] and table.model_filter.value == "gpt-4.1"
    assert [r["id"] for r in table.records] == [big_id]

    # Pages walk back through the filtered calls only.
    paged = ProxyLogTable(client=rest, page_size=1)
    paged.model_filter.value = "gpt-4o-mini"
    assert [r["id"] for r in paged.records] == [failed_id] and not paged.older_button.disabled
    paged.older_button.click()
    assert [r["id"] for r in paged.records] == [mini_id] and paged.older_button.disabled
    assert "Page 2 · calls 2-2 matching model gpt-4o-mini" in paged.page_label.value


def test_the_detail_of_a_call_opens_under_its_row(rest):
    key = make_key(rest)
    routed_id, usage = chat(rest, key["key"], "gpt-4o")
    plain_id, _ = chat(rest, key["key"], "gpt-4.1")
    table = ProxyLogTable(client=rest)
    requests = Requests(rest)
    table.detail_buttons[routed_id].click()
    assert requests.take() == [(f"logs/{routed_id}", {}, "")]
    assert table.detail_id == routed_id and table.detail == rest.log(routed_id)
    assert table.detail_buttons[routed_id].icon == "chevron-down"
    grid = table.table.children[0]
    panel = table.table.expanded[1]
    row = [r["id"] for r in table.records].index(routed_id)
    width = len(table.table.columns) + 2  # the detail button and the feedback buttons
    assert list(grid.children).index(panel) == width * (row + 2)  # header, rows, then it
    page = panel.children[1].value
    row_api = table.detail
    assert f">Cost</td><td>{cost_text(row_api['cost_usd'])}<" in page
    assert ">Asked for</td><td>gpt-4o<" in page and ">Answered by</td><td>gpt-4o-mini<" in page
    assert f">Input</td><td>{usage.prompt_tokens:,}<" in page
    assert f">Output</td><td>{usage.completion_tokens:,}<" in page
    assert ">Routed</td><td>yes<" in page
    assert money(row_api["savings_usd"]) in page

    table.detail_buttons[plain_id].click()  # another call: one detail at a time
    assert table.detail_id == plain_id and panel.comm is None
    assert table.detail_buttons[routed_id].icon == "chevron-right"
    table.table.sort("cost_usd")  # a sort keeps it under its row
    assert table.table.expanded[0] == plain_id
    table.detail_buttons[plain_id].click()  # again: closed
    assert table.detail_id is None and table.table.expanded is None

    table.show_detail("not-a-call")
    assert table.messages.kind == "error" and "HTTP 404" in table.messages.text
    assert table.state == "data" and table.records  # a failed detail leaves the calls shown


# -- the pricing table ---------------------------------------------------------------------------


def test_pricing_table_lists_and_filters_the_prices_in_force(rest):
    answer = rest.pricing()
    pricing = PricingTable(client=rest)
    assert [r["model"] for r in pricing.records] == [m["model"] for m in answer["models"]]
    assert len(pricing.shown) == len(answer["models"]) >= 40
    assert pricing.version == answer["version"] and answer["version"] in pricing.title.value
    options = [value for _label, value in pricing.provider_filter.options]
    assert options == ["all", "anthropic", "google", "openai"]
    assert pricing.provider_filter.label == "All providers"

    pricing.provider_filter.value = "anthropic"
    expected = [m["model"] for m in answer["models"] if m["provider"] == "anthropic"]
    assert [r["model"] for r in pricing.shown] == expected and expected
    pricing.model_filter.value = "haiku"
    assert [r["model"] for r in pricing.shown] == [m for m in expected if "haiku" in m]
    pricing.provider_filter.value = "all"
    assert {r["provider"] for r in pricing.shown} >= {"anthropic"}
    assert all("haiku" in r["model"] for r in pricing.shown)
    pricing.model_filter.value = "no-such-model"
    assert pricing.shown == [] and "match" in pricing.table.children[0].value
    # Every price shown exactly as the API has it (no rounding of, say, $0.3125).
    pricing.model_filter.value = ""
    pricing.provider_filter.value = "google"
    shown = {cells[0]: cells[2:5] for cells in pricing.table.text()}
    assert shown["gemini-pro-1.5"][2] == "$0.3125"
    google = [m for m in answer["models"] if m["provider"] == "google"]
    for m in google:
        values = (m["input"], m["output"], m["cached_input"])
        assert shown[m["model"]] == ["—" if v is None else price(Decimal(v)) for v in values]
    row = next(r for r in pricing.records if r["model"] == "gpt-4o-mini")
    source = answer["models"][[m["model"] for m in answer["models"]].index("gpt-4o-mini")]
    assert (row["input"], row["output"]) == (Decimal(source["input"]), Decimal(source["output"]))
    assert row["source"] == "catalog" and pricing.reset_buttons == {}


def test_editing_a_price_applies_to_the_next_call_and_reset_undoes_it(rest):
    key = make_key(rest, routing_mode="off", routing_rules=[])
    pricing = PricingTable(client=rest)
    pricing.model_filter.value = "gpt-4o-mini"
    bundled = next(m for m in rest.pricing()["models"] if m["model"] == "gpt-4o-mini")
    pricing.edit_buttons["gpt-4o-mini"].click()
    editor = pricing.editor
    assert (editor.model.value, editor.provider.value) == ("gpt-4o-mini", "openai")
    assert (editor.input.value, editor.output.value) == (bundled["input"], bundled["output"])
    assert editor.cached_input.value == bundled["cached_input"]

    editor.input.value, editor.output.value = "0.5", "1.5"
    editor.save_button.click()
    assert pricing.messages.kind == "ok", pricing.messages.text
    stored = next(m for m in rest.pricing()["models"] if m["model"] == "gpt-4o-mini")
    assert (stored["input"], stored["output"], stored["source"]) == ("0.5", "1.5", "override")
    assert stored["cached_input"] == bundled["cached_input"]  # kept
    row = pricing.shown[0]
    assert row["overridden"] and pricing.table.text()[0][-1] == "override ✎"
    assert set(pricing.reset_buttons) == {"gpt-4o-mini"}

    log_id, usage = chat(rest, key["key"], "gpt-4o-mini")
    logged = rest.request("GET", f"logs/{log_id}")
    assert logged["cost_usd"] == cost_at(usage, "0.5", "1.5")

    pricing.reset_buttons["gpt-4o-mini"].click()
    assert "catalog" in pricing.messages.text and pricing.reset_buttons == {}
    again = next(m for m in rest.pricing()["models"] if m["model"] == "gpt-4o-mini")
    assert again == bundled
    log_id, usage = chat(rest, key["key"], "gpt-4o-mini")
    assert rest.request("GET", f"logs/{log_id}")["cost_usd"] == cost_at(
        usage, bundled["input"], bundled["output"]
    )


def test_unpriced_models_can_be_priced_from_the_list(rest):
    key = make_key(rest, routing_mode="off", routing_rules=[])
    first_id, _ = chat(rest, key["key"], "gpt-unknown-model")
    assert rest.request("GET", f"logs/{first_id}")["cost_usd"] is None
    pricing = PricingTable(client=rest)
    assert [(u["model"], u["provider"], u["requests"]) for u in pricing.unpriced] == [
        ("gpt-unknown-model", "openai", 1)
    ]
    assert set(pricing.price_buttons) == {"gpt-unknown-model"}
    assert pricing.unpriced_table.text()[0][:3] == ["gpt-unknown-model", "openai", "1"]

    pricing.price_buttons["gpt-unknown-model"].click()
    editor = pricing.editor
    assert (editor.model.value, editor.provider.value) == ("gpt-unknown-model", "openai")
    assert editor.input.value == editor.output.value == ""
    editor.input.value, editor.output.value = "1", "2"
    editor.save_button.click()
    assert pricing.messages.kind == "ok", pricing.messages.text
    assert pricing.unpriced == [] and pricing.price_buttons == {}
    assert any(r["model"] == "gpt-unknown-model" and r["overridden"] for r in pricing.records)

    log_id, usage = chat(rest, key["key"], "gpt-unknown-model")
    assert rest.request("GET", f"logs/{log_id}")["cost_usd"] == cost_at(usage, "1", "2")

    # A model with no bundled price has none after its reset: it is listed again.
    pricing.reset_buttons["gpt-unknown-model"].click()
    assert "no price now" in pricing.messages.text
    assert [u["model"] for u in pricing.unpriced] == ["gpt-unknown-model"]


def test_pricing_errors_are_shown_not_raised(rest):
    pricing = PricingTable(client=rest)
    pricing.editor.prefill("my-model", "openai")
    pricing.editor.input.value, pricing.editor.output.value = "-1", "2"
    pricing.editor.save_button.click()
    assert pricing.messages.kind == "error"
    assert "HTTP 400" in pricing.messages.text and "negative" in pricing.messages.text
    assert not any(r["model"] == "my-model" for r in rest.pricing()["models"])

    pricing.editor.output.value = ""
    pricing.editor.input.value = "1"
    pricing.editor.save_button.click()
    assert pricing.messages.kind == "error" and "output" in pricing.messages.text

    # A stale view: the override was dropped elsewhere, so its reset button finds none.
    rest.set_prices({"model": "gpt-4o", "provider": "openai", "input": "1", "output": "1"})
    pricing.refresh()
    rest.reset_price("gpt-4o")
    pricing.reset_buttons["gpt-4o"].click()
    assert pricing.messages.kind == "error" and "HTTP 404" in pricing.messages.text


def test_reset_price_reaches_models_with_a_slash(rest):
    rest.set_prices({"model": "org/custom-model", "provider": "openai", "input": 1, "output": 1})
    assert rest.reset_price("org/custom-model") == {"model": "org/custom-model", "override": False}
    assert not any(m["model"] == "org/custom-model" for m in rest.pricing()["models"])
