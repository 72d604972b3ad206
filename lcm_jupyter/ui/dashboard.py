"""The cost dashboard: cost and savings per day, the top spenders, the keys, budget alerts.

    from lcm_jupyter.ui import Dashboard
    Dashboard()                       # or: %lcm dashboard --period 7d
    Dashboard(start="2025-01-01", end="2025-03-31")   # any range of days (custom)

Everything comes from the REST API through `LCMClient` (analytics timeseries and
breakdown, keys, budgets, alerts); days are the server's analytics days. It shows one
state at a time: loading, empty (no call in the period), error, or the figures.
Clicking a bar of the breakdown shows only that model, provider, key, user or notebook
in the cost trend; clicking it again, or a chart's background, shows everything again.
Turning API answers into chart arrays, table rows and filters is done by the plain
functions at the top, so that it can be read and tested without a frontend.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from ..client import LCMClient
from ..core.analytics import BREAKDOWN_BY, MAX_DAYS, OTHER, PERIODS
from ._common import (
    DATA,
    EMPTY,
    ERROR,
    LOADING,
    Column,
    Connected,
    Messages,
    States,
    Table,
    count,
    display,
    heading,
    local_time,
    money,
    percent,
    refresh_button,
    reporting,
)

TOP = 10  # bars in the breakdown; the API sums the rest into one "other" bar
ALERTS_SHOWN = 5  # the newest; "Mark all read" marks the others too
KEY_LIMIT = 1000  # the API's maximum: the key table shows every key that made calls
CUSTOM = "custom"  # the period picker's choice of any range of days
HALF_DAY = timedelta(hours=12)
LABEL_WIDTH = 28  # longer bar labels are cut: the bar chart's left margin holds this much

COST_COLOR = "#d1495b"
SAVINGS_COLOR = "#2a9d8f"
BAR_COLOR = "#4c78a8"
REST_COLOR = "#b0b0b0"
SEVERITY_COLORS = {"critical": "#b00020", "warning": "#b26a00", "info": "#1f5fa8"}

Filter = tuple[str, Any]
"""A cost-trend filter: ("model", name), ("provider", name), ("user", name),
("notebook", path) or ("key_id", id): the timeseries query parameter and its value."""

NOUNS = {
    "model": ("model", "models"),
    "provider": ("provider", "providers"),
    "key": ("key", "keys"),
    "user": ("user", "users"),
    "notebook": ("notebook", "notebooks"),
}
"""Each breakdown's bars in words (singular, plural): one per `core.analytics.BREAKDOWN_BY`."""
PATHS = frozenset({"notebook"})  # bars named by a path: a long one is cut at its start


# -- data shaping (pure) -------------------------------------------------------------------------


def range_params(period: str, first: date | None = None, last: date | None = None) -> dict:
    """The analytics query of a period: `{"period": "30d"}`, or for a custom range its days
    (`start`, `end`, both included; `period` None so the client sends none). ValueError for
    a custom range that is not one, in words for the widget's message line."""
    if period != CUSTOM:
        return {"period": period}
    if first is None or last is None:
        raise ValueError("Pick the first and the last day of the range (From and To).")
    if first > last:
        raise ValueError(f"From ({first}) is after To ({last}).")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValueError(f"A range holds at most {MAX_DAYS} days.")
    return {"period": None, "start": first.isoformat(), "end": last.isoformat()}


def day_ticks(days: Sequence[str], most: int = 8) -> list[str]:
    """The days the date axis labels: the first day, then every so many days, at most `most`
    (with more they overlap once the file browser narrows the notebook)."""
    step = max(1, math.ceil((len(days) - 1) / (most - 1))) if len(days) > 1 else 1
    return list(days[::step])


def day_domain(days: Sequence[str]) -> tuple[datetime, datetime] | None:
    """The date axis' domain: the days plotted and half a day either side, room for the end
    points' dots and nothing more (d3's own, rounded out to ticks, labelled a day before the
    data). None for no days."""
    if not days:
        return None
    first, last = (datetime.fromisoformat(d) for d in (days[0], days[-1]))
    return first - HALF_DAY, last + HALF_DAY


@dataclass(frozen=True)
class Bar:
    """One bar of the breakdown: its label, cost, and the trend filter a click on it sets."""

    label: str
    name: str
    cost: float
    filter: Filter | None
    """None for a bar that stands for nothing a call can be filtered on ("other", no key,
    "(none)")."""


def _shorten(text: str, width: int = LABEL_WIDTH, *, path: bool = False) -> str:
    # A notebook's path keeps its end, the file name: "…/2026/forecast.ipynb".
    if len(text) <= width:
        return text
    return "…" + text[1 - width :] if path else text[: width - 1] + "…"


def breakdown_bars(by: str, items: Sequence[Mapping[str, Any]], limit: int = TOP) -> list[Bar]:
    """The bars for a breakdown answer asked with `limit`: one per item, labels unique.

    Beyond `limit` the API sums the rest into one item named "other"; it is told apart by
    its place, not its name (a model could be called "other"). A bar of a model, provider,
    user or notebook filters on its name; of a key, on its id; "(none)" (calls without
    one) on nothing.
    """
    path = by in PATHS
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
            # "(none)": calls logged without one (no user outside JupyterHub, no notebook
            # for a script's calls); nothing to filter on.
            where = None if name == "(none)" else (by, name)
        bars.append(Bar(_shorten(name, path=path), name, float(item.get("cost_usd") or 0.0), where))
    # An ordinal axis merges equal labels: two keys may share a name, a cut may collide.
    seen = Counter(b.label for b in bars)
    unique = []
    for rank, bar in enumerate(bars, 1):
        if seen[bar.label] > 1:
            tag = f"#{bar.filter[1]}" if bar.filter and bar.filter[0] == "key_id" else f"({rank})"
            short = _shorten(bar.name, LABEL_WIDTH - len(tag) - 1, path=path)
            bar = replace(bar, label=f"{short} {tag}")
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
    """The filter in words ("model gpt-4o-mini", "user alice", "key 'team' (#3)"), '' for
    none."""
    if where is None:
        return ""
    field, value = where
    if field == "key_id":
        names = [b.name for b in bars if b.filter == where]
        return f"key '{names[0]}' (#{value})" if names else f"key #{value}"
    return f"{field} {value}"


def hover_tip(lines: Sequence[str]) -> str:
    """A chart's hover text: `lines` (HTML) in a small white box."""
    return (
        '<div class="lcm-tip" style="padding:4px 8px;font-size:12px;background:white;'
        f'border:1px solid #ccc">{"<br>".join(lines)}</div>'
    )


def day_tip(day: str, cost: float, savings: float) -> str:
    """A day's hover text in the trend: the day, its cost and its savings in money()."""
    when = date.fromisoformat(day).strftime("%a %b %d %Y")
    return hover_tip([f"<b>{when}</b>", f"Cost {money(cost)}", f"Savings {money(savings)}"])


def bar_tip(bar: Bar) -> str:
    """A bar's hover text: its whole name and its cost in money()."""
    return hover_tip([f"<b>{html.escape(bar.name)}</b>", f"Cost {money(bar.cost)}"])


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
    rows = []
    for item in items:
        key_id = item.get("key_id")  # None for calls made without a key
        would_save = (shadow.get(key_id) or {}) if key_id is not None else {}
        rows.append(
            {
                "key": item["name"],
                "key_id": key_id,
                "requests": item.get("requests") or 0,
                "tokens": (item.get("input_tokens") or 0) + (item.get("output_tokens") or 0),
                "cost_usd": item.get("cost_usd"),
                "savings_usd": item.get("savings_usd"),
                "would_save_usd": would_save.get("saving_usd"),
                "budget_used": budget_used(budgets.get(key_id) if key_id is not None else None),
            }
        )
    return rows


def calls_text(n: int) -> str:
    """A number of calls in words: "1 call", "2,345 calls"."""
    return f"{count(n)} call{'' if n == 1 else 's'}"


def shadow_summary(answer: Mapping[str, Any]) -> str:
    """One line on what auto routing would have saved on calls made with routing off."""
    calls = answer.get("calls") or 0
    if not calls:
        return ""
    return (
        f"Auto routing would have saved {money(answer.get('saving_usd') or 0.0)} on "
        f"{calls_text(calls)} made with routing off (turn it on per key in ProxyKeyForm)."
    )


def period_summary(answer: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> str:
    """One line of totals over a breakdown (its "other" item keeps them complete)."""
    days = PERIODS.get(str(answer.get("period")))
    span = f"Last {days} days" if days else "Days"
    cost = round(sum(i.get("cost_usd") or 0.0 for i in items), 10)
    saved = round(sum(i.get("savings_usd") or 0.0 for i in items), 10)
    calls = sum(i.get("requests") or 0 for i in items)
    tokens = sum((i.get("input_tokens") or 0) + (i.get("output_tokens") or 0) for i in items)
    unpriced = sum(i.get("unpriced_requests") or 0 for i in items)
    line = (
        f"{span} ({answer.get('start')} to {answer.get('end')}): {money(cost)} spent, "
        f"{money(saved)} saved by routing and caching, {calls_text(calls)}, "
        f"{count(tokens)} tokens"
    )
    return line + (f", {count(unpriced)} without a price" if unpriced else "")


def empty_message(period: str, start: str | None = None, end: str | None = None) -> str:
    """What the dashboard says when no call was logged in the period, and what to do."""
    when = f"from {start} to {end}" if period == CUSTOM else f"in the last {PERIODS[period]} days"
    return (
        f"No calls logged {when}. Create a key with ProxyKeyForm() "
        "(or LCMClient().create_key(...)) and point an SDK at the proxy, e.g. "
        "lcm_jupyter.openai_client(key); then press Refresh."
    )


# -- the widget ----------------------------------------------------------------------------------


KEY_COLUMNS = (
    Column("key", "Key"),
    Column("requests", "Requests", count, numeric=True),
    Column("tokens", "Tokens", count, numeric=True),
    Column("cost_usd", "Cost", money, numeric=True),
    Column("savings_usd", "Savings", money, numeric=True),
    Column("would_save_usd", "Routing would save", money, numeric=True),
    Column("budget_used", "Budget used", percent, numeric=True),
)


def _text(text: str) -> str:
    # Text between tags: quotes stay readable in the HTML ("key 'team'"), <>& are escaped.
    return html.escape(text, quote=False)


def dollar_ticks(axis: bq.Axis, peak: float, most: int) -> None:
    """Put `dollar_axis` ticks on a money axis; its scale ends at the last."""
    ticks, fmt = dollar_axis(peak, most)
    with axis.hold_sync():
        axis.tick_values, axis.tick_format = np.array(ticks), fmt
    axis.scale.max = ticks[-1]  # the last tick is the top of the chart


_show = display


def hovered_index(content: Mapping[str, Any]) -> int | None:
    """The index of the element a bqplot hover message is about (None if none)."""
    # Bars send the element hovered as "data", Scatter as "point".
    index = (content.get("data") or content.get("point") or {}).get("index")
    return index if isinstance(index, int) else None


def ranked_bars(**style: Any) -> tuple[bq.Bars, list[bq.Axis]]:
    """Horizontal bars of names by money, the first at the top, and their two axes (names,
    then dollars); the tooltip is filled by the hover callback."""
    names, value = bq.OrdinalScale(reverse=True), bq.LinearScale(min=0.0)
    bars = bq.Bars(
        x=[],
        y=[],
        scales={"x": names, "y": value},
        orientation="horizontal",
        colors=[BAR_COLOR],
        padding=0.25,
        tooltip=widgets.HTML(),  # filled in money() by the hover callback
        **style,
    )
    axes = [
        bq.Axis(scale=names, orientation="vertical", grid_lines="none"),
        bq.Axis(scale=value, orientation="horizontal", tick_format="$,.2f"),
    ]
    return bars, axes


class Dashboard(Connected, widgets.VBox):
    """Cost and savings over time, cost by model/provider/key/user/notebook, the keys,
    unread alerts.

    `period` is 7d, 30d or 90d (ending today), or `start` and `end` (dates or YYYY-MM-DD,
    both included) for any range of days: the period picker's "custom" choice.
    State for code and tests: `state` (loading, empty, error or data), `filter`,
    `bar_items`, `alerts`, `messages`.
    """

    def __init__(
        self,
        client: LCMClient | None = None,
        *,
        period: str = "30d",
        by: str = "model",
        start: date | str | None = None,
        end: date | str | None = None,
        **kwargs: Any,
    ) -> None:
        if start is not None or end is not None:
            first, last = (
                d if d is None or isinstance(d, date) else date.fromisoformat(d)
                for d in (start, end)
            )
            range_params(CUSTOM, first, last)  # a ValueError here, not a message later
            period = CUSTOM
        elif period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}")
        else:
            first = last = None
        if by not in BREAKDOWN_BY:
            raise ValueError(f"by must be one of {', '.join(BREAKDOWN_BY)}")
        kwargs.setdefault("layout", widgets.Layout(width="100%", padding="4px"))
        super().__init__(**kwargs)
        self.client = client
        self.filter: Filter | None = None
        self.bar_items: list[Bar] = []
        self.alerts: list[Mapping[str, Any]] = []
        self.messages = Messages()
        self._quiet = False
        self._shown_days: tuple[str, str] | None = None
        self.updated: datetime | None = None

        self.period_selector = widgets.ToggleButtons(
            options=[*((p, p) for p in PERIODS), (CUSTOM.title(), CUSTOM)],
            value=period,
            tooltips=[*(f"Last {d} days" for d in PERIODS.values()), "Days you pick"],
        )
        self.from_picker = widgets.DatePicker(
            value=first,
            description="From",
            layout=widgets.Layout(width="175px"),
            style={"description_width": "initial"},
        )
        self.to_picker = widgets.DatePicker(
            value=last,
            description="To",
            layout=widgets.Layout(width="160px"),
            style={"description_width": "initial"},
        )
        self.range_box = widgets.HBox(
            [self.from_picker, self.to_picker],
            layout=widgets.Layout(align_items="center", grid_gap="6px"),
        )
        # A drop-down: five groupings as buttons would push Refresh to a line of its own.
        self.breakdown_selector = widgets.Dropdown(
            options=[(NOUNS[b][0].title(), b) for b in BREAKDOWN_BY],
            value=by,
            description="Bars by",
            layout=widgets.Layout(width="165px"),
            style={"description_width": "initial"},
        )
        self.period_selector.style.button_width = "72px"
        self.refresh_button = refresh_button(self.refresh, "Load the figures again")
        self.period_selector.observe(self._period_changed, names="value")
        for picker in (self.from_picker, self.to_picker):
            picker.observe(self._range_changed, names="value")
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

        self.key_table = Table(KEY_COLUMNS, empty="No calls by any key in this period.")
        self.key_heading = widgets.HTML(
            heading("Keys", "calls and cost in the period; budget used this month", "14px")
        )
        keys_box = widgets.VBox(
            [self.key_heading, self.key_table],
            # At its own width: the alerts go under it rather than squeezing its columns.
            layout=widgets.Layout(flex="1 1 auto", margin="8px 16px 0 0"),
        )
        self.alerts_heading = widgets.HTML()
        self.alerts_list = widgets.HTML()
        self.mark_read_button = widgets.Button(
            description="Mark all read", icon="check", tooltip="Mark these alerts read"
        )
        self.mark_read_button.on_click(lambda _b: self.mark_alerts_read())
        alerts_box = widgets.VBox(
            [self.alerts_heading, self.alerts_list, self.mark_read_button],
            layout=widgets.Layout(flex="1 1 320px", margin="8px 0 0 0"),
        )

        # Short: the title, both pickers and Refresh fit one line at 1024 px.
        title = widgets.HTML(heading("LLM costs", size="16px"))
        controls = widgets.HBox(
            [
                title,
                self.period_selector,
                self.range_box,
                self.breakdown_selector,
                self.refresh_button,
            ],
            layout=widgets.Layout(
                flex_flow="row wrap",
                align_items="center",
                justify_content="space-between",
                grid_gap="4px 8px",
            ),
        )
        tables = widgets.HBox([keys_box, alerts_box], layout=widgets.Layout(flex_flow="row wrap"))
        # The figures, shown only in the data state: empty charts under an error would mislead.
        self.body = widgets.VBox([self.summary, self.filter_bar, self.charts, tables])
        self.states = States(self.messages, [self.body])
        self.children = [controls, self.messages, self.states.note, self.body]
        _show(self.range_box, period == CUSTOM)
        self._show_filter()
        self.refresh()

    # -- public state ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """What the dashboard shows: loading, empty, error or data."""
        return self.states.state

    @property
    def period(self) -> str:
        """The period shown: 7d, 30d, 90d or custom (the days of `start` and `end`)."""
        return self.period_selector.value

    @property
    def start(self) -> date | None:
        """The first day of a custom period."""
        return self.from_picker.value if self.period == CUSTOM else None

    @property
    def end(self) -> date | None:
        """The last day of a custom period."""
        return self.to_picker.value if self.period == CUSTOM else None

    @property
    def by(self) -> str:
        """What the breakdown groups by: model, provider or key."""
        return self.breakdown_selector.value

    def range(self) -> dict:
        """The analytics query parameters of the period shown (see `range_params`)."""
        return range_params(self.period, self.from_picker.value, self.to_picker.value)

    def set_range(self, start: date | str, end: date | str) -> None:
        """Show the days from `start` to `end` (both included): the custom period."""
        first, last = (d if isinstance(d, date) else date.fromisoformat(d) for d in (start, end))
        self._quiet = True  # one load for the three changes
        try:
            self.from_picker.value, self.to_picker.value = first, last
            self.period_selector.value = CUSTOM
        finally:
            self._quiet = False
        _show(self.range_box, True)
        self.refresh()

    # -- charts ----------------------------------------------------------------------------------

    def _build_trend(self) -> None:
        # No padding of its own: the dots would widen the domain by a few pixels' worth of
        # time, and a first label there read as the day before the data (day_domain pads).
        x, y = bq.DateScale(allow_padding=False), bq.LinearScale(min=0.0)
        self.trend_x = x
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
                labels=[label],
                display_legend=True,
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
        # Labels on days plotted (day_ticks), never on an instant between two of them.
        self.trend_x_axis = x_axis = bq.Axis(scale=x, tick_format="%b %d", grid_lines="none")
        # The days' points, cost then savings: hovering one shows the day in money() (a d3
        # format could not: it has one number of decimals, or of digits, for every amount).
        self.trend_tip = widgets.HTML()
        self.trend_dots = bq.Scatter(
            x=np.array([], dtype="datetime64[ms]"),
            y=[],
            scales={"x": x, "y": y},
            colors=[COST_COLOR],
            default_size=48,
            stroke="white",
            tooltip=self.trend_tip,
        )
        self.trend_dots.on_hover(self._dot_hovered)
        self.trend_dots.on_background_click(lambda _mark, _content: self.set_filter(None))
        self._trend_days: list[tuple[str, float, float]] = []
        self.trend_figure = bq.Figure(
            marks=[self.trend_lines["cost"], self.trend_lines["savings"], self.trend_dots],
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
        self.bars, axes = ranked_bars(unselected_style={"opacity": 0.35})
        self.bars.on_hover(self._bar_hovered)
        self.bars.on_element_click(self._bar_clicked)
        self.bars.on_background_click(lambda _mark, _content: self.set_filter(None))
        self.bars_value_axis = axes[1]
        self.breakdown_figure = bq.Figure(
            marks=[self.bars],
            axes=axes,
            title="Top models by cost",
            fig_margin={"top": 40, "bottom": 45, "left": 190, "right": 30},
            animation_duration=300,
            layout=widgets.Layout(height="300px", flex="2 1 400px", min_width="340px"),
        )

    # -- loading ---------------------------------------------------------------------------------

    def _period_changed(self, _change: Any) -> None:
        if self._quiet:
            return
        custom = self.period == CUSTOM
        _show(self.range_box, custom)
        if custom and (self.from_picker.value is None or self.to_picker.value is None):
            # Start from the days shown: the user narrows or widens them from there.
            self._quiet = True
            try:
                if self._shown_days:
                    first, last = (date.fromisoformat(d) for d in self._shown_days)
                else:
                    last = date.today()
                    first = last - timedelta(PERIODS["30d"] - 1)
                self.from_picker.value = self.from_picker.value or first
                self.to_picker.value = self.to_picker.value or last
            finally:
                self._quiet = False
        self.refresh()

    def _range_changed(self, _change: Any) -> None:
        if not self._quiet and self.period == CUSTOM:
            self.refresh()

    def refresh(self) -> None:
        """Load everything again (what the Refresh button does); errors show in the widget."""
        try:
            days = self.range()
        except ValueError as exc:
            self.states.show(ERROR, str(exc))
            return
        self.states.show(LOADING, "Loading the figures…")
        loaded = False
        with reporting(self.messages, "load the dashboard"):
            client = self._connect()
            trend = client.timeseries(**days, **filter_params(self.filter))
            breakdown = client.breakdown(self.by, **days, limit=TOP)
            by_key = client.breakdown("key", **days, limit=KEY_LIMIT)["items"]
            budgets = {b["key_id"]: b for b in client.budgets() if b["budget_usd"] is not None}
            shadow = client.shadow_savings(**days)
            alerts = client.alerts(unread=True)
            self._shadow_line = shadow_summary(shadow)
            self._show_breakdown(breakdown)
            self._show_trend(trend["points"])
            by_id = {k["key_id"]: k for k in shadow["keys"]}
            self.key_table.set_records(key_rows(by_key, budgets, by_id))
            self._show_alerts(alerts)
            loaded = True
        if not loaded:
            self.states.show(ERROR)
            return
        self._shown_days = (breakdown["start"], breakdown["end"])
        if breakdown["items"]:
            self.states.show(DATA)
        else:
            start, end = self._shown_days
            self.states.show(EMPTY, empty_message(self.period, start, end))
        self.updated = datetime.now()
        self.summary.value += (
            f'<br><span style="color:#777;font-size:12px">Updated {self.updated:%H:%M:%S}.</span>'
        )

    def _show_breakdown(self, answer: Mapping[str, Any]) -> None:
        items = answer["items"]
        self.bar_items = breakdown_bars(answer.get("by", self.by), items, TOP)
        lines = [period_summary(answer, items), self._shadow_line]
        self.summary.value = "<br>".join(_text(line) for line in lines if line)
        noun = NOUNS[self.by]
        top = f"Top {TOP} {noun[1]}" if len(items) > TOP else noun[1].title()
        self.breakdown_figure.title = f"{top} by cost"
        peak = max((b.cost for b in self.bar_items), default=0.0)
        colors = [BAR_COLOR if b.filter else REST_COLOR for b in self.bar_items]
        with self.bars.hold_sync():
            self.bars.x = [b.label for b in self.bar_items]
            self.bars.y = [b.cost for b in self.bar_items]
            self.bars.colors = colors or [BAR_COLOR]
        dollar_ticks(self.bars_value_axis, peak, 4)
        self._show_filter()

    def _show_trend(self, points: Sequence[Mapping[str, Any]]) -> None:
        days, cost, savings = trend_arrays(points)
        x = day_axis(days)
        domain = day_domain(days)
        with self.trend_x.hold_sync():
            # The axis spans the days plotted, labelled on them: the first label is the first
            # day's, under its point.
            self.trend_x.min, self.trend_x.max = domain or (None, None)
        self.trend_x_axis.tick_values = day_axis(day_ticks(days))
        for name, values in (("cost", cost), ("savings", savings)):
            with self.trend_lines[name].hold_sync():
                self.trend_lines[name].x = x
                self.trend_lines[name].y = values
        self._trend_days = list(zip(days, cost, savings, strict=True))
        with self.trend_dots.hold_sync():
            self.trend_dots.x = np.concatenate([x, x])
            self.trend_dots.y = [*cost, *savings]
            self.trend_dots.colors = [COST_COLOR] * len(days) + [SAVINGS_COLOR] * len(days)
        peak = max([*cost, *savings], default=0.0)
        # Headroom over the highest day: the legend sits in the chart's top-left corner.
        dollar_ticks(self.trend_y_axis, peak * 1.25, 6)
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
        if self.state != DATA:  # nothing shown to keep: load everything
            self.filter = None
            self.refresh()
            return
        # Only the bars depend on the grouping; and a filter on one grouping's bar (a model)
        # has no bar among another's (users), so a filtered trend shows all again.
        loaded = False
        with reporting(self.messages, "load the breakdown"):
            client, days = self._connect(), self.range()
            breakdown = client.breakdown(self.by, **days, limit=TOP)
            trend = None if self.filter is None else client.timeseries(**days)
            self.filter = None
            self._show_breakdown(breakdown)
            if trend is not None:
                self._show_trend(trend["points"])
            self.messages.clear()
            loaded = True
        if not loaded:
            self.states.show(ERROR)

    def _bar_hovered(self, _mark: Any, content: Mapping[str, Any]) -> None:
        index = hovered_index(content)
        if index is not None and 0 <= index < len(self.bar_items):
            self.bars.tooltip.value = bar_tip(self.bar_items[index])

    def _dot_hovered(self, _mark: Any, content: Mapping[str, Any]) -> None:
        index = hovered_index(content)
        if index is not None and self._trend_days:
            self.trend_tip.value = day_tip(*self._trend_days[index % len(self._trend_days)])

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
        loaded = False
        with reporting(self.messages, "filter the cost trend"):
            trend = self._connect().timeseries(**self.range(), **filter_params(where))
            self.filter = where  # only once its figures are here: the label never lies
            self._show_filter()
            self._show_trend(trend["points"])
            self.messages.clear()
            loaded = True
        if not loaded:
            self.states.show(ERROR)

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
