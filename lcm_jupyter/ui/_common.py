"""What every widget shares: the client it talks through, a message line, money, token
and time formats, a table with sortable columns, and the small layout pieces (form rows,
headings, the Refresh button).

The widgets talk to the extension only through `lcm_jupyter.client.LCMClient` (the REST
API), so they work the same against the server extension and `%lcm serve`.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

import ipywidgets as widgets

from ..client import LCMClient, LCMClientError
from ..core.money import MISSING, format_usd

ALL = "all"  # a picker's "All ..." choice (a None value would show as no selection at all)
LABEL_WIDTH = "190px"  # of a form row's label, so that the fields of a form line up


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


def local_time(created_at: str | None, tz: tzinfo | None = None) -> str:
    """A stored UTC timestamp as `YYYY-MM-DD HH:MM:SS` in `tz` (default: this machine's)."""
    if not created_at:
        return MISSING
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:
        return created_at
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


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


class LineBelow(Messages):
    """A message line under a row that takes no room while it is empty."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layout.display = "none"

    def show(self, text: str, kind: str = "info") -> None:
        super().show(text, kind)
        self.layout.display = ""

    def clear(self) -> None:
        super().clear()
        self.layout.display = "none"


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


class Connected:
    """The client part of a widget (mixed into its box): `client`, the one given, else one
    found from the kernel's environment when first needed.

    Until one is found, each use tries again (`%lcm serve` may set the environment after
    the widget is shown). Call `_connect()` inside `reporting()`: a failure is one line.
    """

    client: LCMClient | None
    messages: Messages

    def _connect(self) -> LCMClient:
        if self.client is None:
            self.client = connect()
        return self.client


def close_all(widget: widgets.Widget) -> None:
    """Close a widget and everything inside it: its children, and its layout and style,
    which are widgets too (closing a box leaves them all open in the kernel and frontend)."""
    for child in getattr(widget, "children", ()):
        close_all(child)
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, widgets.Widget):
            part.close()
    widget.close()


def replace_children(box: widgets.Box, children: Sequence[widgets.Widget] = ()) -> None:
    """Show `children` in `box`, closing the widgets they replace (see `close_all`)."""
    old, box.children = box.children, tuple(children)
    for widget in old:
        close_all(widget)


def field_row(label: str, *parts: widgets.Widget, tooltip: str = "") -> widgets.HBox:
    """A form row: a label of the shared width, then the field and whatever follows it."""
    title = f' title="{html.escape(tooltip)}"' if tooltip else ""
    text = widgets.HTML(
        f"<span{title}>{html.escape(label)}</span>",
        layout=widgets.Layout(width=LABEL_WIDTH, min_width=LABEL_WIDTH),
    )
    return widgets.HBox([text, *parts], layout=widgets.Layout(align_items="center"))


def fixed(layout: widgets.Layout) -> widgets.Layout:
    """`layout` kept at its width in a row: an error beside it may wrap, never squeeze it."""
    layout.flex = "0 0 auto"
    return layout


def heading(text: str, note: str = "", size: str = "1.1em") -> str:
    """A widget's or section's heading as HTML: bold `text`, then a grey `note`."""
    line = f'<b style="font-size:{size}">{html.escape(text, quote=False)}</b>'
    if note:
        line += f' <span style="color:#555;font-size:12px">{html.escape(note, quote=False)}</span>'
    return line


def refresh_button(on_click: Callable[[], Any], tooltip: str, description: str = "Refresh"):
    """The Refresh button of a widget: `on_click()` when pressed."""
    button = widgets.Button(
        description=description,
        icon="refresh",
        tooltip=tooltip,
        layout=widgets.Layout(width="auto"),
    )
    button.on_click(lambda _b: on_click())
    return button


@dataclass(frozen=True)
class Column:
    """A table column: the record field, its heading, and how a value is shown."""

    field: str
    label: str
    format: Callable[[Any], str] = str
    sortable: bool = True
    numeric: bool = False


def _sort_key(value: Any) -> tuple:
    # None sorts last whatever the direction would put first: (missing, kind, value). Numbers
    # before text, so that a column holding both sorts instead of raising in the click.
    if value is None:
        return (1, 0, 0)
    if isinstance(value, str):
        return (0, 1, value.lower())
    return (0, 0, value)


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
        # The cells replaced are closed (replace_children): a widget lives in the kernel and
        # the frontend until closed, and every sort, page or refresh replaces them all.
        self.header_buttons = {}
        if not self.records:
            self.row_widgets = []
            replace_children(self, [widgets.HTML(f"<i>{html.escape(self.empty)}</i>")])
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
        replace_children(self, [grid])
