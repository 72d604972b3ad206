"""A key's routing as a widget: its mode, and rules "from model -> to model, when".

    from lcm_jupyter.ui import RoutingRulesEditor
    RoutingRulesEditor(key_id=3)     # loads the key's routing; Save routing PATCHes it

Given a key id it saves by itself (PATCH `routing_mode` and `routing_rules`). Inside
`ProxyKeyForm` it is one part of the form (`embedded=True`): the form shows the mode
selector among its fields and sends `value` with the rest of the key.

The checks and the conversion to the API's fields are plain functions (`rule_problems`,
`routing_payload`, ...), so they are tested without widgets.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets

from ..client import LCMClient, LCMClientError
from ..core.keyspec import ROUTING_MODES, RULE_CONDITIONS
from ._common import Connected, LineBelow, Messages, close_all, field_row, fixed, reporting

MODE_LABELS = {"auto": "Auto", "manual": "Manual rules", "off": "Off"}
MODE_HELP = {
    "auto": "Requests judged simple go one step down their provider's model ladder "
    "(gpt-4o → gpt-4o-mini). The rules are not used.",
    "manual": "The first rule whose <i>from</i> model matches the requested model "
    "(globs such as <code>gpt-4o*</code> allowed) sends the call to its <i>to</i> model.",
    "off": "Every call goes to the model it asks for. The rules are not used.",
}
CONDITION_LABELS = {
    "always": "always",
    "simple-only": "simple requests only",
    "short-only": "short prompts only",
}
# Widths of a rule row's columns, shared by the header so that they line up.
_FROM, _ARROW, _TO, _WHEN, _REMOVE = "200px", "22px", "200px", "170px", "40px"


# -- pure helpers --------------------------------------------------------------------------------


def clean_rules(rules: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Rules as the API takes them: model names trimmed, a missing condition is 'always'."""
    return [
        {
            "from_model": str(rule.get("from_model") or "").strip(),
            "to_model": str(rule.get("to_model") or "").strip(),
            "condition": rule.get("condition") or "always",
        }
        for rule in rules
    ]


def rule_problems(rules: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """What is wrong with each rule, by row; empty when every rule is fine.

    The same checks as the API's (core.keyspec), worded per row for the table.
    """
    problems: dict[int, str] = {}
    for i, rule in enumerate(clean_rules(rules)):
        missing = [
            label
            for field, label in (("from_model", "from"), ("to_model", "to"))
            if not rule[field]
        ]
        if missing:
            problems[i] = f"Enter the {' and '.join(missing)} model."
        elif rule["condition"] not in RULE_CONDITIONS:
            problems[i] = (
                f"Unknown condition {rule['condition']!r}: use {', '.join(RULE_CONDITIONS)}."
            )
    return problems


def routing_payload(mode: str, rules: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The fields a key's routing is saved with (PATCH lcm/api/keys/{id})."""
    return {"routing_mode": mode, "routing_rules": clean_rules(rules)}


def rule_index(message: str) -> int | None:
    """The rule an API error message is about ("routing_rules[2] needs ..."), if it names one."""
    found = re.search(r"routing_rules\[(\d+)\]", message)
    return int(found.group(1)) if found else None


def model_suggestions(pricing: Mapping[str, Any]) -> list[str]:
    """Model names to offer, from the price table (GET lcm/api/pricing): by provider, then name."""
    models = pricing.get("models") or []
    rows = {(m.get("provider") or "", m["model"]) for m in models if m.get("model")}
    return [model for _provider, model in sorted(rows)]


# -- widgets -------------------------------------------------------------------------------------


class RoutingRulesEditor(Connected, widgets.VBox):
    """Edit a key's routing mode and manual rules; standalone with a key id it saves them."""

    def __init__(
        self,
        client: LCMClient | None = None,
        key_id: int | None = None,
        mode: str | None = None,
        rules: Sequence[Mapping[str, Any]] | None = None,
        *,
        embedded: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.key_id = key_id
        self.embedded = embedded
        self.messages = Messages()
        # Row widgets by column name, one error line per row, and the box holding both.
        self.rows: list[dict[str, widgets.Widget]] = []
        self.row_errors: list[LineBelow] = []
        self._lines: list[widgets.VBox] = []
        self._listeners: list[Callable[[], None]] = []

        self.mode_selector = widgets.ToggleButtons(
            options=[(MODE_LABELS[m], m) for m in ROUTING_MODES],
            value="auto",
            tooltips=[re.sub(r"<[^>]+>", "", MODE_HELP[m]) for m in ROUTING_MODES],
            style={"button_width": "110px"},
        )
        self.mode_help = widgets.HTML(layout=widgets.Layout(margin="0 0 6px 0"))
        self.title = widgets.HTML()
        self.mode_selector.observe(self._mode_changed, names="value")
        self.table = widgets.VBox()
        self.no_rules = widgets.HTML("<i>No rules. Add one to route a model to a cheaper one.</i>")
        self.header = widgets.HBox(
            [
                widgets.HTML(f"<b>{text}</b>", layout=widgets.Layout(width=width))
                for text, width in (
                    ("From model", _FROM),
                    ("", _ARROW),
                    ("To model", _TO),
                    ("When", _WHEN),
                    ("", _REMOVE),
                )
            ]
        )
        self.add_button = widgets.Button(
            description="Add rule", icon="plus", tooltip="Add a rule at the end"
        )
        self.add_button.on_click(lambda _b: self.add_rule())
        self.save_button = widgets.Button(
            description="Save routing",
            icon="check",
            button_style="primary",
            tooltip="Save the mode and the rules to the key",
        )
        self.save_button.on_click(lambda _b: self.save())

        self.suggestions: list[str] = []
        with reporting(self.messages, "load the model names"):
            self.suggestions = model_suggestions(self._connect().pricing())
        if key_id is not None:
            self.title.value = f"<h3 style='margin:4px 0'>Routing of key #{key_id}</h3>"
        # Saving defaults over a key whose routing could not be read would lose its rules.
        self.loaded = True
        if key_id is not None and (mode is None or rules is None):
            self.loaded = False
            with reporting(self.messages, f"load key {key_id}"):
                record = self._connect().get_key(key_id)
                self.loaded = True
                mode = record["routing_mode"] if mode is None else mode
                rules = record["routing_rules"] if rules is None else rules
                name = html.escape(record["name"])
                self.title.value = f"<h3 style='margin:4px 0'>Routing of key #{key_id}: {name}</h3>"
        self.set_value(mode or "auto", rules or [])

        buttons = [self.add_button]
        if key_id is not None and not embedded:
            buttons.append(self.save_button)
            self.save_button.disabled = not self.loaded
        parts: list[widgets.Widget] = []
        if not embedded:
            parts += [
                self.title,
                field_row("Routing mode", self.mode_selector),
                field_row("", self.mode_help),
            ]
        parts += [self.table, widgets.HBox(buttons), self.messages]
        self.children = parts

    # -- state -----------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The routing mode selected."""
        return self.mode_selector.value

    @property
    def rules(self) -> list[dict[str, str]]:
        """The rules as entered, in order (model names trimmed)."""
        return clean_rules(
            [
                {
                    "from_model": row["from_model"].value,
                    "to_model": row["to_model"].value,
                    "condition": row["condition"].value,
                }
                for row in self.rows
            ]
        )

    @rules.setter
    def rules(self, rules: Sequence[Mapping[str, Any]]) -> None:
        for line in self._lines:
            close_all(line)  # the rows replaced: else each load or save leaves them open
        self.rows, self.row_errors, self._lines = [], [], []
        for rule in clean_rules(rules):
            self._append(rule)
        self._render()

    @property
    def value(self) -> dict[str, Any]:
        """The routing as the API takes it: {routing_mode, routing_rules}."""
        return routing_payload(self.mode, self.rules)

    def set_value(self, mode: str, rules: Sequence[Mapping[str, Any]]) -> None:
        """Show this mode and these rules (errors are cleared)."""
        self.mode_selector.value = mode if mode in ROUTING_MODES else "auto"
        self._mode_changed()
        self.rules = rules

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after a rule is added or removed or the rules are replaced."""
        self._listeners.append(callback)

    # -- rows ------------------------------------------------------------------------------------

    def add_rule(
        self, from_model: str = "", to_model: str = "", condition: str = "always"
    ) -> dict[str, widgets.Widget]:
        """Add a rule row at the end; its widgets."""
        row = self._append({"from_model": from_model, "to_model": to_model, "condition": condition})
        self._render()
        return row

    def remove_rule(self, index: int) -> None:
        """Remove the rule in row `index`."""
        del self.rows[index]
        del self.row_errors[index]
        close_all(self._lines.pop(index))
        self._render()

    def _append(self, rule: Mapping[str, str]) -> dict[str, widgets.Widget]:
        conditions = [(CONDITION_LABELS[c], c) for c in RULE_CONDITIONS]
        if rule["condition"] not in RULE_CONDITIONS:
            # Keep a value the table cannot offer visible, so that validation can name it.
            conditions.append((rule["condition"], rule["condition"]))
        row: dict[str, widgets.Widget] = {
            "from_model": self._model_box(rule["from_model"], "e.g. gpt-4o or gpt-4o*", _FROM),
            "arrow": widgets.HTML(
                '<div style="text-align:center">→</div>', layout=fixed(widgets.Layout(width=_ARROW))
            ),
            "to_model": self._model_box(rule["to_model"], "e.g. gpt-4o-mini", _TO),
            "condition": widgets.Dropdown(
                options=conditions,
                value=rule["condition"],
                layout=fixed(widgets.Layout(width=_WHEN)),
            ),
            "remove": widgets.Button(
                icon="trash",
                tooltip="Remove this rule",
                layout=fixed(widgets.Layout(width=_REMOVE)),
            ),
        }
        row["remove"].on_click(lambda _b, row=row: self.remove_rule(self.rows.index(row)))
        error = LineBelow(layout=widgets.Layout(margin="0 0 4px 0"))
        self.rows.append(row)
        self.row_errors.append(error)
        self._lines.append(widgets.VBox([widgets.HBox(list(row.values())), error]))
        return row

    def _model_box(self, value: str, placeholder: str, width: str) -> widgets.Combobox:
        # A combobox, not a dropdown: a rule may name a glob or a model not in the price table.
        return widgets.Combobox(
            value=value,
            options=self.suggestions,
            ensure_option=False,
            placeholder=placeholder,
            layout=fixed(widgets.Layout(width=width)),
        )

    def _render(self) -> None:
        # Only boxes made once are shown: a re-draw creates no widget, so it leaves none open.
        self.table.children = [self.header, *self._lines] if self.rows else [self.no_rules]
        for listener in self._listeners:
            listener()

    def _mode_changed(self, _change: object = None) -> None:
        help_text = MODE_HELP[self.mode]
        self.mode_help.value = f'<div style="color:#555;line-height:1.4">{help_text}</div>'

    # -- checks and saving -----------------------------------------------------------------------

    def validate(self) -> bool:
        """Mark the rows that are wrong; True when every rule is fine."""
        problems = rule_problems(self.rules)
        for i, error in enumerate(self.row_errors):
            if i in problems:
                error.error(problems[i])
            else:
                error.clear()
        return not problems

    def show_server_error(self, message: str) -> None:
        """Show an API refusal of the routing; mark the rule it names, if any."""
        self.messages.error(f"The server refused the routing: {message}")
        index = rule_index(message)
        if index is not None and index < len(self.row_errors):
            self.row_errors[index].error("Refused by the server (see below).")

    def save(self) -> bool:
        """PATCH the key's routing_mode and routing_rules; True when saved."""
        self.messages.clear()
        if self.key_id is None:
            self.messages.error("No key to save to: give key_id, or use the editor in a form.")
            return False
        if not self.loaded:
            self.messages.error(f"Key {self.key_id}'s routing was not loaded, so it is not saved.")
            return False
        if not self.validate():
            self.messages.error("Fix the rules marked above.")
            return False
        record = None
        with reporting(self.messages, "save the routing"):
            try:
                record = self._connect().update_key(self.key_id, **self.value)
            except LCMClientError as exc:
                if exc.status != 400:
                    raise
                self.show_server_error(exc.message)
        if record is None:
            return False
        self.set_value(record["routing_mode"], record["routing_rules"])
        count = len(record["routing_rules"])
        self.messages.ok(
            f"Saved: mode {record['routing_mode']}, {count} rule{'' if count == 1 else 's'}."
        )
        return True
