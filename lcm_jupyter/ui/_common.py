"""What every widget shares: the client it talks through, a message line, money and
token formats, and a table with sortable columns.

The widgets talk to the extension only through `lcm_jupyter.client.LCMClient` (the REST
API), so they work the same against the server extension and `%lcm serve`.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from ..client import LCMClient, LCMClientError
from ..core.money import MISSING, format_usd


def connect(client: LCMClient | None = None, **kwargs: Any) -> LCMClient:
    """The client a widget uses: the one given, else one found from the kernel's environment."""
    return client if client is not None else LCMClient(**kwargs)


usd = format_usd  # sub-cent costs stay visible: "$0.0042", not "$0.00"


def count(value: int | float | None) -> str:
    """A count with thousands separators."""
    return MISSING if value is None else f"{int(value):,}"


def percent(value: float | None) -> str:
    """A share in percent, one decimal."""
    return MISSING if value is None else f"{value:.1f}%"


def millis(value: float | None) -> str:
    """A latency in milliseconds."""
    return MISSING if value is None else f"{value:,.0f} ms"


class Messages(widgets.HTML):
    """One line under a widget for what went wrong, or what just happened."""

    COLORS = {"error": "#b00020", "ok": "#1b5e20", "info": "#555555"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(value="", **kwargs)
        self.kind = ""
        self.text = ""

    def show(self, text: str, kind: str = "info") -> None:
        """Show `text` as an error, ok or info line."""
        self.kind, self.text = kind, text
        color = self.COLORS.get(kind, self.COLORS["info"])
        self.value = f'<span class="lcm-{kind}" style="color:{color}">{html.escape(text)}</span>'

    def error(self, text: str) -> None:
        self.show(text, "error")

    def ok(self, text: str) -> None:
        self.show(text, "ok")

    def clear(self) -> None:
        self.kind = self.text = self.value = ""


@contextlib.contextmanager
def reporting(messages: Messages, doing: str) -> Iterator[None]:
    """Run a REST call for a widget: a failure becomes one line in `messages`, never a
    traceback in the notebook (widget callbacks have nowhere else to show it)."""
    try:
        yield
    except LCMClientError as exc:
        where = f"HTTP {exc.status}: " if exc.status else ""
        messages.error(f"Could not {doing}: {where}{exc.message}")
    except Exception as exc:
        messages.error(f"Could not {doing}: {type(exc).__name__}: {exc}")


def close_all(widget: widgets.Widget) -> None:
    """Close a widget and everything inside it (a closed box leaves its children open)."""
    for child in getattr(widget, "children", ()):
        close_all(child)
    widget.close()


@dataclass(frozen=True)
class Column:
    """A table column: the record field, its heading, and how a value is shown."""

    field: str
    label: str
    format: Callable[[Any], str] = str
    sortable: bool = True
    numeric: bool = False


def _sort_key(value: Any) -> tuple:
    # None sorts last whatever the direction would put first: (missing, value).
    if value is None:
        return (1, 0)
    return (0, value.lower() if isinstance(value, str) else value)


class Table(widgets.VBox):
    """Records as a grid with a header row; click a sortable header to sort by it, click it
    again to reverse. `extra(record)` may add a widget (buttons) at the end of each row."""

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        extra: Callable[[Mapping[str, Any]], widgets.Widget] | None = None,
        extra_label: str = "",
        empty: str = "Nothing to show.",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.columns = list(columns)
        self.extra = extra
        self.extra_label = extra_label
        self.empty = empty
        self.records: list[Mapping[str, Any]] = []
        self.sort_by: str | None = None
        self.descending = False
        self.header_buttons: dict[str, widgets.Button] = {}
        self.row_widgets: list[list[widgets.Widget]] = []
        self._render()

    @property
    def rows(self) -> list[Mapping[str, Any]]:
        """The records in the order shown."""
        if self.sort_by is None:
            return list(self.records)
        ordered = sorted(self.records, key=lambda r: _sort_key(r.get(self.sort_by)))
        if self.descending:
            present = [r for r in ordered if r.get(self.sort_by) is not None][::-1]
            ordered = present + [r for r in ordered if r.get(self.sort_by) is None]
        return ordered

    def set_records(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Show these records (the sort in force is kept)."""
        self.records = list(records)
        self._render()

    def sort(self, field: str) -> None:
        """What a header click does: sort by `field`, or reverse if it is already the sort."""
        if self.sort_by == field:
            self.descending = not self.descending
        else:
            self.sort_by, self.descending = field, False
        self._render()

    def text(self) -> list[list[str]]:
        """The cells as shown, row by row (for tests and plain-text display)."""
        return [[c.format(r.get(c.field)) for c in self.columns] for r in self.rows]

    def _header(self, column: Column) -> widgets.Widget:
        if not column.sortable:
            return widgets.HTML(f"<b>{html.escape(column.label)}</b>")
        arrow = ""
        if self.sort_by == column.field:
            arrow = " ▼" if self.descending else " ▲"
        button = widgets.Button(
            description=column.label + arrow,
            tooltip=f"Sort by {column.label}",
            layout=widgets.Layout(width="auto", min_width="max-content"),  # never cut the label
        )
        button.add_class("lcm-sort")
        button.on_click(lambda _b, field=column.field: self.sort(field))
        self.header_buttons[column.field] = button
        return button

    def _render(self) -> None:
        # Close the cells being replaced: a widget lives in the kernel and the frontend until
        # closed, and every sort, page or refresh replaces them all.
        for old in self.children:
            close_all(old)
        self.header_buttons = {}
        if not self.records:
            self.row_widgets = []
            self.children = [widgets.HTML(f"<i>{html.escape(self.empty)}</i>")]
            return
        n = len(self.columns) + (1 if self.extra else 0)
        cells: list[widgets.Widget] = [self._header(c) for c in self.columns]
        if self.extra:
            cells.append(widgets.HTML(f"<b>{html.escape(self.extra_label)}</b>"))
        self.row_widgets = []
        for record in self.rows:
            row: list[widgets.Widget] = []
            for column in self.columns:
                align = "right" if column.numeric else "left"
                value = html.escape(column.format(record.get(column.field)))
                # One line per record: a wrapped cell makes rows of uneven height.
                style = f"text-align:{align};white-space:nowrap"
                row.append(widgets.HTML(f'<div style="{style}" title="{value}">{value}</div>'))
            if self.extra:
                row.append(self.extra(record))
            self.row_widgets.append(row)
            cells.extend(row)
        grid = widgets.GridBox(
            cells,
            layout=widgets.Layout(
                grid_template_columns=" ".join(["auto"] * n), grid_gap="2px 12px"
            ),
        )
        self.children = [grid]
