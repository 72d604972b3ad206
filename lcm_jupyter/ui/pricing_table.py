"""The price table in force, its overrides, and the models called without a price.

    from lcm_jupyter.ui import PricingTable
    PricingTable()

Prices are USD per million tokens, shown exactly as set. Bundled rows come with the
package; an override (set here, or with PUT lcm/api/pricing) replaces or adds a model
and can be reset. A price applies to calls made after it is set; logged costs are not rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import ipywidgets as widgets

from ..client import LCMClient
from ..core.money import MISSING
from ..core.settings import PROVIDERS
from ._common import (
    ALL,
    Column,
    Connected,
    Messages,
    Table,
    count,
    heading,
    local_time,
    refresh_button,
    reporting,
)


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def price_records(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of a GET lcm/api/pricing answer as the table shows them: prices as Decimals
    (exact, and sortable), `overridden` set for overrides, the API row kept under `row`."""
    records = []
    for row in answer.get("models", []):
        records.append(
            {
                "model": row["model"],
                "provider": row["provider"],
                "input": _decimal(row.get("input")),
                "output": _decimal(row.get("output")),
                "cached_input": _decimal(row.get("cached_input")),
                "source": row.get("source", "catalog"),
                "overridden": row.get("source") == "override",
                "row": dict(row),
            }
        )
    return records


def filter_prices(
    records: Iterable[Mapping[str, Any]], provider: str | None = None, text: str = ""
) -> list[Mapping[str, Any]]:
    """The records of one provider (None: all) whose model name contains `text`."""
    needle = text.strip().lower()
    return [
        r
        for r in records
        if (provider is None or r["provider"] == provider) and needle in r["model"].lower()
    ]


def unpriced_records(answer: Mapping[str, Any], tz=None) -> list[dict[str, Any]]:
    """The models called without a price (`unpriced_models` of the answer), for display."""
    return [
        {
            "model": m["model"],
            "provider": m.get("provider"),
            "requests": m.get("requests"),
            # The day only: the API gives the start of the latest call's 15 minutes.
            "last_seen": local_time(m.get("last_seen"), tz)[:10],
        }
        for m in answer.get("unpriced_models", [])
    ]


def price_body(
    *,
    model: str,
    provider: str,
    input: str,
    output: str,
    cached_input: str = "",
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The PUT lcm/api/pricing object for what the editor holds.

    Editing a listed model starts from its row (`base`), so what the editor does not show
    (cache-write and long-context rates) is kept. Blank prices are sent as missing: the
    server says which one it needs, and checks the numbers.
    """
    model = model.strip()
    body: dict[str, Any] = {}
    if base is not None and str(base.get("model", "")).lower() == model.lower():
        body = {k: v for k, v in base.items() if k in _OVERRIDE_FIELDS}
    body.update(
        model=model,
        provider=provider,
        input=input.strip() or None,
        output=output.strip() or None,
        cached_input=cached_input.strip() or None,
    )
    return body


# What an override holds (the API row also lists the catalog's other rates and facts).
_OVERRIDE_FIELDS = frozenset(
    {
        "cache_write",
        "long_context_threshold",
        "input_long",
        "output_long",
        "cached_input_long",
    }
)


def price(value: Decimal | None) -> str:
    """A price as it was set, every decimal kept ("$0.3125", not usd()'s rounded "$0.313"):
    the table is where a price is checked, and a cost is this number times the tokens."""
    if value is None:
        return MISSING
    whole, _, decimals = f"{value:,f}".partition(".")
    return f"${whole}.{decimals.rstrip('0').ljust(2, '0')}"


def _source(value: str) -> str:
    return "override ✎" if value == "override" else value


MAX_PRICE_ROWS = 100
"""Price rows drawn at once: the catalog lists hundreds of models, and drawing them all took
~3 s in a notebook cell; the filter finds the others."""
PRICE_COLUMNS = (
    Column("model", "Model"),
    Column("provider", "Provider"),
    Column("input", "Input", price, numeric=True),
    Column("output", "Output", price, numeric=True),
    Column("cached_input", "Cached input", price, numeric=True),
    Column("source", "Source", _source),
)
UNPRICED_COLUMNS = (
    Column("model", "Model"),
    Column("provider", "Provider", lambda v: v or "—"),
    Column("requests", "Calls", count, numeric=True),
    Column("last_seen", "Last seen"),
)


def _section() -> widgets.Layout:
    """A section of the widget: a rule above it."""
    return widgets.Layout(margin="10px 0 0 0", padding="6px 0 0 0", border_top="1px solid #ddd")


def _small() -> widgets.Layout:
    return widgets.Layout(width="36px", height="26px", padding="0")


def _text(description: str, placeholder: str, width: str = "150px") -> widgets.Text:
    return widgets.Text(
        description=description,
        placeholder=placeholder,
        layout=widgets.Layout(width=width),
        style={"description_width": "initial"},
    )


class PriceEditor(widgets.VBox):
    """A model's price: model, provider, input/output/cached-input USD per 1M tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.add_class("lcm-price-editor")
        self.base: Mapping[str, Any] | None = None
        self.model = _text("Model", "e.g. gpt-4o-mini", "260px")
        self.provider = widgets.Dropdown(
            options=PROVIDERS,
            value="openai",
            description="Provider",
            layout=widgets.Layout(width="200px"),
            style={"description_width": "initial"},
        )
        self.input = _text("Input", "e.g. 2.50")
        self.output = _text("Output", "e.g. 10.00")
        self.cached_input = _text("Cached input", "optional", "190px")
        self.save_button = widgets.Button(
            description="Save price", icon="check", button_style="primary"
        )
        self.clear_button = widgets.Button(description="Clear", icon="times")
        for button in (self.save_button, self.clear_button):
            button.layout = widgets.Layout(width="auto")
        self.clear_button.on_click(lambda _b: self.clear())
        self.note = widgets.HTML()
        self.layout = _section()
        self.children = [
            widgets.HTML(heading("Set a price", "USD per 1M tokens", size="1em")),
            widgets.HBox([self.model, self.provider], layout=widgets.Layout(grid_gap="8px")),
            widgets.HBox(
                [self.input, self.output, self.cached_input],
                layout=widgets.Layout(grid_gap="8px"),
            ),
            widgets.HBox(
                [self.save_button, self.clear_button, self.note],
                layout=widgets.Layout(align_items="center", grid_gap="8px"),
            ),
        ]

    def load(self, row: Mapping[str, Any]) -> None:
        """Fill in a listed model's price, to change it."""
        self.base = dict(row)
        self.model.value = row["model"]
        self.provider.value = row["provider"]
        self.input.value = row.get("input") or ""
        self.output.value = row.get("output") or ""
        self.cached_input.value = row.get("cached_input") or ""
        kept = [
            name for name in ("cache_write", "long_context_threshold") if row.get(name) is not None
        ]
        self.note.value = (
            "<span style='color:#555'>Cache-write and long-context rates are kept.</span>"
            if kept
            else ""
        )

    def prefill(self, model: str, provider: str | None = None) -> None:
        """Start a price for a model that has none."""
        self.clear()
        self.model.value = model
        if provider in PROVIDERS:
            self.provider.value = provider

    def clear(self) -> None:
        """Empty the fields."""
        self.base = None
        self.model.value = self.input.value = self.output.value = self.cached_input.value = ""
        self.note.value = ""

    def body(self) -> dict[str, Any]:
        """The price object to PUT."""
        return price_body(
            model=self.model.value,
            provider=self.provider.value,
            input=self.input.value,
            output=self.output.value,
            cached_input=self.cached_input.value,
            base=self.base,
        )


class PricingTable(Connected, widgets.VBox):
    """The prices in force (from the catalog or overridden), filterable by provider and model, with
    an editor, a reset for overrides, and the models called without a price.

    State for code and tests: `records` (all prices), `shown` (after the filter),
    `provider_filter`, `model_filter`, `unpriced` (models without a price), `editor`,
    `edit_buttons` / `reset_buttons` / `price_buttons` ({model: button}), `messages`.
    """

    def __init__(self, client: LCMClient | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("lcm-pricing")
        self.messages = Messages()
        self.client = client
        self.version = ""
        self.records: list[dict[str, Any]] = []
        self.unpriced: list[dict[str, Any]] = []
        self.edit_buttons: dict[str, widgets.Button] = {}
        self.reset_buttons: dict[str, widgets.Button] = {}
        self.price_buttons: dict[str, widgets.Button] = {}

        self.title = widgets.HTML()
        self.provider_filter = widgets.Dropdown(
            options=[("All providers", ALL)],
            value=ALL,
            description="Provider",
            layout=widgets.Layout(width="220px"),
            style={"description_width": "initial"},
        )
        self.model_filter = widgets.Text(
            placeholder="model name contains…", layout=widgets.Layout(width="200px")
        )
        self.refresh_button = refresh_button(self.refresh, "Load the prices again")
        self.table = Table(
            PRICE_COLUMNS,
            extra=self._row_buttons,
            empty="No prices match the filter.",
            max_rows=MAX_PRICE_ROWS,
            layout=widgets.Layout(max_height="420px", overflow="auto"),
        )
        self.unpriced_table = Table(
            UNPRICED_COLUMNS,
            extra=self._price_button,
            empty="None: every model called in the last 90 days has a price.",
        )
        self.editor = PriceEditor()
        self.editor.save_button.on_click(lambda _b: self.save())
        self._quiet = False
        self.provider_filter.observe(self._filter_changed, names="value")
        self.model_filter.observe(self._filter_changed, names="value")
        self.children = [
            self.title,
            widgets.HBox(
                [self.provider_filter, self.model_filter, self.refresh_button],
                layout=widgets.Layout(align_items="center", grid_gap="8px"),
            ),
            self.table,
            widgets.HTML(
                heading(
                    "Called without a price",
                    "calls logged in the last 90 days whose model no price covers: "
                    "their cost is unknown",
                    size="1em",
                ),
                layout=_section(),
            ),
            self.unpriced_table,
            self.editor,
            self.messages,
        ]
        self.refresh()

    @property
    def shown(self) -> list[Mapping[str, Any]]:
        """The price rows the filter keeps, in the order shown."""
        return self.table.rows

    # -- loading ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Load the price table and the unpriced models again."""
        self.messages.clear()
        self._fetch()

    def _fetch(self) -> bool:
        with reporting(self.messages, "load the prices"):
            self._apply(self._connect().pricing())
            return True
        return False

    def _apply(self, answer: Mapping[str, Any]) -> None:
        self.version = answer.get("version", "")
        self.records = price_records(answer)
        self.unpriced = unpriced_records(answer)
        overrides = sum(1 for r in self.records if r["overridden"])
        self.title.value = heading(
            "Model prices",
            f"USD per 1M tokens · {len(self.records)} models, {overrides} overridden · "
            f"table {self.version}",
        )
        providers = sorted({r["provider"] for r in self.records})
        keep = self.provider_filter.value
        self._quiet = True  # new options are not a filter change: draw the rows once, below
        self.provider_filter.options = [("All providers", ALL)] + [(p, p) for p in providers]
        self.provider_filter.value = keep if keep in providers else ALL
        self._quiet = False
        self._show()
        self.price_buttons = {}
        self.unpriced_table.set_records(self.unpriced)

    def _filter_changed(self, _change: dict) -> None:
        if not self._quiet:
            self._show()

    def _show(self) -> None:
        self.edit_buttons, self.reset_buttons = {}, {}
        provider = self.provider_filter.value
        self.table.set_records(
            filter_prices(
                self.records, None if provider == ALL else provider, self.model_filter.value
            )
        )

    # -- row buttons -----------------------------------------------------------------------------

    def _row_buttons(self, record: Mapping[str, Any]) -> widgets.Widget:
        model = record["model"]
        edit = widgets.Button(
            icon="pencil", tooltip=f"Change the price of {model}", layout=_small()
        )
        edit.on_click(lambda _b: self.edit(model))
        self.edit_buttons[model] = edit
        buttons = [edit]
        if record["overridden"]:
            reset = widgets.Button(
                icon="undo",
                tooltip=f"Drop the override of {model} (back to the catalog price, if any)",
                layout=_small(),
            )
            reset.on_click(lambda _b: self.reset(model))
            self.reset_buttons[model] = reset
            buttons.append(reset)
        return widgets.HBox(buttons, layout=widgets.Layout(grid_gap="4px"))

    def _price_button(self, record: Mapping[str, Any]) -> widgets.Widget:
        model = record["model"]
        button = widgets.Button(
            description="Set price",
            icon="tag",
            button_style="warning",
            tooltip=f"Give {model} a price",
            layout=widgets.Layout(width="auto", height="26px"),
        )
        button.on_click(lambda _b: self.price_unpriced(model))
        self.price_buttons[model] = button
        return widgets.HBox([button])  # the grid stretches its cell, not the button

    def edit(self, model: str) -> None:
        """Load a listed model's price into the editor."""
        for record in self.records:
            if record["model"] == model:
                self.editor.load(record["row"])
                self.messages.show(f"Editing {model}: change the prices, then Save price.")
                return

    def price_unpriced(self, model: str) -> None:
        """Start a price in the editor for a model called without one."""
        provider = next((u["provider"] for u in self.unpriced if u["model"] == model), None)
        self.editor.prefill(model, provider)
        self.messages.show(f"Pricing {model}: enter its prices, then Save price.")

    # -- changes ---------------------------------------------------------------------------------

    def save(self) -> None:
        """PUT the editor's price; later calls of that model are priced with it."""
        body = self.editor.body()
        with reporting(self.messages, f"save the price of {body['model'] or '(no model)'}"):
            self._apply(self._connect().set_prices(body))
            saved = next((r for r in self.records if r["model"] == body["model"].lower()), None)
            if saved is not None:
                if saved not in self.table.shown_rows:
                    self.model_filter.value = saved["model"]  # show the row just saved
                self.editor.load(saved["row"])
                self.messages.ok(
                    f"Saved: {saved['model']} at {price(saved['input'])} in, "
                    f"{price(saved['output'])} out per 1M tokens (calls from now on)."
                )

    def reset(self, model: str) -> None:
        """Drop a model's override; the catalog price, if there is one, applies again."""
        with reporting(self.messages, f"reset the price of {model}"):
            self._connect().reset_price(model)
            if self._fetch():
                back = any(r["model"] == model for r in self.records)
                self.messages.ok(
                    f"{model} is back to its catalog price."
                    if back
                    else f"{model} has no price now (the catalog has none)."
                )
