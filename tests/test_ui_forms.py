"""ProxyKeyForm and RoutingRulesEditor: their pure helpers, and the widgets driven as a user
would (set values, press Save) against the real in-process server.
"""

from __future__ import annotations

import time

import openai
import pytest

import lcm_jupyter
from lcm_jupyter.client import LCMClient, LCMClientError
from lcm_jupyter.core.errors import BadRequest
from lcm_jupyter.core.keys import mask_secret
from lcm_jupyter.core.keyspec import validate_key_fields
from lcm_jupyter.ui import ProxyKeyForm, RoutingRulesEditor
from lcm_jupyter.ui.keyform import (
    blank_values,
    changed_fields,
    error_field,
    form_payload,
    humanize,
    number_text,
    parse_number,
    values_from_record,
)
from lcm_jupyter.ui.rules import (
    clean_rules,
    model_suggestions,
    routing_payload,
    rule_index,
    rule_problems,
)

from .conftest import PROVIDER_KEY, expected_cost
from .test_ui_common import open_widgets

PROVIDERS = ("openai", "anthropic", "google")
HELLO = [{"role": "user", "content": "hello"}]


def good_values(**changes):
    """Form values that make a valid auto key with all three provider keys."""
    values = blank_values()
    values.update(name="team", provider_api_keys=dict.fromkeys(PROVIDERS, PROVIDER_KEY))
    values.update(changes)
    return values


def shown_text(widget) -> str:
    """Every string the widget tree holds (values, placeholders, labels, options)."""
    out, stack, seen = [], [widget], set()
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        for trait in ("value", "placeholder", "description", "tooltip", "options", "titles"):
            if w.has_trait(trait):
                out.append(repr(getattr(w, trait)))
        stack.extend(getattr(w, "children", ()) or ())
    return "\n".join(out)


def open_values() -> str:
    """Every value an open widget holds: what the kernel and the browser still have."""
    from ipywidgets.widgets.widget import _instances

    return "\n".join(repr(getattr(w, "value", "")) for w in list(_instances.values()))


def errors_of(form) -> dict[str, str]:
    return {field: line.text for field, line in form.field_errors.items() if line.text}


def fill(form, **values) -> None:
    for field, value in values.items():
        form.fields[field].value = value


def wait_for_logs(client: LCMClient, key_id: int, n: int) -> list[dict]:
    # A call's row is queued just after its answer goes out: give it a moment.
    deadline = time.monotonic() + 10
    while True:
        rows = client.logs(key_id=key_id)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


@pytest.fixture
def client(served):
    with LCMClient() as lcm:
        yield lcm


# -- pure helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "integer", "number"),
    [
        ("", False, None),
        ("  ", True, None),
        ("12.5", False, 12.5),
        ("$1,000", False, 1000),
        ("60", True, 60),
        ("60.0", True, 60),
        ("1.5", True, 1.5),  # left for the API's check to refuse
        ("-3", False, -3),
    ],
)
def test_parse_number(text, integer, number):
    parsed = parse_number(text, integer=integer)
    assert parsed == number and type(parsed) is type(number)


def test_parse_number_refuses_words_and_numbers_show_back_as_typed():
    with pytest.raises(ValueError, match="whole number"):
        parse_number("sixty", integer=True)
    with pytest.raises(ValueError, match="Enter a number"):
        parse_number("ten dollars", integer=False)
    for value, text in ((None, ""), (25.0, "25"), (12.5, "12.5"), (60, "60")):
        assert number_text(value) == text
        assert parse_number(text, integer=False) == value


def test_form_payload_of_good_values_is_what_the_api_accepts():
    values = good_values(
        name="  team  ",
        monthly_budget_usd="25.5",
        rate_limit_rpm="60",
        cache_ttl_seconds="",
        budget_alert_thresholds=[100, 80],
        routing_mode="manual",
        routing_rules=[{"from_model": " gpt-4o ", "to_model": "gpt-4o-mini"}],
    )
    payload, errors = form_payload(values)
    assert errors == {}
    assert payload == {
        "name": "team",
        "provider": "auto",
        "provider_api_keys": dict.fromkeys(PROVIDERS, PROVIDER_KEY),
        "budget_alerts_enabled": True,
        "budget_alert_thresholds": [80, 100],
        "routing_mode": "manual",
        "routing_rules": [
            {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "condition": "always"}
        ],
        "monthly_budget_usd": 25.5,
        "rate_limit_rpm": 60,
        "cache_ttl_seconds": 0,
    }
    assert validate_key_fields(payload, partial=False) == payload


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"monthly_budget_usd": "-5"}, "monthly_budget_usd", "from 0 to 100,000,000"),
        ({"monthly_budget_usd": "lots"}, "monthly_budget_usd", "Enter a number"),
        ({"rate_limit_rpm": "1.5"}, "rate_limit_rpm", "whole number"),
        ({"rate_limit_rpm": "0"}, "rate_limit_rpm", "above 0"),
        ({"cache_ttl_seconds": "-1"}, "cache_ttl_seconds", "whole number from 0"),
        ({"name": "   "}, "name", "Give the key a name"),
        ({"name": "x" * 201}, "name", "at most 200 characters"),
        ({"budget_alert_thresholds": []}, "budget_alert_thresholds", "non-empty list"),
        (
            {"routing_rules": [{"from_model": "gpt-4o", "to_model": ""}]},
            "routing_rules",
            "needs from_model and to_model",
        ),
        (
            {"provider_api_keys": dict.fromkeys(PROVIDERS, "")},
            "provider_api_keys",
            "at least one provider",
        ),
        (
            {"provider": "anthropic", "provider_api_keys": {"openai": PROVIDER_KEY}},
            "provider_api_keys.anthropic",
            "Enter your Anthropic API key",
        ),
    ],
)
def test_form_payload_names_the_wrong_field(changes, field, message):
    _payload, errors = form_payload(good_values(**changes))
    assert list(errors) == [field]
    assert message in errors[field]


def test_form_payload_in_edit_mode_needs_no_key_the_server_has():
    values = good_values(provider="openai", provider_api_keys=dict.fromkeys(PROVIDERS, ""))
    payload, errors = form_payload(values, stored_keys={"openai": "sk-u...cdef"})
    assert errors == {} and payload["provider_api_keys"] == {}
    # A key typed for a provider the proxy key does not use is not sent.
    values["provider_api_keys"] = {"openai": " sk-new ", "google": "sk-other"}
    payload, _ = form_payload(values, stored_keys={"openai": "sk-u...cdef"})
    assert payload["provider_api_keys"] == {"openai": "sk-new"}
    # Alerts off with nothing ticked: the thresholds are left alone.
    values.update(budget_alerts_enabled=False, budget_alert_thresholds=[])
    payload, errors = form_payload(values, stored_keys={"openai": "x"})
    assert errors == {} and "budget_alert_thresholds" not in payload


def test_changed_fields_and_values_from_record_round_trip():
    record = {
        "id": 3,
        "name": "team",
        "provider": "auto",
        "provider_api_keys": {p: mask_secret(PROVIDER_KEY) for p in PROVIDERS},
        "monthly_budget_usd": 25.0,
        "budget_alerts_enabled": True,
        "budget_alert_thresholds": [80, 90, 100],
        "rate_limit_rpm": None,
        "routing_mode": "off",
        "routing_rules": [],
        "cache_ttl_seconds": 0,
    }
    values = values_from_record(record)
    assert values["provider_api_keys"] == dict.fromkeys(PROVIDERS, "")
    payload, errors = form_payload(values, stored_keys=record["provider_api_keys"])
    assert errors == {}
    assert changed_fields(payload, record) == {}
    values.update(monthly_budget_usd="30", rate_limit_rpm="10")
    values["provider_api_keys"]["google"] = "sk-new-google"
    payload, _ = form_payload(values, stored_keys=record["provider_api_keys"])
    assert changed_fields(payload, record) == {
        "monthly_budget_usd": 30,
        "rate_limit_rpm": 10,
        "provider_api_keys": {"google": "sk-new-google"},
    }


def test_error_field_and_humanize_read_the_apis_messages():
    def refusal(**fields) -> BadRequest:
        with pytest.raises(BadRequest) as caught:
            validate_key_fields(fields, partial=True)
        return caught.value

    cases = {
        "monthly_budget_usd": refusal(monthly_budget_usd=-1),
        "provider_api_keys.openai": refusal(provider_api_keys={"openai": ""}),
        "routing_rules": refusal(
            routing_rules=[{"from_model": "a", "to_model": "b", "condition": "x"}]
        ),
        "provider": refusal(provider="azure"),
    }
    for field, exc in cases.items():
        assert error_field(exc.message) == field  # from the message alone, as LCMClient keeps it
        assert error_field(exc.message, exc.param) == field
    assert error_field("unknown field(s): colour") is None
    assert error_field("something odd", "rate_limit_rpm") == "rate_limit_rpm"
    assert humanize(cases["monthly_budget_usd"].message, "monthly_budget_usd") == (
        "Must be blank or a number from 0 to 100,000,000."
    )


def test_rule_helpers():
    rules = [
        {"from_model": " gpt-4o* ", "to_model": "gpt-4o-mini", "condition": None},
        {"from_model": "", "to_model": "", "condition": "always"},
        {"from_model": "claude-sonnet-4-5", "to_model": "", "condition": "short-only"},
        {"from_model": "a", "to_model": "b", "condition": "sometimes"},
    ]
    assert clean_rules(rules)[0] == {
        "from_model": "gpt-4o*",
        "to_model": "gpt-4o-mini",
        "condition": "always",
    }
    assert rule_problems(rules) == {
        1: "Enter the from and to model.",
        2: "Enter the to model.",
        3: "Unknown condition 'sometimes': use always, simple-only, short-only.",
    }
    assert rule_problems(rules[:1]) == {}
    assert routing_payload("manual", rules[:1]) == {
        "routing_mode": "manual",
        "routing_rules": clean_rules(rules[:1]),
    }
    assert rule_index("routing_rules[12] needs from_model and to_model") == 12
    assert rule_index("routing_mode must be one of auto, manual, off") is None
    pricing = {
        "models": [
            {"model": "gpt-4o", "provider": "openai"},
            {"model": "claude-haiku-4-5", "provider": "anthropic"},
            {"model": "gpt-4o-mini", "provider": "openai"},
        ]
    }
    assert model_suggestions(pricing) == ["claude-haiku-4-5", "gpt-4o", "gpt-4o-mini"]


# -- the form against the server -----------------------------------------------------------------


def test_create_an_auto_key_with_three_provider_keys(client):
    form = ProxyKeyForm()  # finds the server as a notebook would (LCM_SERVER_URL)
    assert form.key_id is None and form.save_button.description == "Create key"
    for p in PROVIDERS:
        assert form.key_rows[p].layout.display == ""  # auto shows every provider's field
    fill(form, name="research", monthly_budget_usd="25", rate_limit_rpm="120")
    for p in PROVIDERS:
        form.fields[f"provider_api_keys.{p}"].value = PROVIDER_KEY
    form.thresholds[80].value = False
    form.fields["routing_mode"].value = "off"
    form.save_button.click()

    assert form.messages.kind == "ok", form.messages.text
    plain = form.created_key
    assert plain and plain.startswith("lcm-")
    record = client.get_key(form.key_id)
    assert record["name"] == "research" and record["provider"] == "auto"
    assert record["monthly_budget_usd"] == 25 and record["rate_limit_rpm"] == 120
    assert record["budget_alert_thresholds"] == [90, 100] and record["routing_mode"] == "off"
    assert record["provider_api_keys"] == {p: mask_secret(PROVIDER_KEY) for p in PROVIDERS}
    assert plain.startswith(record["key_prefix"])

    # Shown once, with the note; the form now edits the key and holds no provider key.
    assert form.new_key_box.layout.display == ""
    assert plain in form.new_key_box.children[0].value
    assert "shown only this once" in form.new_key_box.children[0].value
    assert form.save_button.description == "Save changes"
    assert PROVIDER_KEY not in shown_text(form)
    assert "stored: sk-u...cdef" in form.fields["provider_api_keys.openai"].placeholder

    chat = lcm_jupyter.openai_client(plain, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=HELLO
    )
    message = lcm_jupyter.anthropic_client(plain, max_retries=0).messages.create(
        model="claude-haiku-4-5", max_tokens=50, messages=HELLO
    )
    rows = wait_for_logs(client, form.key_id, 2)
    by_model = {row["model"]: row for row in rows}
    assert set(by_model) == {"gpt-4o-mini", "claude-haiku-4-5"}
    assert all(row["status"] == 200 and row["key_id"] == form.key_id for row in rows)
    assert by_model["gpt-4o-mini"]["cost_usd"] == pytest.approx(
        expected_cost(
            "gpt-4o-mini", uncached=chat.usage.prompt_tokens, out=chat.usage.completion_tokens
        ),
        abs=1e-12,
    )
    assert by_model["claude-haiku-4-5"]["cost_usd"] == pytest.approx(
        expected_cost(
            "claude-haiku-4-5",
            uncached=message.usage.input_tokens,
            out=message.usage.output_tokens,
        ),
        abs=1e-12,
    )

    # Reloading drops the plain key: it is in no widget and not on the form any more.
    form.refresh()
    assert form.created_key is None and form.new_key_box.layout.display == "none"
    assert plain not in shown_text(form) and plain not in open_values()
    # Reloading again and again leaves no widget behind (thresholds, rule rows, confirmations).
    form.refresh()
    form.ask_revoke()
    before = open_widgets()
    for _ in range(3):
        form.refresh()
        form.ask_revoke()
    assert open_widgets() == before
    assert len(client.list_keys()) == 1


def test_the_new_key_goes_away_when_the_user_says_it_is_copied(client):
    form = ProxyKeyForm(client)
    fill(form, name="solo", provider="openai")
    assert [form.key_rows[p].layout.display for p in PROVIDERS] == ["", "none", "none"]
    form.fields["provider_api_keys.openai"].value = PROVIDER_KEY
    assert form.save()
    plain = form.created_key
    assert plain in shown_text(form)
    (done,) = [w for w in form.new_key_box.children if getattr(w, "description", "") != ""]
    done.click()
    assert form.created_key is None and plain not in shown_text(form)
    # Closed, not only hidden: no widget model left in the kernel (or browser) holds it.
    assert plain not in open_values()
    record = client.get_key(form.key_id)
    assert record["provider"] == "openai" and list(record["provider_api_keys"]) == ["openai"]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"monthly_budget_usd": "-10"}, "monthly_budget_usd", "from 0 to"),
        ({"rate_limit_rpm": "2.5"}, "rate_limit_rpm", "whole number"),
        ({"rate_limit_rpm": "fast"}, "rate_limit_rpm", "Enter a whole number"),
        ({"name": ""}, "name", "Give the key a name"),
        ({"provider_api_keys.openai": ""}, "provider_api_keys", "at least one provider"),
        ({"provider": "google"}, "provider_api_keys.google", "Enter your Google Gemini API key"),
    ],
)
def test_bad_input_is_marked_next_to_its_field_and_nothing_is_posted(
    client, changes, field, message
):
    form = ProxyKeyForm(client)
    fill(form, name="team", monthly_budget_usd="5", rate_limit_rpm="60")
    form.fields["provider_api_keys.openai"].value = PROVIDER_KEY
    fill(form, **changes)
    assert form.save() is False
    assert errors_of(form) == {field: form.field_errors[field].text}
    assert message in form.field_errors[field].text
    assert form.field_errors[field].kind == "error"
    assert "Nothing was saved" in form.messages.text
    assert client.list_keys() == [] and form.key_id is None

    # Corrected, the same form creates the key and the marks go away.
    fill(form, name="team", provider="auto", monthly_budget_usd="5", rate_limit_rpm="60")
    form.fields["provider_api_keys.openai"].value = PROVIDER_KEY
    assert form.save(), form.messages.text
    assert errors_of(form) == {} and len(client.list_keys()) == 1


def test_a_bad_rule_stops_the_form_and_is_marked_in_its_row(client):
    form = ProxyKeyForm(client)
    fill(form, name="team")
    form.fields["provider_api_keys.openai"].value = PROVIDER_KEY
    form.editor.add_rule("gpt-4o", "")
    assert form.save() is False
    assert form.editor.row_errors[0].text == "Enter the to model."
    assert "routing_rules" in errors_of(form)
    assert form.rules_section.selected_index == 0  # opened to show the row
    assert client.list_keys() == []


def test_edit_mode_loads_the_key_and_patches_only_what_changed(client):
    created = client.create_key(
        name="analysts",
        provider="auto",
        provider_api_keys=dict.fromkeys(PROVIDERS, PROVIDER_KEY),
        monthly_budget_usd=12.5,
        budget_alert_thresholds=[50, 90],
        rate_limit_rpm=30,
        routing_mode="manual",
        routing_rules=[{"from_model": "gpt-4o", "to_model": "gpt-4o-mini"}],
        cache_ttl_seconds=300,
    )
    key_id = created["id"]
    form = ProxyKeyForm(client, key_id=key_id)
    f = form.fields
    assert form.save_button.description == "Save changes"
    assert (f["name"].value, f["provider"].value) == ("analysts", "auto")
    assert (f["monthly_budget_usd"].value, f["rate_limit_rpm"].value) == ("12.5", "30")
    assert f["cache_ttl_seconds"].value == "300" and f["routing_mode"].value == "manual"
    assert {p: box.value for p, box in form.thresholds.items()} == {
        50: True,
        80: False,
        90: True,
        100: False,
    }
    assert form.editor.rules == [
        {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "condition": "always"}
    ]
    assert form.rules_section.selected_index == 0  # manual with rules: shown open
    for p in PROVIDERS:
        assert f[f"provider_api_keys.{p}"].value == ""
        assert mask_secret(PROVIDER_KEY) in f[f"provider_api_keys.{p}"].placeholder
    assert PROVIDER_KEY not in shown_text(form) and created["key"] not in shown_text(form)

    assert form.save() and form.messages.text == "Nothing to save: no field was changed."
    assert form.last_saved == []

    # Someone else changes the rate limit meanwhile; the form's save must not undo it.
    client.update_key(key_id, rate_limit_rpm=99)
    f["monthly_budget_usd"].value = "40"
    form.thresholds[100].value = True
    assert form.save(), form.messages.text
    assert form.last_saved == ["budget_alert_thresholds", "monthly_budget_usd"]
    assert form.messages.text == "Saved: alert thresholds, monthly budget."
    record = client.get_key(key_id)
    assert record["monthly_budget_usd"] == 40 and record["budget_alert_thresholds"] == [50, 90, 100]
    assert record["rate_limit_rpm"] == 99 and f["rate_limit_rpm"].value == "99"
    # The provider keys were not touched: calls still reach the provider.
    chat = lcm_jupyter.openai_client(created["key"], max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=HELLO
    )
    assert chat.choices[0].message.content

    # A typed provider key is sent, and only for that provider.
    f["provider_api_keys.openai"].value = "sk-typed-but-wrong-0000000000"
    assert form.save() and form.last_saved == ["provider_api_keys"]
    assert f["provider_api_keys.openai"].value == ""
    assert "sk-t...0000" in f["provider_api_keys.openai"].placeholder
    # (Another prompt: the key caches answers, and a cached one would not reach the provider.)
    other = [{"role": "user", "content": "hello again"}]
    with pytest.raises(openai.AuthenticationError):
        lcm_jupyter.openai_client(created["key"], max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=other
        )
    lcm_jupyter.anthropic_client(created["key"], max_retries=0).messages.create(
        model="claude-haiku-4-5", max_tokens=20, messages=HELLO
    )


def test_revoke_asks_first(client):
    created = client.create_key(
        name="old", provider="openai", provider_api_keys={"openai": PROVIDER_KEY}
    )
    form = ProxyKeyForm(client, key_id=created["id"])
    assert form.revoke_button.layout.display == ""
    form.revoke_button.click()
    assert form.confirm_box.layout.display == "" and "Revoke <b>old</b>" in shown_text(
        form.confirm_box
    )
    cancel = form.confirm_box.children[2]
    cancel.click()
    assert form.confirm_box.layout.display == "none"
    assert not client.get_key(created["id"])["revoked"]

    form.ask_revoke()
    form.confirm_box.children[1].click()
    assert client.get_key(created["id"])["revoked"]
    assert form.save_button.disabled and "(revoked)" in form.title.value
    assert "was revoked" in form.messages.text
    with pytest.raises(openai.AuthenticationError):
        lcm_jupyter.openai_client(created["key"], max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=HELLO
        )


def test_without_a_server_the_form_and_editor_say_so(kernel_env, monkeypatch):
    monkeypatch.delenv("LCM_SERVER_URL")
    form = ProxyKeyForm()
    assert form.client is None and "LCM_SERVER_URL" in form.messages.text
    fill(form, name="team")
    form.fields["provider_api_keys.openai"].value = PROVIDER_KEY
    assert form.save() is False  # the line says why; no traceback from the button
    assert form.messages.kind == "error" and "LCM_SERVER_URL" in form.messages.text
    editor = RoutingRulesEditor(key_id=3)
    assert editor.client is None and "LCM_SERVER_URL" in editor.messages.text
    assert editor.save() is False and editor.save_button.disabled


def test_server_errors_are_shown_in_the_form_not_raised(client):
    form = ProxyKeyForm(client, key_id=987654)
    assert form.messages.kind == "error"
    assert form.messages.text == "Could not load key 987654: HTTP 404: no key 987654"
    assert form.save_button.disabled

    # A refusal by the API goes next to the field it names.
    form = ProxyKeyForm(client)
    with pytest.raises(LCMClientError) as refused:
        client.create_key(name="x", monthly_budget_usd=-1)
    assert form.show_server_error(refused.value)
    assert "from 0 to 100,000,000" in form.field_errors["monthly_budget_usd"].text
    assert form.messages.text.startswith("The server refused the key: monthly_budget_usd")
    with pytest.raises(LCMClientError) as refused:
        client.create_key(name="x", colour="blue")
    assert not form.show_server_error(refused.value)  # names no field: the message line's


# -- the rules editor against the server ---------------------------------------------------------


def test_rules_editor_add_remove_save_round_trip(client):
    created = client.create_key(
        name="router", provider_api_keys=dict.fromkeys(PROVIDERS, PROVIDER_KEY)
    )
    key_id = created["id"]
    editor = RoutingRulesEditor(client, key_id=key_id)
    assert editor.mode == "off" and editor.rules == []  # new keys pass calls through
    assert editor.save_button in editor.children[-2].children  # standalone: it saves
    assert {"gpt-4o", "gpt-4o-mini", "claude-haiku-4-5"} <= set(editor.suggestions)
    assert "No rules" in shown_text(editor)

    editor.mode_selector.value = "manual"
    editor.add_button.click()
    editor.rows[0]["from_model"].value = "gpt-4.1"
    editor.rows[0]["to_model"].value = "gpt-4.1-mini"
    assert "gpt-4o-mini" in editor.rows[0]["to_model"].options
    editor.add_rule("gpt-4o*", "gpt-4o-mini", "simple-only")
    editor.add_rule("claude-sonnet-4-5", "claude-haiku-4-5", "short-only")
    editor.rows[0]["remove"].click()
    assert [line.children[0].children[0] for line in editor.table.children[1:]] == [
        row["from_model"] for row in editor.rows
    ]
    before = open_widgets()
    assert editor.save(), editor.messages.text
    assert open_widgets() == before  # the rows shown again after the save replace the old
    assert editor.messages.text == "Saved: mode manual, 2 rules."

    expected = [
        {"from_model": "gpt-4o*", "to_model": "gpt-4o-mini", "condition": "simple-only"},
        {
            "from_model": "claude-sonnet-4-5",
            "to_model": "claude-haiku-4-5",
            "condition": "short-only",
        },
    ]
    record = client.get_key(key_id)
    assert record["routing_mode"] == "manual" and record["routing_rules"] == expected
    again = RoutingRulesEditor(client, key_id=key_id)
    assert again.mode == "manual" and again.rules == expected

    # A wrong row is marked and nothing is sent.
    again.add_rule("gpt-4o", " ")
    assert again.save() is False
    assert again.row_errors[2].text == "Enter the to model."
    assert client.get_key(key_id)["routing_rules"] == expected
    again.remove_rule(2)
    again.rules = []
    again.mode_selector.value = "off"
    assert again.save()
    record = client.get_key(key_id)
    assert (record["routing_mode"], record["routing_rules"]) == ("off", [])

    # What the editor saves decides real calls: manual, gpt-4o -> gpt-4o-mini always.
    rule = {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "condition": "always"}
    assert RoutingRulesEditor(client, key_id=key_id, mode="manual", rules=[rule]).save()
    lcm_jupyter.openai_client(created["key"], max_retries=0).chat.completions.create(
        model="gpt-4o", messages=HELLO
    )
    (row,) = wait_for_logs(client, key_id, 1)
    assert (row["requested_model"], row["model"]) == ("gpt-4o", "gpt-4o-mini")


def test_rules_editor_shows_server_errors(client):
    editor = RoutingRulesEditor(client, key_id=424242)
    assert editor.messages.text == "Could not load key 424242: HTTP 404: no key 424242"
    # Unread, the key's routing is not overwritten with the editor's defaults.
    assert editor.save_button.disabled and editor.save() is False
    assert "was not loaded" in editor.messages.text
    rules = [{"from_model": "gpt-4o", "to_model": "gpt-4o-mini"}]
    editor = RoutingRulesEditor(client, key_id=424242, mode="manual", rules=rules)
    assert editor.save() is False
    assert editor.messages.text == "Could not save the routing: HTTP 404: no key 424242"
    # Without a key it has nothing to save to, and says so.
    loose = RoutingRulesEditor(client, mode="manual", rules=[{"from_model": "a", "to_model": "b"}])
    assert loose.save_button not in loose.children[-2].children
    assert loose.save() is False and "No key to save to" in loose.messages.text


def test_rules_editor_shows_the_servers_refusal_of_a_cross_provider_rule(client):
    created = client.create_key(name="x", provider_api_keys={"openai": PROVIDER_KEY})
    editor = RoutingRulesEditor(
        client,
        key_id=created["id"],
        mode="manual",
        rules=[{"from_model": "gpt-4o", "to_model": "claude-haiku-4-5"}],
    )
    assert editor.save() is False
    assert editor.messages.kind == "error" and "provider" in editor.messages.text
    assert client.get_key(created["id"])["routing_rules"] == []


def test_the_form_shows_what_auto_routing_would_save_a_key_with_routing_off(client):
    created = client.create_key(
        name="thrifty", provider_api_keys=dict.fromkeys(PROVIDERS, PROVIDER_KEY)
    )
    assert created["routing_mode"] == "off"
    sdk = lcm_jupyter.openai_client(created["key"], max_retries=0)
    sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    form = ProxyKeyForm(client, key_id=created["id"])
    (entry,) = client.shadow_savings(key_id=created["id"])["keys"]
    assert entry["calls"] == 1 and entry["saving_usd"] > 0
    assert "Auto routing would have saved" in form.shadow_note.value
    assert "on 1 calls in the last 30 days" in form.shadow_note.value
    # With routing on, the note is gone: the savings are real ones then.
    form.editor.mode_selector.value = "auto"
    form.save_button.click()
    assert form.messages.kind == "ok", form.messages.text
    assert form.shadow_note.value == ""
