"""ProxyLogTable and PricingTable against a real in-process server, driven as a user would:
calls through the official SDK, then the widgets' buttons; the API is the reference."""

from __future__ import annotations

from datetime import timezone
from decimal import Decimal

import pytest

import lcm_jupyter
from lcm_jupyter.client import LCMClient
from lcm_jupyter.ui.logtable import (
    ProxyLogTable,
    local_time,
    log_record,
    model_label,
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
        "time": "2025-01-02 03:04:05",
        "key": "team",
        "model": "gpt-4o-mini ← gpt-4o",
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": 0.0000135,
        "savings_usd": 0.0002,
        "latency_ms": 12.5,
        "status": "200 · cache hit",
        "routed": True,
        "cache_hit": True,
        "feedback": -1,
    }
    plain = {**routed, "routing_decision": {"was_routed": False}, "cache_hit": False}
    assert model_label(plain) == "gpt-4o-mini" and status_label(plain) == "200"
    failed = {"status": 429, "error": "budget exceeded: " + "x" * 60}
    assert (
        status_label(failed).startswith("429 · budget exceeded")
        and len(status_label(failed)) == len("429 · ") + 40
    )
    assert log_record({"id": "b", "key_id": 9}, {})["key"] == "#9"
    assert local_time(None) == "—" and local_time("garbage") == "garbage"


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
    assert by_id[hit_id]["status"] == "200 · cache hit" and by_id[first_id]["status"] == "200"
    assert by_id[hit_id]["cost_usd"] == 0 and by_id[hit_id]["key"] == "cached"

    cells = {r["id"]: dict(zip([c.label for c in table.table.columns], t, strict=True))
             for r, t in zip(table.records, table.table.text(), strict=True)}  # fmt: skip
    assert cells[unpriced_id]["Cost"] == "unpriced"
    assert cells[routed_id]["Model"] == "gpt-4o-mini ← gpt-4o"
    assert cells[routed_id]["Saved"].startswith("$0.0") and cells[plain_id]["Saved"] == ""
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


def test_a_key_picked_while_the_server_is_away_leaves_the_table_as_it_was(served):
    with LCMClient() as rest:
        team = make_key(rest)
        chat(rest, team["key"], "gpt-4.1")
        table = ProxyLogTable(client=rest)
        shown = [r["id"] for r in table.records]
        served.stop()
        table.key_picker.value = team["id"]
        assert table.messages.kind == "error" and "Could not load the calls" in table.messages.text
        # The picker, the key and the page still say what the table shows: all keys' calls.
        assert table.key_picker.value == "all" and table.key_id is None
        assert [r["id"] for r in table.records] == shown and "calls 1-1" in table.page_label.value


def test_log_table_shows_errors_instead_of_raising(served):
    with LCMClient(url="http://127.0.0.1:9/") as nowhere:
        table = ProxyLogTable(client=nowhere)
        assert table.messages.kind == "error"
        assert table.messages.text.startswith("Could not")
        assert table.records == [] and table.older_button.disabled
        pricing = PricingTable(client=nowhere)
        assert pricing.messages.kind == "error" and pricing.records == []


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
