"""The cost dashboard: cost and savings per day, the top spenders, the keys, budget alerts.

    from lcm_jupyter.ui import Dashboard
    Dashboard()                       # or: %lcm dashboard --period 7d

Everything comes from the REST API through `LCMClient` (analytics timeseries and
breakdown, keys, budgets, alerts). Clicking a bar of the breakdown shows only that
model, provider or key in the cost trend; clicking it again, or a chart's background,
shows everything again. Turning API answers into chart arrays, table rows and filters
is done by the plain functions at the top, so that it can be read and tested without
a frontend.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from ..client import LCMClient
from ..core.analytics import BREAKDOWN_BY, OTHER, PERIODS
from ._common import (
    Column,
    Connected,
    Messages,
    Table,
    count,
    heading,
    local_time,
    percent,
    refresh_button,
    reporting,
    usd,
)

TOP = 10  # bars in the breakdown; the API sums the rest into one "other" bar
ALERTS_SHOWN = 5  # the newest; "Mark all read" marks the others too
KEY_LIMIT = 1000  # the API's maximum: the key table shows every key that made calls
LABEL_WIDTH = 28  # longer bar labels are cut: the bar chart's left margin holds this much

COST_COLOR = "#d1495b"
SAVINGS_COLOR = "#2a9d8f"
BAR_COLOR = "#4c78a8"
REST_COLOR = "#b0b0b0"
# Four significant digits: "$1.847" on a busy day, "$0.0001235" for one small call.
TIP_USD = "$,.4r"
SEVERITY_COLORS = {"critical": "#b00020", "warning": "#b26a00", "info": "#1f5fa8"}

Filter = tuple[str, Any]
"""A cost-trend filter: ("model", name), ("provider", name) or ("key_id", id)."""

NOUNS = {
    "model": ("model", "models"),
    "provider": ("provider", "providers"),
    "key": ("key", "keys"),
}


# -- data shaping (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar of the breakdown: its label, cost, and the trend filter a click on it sets."""

    label: str
    name: str
    cost: float
    filter: Filter | None
    """None for a bar that stands for no single model, provider or key ("other", no key)."""


def _shorten(text: str, width: int = LABEL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def breakdown_bars(by: str, items: Sequence[Mapping[str, Any]], limit: int = TOP) -> list[Bar]:
    """The bars for a breakdown answer asked with `limit`: one per item, labels unique.

    Beyond `limit` the API sums the rest into one item named "other"; it is told apart by
    its place, not its name (a model could be called "other").
    """
    bars = []
    for index, item in enumerate(items):
        name = str(item.get("name"))
        rest = index >= limit and name == OTHER
        if rest:
            where = None
        elif by == "key":
            key_id = item.get("key_id")
            where = None if key_id is None else ("key_id", key_id)
        else:
            # "(none)": calls logged without a model or provider; nothing to filter on.
            where = None if name == "(none)" else (by, name)
        bars.append(Bar(_shorten(name), name, float(item.get("cost_usd") or 0.0), where))
    # An ordinal axis merges equal labels: two keys may share a name, a cut may collide.
    seen = Counter(b.label for b in bars)
    unique = []
    for rank, bar in enumerate(bars, 1):
        if seen[bar.label] > 1:
            tag = f"#{bar.filter[1]}" if bar.filter and bar.filter[0] == "key_id" else f"({rank})"
            bar = replace(bar, label=f"{_shorten(bar.name, LABEL_WIDTH - len(tag) - 1)} {tag}")
        unique.append(bar)
    return unique


def toggle_filter(current: Filter | None, clicked: Filter | None) -> Filter | None:
    """The filter after a click on a bar standing for `clicked`: the same bar again clears it;
    a bar that stands for nothing single (`clicked` None) leaves it as it is."""
    if clicked is None:
        return current
    return None if clicked == current else clicked


def filter_params(where: Filter | None) -> dict[str, Any]:
    """The timeseries query parameters of a filter."""
    return {} if where is None else {where[0]: where[1]}


def describe_filter(where: Filter | None, bars: Sequence[Bar] = ()) -> str:
    """The filter in words ("model gpt-4o-mini", "key 'team' (#3)"), '' for none."""
    if where is None:
        return ""
    field, value = where
    if field == "key_id":
        names = [b.name for b in bars if b.filter == where]
        return f"key '{names[0]}' (#{value})" if names else f"key #{value}"
    return f"{field} {value}"


def trend_arrays(points: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[float], list[float]]:
    """The days, cost and savings of a timeseries answer's points (missing money as 0)."""
    days = [p["date"] for p in points]
    cost = [float(p.get("cost_usd") or 0.0) for p in points]
    savings = [float(p.get("savings_usd") or 0.0) for p in points]
    return days, cost, savings


def day_axis(days: Sequence[str]) -> np.ndarray:
    """Days as the instants a DateScale plots (bqplot formats dates in UTC, so a day's UTC
    midnight is labelled with that day whatever the browser's timezone)."""
    return np.array(days, dtype="datetime64[D]").astype("datetime64[ms]")


def dollar_axis(peak: float, most: int = 5) -> tuple[list[float], str]:
    """Ticks for dollars from 0 up past `peak` at a round step (1, 2 or 5 times a power of
    ten), at most `most` steps, and a d3 format with the decimals the step needs: a
    sub-cent chart reads "$0.0005", not "$0.00" five times."""
    if peak <= 0:
        return [0.0, 0.01], "$.2f"
    power = 10.0 ** math.floor(math.log10(peak / most))
    step = next(m * power for m in (1, 2, 5, 10) if m * power * most >= peak)
    steps = math.ceil(peak / step - 1e-9)
    ticks = [round(i * step, 12) for i in range(steps + 1)]
    if step >= 1:
        return ticks, "$,.0f"
    return ticks, f"$.{max(2, -math.floor(math.log10(step) + 1e-9))}f"


def budget_used(budget: Mapping[str, Any] | None) -> float | None:
    """The share of this month's budget spent, in percent; None without a budget."""
    if not budget or budget.get("budget_usd") is None:
        return None
    limit, spent = float(budget["budget_usd"]), float(budget.get("spent_usd") or 0.0)
    if limit <= 0:  # a zero budget allows nothing: it is used up
        return 100.0
    return spent / limit * 100


def key_rows(
    items: Sequence[Mapping[str, Any]],
    budgets: Mapping[int, Mapping[str, Any]],
    shadow: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The key table's records: a breakdown by key, each with its budget used this month and
    what auto routing would have saved on its calls made with routing off (None: nothing)."""
    shadow = shadow or {}
    return [
        {
            "key": item["name"],
            "key_id": item.get("key_id"),
            "requests": item.get("requests") or 0,
            "tokens": (item.get("input_tokens") or 0) + (item.get("output_tokens") or 0),
            "cost_usd": item.get("cost_usd"),
            "savings_usd": item.get("savings_usd"),
            "would_save_usd": (shadow.get(item.get("key_id")) or {}).get("saving_usd"),
            "budget_used": budget_used(budgets.get(item.get("key_id"))),
        }
        for item in items
    ]


def shadow_summary(answer: Mapping[str, Any]) -> str:
    """One line on what auto routing would have saved on calls made with routing off."""
    calls = answer.get("calls") or 0
    if not calls:
        return ""
    return (
        f"Auto routing would have saved {usd(answer.get('saving_usd') or 0.0)} on "
        f"{count(calls)} calls made with routing off (turn it on per key in ProxyKeyForm)."
    )


def period_summary(answer: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> str:
    """One line of totals over a breakdown (its "other" item keeps them complete)."""
    days = PERIODS.get(str(answer.get("period")))
    span = f"Last {days} days" if days else "Period"
    cost = round(sum(i.get("cost_usd") or 0.0 for i in items), 10)
    saved = round(sum(i.get("savings_usd") or 0.0 for i in items), 10)
    calls = sum(i.get("requests") or 0 for i in items)
    tokens = sum((i.get("input_tokens") or 0) + (i.get("output_tokens") or 0) for i in items)
    unpriced = sum(i.get("unpriced_requests") or 0 for i in items)
    line = (
        f"{span} ({answer.get('start')} to {answer.get('end')}): {usd(cost)} spent, "
        f"{usd(saved)} saved by routing and caching, {count(calls)} calls, {count(tokens)} tokens"
    )
    return line + (f", {count(unpriced)} without a price" if unpriced else "")


def empty_message(period: str) -> str:
    """What the dashboard says when no call was logged in the period, and what to do."""
    days = PERIODS.get(period, period)
    return (
        f"No calls logged in the last {days} days. Create a key with ProxyKeyForm() "
        "(or LCMClient().create_key(...)) and point an SDK at the proxy, e.g. "
        "lcm_jupyter.openai_client(key); then press Refresh."
    )


# -- the widget ----------------------------------------------------------------------------------


KEY_COLUMNS = (
    Column("key", "Key"),
    Column("requests", "Requests", count, numeric=True),
    Column("tokens", "Tokens", count, numeric=True),
    Column("cost_usd", "Cost", usd, numeric=True),
    Column("savings_usd", "Savings", usd, numeric=True),
    Column("would_save_usd", "Routing would save", usd, numeric=True),
    Column("budget_used", "Budget used", percent, numeric=True),
)


def _text(text: str) -> str:
    # Text between tags: quotes stay readable in the HTML ("key 'team'"), <>& are escaped.
    return html.escape(text, quote=False)


def _dollar_ticks(axis: bq.Axis, peak: float, most: int) -> None:
    ticks, fmt = dollar_axis(peak, most)
    with axis.hold_sync():
        axis.tick_values, axis.tick_format = np.array(ticks), fmt
    axis.scale.max = ticks[-1]  # the last tick is the top of the chart


def _show(widget: widgets.Widget, visible: bool) -> None:
    widget.layout.display = "" if visible else "none"


class Dashboard(Connected, widgets.VBox):
    """Cost and savings over time, cost by model/provider/key, the keys, unread alerts."""

    def __init__(
        self,
        client: LCMClient | None = None,
        *,
        period: str = "30d",
        by: str = "model",
        **kwargs: Any,
    ) -> None:
        if period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}")
        if by not in BREAKDOWN_BY:
            raise ValueError(f"by must be one of {', '.join(BREAKDOWN_BY)}")
        kwargs.setdefault("layout", widgets.Layout(width="100%", padding="4px"))
        super().__init__(**kwargs)
        self.client = client
        self.filter: Filter | None = None
        self.bar_items: list[Bar] = []
        self.alerts: list[dict] = []
        self.messages = Messages()

        self.period_selector = widgets.ToggleButtons(
            options=list(PERIODS),
            value=period,
            tooltips=[f"Last {d} days" for d in PERIODS.values()],
        )
        self.breakdown_selector = widgets.ToggleButtons(
            options=[(NOUNS[b][0].title(), b) for b in BREAKDOWN_BY], value=by
        )
        self.period_selector.style.button_width = "56px"
        self.breakdown_selector.style.button_width = "84px"
        self.refresh_button = refresh_button(self.refresh, "Load the figures again")
        self.period_selector.observe(lambda _c: self.refresh(), names="value")
        self.breakdown_selector.observe(self._breakdown_changed, names="value")
        self.summary = widgets.HTML()
        self._shadow_line = ""

        self._build_trend()
        self._build_breakdown()
        self.filter_label = widgets.HTML()
        self.clear_button = widgets.Button(
            description="Show all", icon="times", tooltip="Show every call in the cost trend"
        )
        self.clear_button.on_click(lambda _b: self.set_filter(None))
        self.filter_bar = widgets.HBox(
            [self.filter_label, self.clear_button], layout=widgets.Layout(align_items="center")
        )
        self.charts = widgets.HBox(
            [self.trend_figure, self.breakdown_figure],
            layout=widgets.Layout(flex_flow="row wrap", width="100%"),
        )
        self.empty_state = widgets.HTML(
            layout=widgets.Layout(padding="24px", border="1px dashed #bbb", margin="8px 0")
        )

        self.key_table = Table(KEY_COLUMNS, empty="No calls by any key in this period.")
        self.key_heading = widgets.HTML(
            heading("Keys", "calls and cost in the period; budget used this month", "14px")
        )
        keys_box = widgets.VBox(
            [self.key_heading, self.key_table],
            layout=widgets.Layout(flex="3 1 480px", margin="8px 16px 0 0"),
        )
        self.alerts_heading = widgets.HTML()
        self.alerts_list = widgets.HTML()
        self.mark_read_button = widgets.Button(
            description="Mark all read", icon="check", tooltip="Mark these alerts read"
        )
        self.mark_read_button.on_click(lambda _b: self.mark_alerts_read())
        alerts_box = widgets.VBox(
            [self.alerts_heading, self.alerts_list, self.mark_read_button],
            layout=widgets.Layout(flex="2 1 320px", margin="8px 0 0 0"),
        )

        title = widgets.HTML(heading("LLM cost dashboard", size="16px"))
        controls = widgets.HBox(
            [title, self.period_selector, self.breakdown_selector, self.refresh_button],
            layout=widgets.Layout(
                flex_flow="row wrap", align_items="center", justify_content="space-between"
            ),
        )
        tables = widgets.HBox([keys_box, alerts_box], layout=widgets.Layout(flex_flow="row wrap"))
        # Hidden until the first load succeeds: empty charts under an error would mislead.
        self.body = widgets.VBox([self.filter_bar, self.charts, self.empty_state, tables])
        self.children = [controls, self.summary, self.messages, self.body]
        _show(self.body, False)
        self._show_filter()
        self.refresh()

    # -- public state ----------------------------------------------------------------------------

    @property
    def period(self) -> str:
        """The period shown: 7d, 30d or 90d."""
        return self.period_selector.value

    @property
    def by(self) -> str:
        """What the breakdown groups by: model, provider or key."""
        return self.breakdown_selector.value

    # -- charts ----------------------------------------------------------------------------------

    def _build_trend(self) -> None:
        x, y = bq.DateScale(), bq.LinearScale(min=0.0)
        self.trend_lines = {
            name: bq.Lines(
                x=np.array([], dtype="datetime64[ms]"),
                y=[],
                scales={"x": x, "y": y},
                colors=[color],
                fill="bottom",
                fill_colors=[color],
                fill_opacities=[opacity],
                stroke_width=2,
                marker="circle",
                marker_size=14,
                labels=[label],
                display_legend=True,
                tooltip=bq.Tooltip(
                    fields=["x", "y"], formats=["%a %b %d %Y", TIP_USD], labels=["Day", label]
                ),
            )
            # Savings, drawn over cost (usually the smaller area, which cost would hide), need a
            # stronger fill to read green through it.
            for name, label, color, opacity in (
                ("cost", "Cost", COST_COLOR, 0.2),
                ("savings", "Savings", SAVINGS_COLOR, 0.45),
            )
        }
        self.trend_y_axis = bq.Axis(
            scale=y,
            orientation="vertical",
            tick_format="$,.2f",
            label="USD per day",
            label_offset="56px",
            grid_lines="dashed",
        )
        # At most 8 dates: with more, they overlap once the file browser narrows the notebook.
        x_axis = bq.Axis(scale=x, tick_format="%b %d", grid_lines="none", num_ticks=8)
        self.trend_figure = bq.Figure(
            marks=[self.trend_lines["cost"], self.trend_lines["savings"]],
            axes=[x_axis, self.trend_y_axis],
            title="Cost and savings per day",
            legend_location="top-left",
            legend_style={"stroke-width": 0, "fill": "white", "fill-opacity": 0.8},
            fig_margin={"top": 40, "bottom": 45, "left": 80, "right": 20},
            animation_duration=300,
            layout=widgets.Layout(height="300px", flex="3 1 460px", min_width="360px"),
        )
        for line in self.trend_lines.values():
            line.on_background_click(lambda _mark, _content: self.set_filter(None))

    def _build_breakdown(self) -> None:
        names, cost = bq.OrdinalScale(reverse=True), bq.LinearScale(min=0.0)
        self.bars = bq.Bars(
            x=[],
            y=[],
            scales={"x": names, "y": cost},
            orientation="horizontal",
            colors=[BAR_COLOR],
            padding=0.25,
            unselected_style={"opacity": 0.35},
            tooltip=bq.Tooltip(fields=["x", "y"], formats=["", TIP_USD], labels=["Model", "Cost"]),
        )
        self.bars.on_element_click(self._bar_clicked)
        self.bars.on_background_click(lambda _mark, _content: self.set_filter(None))
        self.bars_value_axis = bq.Axis(scale=cost, orientation="horizontal", tick_format="$,.2f")
        names_axis = bq.Axis(scale=names, orientation="vertical", grid_lines="none")
        self.breakdown_figure = bq.Figure(
            marks=[self.bars],
            axes=[names_axis, self.bars_value_axis],
            title="Top models by cost",
            fig_margin={"top": 40, "bottom": 45, "left": 190, "right": 30},
            animation_duration=300,
            layout=widgets.Layout(height="300px", flex="2 1 400px", min_width="340px"),
        )

    # -- loading ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Load everything again (what the Refresh button does); errors show in the widget."""
        with reporting(self.messages, "load the dashboard"):
            client = self._connect()
            trend = client.timeseries(self.period, **filter_params(self.filter))
            breakdown = client.breakdown(self.by, self.period, limit=TOP)
            by_key = client.breakdown("key", self.period, limit=KEY_LIMIT)["items"]
            budgets = {b["key_id"]: b for b in client.budgets() if b["budget_usd"] is not None}
            shadow = client.shadow_savings(self.period)
            alerts = client.alerts(unread=True)
            self._shadow_line = shadow_summary(shadow)
            self._show_breakdown(breakdown)
            self._show_trend(trend["points"])
            by_id = {k["key_id"]: k for k in shadow["keys"]}
            self.key_table.set_records(key_rows(by_key, budgets, by_id))
            self._show_alerts(alerts)
            _show(self.body, True)
            self.messages.show(f"Updated {datetime.now():%H:%M:%S}.")

    def _show_breakdown(self, answer: Mapping[str, Any]) -> None:
        items = answer["items"]
        self.bar_items = breakdown_bars(answer.get("by", self.by), items, TOP)
        lines = [period_summary(answer, items), self._shadow_line]
        self.summary.value = "<br>".join(_text(line) for line in lines if line)
        _show(self.charts, bool(items))
        _show(self.filter_bar, bool(items))
        _show(self.empty_state, not items)
        self.empty_state.value = (
            f'<span style="font-size:14px;color:#444">{_text(empty_message(self.period))}</span>'
        )
        noun = NOUNS[self.by]
        top = f"Top {TOP} {noun[1]}" if len(items) > TOP else noun[1].title()
        self.breakdown_figure.title = f"{top} by cost"
        self.bars.tooltip.labels = [noun[0].title(), "Cost"]
        peak = max((b.cost for b in self.bar_items), default=0.0)
        colors = [BAR_COLOR if b.filter else REST_COLOR for b in self.bar_items]
        with self.bars.hold_sync():
            self.bars.x = [b.label for b in self.bar_items]
            self.bars.y = [b.cost for b in self.bar_items]
            self.bars.colors = colors or [BAR_COLOR]
        _dollar_ticks(self.bars_value_axis, peak, 4)
        self._show_filter()

    def _show_trend(self, points: Sequence[Mapping[str, Any]]) -> None:
        days, cost, savings = trend_arrays(points)
        x = day_axis(days)
        for name, values in (("cost", cost), ("savings", savings)):
            with self.trend_lines[name].hold_sync():
                self.trend_lines[name].x = x
                self.trend_lines[name].y = values
        peak = max([*cost, *savings], default=0.0)
        # Headroom over the highest day: the legend sits in the chart's top-left corner.
        _dollar_ticks(self.trend_y_axis, peak * 1.25, 6)
        where = describe_filter(self.filter, self.bar_items)
        self.trend_figure.title = "Cost and savings per day" + (f": {where}" if where else "")

    def _show_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        self.alerts = list(alerts)
        n = len(self.alerts)
        self.alerts_heading.value = heading(f"Budget alerts ({n} unread)", size="14px")
        rows = []
        for alert in self.alerts[:ALERTS_SHOWN]:
            severity = str(alert.get("severity") or "info")
            color = SEVERITY_COLORS.get(severity, SEVERITY_COLORS["info"])
            when = local_time(alert.get("created_at"))[:16]  # the zone the log table uses
            rows.append(
                '<div class="lcm-alert" style="font-size:12px;line-height:1.4;margin:2px 0 6px">'
                f'<span style="background:{color};color:#fff;border-radius:3px;padding:0 4px">'
                f"{_text(severity)}</span> {_text(str(alert.get('message') or ''))} "
                f'<span style="color:#777">{_text(when)}</span></div>'
            )
        if n > ALERTS_SHOWN:
            rows.append(f'<div style="color:#777">and {n - ALERTS_SHOWN} more</div>')
        self.alerts_list.value = "".join(rows) or "<i>No unread budget alerts.</i>"
        _show(self.mark_read_button, bool(n))

    # -- interaction -----------------------------------------------------------------------------

    def _breakdown_changed(self, _change: Any) -> None:
        if self.body.layout.display == "none":  # nothing loaded yet: load everything
            self.refresh()
            return
        # Only the bars depend on the grouping; and a model filter means nothing among
        # providers' bars, so a filtered trend shows all again. The filter changes only once
        # the figures are here: after a failure, the bars and the label still match it.
        with reporting(self.messages, "load the breakdown"):
            client = self._connect()
            breakdown = client.breakdown(self.by, self.period, limit=TOP)
            trend = None if self.filter is None else client.timeseries(self.period)
            self.filter = None
            self._show_breakdown(breakdown)
            if trend is not None:
                self._show_trend(trend["points"])
            self.messages.clear()

    def _bar_clicked(self, _mark: Any, content: Mapping[str, Any]) -> None:
        index = (content.get("data") or {}).get("index")
        if isinstance(index, int):
            self.click_bar(index)

    def click_bar(self, index: int) -> None:
        """What a click on bar `index` does: filter the trend to it, or clear the filter if it
        is the bar already filtered on."""
        if not 0 <= index < len(self.bar_items):
            return
        bar = self.bar_items[index]
        if bar.filter is None:
            what = "the rest, summed" if bar.name == OTHER else "calls without one"
            self.messages.show(f"'{bar.name}' is {what}: it cannot filter the cost trend.")
            return
        self.set_filter(toggle_filter(self.filter, bar.filter))

    def set_filter(self, where: Filter | None) -> None:
        """Show only `where` (e.g. ("model", "gpt-4o-mini")) in the cost trend; None: all."""
        if where == self.filter:
            return
        with reporting(self.messages, "filter the cost trend"):
            trend = self._connect().timeseries(self.period, **filter_params(where))
            self.filter = where  # only once its figures are here: the label never lies
            self._show_filter()
            self._show_trend(trend["points"])
            self.messages.clear()

    def _show_filter(self) -> None:
        selected = [i for i, b in enumerate(self.bar_items) if b.filter == self.filter]
        self.bars.selected = selected if self.filter is not None and selected else None
        _show(self.clear_button, self.filter is not None)
        if self.filter is None:
            noun = NOUNS[self.by][0]
            text = f"Click a bar to show only that {noun} in the cost trend."
            self.filter_label.value = f'<span style="color:#666">{_text(text)}</span>'
        else:
            where = _text(describe_filter(self.filter, self.bar_items))
            self.filter_label.value = (
                f"Cost trend filtered to <b>{where}</b>: click its bar again or a chart's "
                "background to show all."
            )

    def mark_alerts_read(self) -> None:
        """Mark the unread alerts loaded as read (not ones that arrived since); show the rest."""
        ids = [a["id"] for a in self.alerts]
        if not ids:
            return
        with reporting(self.messages, "mark the alerts read"):
            client = self._connect()
            marked = client.mark_alerts_read(ids)
            self._show_alerts(client.alerts(unread=True))
            self.messages.ok(f"Marked {marked} alert{'s' if marked != 1 else ''} read.")
