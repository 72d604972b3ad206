"""A form to create or edit a proxy key: providers and their API keys, budget and alerts,
rate limit, routing and cache.

    from lcm_jupyter.ui import ProxyKeyForm
    ProxyKeyForm()            # a new key; the plain proxy key is shown once, after Create
    ProxyKeyForm(key_id=3)    # edit key 3; only the fields changed are sent

The form checks its fields with the API's own checks (core.keyspec) before anything is
sent, and shows each problem next to its field; a refusal by the server goes next to
the field it names, else on the message line. Provider API keys never come back from
the server: their fields stay empty, with the masked key as placeholder, and a key is
only sent when one is typed.

Turning the form's values into the API's fields (`form_payload`, `changed_fields`,
`values_from_record`, `error_field`) is plain functions, tested without widgets.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection, Mapping
from typing import Any

import ipywidgets as widgets

from ..client import LCMClient, LCMClientError
from ..core.errors import BadRequest
from ..core.keyspec import (
    FIELDS,
    KEY_FIELDS,
    KEY_PROVIDERS,
    defaults,
    validate_key_fields,
)
from ..core.providers import ADAPTERS, PROVIDERS
from ._common import (
    LABEL_WIDTH,
    AlertThresholds,
    Connected,
    LineBelow,
    Messages,
    count,
    field_row,
    fixed,
    replace_children,
    reporting,
    usd,
)
from .rules import RoutingRulesEditor, clean_rules

PROVIDER_LABELS = {name: a.label for name, a in ADAPTERS.items()}
PROVIDER_CHOICES = {
    "auto": "Auto: any provider (detected per call)",
    **{p: PROVIDER_LABELS[p] for p in PROVIDERS},
}
# Number fields are typed as text: blank means "none", and a wrong entry can be named.
NUMBER_FIELDS = {f.name: f.number == "int" for f in KEY_FIELDS if f.number}
PROVIDER_KEY_FIELDS = tuple(f"provider_api_keys.{p}" for p in PROVIDERS)
FORM_FIELDS = (*FIELDS, *PROVIDER_KEY_FIELDS)
# How the message line names the fields a save sent.
FIELD_LABELS = {f.name: f.label for f in KEY_FIELDS}
_INPUT_WIDTH = "330px"


# -- pure helpers --------------------------------------------------------------------------------


def key_providers(provider: str) -> tuple[str, ...]:
    """The providers whose API keys a proxy key of `provider` uses."""
    return PROVIDERS if provider == "auto" else (provider,) if provider in PROVIDERS else ()


def parse_number(text: str, *, integer: bool) -> int | float | None:
    """A number field's value: None when blank, ValueError when it is not a number.

    Whether the number is allowed (sign, range, whole) is left to core.keyspec.
    """
    cleaned = re.sub(r"[\s,_$]", "", str(text))
    if not cleaned:
        return None
    try:
        return int(cleaned)
    except ValueError:
        pass
    try:
        number = float(cleaned)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"Enter {kind}, or leave it blank.") from None
    # 60.0 requests per minute is 60; 1.5 stays 1.5 for the check to refuse.
    return int(number) if integer and number.is_integer() else number


def number_text(value: float | None) -> str:
    """How a number field shows a stored value (blank for none)."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def humanize(message: str, field: str) -> str:
    """An API check's message worded for the form: the field is the one it sits next to."""
    text = message.removeprefix(field).strip()
    text = text.replace("null or ", "blank or ")
    text = re.sub(r"\d(?:\.\d+)?e\+\d+", lambda m: f"{float(m.group()):,.0f}", text)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def error_field(message: str, param: str | None = None) -> str | None:
    """The form field an API error is about, from its `param` or the name it starts with."""
    found = re.match(r"(provider_api_keys\.\w+|[a-z_]+)", message)
    for name in (found.group(1) if found else None, param):
        if name in FORM_FIELDS:
            return name
    return None


def form_payload(
    values: Mapping[str, Any], *, stored_keys: Collection[str] = ()
) -> tuple[dict[str, Any], dict[str, str]]:
    """The API fields for the form's `values`, and a message for each form field that is wrong.

    `values` holds what the widgets hold (see `values_from_record`): numbers as text,
    blank for none; provider API keys as typed, '' when left alone. `stored_keys` names
    the providers whose API key the server already has (edit mode). Each field is checked
    by core.keyspec's own check, so the form refuses exactly what the API would.
    """
    errors: dict[str, str] = {}
    provider = values["provider"]
    wanted = key_providers(provider)
    typed = {
        p: key.strip()
        for p, key in (values.get("provider_api_keys") or {}).items()
        if p in wanted and key and key.strip()
    }
    raw: dict[str, Any] = {
        "name": values["name"],
        "provider": provider,
        "provider_api_keys": typed,
        "budget_alerts_enabled": bool(values["budget_alerts_enabled"]),
        "routing_mode": values["routing_mode"],
        "routing_rules": clean_rules(values.get("routing_rules") or []),
    }
    thresholds = sorted(values.get("budget_alert_thresholds") or [])
    # With alerts off and no threshold ticked, the thresholds are left as they are.
    if thresholds or raw["budget_alerts_enabled"]:
        raw["budget_alert_thresholds"] = thresholds
    if not str(values["name"]).strip():
        errors["name"] = "Give the key a name."
    for field, integer in NUMBER_FIELDS.items():
        try:
            raw[field] = parse_number(values.get(field, ""), integer=integer)
        except ValueError as exc:
            errors[field] = str(exc)

    payload: dict[str, Any] = {}
    for field, value in raw.items():
        if field in errors:
            continue
        try:
            payload.update(validate_key_fields({field: value}, partial=True))
        except BadRequest as exc:
            errors[error_field(exc.message, exc.param) or field] = humanize(exc.message, field)

    missing = [p for p in wanted if p not in typed and p not in stored_keys]
    if provider == "auto" and len(missing) == len(PROVIDERS):
        errors["provider_api_keys"] = "Enter the API key of at least one provider."
    elif provider != "auto":
        for p in missing:
            errors[f"provider_api_keys.{p}"] = f"Enter your {PROVIDER_LABELS[p]} API key."
    return payload, errors


def changed_fields(payload: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `payload` that differs from the key `record` (as GET lcm/api/keys/{id}
    answers); provider API keys count only when typed."""
    return {
        field: value
        for field, value in payload.items()
        if (value if field == "provider_api_keys" else value != record.get(field))
    }


def values_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The form's values for a key record; provider API keys blank (the server sends masks)."""
    values = _form_values({f.name: record[f.name] for f in KEY_FIELDS})
    values["name"] = record["name"]
    return values


def _form_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Key fields as the widgets hold them: numbers as text (blank for none, and for the
    value none is stored as: a cache TTL of 0 is off), lists copied, provider API keys
    blank."""
    values: dict[str, Any] = {}
    for spec in KEY_FIELDS:
        value = fields[spec.name]
        if spec.number:
            value = number_text(None if value == spec.blank else value)
        elif isinstance(value, list):
            value = list(value)
        values[spec.name] = value
    values["provider_api_keys"] = dict.fromkeys(PROVIDERS, "")
    return values


def shadow_line(entry: Mapping[str, Any], period: str | None) -> str:
    """'Auto routing would have saved $0.42 on 120 calls in the last 30 days.'"""
    days = f" in the last {period[:-1]} days" if period and period.endswith("d") else ""
    return (
        f"Auto routing would have saved {usd(entry.get('saving_usd') or 0.0)} on "
        f"{count(entry.get('calls') or 0)} calls{days}."
    )


def blank_values() -> dict[str, Any]:
    """The form's values for a new key: the API's defaults."""
    values = _form_values(defaults())
    values["name"] = ""
    return values


# -- the widget ----------------------------------------------------------------------------------


def _text(placeholder: str, width: str = _INPUT_WIDTH, cls=widgets.Text) -> widgets.Text:
    return cls(placeholder=placeholder, layout=fixed(widgets.Layout(width=width)))


def _error_line() -> Messages:
    return Messages(layout=widgets.Layout(margin="0 0 0 8px"))


class ProxyKeyForm(Connected, widgets.VBox):
    """Create a proxy key, or edit one (`key_id`); talks to the extension through LCMClient.

    For tests and scripts: `fields` (form field -> widget), `field_errors` (form field ->
    its error line), `messages`, `created_key` (the plain key while it is on show),
    `last_saved` (the fields the last save sent), `record` (the key as last loaded).
    """

    def __init__(self, client: LCMClient | None = None, key_id: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.client = client
        self.key_id: int | None = None
        # What auto routing would have saved this key (the evidence to turn it on).
        self.shadow_note = widgets.HTML()
        self.record: dict[str, Any] | None = None
        self.created_key: str | None = None
        self.last_saved: list[str] = []
        self.messages = Messages()
        with reporting(self.messages, "connect to the lcm-jupyter extension"):
            self._connect()  # now, so that the rules editor shares the client
        self.editor = RoutingRulesEditor(self.client, embedded=True)
        self._build()
        not_found = self.messages.text  # shown again after the fields are set, which clear it
        self._set_values(blank_values())
        self._show_mode()
        if not_found:
            self.messages.error(not_found)
        if key_id is not None:
            self.load(key_id)

    # -- layout ----------------------------------------------------------------------------------

    def _build(self) -> None:
        self.title = widgets.HTML()
        thresholds = AlertThresholds()
        self.fields: dict[str, widgets.Widget] = {
            "name": _text("e.g. research-team"),
            "provider": widgets.Dropdown(
                options=[(label, p) for p, label in PROVIDER_CHOICES.items()],
                layout=fixed(widgets.Layout(width=_INPUT_WIDTH)),
            ),
            **{f"provider_api_keys.{p}": _text("", cls=widgets.Password) for p in PROVIDERS},
            "monthly_budget_usd": _text("no budget", "140px"),
            "budget_alerts_enabled": thresholds.switch,
            "budget_alert_thresholds": thresholds,
            "rate_limit_rpm": _text("no limit", "140px"),
            "cache_ttl_seconds": _text("off", "140px"),
            "routing_mode": self.editor.mode_selector,
            "routing_rules": self.editor,
        }
        errors = {name: _error_line() for name in FORM_FIELDS}
        # The alert switch and its thresholds share a row, so they share its error line.
        errors["budget_alerts_enabled"] = errors["budget_alert_thresholds"]
        errors["routing_rules"] = self.editor.messages
        # Under the provider key fields (about them all): no room taken while empty.
        errors["provider_api_keys"] = LineBelow(
            layout=widgets.Layout(margin=f"0 0 0 {LABEL_WIDTH}")
        )
        self.field_errors: dict[str, Messages] = errors
        f = self.fields

        self.key_rows = {
            p: field_row(
                f"{PROVIDER_LABELS[p]} API key",
                f[f"provider_api_keys.{p}"],
                errors[f"provider_api_keys.{p}"],
            )
            for p in PROVIDERS
        }
        self.rules_section = widgets.Accordion(children=[self.editor], selected_index=None)
        self.editor.on_change(self._rules_title)
        self._rules_title()

        self.save_button = widgets.Button(button_style="primary", icon="check")
        self.save_button.on_click(lambda _b: self.save())
        self.reload_button = widgets.Button(
            description="Reload", icon="refresh", tooltip="Discard edits and load the key again"
        )
        self.reload_button.on_click(lambda _b: self.refresh())
        self.revoke_button = widgets.Button(
            description="Revoke…", icon="ban", tooltip="Revoke this key (asks first)"
        )
        self.revoke_button.on_click(lambda _b: self.ask_revoke())
        self.confirm_box = widgets.HBox(layout=widgets.Layout(display="none"))
        self.new_key_box = widgets.VBox(
            layout=widgets.Layout(
                display="none", border="1px solid #c9a227", padding="6px 10px", margin="6px 0"
            )
        )

        f["provider"].observe(lambda _c: self._show_key_rows(), names="value")
        self.editor.mode_selector.observe(self._mode_switched, names="value")

        def section(text: str) -> widgets.HTML:
            return widgets.HTML(
                f'<div style="margin-top:8px;font-weight:600;color:#333">{text}</div>'
            )

        self.key_rows_box = widgets.VBox(list(self.key_rows.values()))
        self.children = [
            self.title,
            self.new_key_box,
            section("Key"),
            field_row("Name", f["name"], errors["name"]),
            field_row("Provider", f["provider"], errors["provider"]),
            self.key_rows_box,
            errors["provider_api_keys"],
            section("Budget and limits"),
            field_row(
                "Monthly budget (USD)", f["monthly_budget_usd"], errors["monthly_budget_usd"]
            ),
            field_row(
                "Budget alerts",
                f["budget_alerts_enabled"],
                f["budget_alert_thresholds"],
                errors["budget_alert_thresholds"],
                tooltip="An alert when the month's spend reaches these shares of the budget",
            ),
            field_row("Rate limit (requests/min)", f["rate_limit_rpm"], errors["rate_limit_rpm"]),
            field_row(
                "Response cache (seconds)",
                f["cache_ttl_seconds"],
                errors["cache_ttl_seconds"],
                tooltip="How long an identical request is answered from the cache",
            ),
            section("Routing"),
            field_row("Routing mode", f["routing_mode"], errors["routing_mode"]),
            field_row("", self.editor.mode_help),
            field_row("", self.shadow_note),
            self.rules_section,
            widgets.HBox(
                [self.save_button, self.reload_button, self.revoke_button],
                layout=widgets.Layout(margin="10px 0 0 0"),
            ),
            self.confirm_box,
            self.messages,
        ]
        self.layout.max_width = "900px"

    @property
    def thresholds(self) -> dict[int, widgets.Checkbox]:
        """The alert threshold boxes: percentage -> Checkbox."""
        return self.fields["budget_alert_thresholds"].boxes

    def _show_key_rows(self) -> None:
        wanted = key_providers(self.fields["provider"].value)
        for p, row in self.key_rows.items():
            row.layout.display = "" if p in wanted else "none"

    def _mode_switched(self, change: Mapping[str, Any]) -> None:
        if change["new"] == "manual":
            self.rules_section.selected_index = 0

    def _rules_title(self) -> None:
        n = len(self.editor.rows)
        self.rules_section.set_title(0, f"Routing rules ({n}): used in manual mode")

    def _show_mode(self) -> None:
        editing = self.key_id is not None
        revoked = bool(self.record and self.record.get("revoked"))
        if not editing:
            self.title.value = "<h3 style='margin:4px 0'>New proxy key</h3>"
        elif self.record is not None:
            name = html.escape(self.record["name"])
            prefix = html.escape(self.record["key_prefix"])
            note = " <span style='color:#b00020'>(revoked)</span>" if revoked else ""
            self.title.value = (
                f"<h3 style='margin:4px 0'>Key #{self.key_id}: {name}{note}</h3>"
                f"<div style='color:#555'>Proxy key <code>{prefix}…</code></div>"
            )
        self.save_button.description = "Save changes" if editing else "Create key"
        self.save_button.tooltip = "Send the changed fields" if editing else "Create the key"
        self.save_button.disabled = revoked
        self.reload_button.layout.display = "" if editing else "none"
        self.revoke_button.layout.display = "" if editing else "none"
        self.revoke_button.disabled = revoked
        stored = (self.record or {}).get("provider_api_keys") or {}
        for p in PROVIDERS:
            mask = stored.get(p)
            box = self.fields[f"provider_api_keys.{p}"]
            box.placeholder = f"stored: {mask} (type to replace)" if mask else "paste the API key"

    # -- values ----------------------------------------------------------------------------------

    def values(self) -> dict[str, Any]:
        """What the widgets hold, in the shape `form_payload` takes."""
        f = self.fields
        return {
            **{name: f[name].value for name in ("name", "provider", *NUMBER_FIELDS)},
            "provider_api_keys": {p: f[f"provider_api_keys.{p}"].value for p in PROVIDERS},
            "budget_alerts_enabled": f["budget_alerts_enabled"].value,
            "budget_alert_thresholds": f["budget_alert_thresholds"].chosen,
            "routing_mode": self.editor.mode,
            "routing_rules": self.editor.rules,
        }

    def _set_values(self, values: Mapping[str, Any]) -> None:
        f = self.fields
        for name in ("name", *NUMBER_FIELDS):
            f[name].value = values[name]
        f["provider"].value = values["provider"] if values["provider"] in KEY_PROVIDERS else "auto"
        for p in PROVIDERS:
            f[f"provider_api_keys.{p}"].value = values["provider_api_keys"].get(p, "")
        f["budget_alerts_enabled"].value = bool(values["budget_alerts_enabled"])
        f["budget_alert_thresholds"].set(values["budget_alert_thresholds"])
        self.editor.set_value(values["routing_mode"], values["routing_rules"])
        self.rules_section.selected_index = 0 if self.editor.mode == "manual" else None
        self._show_key_rows()
        self._clear_errors()

    def _clear_errors(self) -> None:
        for line in {id(e): e for e in self.field_errors.values()}.values():
            line.clear()
        for line in self.editor.row_errors:
            line.clear()
        self.messages.clear()

    def validate(self) -> dict[str, Any] | None:
        """Check the fields and mark the wrong ones; the API fields to send, or None."""
        self._clear_errors()
        stored = (self.record or {}).get("provider_api_keys") or {}
        payload, errors = form_payload(self.values(), stored_keys=stored)
        rules_ok = self.editor.validate()
        for field, message in errors.items():
            self.field_errors[field].error(message)
        if errors or not rules_ok:
            if not rules_ok and "routing_rules" not in errors:
                self.field_errors["routing_rules"].error("Fix the rules marked above.")
            if not rules_ok:
                self.rules_section.selected_index = 0
            self.messages.error("Nothing was saved: fix the fields marked in red.")
            return None
        return payload

    # -- actions ---------------------------------------------------------------------------------

    def save(self) -> bool:
        """Create the key, or send the fields changed since it was loaded; True on success."""
        payload = self.validate()
        if payload is None:
            return False
        if self.key_id is None:
            return self._create(payload)
        changes = changed_fields(payload, self.record or {})
        if not changes:
            self.messages.show("Nothing to save: no field was changed.")
            return True
        record = self._call("save the key", "update_key", self.key_id, **changes)
        if record is None:
            return False
        self.last_saved = sorted(changes)
        self._loaded(record)
        self.messages.ok(f"Saved: {', '.join(FIELD_LABELS[f] for f in self.last_saved)}.")
        return True

    def _create(self, payload: dict[str, Any]) -> bool:
        record = self._call("create the key", "create_key", **payload)
        if record is None:
            return False
        self.last_saved = sorted(payload)
        plain = record.pop("key")
        self._loaded(record)
        self.created_key = plain
        self._show_new_key()
        self.messages.ok(f"Key #{record['id']} created. The form now edits it.")
        return True

    def _call(self, doing: str, method: str, *args: Any, **fields: Any) -> dict[str, Any] | None:
        """One REST call (an LCMClient method); a 400 naming a field is shown next to it,
        other failures below."""
        with reporting(self.messages, doing):
            try:
                return getattr(self._connect(), method)(*args, **fields)
            except LCMClientError as exc:
                if not self.show_server_error(exc):
                    raise
        return None

    def show_server_error(self, exc: LCMClientError) -> bool:
        """Put a 400 answer next to the field it names; False when it names none."""
        field = error_field(exc.message, exc.param) if exc.status == 400 else None
        if field is None:
            return False
        if field == "routing_rules":
            self.editor.show_server_error(exc.message)
            self.rules_section.selected_index = 0
        else:
            self.field_errors[field].error(humanize(exc.message, field))
        self.messages.error(f"The server refused the key: {exc.message}")
        return True

    def _show_shadow(self, record: dict[str, Any]) -> None:
        """Under the routing mode: what auto routing would have saved this key lately."""
        self.shadow_note.value = ""
        if record.get("routing_mode") != "off":
            return
        answer = self._call("load the routing savings", "shadow_savings", key_id=record["id"])
        entry = (answer or {}).get("keys") or []
        if entry:
            line = shadow_line(entry[0], (answer or {}).get("period"))
            self.shadow_note.value = f'<div style="color:#2a6f2a">{html.escape(line)}</div>'

    def load(self, key_id: int) -> bool:
        """Show key `key_id` (GET lcm/api/keys/{id}) for editing; True when it was found."""
        record = self._call(f"load key {key_id}", "get_key", key_id)
        if record is None:
            self.key_id = key_id
            self.save_button.disabled = True
            return False
        self._loaded(record)
        return True

    def refresh(self) -> bool:
        """Load the key again, dropping unsaved edits and the new key's display."""
        if self.key_id is None:
            self.dismiss_key()
            self._set_values(blank_values())
            return True
        return self.load(self.key_id)

    def _loaded(self, record: dict[str, Any]) -> None:
        self.dismiss_key()
        self.key_id, self.record = record["id"], record
        self._set_values(values_from_record(record))
        self.confirm_box.layout.display = "none"
        self._show_mode()
        self._show_shadow(record)
        if record.get("revoked"):
            self.messages.show(
                f"This key was revoked at {record['revoked_at']}; it makes no calls."
            )

    def _show_new_key(self) -> None:
        done = widgets.Button(description="I have copied it", icon="check")
        done.on_click(lambda _b: self.dismiss_key())
        replace_children(
            self.new_key_box,
            [
                widgets.HTML(
                    "<b>Your new proxy key</b> (click it to select it):<br>"
                    "<code style='user-select:all;font-size:1.05em;word-break:break-all'>"
                    f"{html.escape(self.created_key or '')}</code><br>"
                    "<span style='color:#8a6d00'>Copy it now: it is shown only this once. "
                    "The server keeps only its hash, so it cannot be shown again.</span>"
                ),
                done,
            ],
        )
        self.new_key_box.layout.display = ""

    def dismiss_key(self) -> None:
        """Forget the new plain key: it leaves the display and this object."""
        self.created_key = None
        # Closed, not only taken out: an open widget keeps the key in the kernel and browser.
        replace_children(self.new_key_box)
        self.new_key_box.layout.display = "none"

    def ask_revoke(self) -> None:
        """Ask before revoking: show Revoke / Cancel."""
        if self.key_id is None or self.record is None:
            return
        yes = widgets.Button(description="Revoke", button_style="danger", icon="ban")
        no = widgets.Button(description="Cancel")
        yes.on_click(lambda _b: self.revoke())
        no.on_click(lambda _b: setattr(self.confirm_box.layout, "display", "none"))
        name = html.escape(self.record["name"])
        replace_children(
            self.confirm_box,
            [
                widgets.HTML(
                    f"Revoke <b>{name}</b>? Calls with it are refused from then on; its logs stay.",
                    layout=widgets.Layout(margin="0 8px 0 0"),
                ),
                yes,
                no,
            ],
        )
        self.confirm_box.layout.display = ""

    def revoke(self) -> bool:
        """Revoke the key (DELETE lcm/api/keys/{id}); True when done."""
        self.confirm_box.layout.display = "none"
        record = self._call("revoke the key", "revoke_key", self.key_id)
        if record is None:
            return False
        self._loaded(record)
        return True
