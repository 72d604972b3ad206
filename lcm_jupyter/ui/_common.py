"""What every widget shares: the client it talks through, a message line, the one state
a view is in (loading, empty, error or data), money, token and time formats, a table with
sortable columns, and the small layout pieces (form rows, headings, the Refresh button).

The widgets talk to the extension only through `lcm_jupyter.client.LCMClient` (the REST
API), so they work the same against the server extension and `%lcm serve`.

Money, everywhere in the widgets, is `money()`, the one format of `core.money.format_money`
(the CLI and the magic use it too): cents from one cent up ("$12.34", "$1,234.57",
"$0.00"), three significant digits below a cent ("$0.00123", "$0.0000450"), and "—" where
the amount is unknown (an unpriced call; the log table also shows a failed call that was
billed nothing so). `exact_money()` gives every stored digit, for tooltips and the detail
of a call.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

import ipywidgets as widgets

from ..client import LCMClient, LCMClientError
from ..core.keyspec import DEFAULT_THRESHOLDS
from ..core.money import MISSING, format_count, format_money

ALL = "all"  # a picker's "All ..." choice (a None value would show as no selection at all)
LABEL_WIDTH = "190px"  # of a form row's label, so that the fields of a form line up


def connect(client: LCMClient | None = None, **kwargs: Any) -> LCMClient:
    """The client a widget uses: the one given, else one found from the kernel's environment."""
    return client if client is not None else LCMClient(**kwargs)


money = format_money
"""An amount of USD as every widget shows it: core.money.format_money ("$12.34", "$0.00120";
None -> "—")."""
usd = money  # the name the forms import
count = format_count
"""A count with thousands separators; None -> "—"."""


def exact_money(value: float | Decimal | None) -> str:
    """An amount with every digit stored (at least two decimals): "$0.0037912345"."""
    return format_money(value, exact=True)


def percent(value: float | None) -> str:
    """A share in percent, one decimal."""
    return MISSING if value is None else f"{value:.1f}%"


def millis(value: float | None) -> str:
    """A latency in milliseconds."""
    return MISSING if value is None else f"{value:,.0f} ms"


def local_time(
    created_at: str | None, tz: tzinfo | None = None, fmt: str = "%Y-%m-%d %H:%M:%S"
) -> str:
    """A stored UTC timestamp as `YYYY-MM-DD HH:MM:SS` (or `fmt`) in `tz` (default: this
    machine's timezone)."""
    if not created_at:
        return MISSING
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:
        return created_at
    return moment.astimezone(tz).strftime(fmt)


# -- one state at a time -------------------------------------------------------------------------

LOADING, EMPTY, ERROR, DATA = "loading", "empty", "error", "data"
STATES = (LOADING, EMPTY, ERROR, DATA)


def display(widget: widgets.Widget, visible: bool) -> None:
    """Show or hide `widget` (hidden takes no room)."""
    widget.layout.display = "" if visible else "none"


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


class States:
    """What a view shows: exactly one of loading, empty, error and data.

    `note` says "Loading..." or why there is nothing to show; the error is the widget's
    own message line (`Messages`, where `reporting()` puts it); `data` are the widgets
    that show the figures. A new state hides the others, so "No calls yet" can never
    stand next to "Could not reach the server".
    """

    def __init__(self, messages: Messages, data: Sequence[widgets.Widget]) -> None:
        self.messages = messages
        self.data = list(data)
        self.note = widgets.HTML()
        self.note.add_class("lcm-state")
        self.state = ""
        self.text = ""

    def show(self, state: str, text: str = "") -> None:
        """Switch to `state`; `text` is the loading or empty note, or the error (which
        `reporting()` may have put in the message line already)."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        self.state, self.text = state, text
        if state == ERROR:
            if text:
                self.messages.error(text)
        elif self.messages.kind == "error":
            self.messages.clear()  # the error was the state before this one
        if state == LOADING:
            self.note.value = f'<i style="color:#666">{html.escape(text or "Loading…")}</i>'
        elif state == EMPTY:
            self.note.value = (
                '<div style="padding:16px;border:1px dashed #bbb;margin:6px 0;color:#444">'
                f"{html.escape(text)}</div>"
            )
        else:
            self.note.value = ""
        display(self.note, state in (LOADING, EMPTY))
        for widget in self.data:
            display(widget, state == DATA)


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


class AlertThresholds(widgets.HBox):
    """The budget alert thresholds as ticks: the usual three (80, 90, 100%) and any other
    share a record holds, greyed out while `switch` ("alert at", the alerts on or off, to
    put before them in the row) is off. The key form and the team budget row both use it.
    `boxes`: percentage -> its Checkbox."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.switch = widgets.Checkbox(
            description="alert at", indent=False, layout=widgets.Layout(width="80px")
        )
        self.boxes: dict[int, widgets.Checkbox] = {}
        self.switch.observe(lambda _c: self._switched(), names="value")

    @property
    def chosen(self) -> list[int]:
        """The percentages ticked, in order."""
        return [pct for pct, box in self.boxes.items() if box.value]

    def set(self, chosen: Sequence[int]) -> None:
        """Tick `chosen` (the boxes are made again: the old ones are closed)."""
        self.boxes = {
            pct: widgets.Checkbox(
                value=pct in chosen,
                description=f"{pct}%",
                indent=False,
                layout=widgets.Layout(width="64px"),
            )
            for pct in sorted({*DEFAULT_THRESHOLDS, *chosen})
        }
        replace_children(self, list(self.boxes.values()))
        self._switched()

    def _switched(self) -> None:
        for box in self.boxes.values():
            box.disabled = not self.switch.value


SPAN_ALL = "auto / 1 / auto / -1"  # a grid cell across every column


@dataclass(frozen=True)
class Column:
    """A table column: the record field, its heading, and how a value is shown.

    `max_width` (a CSS length) keeps a column narrow: longer text is cut with "…", and the
    whole text is the cell's tooltip, or the record's `tip` field when one is named.
    """

    field: str
    label: str
    format: Callable[[Any], str] = str
    sortable: bool = True
    numeric: bool = False
    max_width: str | None = None
    tip: str | None = None
    heading_tip: str = ""


def _sort_key(value: Any) -> tuple:
    # None sorts last whatever the direction would put first: (missing, kind, value). Numbers
    # before text, so that a column holding both sorts instead of raising in the click.
    if value is None:
        return (1, 0, 0)
    if isinstance(value, str):
        return (0, 1, value.lower())
    return (0, 0, value)


def cell_html(
    text: str,
    *,
    numeric: bool = False,
    max_width: str | None = None,
    tip: str = "",
    font_size: str | None = None,
) -> str:
    """A table cell's HTML: one line (a wrapped cell makes rows of uneven height), cut with
    "…" beyond `max_width`, the full text (or `tip`) as its tooltip."""
    style = f"text-align:{'right' if numeric else 'left'};white-space:nowrap"
    if font_size:
        style += f";font-size:{font_size}"
    if max_width:
        style += f";max-width:{max_width};overflow:hidden;text-overflow:ellipsis"
    title = html.escape(tip or text)
    return f'<div style="{style}" title="{title}">{html.escape(text)}</div>'


class Table(widgets.VBox):
    """Records as a grid with a header row; click a sortable header to sort by it, click it
    again to reverse. `extra(record)` may add a widget (buttons) at the end of each row, and
    `lead(record)` one at its start; `expand(key, widget)` shows a widget under the row whose
    `row_key` field is `key`, across the whole table (a call's detail). With `max_rows`, the
    first rows of that many are drawn (each row is a few widgets: a thousand rows take
    seconds to build) and a line says how many more the sort and filters leave out."""

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        extra: Callable[[Mapping[str, Any]], widgets.Widget] | None = None,
        extra_label: str = "",
        lead: Callable[[Mapping[str, Any]], widgets.Widget] | None = None,
        row_key: str = "id",
        empty: str = "Nothing to show.",
        gap: str = "2px 12px",
        font_size: str | None = None,
        max_rows: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.columns = list(columns)
        self.max_rows = max_rows
        self.extra = extra
        self.extra_label = extra_label
        self.lead = lead
        self.row_key = row_key
        self.empty = empty
        self.gap = gap
        self.font_size = font_size
        self.records: list[Mapping[str, Any]] = []
        self.sort_by: str | None = None
        self.descending = False
        self.header_buttons: dict[str, widgets.Button] = {}
        self.row_widgets: list[list[widgets.Widget]] = []
        self.expanded: tuple[Any, widgets.Widget] | None = None
        self._grid: widgets.GridBox | None = None
        self._header_cells: list[widgets.Widget] = []
        self._render()

    @property
    def rows(self) -> list[Mapping[str, Any]]:
        """The records in the order shown."""
        field = self.sort_by
        if field is None:
            return list(self.records)
        ordered = sorted(self.records, key=lambda r: _sort_key(r.get(field)))
        if self.descending:
            present = [r for r in ordered if r.get(field) is not None][::-1]
            ordered = present + [r for r in ordered if r.get(field) is None]
        return ordered

    @property
    def shown_rows(self) -> list[Mapping[str, Any]]:
        """The rows drawn: `rows`, cut at `max_rows`."""
        rows = self.rows
        return rows if self.max_rows is None else rows[: self.max_rows]

    def set_records(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Show these records (the sort in force is kept; an expanded row is closed)."""
        self._close_expanded()
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
        return [[c.format(r.get(c.field)) for c in self.columns] for r in self.shown_rows]

    def expand(self, key: Any, widget: widgets.Widget | None) -> None:
        """Show `widget` under the row of `key`, across the table (None: close it). One row at
        a time is expanded; the widget it replaces is closed."""
        self._close_expanded()
        if widget is not None:
            # grid_area, not grid_column: JupyterLab's widget manager (8.1) applies the one
            # and drops the other.
            widget.layout.grid_area = SPAN_ALL
            self.expanded = (key, widget)
        self._place()

    def _close_expanded(self) -> None:
        if self.expanded is not None:
            old, self.expanded = self.expanded[1], None
            if self._grid is not None:
                self._place()
            close_all(old)

    def _header(self, column: Column) -> widgets.Widget:
        if not column.sortable:
            return widgets.HTML(f"<b>{html.escape(column.label)}</b>")
        arrow = ""
        if self.sort_by == column.field:
            arrow = " ▼" if self.descending else " ▲"
        button = widgets.Button(
            description=column.label + arrow,
            tooltip=column.heading_tip or f"Sort by {column.label}",
            # never cut the label; little padding, so that narrow columns stay narrow
            layout=widgets.Layout(width="auto", min_width="max-content", padding="0 6px"),
        )
        if self.font_size:
            button.style.font_size = self.font_size
        button.add_class("lcm-sort")
        button.on_click(lambda _b, field=column.field: self.sort(field))
        self.header_buttons[column.field] = button
        return button

    def _render(self) -> None:
        # The cells replaced are closed (replace_children): a widget lives in the kernel and
        # the frontend until closed, and every sort, page or refresh replaces them all.
        self.header_buttons = {}
        if self._grid is not None and self.expanded is not None:
            # The expanded row's widget outlives the grid it is in (a sort keeps it open).
            self._grid.children = [c for c in self._grid.children if c is not self.expanded[1]]
        if not self.records:
            self.row_widgets, self._grid = [], None
            replace_children(self, [widgets.HTML(f"<i>{html.escape(self.empty)}</i>")])
            return
        n = len(self.columns) + (1 if self.extra else 0) + (1 if self.lead else 0)
        header: list[widgets.Widget] = [widgets.HTML("")] if self.lead else []
        header += [self._header(c) for c in self.columns]
        if self.extra:
            header.append(widgets.HTML(f"<b>{html.escape(self.extra_label)}</b>"))
        self._header_cells = header
        self.row_widgets = []
        for record in self.shown_rows:
            row: list[widgets.Widget] = [self.lead(record)] if self.lead else []
            for column in self.columns:
                text = column.format(record.get(column.field))
                tip = str(record.get(column.tip) or "") if column.tip else ""
                row.append(
                    widgets.HTML(
                        cell_html(
                            text,
                            numeric=column.numeric,
                            max_width=column.max_width,
                            tip=tip,
                            font_size=self.font_size,
                        )
                    )
                )
            if self.extra:
                row.append(self.extra(record))
            self.row_widgets.append(row)
        self._grid = widgets.GridBox(
            layout=widgets.Layout(
                grid_template_columns=" ".join(["auto"] * n),
                grid_gap=self.gap,
                align_items="center",
            ),
        )
        self._place()
        hidden = len(self.records) - len(self.row_widgets)
        more = (
            [widgets.HTML(f"<i>{hidden:,} more not shown: narrow them with the filter.</i>")]
            if hidden
            else []
        )
        replace_children(self, [self._grid, *more])

    def _place(self) -> None:
        """Lay the header, the rows and the expanded row's widget out in the grid."""
        if self._grid is None:
            return
        cells = list(self._header_cells)
        for record, row in zip(self.shown_rows, self.row_widgets, strict=True):
            cells.extend(row)
            if self.expanded is not None and record.get(self.row_key) == self.expanded[0]:
                cells.append(self.expanded[1])
        self._grid.children = cells
