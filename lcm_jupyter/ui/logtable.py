"""Recent proxied calls as a table that fits a notebook: filters, pages, the detail of a call,
and feedback on routed ones.

    from lcm_jupyter.ui import ProxyLogTable
    ProxyLogTable(page_size=20)

The filters (key, model, provider, status, days from/to) are the API's (`GET lcm/api/logs`),
so a page holds the calls they keep, and pages walk back through them with its `before=`
cursor. The columns are narrow: a long key, model or error is cut with "…" and shown whole
in its tooltip and in the call's detail (the ▸ button at the start of its row: tokens by
kind, cost components, the routing decision, timing, the error). The +/- buttons rate a
routed call's answer, which is what the routing quality gate reads.

Turning API rows into table records, the detail and the query is done by the plain
functions at the top, so that it can be read and tested without a frontend.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

import ipywidgets as widgets

from ..client import LCMClient, LCMClientError
from ..core.money import MISSING
from ..core.providers import PROVIDERS
from ._common import (
    ALL,
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
    exact_money,
    heading,
    local_time,
    millis,
    money,
    refresh_button,
    reporting,
)

MAX_PAGE_SIZE = 999  # the API answers at most 1000 rows; one more than a page is asked for
MODEL_SUGGESTIONS = "90d"  # the model filter suggests the models called in this period
SHORT_TIME = "%m-%d %H:%M:%S"  # the Time column; the year and milliseconds are in its tooltip
STATUS_CHOICES = (
    ("Any status", ALL),
    ("OK (< 400)", "ok"),
    ("Errors", "error"),
    ("Cache hits", "cache_hit"),
    ("4xx", "4xx"),
    ("5xx", "5xx"),
    ("429 (limits)", "429"),
)
STATUS_WORDS = {
    "ok": "answered OK",
    "error": "errors",
    "cache_hit": "cache hits",
}


# -- rows as the table shows them (pure) -------------------------------------------------------


def is_routed(row: Mapping[str, Any]) -> bool:
    """Whether the call was sent to another model than the one asked for."""
    decision = row.get("routing_decision") or {}
    return bool(decision.get("was_routed"))


def failed(row: Mapping[str, Any]) -> bool:
    """An HTTP error, or no answer at all (as the analytics' error rate counts it)."""
    status = row.get("status")
    return status is None or status >= 400


def model_label(row: Mapping[str, Any]) -> str:
    """The model that answered; a routed call also names the one asked for (`mini ← big`)."""
    model = row.get("model") or row.get("requested_model") or "?"
    requested = row.get("requested_model")
    if is_routed(row) and requested and requested != model:
        return f"{model} ← {requested}"
    return model


def call_cost(row: Mapping[str, Any]) -> float | None:
    """The cost shown for a call: None ("—") when it is unknown (no price) or the call failed
    and was billed nothing; a failed call that was billed (a stream cut off midway) keeps its
    cost, never hidden."""
    cost = row.get("cost_usd")
    if cost is None or row.get("unpriced"):
        return None
    if failed(row) and not cost:
        return None
    return cost


def status_label(row: Mapping[str, Any]) -> str:
    """The HTTP status, short: `200`, `200 cached`, `429 ✕`, `no answer`."""
    status = row.get("status")
    text = "no answer" if status is None else str(status)
    if row.get("cache_hit"):
        text += " cached"
    elif failed(row) and status is not None:
        text += " ✕"
    return text


def status_tip(row: Mapping[str, Any]) -> str:
    """The status in words with the whole error: the Status cell's tooltip."""
    status = row.get("status")
    text = "no answer from the provider" if status is None else f"HTTP {status}"
    if row.get("cache_hit"):
        text += " · answered from the cache"
    if row.get("error"):
        text += f" · {row['error']}"
    return text


def full_time(created_at: str | None, tz: tzinfo | None = None) -> str:
    """A stored timestamp with its year, milliseconds and zone, in `tz` (default: this
    machine's): `2025-01-02 12:04:05.678 KST`."""
    try:
        moment = datetime.fromisoformat(created_at or "").astimezone(tz)
    except ValueError:
        return created_at or MISSING
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d} {moment:%Z}".rstrip()


def log_record(
    row: Mapping[str, Any], key_names: Mapping[int, str] | None = None, tz: tzinfo | None = None
) -> dict[str, Any]:
    """One log row as the table shows it (raw numbers kept, so columns sort by value)."""
    key_id = row.get("key_id")
    names = key_names or {}
    cost = call_cost(row)
    if row.get("cost_usd") is None or row.get("unpriced"):
        cost_tip = "unknown: no price for this model"
    elif cost is None:
        cost_tip = "the call failed: nothing billed"
    else:
        cost_tip = exact_money(cost)
    return {
        "id": row["id"],
        "created_at": row.get("created_at"),
        "time": local_time(row.get("created_at"), tz),
        "time_tip": full_time(row.get("created_at"), tz),
        "key": names.get(key_id, f"#{key_id}") if key_id is not None else MISSING,
        "model": model_label(row),
        "input_tokens": row.get("input_tokens"),
        "output_tokens": row.get("output_tokens"),
        "cost_usd": cost,
        "cost_tip": cost_tip,
        "savings_usd": row.get("savings_usd"),
        "latency_ms": row.get("latency_ms"),
        "status": status_label(row),
        "status_tip": status_tip(row),
        "routed": is_routed(row),
        "cache_hit": bool(row.get("cache_hit")),
        "failed": failed(row),
        "feedback": row.get("feedback"),
    }


def _savings(value: float | None) -> str:
    return "" if not value else money(value)


def columns(tz: tzinfo | None = None) -> tuple[Column, ...]:
    """The table's columns, times shown in `tz` (default: this machine's timezone)."""
    return (
        Column("created_at", "Time", lambda v: local_time(v, tz, SHORT_TIME), tip="time_tip"),
        Column("key", "Key", max_width="6.5em"),
        Column("model", "Model", max_width="11em"),
        Column("input_tokens", "In", count, numeric=True, heading_tip="Input tokens"),
        Column("output_tokens", "Out", count, numeric=True, heading_tip="Output tokens"),
        Column("cost_usd", "Cost", money, numeric=True, tip="cost_tip"),
        Column(
            "savings_usd",
            "Saved",
            _savings,
            numeric=True,
            heading_tip="What routing or the cache saved",
        ),
        Column("latency_ms", "Latency", millis, numeric=True),
        Column("status", "Status", max_width="6.2em", tip="status_tip"),
    )


COLUMNS = columns()
# score: (icon, button style when recorded, tooltip)
SCORES = {
    1: ("thumbs-up", "success", "+1: the routed model answered well"),
    -1: ("thumbs-down", "danger", "-1: the routed model answered badly"),
}


# -- the query (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LogFilters:
    """What the table's filters ask the API for; None (or "") keeps every call."""

    key_id: int | None = None
    model: str | None = None
    provider: str | None = None
    status: str | None = None
    first: date | None = None
    """The first day shown, in the table's timezone."""
    last: date | None = None
    """The last day shown, included."""

    @property
    def active(self) -> bool:
        """Whether any filter but the key is set (the key has its own picker)."""
        return any((self.model, self.provider, self.status, self.first, self.last))

    def params(self, tz: tzinfo | None = None) -> dict[str, Any]:
        """The query parameters of `LCMClient.logs`: days become the instants of their local
        midnights in `tz` (the timezone the table shows times in), so a day holds the calls
        the table shows under that date. ValueError if the days are the wrong way round."""
        if self.first and self.last and self.first > self.last:
            raise ValueError(f"From ({self.first}) is after To ({self.last}).")
        params: dict[str, Any] = {
            "key_id": self.key_id,
            "model": self.model or None,
            "provider": self.provider,
            "status": self.status,
        }
        if self.first:
            params["since"] = _midnight(self.first, tz).isoformat()
        if self.last:
            params["until"] = _midnight(self.last + timedelta(1), tz).isoformat()
        return params

    def describe(self) -> str:
        """The filters in words ("model gpt-4o, errors, from 2025-01-02"), '' for none."""
        parts = []
        if self.model:
            parts.append(f"model {self.model}")
        if self.provider:
            parts.append(f"provider {self.provider}")
        if self.status:
            parts.append(STATUS_WORDS.get(self.status, f"status {self.status}"))
        if self.first and self.last:
            parts.append(f"{self.first} to {self.last}")
        elif self.first:
            parts.append(f"from {self.first}")
        elif self.last:
            parts.append(f"up to {self.last}")
        return ", ".join(parts)


def _midnight(day: date, tz: tzinfo | None) -> datetime:
    if tz is None:
        return datetime.combine(day, time()).astimezone()  # this machine's local midnight
    return datetime.combine(day, time(), tzinfo=tz)


def empty_text(filters: LogFilters) -> str:
    """What the table says when there is no call to show, and what to do about it."""
    if filters.active:
        return f"No calls match these filters ({filters.describe()}). Clear them to see every call."
    if filters.key_id is not None:
        return "This key has made no calls yet."
    return (
        "No calls yet: calls made through the proxy show here. Make a key with "
        "ProxyKeyForm() and point an SDK at the proxy (lcm_jupyter.openai_client(key))."
    )


def model_names(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """The model filter's suggestions from a breakdown by model (its rest and no-model
    items are not models)."""
    return sorted({str(i["name"]) for i in items if i.get("name") not in ("other", "(none)")})


# -- the detail of one call (pure) ---------------------------------------------------------------

_SIDES = {
    "prompt_tokens_details": "Input",
    "input_tokens_details": "Input",
    "completion_tokens_details": "Output",
    "output_tokens_details": "Output",
    "promptTokensDetails": "Input",
    "candidatesTokensDetails": "Output",
    "cacheTokensDetails": "Cached input",
    "toolUsePromptTokensDetails": "Tool-use input",
}
_MEDIA = {"audio_tokens": "audio", "image_tokens": "images", "video_tokens": "video"}
_REQUESTS = {
    "web_search_requests": "Web searches",
    "web_fetch_requests": "Web fetches",
    "code_execution_requests": "Code executions",
}


def media_tokens(usage: Any) -> list[tuple[str, int]]:
    """Audio, image and video tokens, and server-tool calls, from a provider's own usage
    report (OpenAI's `*_tokens_details`, Gemini's per-modality lists, Anthropic's
    `server_tool_use`), where it has them."""
    if not isinstance(usage, Mapping):
        return []
    found: list[tuple[str, int]] = []
    for key, side in _SIDES.items():
        details = usage.get(key)
        if isinstance(details, Mapping):  # OpenAI
            found += [
                (f"{side} {kind}", int(details[name]))
                for name, kind in _MEDIA.items()
                if isinstance(details.get(name), int) and details[name]
            ]
        elif isinstance(details, list):  # Gemini: [{modality, tokenCount}]
            for item in details:
                if not isinstance(item, Mapping):
                    continue
                modality, tokens = str(item.get("modality", "")).lower(), item.get("tokenCount")
                if modality not in ("", "text") and isinstance(tokens, int) and tokens:
                    found.append((f"{side} {modality}", tokens))
    tools = usage.get("server_tool_use")
    if isinstance(tools, Mapping):  # Anthropic
        found += [
            (label, int(tools[name]))
            for name, label in _REQUESTS.items()
            if isinstance(tools.get(name), int) and tools[name]
        ]
    return found


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _confidence(value: Any) -> str:
    return MISSING if value is None else f"{float(value):.2f}"


def cost_text(value: float) -> str:
    """A call's cost in the detail: as the table shows it, then every stored digit when
    those say more ("$0.00379 ($0.0037912345)"; "$0.00" for a cache hit, once)."""
    shown, exact = money(value), exact_money(value)
    return shown if shown == exact else f"{shown} ({exact})"


def call_details(
    row: Mapping[str, Any], key_names: Mapping[int, str] | None = None, tz: tzinfo | None = None
) -> list[tuple[str, list[tuple[str, str]]]]:
    """The detail of one call (a `GET lcm/api/logs/{id}` answer) as titled sections of
    (label, value) lines: the call, its tokens by kind, its cost components, the routing
    decision, its timing. The error's whole text is `row["error"]`, shown under them."""
    key_id = row.get("key_id")
    name = (key_names or {}).get(key_id) if key_id is not None else None
    key = MISSING if key_id is None else (f"{name} (#{key_id})" if name else f"#{key_id}")
    status = row.get("status")
    call = [
        ("Time", full_time(row.get("created_at"), tz)),
        ("Key", key),
        ("Provider", row.get("provider") or MISSING),
        ("Endpoint", " ".join(filter(None, (row.get("method"), row.get("endpoint")))) or MISSING),
        ("Streamed", _yes(row.get("stream"))),
        ("Status", "no answer" if status is None else f"HTTP {status}"),
        ("Cache hit", _yes(row.get("cache_hit"))),
    ]
    if row.get("feedback"):
        comment = row.get("feedback_comment")
        call.append(("Feedback", f"{row['feedback']:+d}" + (f": {comment}" if comment else "")))
    call += [
        (label.title(), str(row[label])) for label in ("user", "notebook", "cell") if row.get(label)
    ]
    call.append(("Id", str(row.get("id"))))

    tokens = [
        ("Input", count(row.get("input_tokens") or 0)),
        ("  cached (read)", count(row.get("cached_tokens") or 0)),
        ("  cache write", count(row.get("cache_write_tokens") or 0)),
        ("Output", count(row.get("output_tokens") or 0)),
        ("  reasoning", count(row.get("reasoning_tokens") or 0)),
    ]
    tokens += [(label, count(n)) for label, n in media_tokens(row.get("usage"))]
    if row.get("usage_estimated"):
        tokens.append(("Counts", "estimated: the provider's usage never arrived"))

    cost_value = row.get("cost_usd")
    if cost_value is None or row.get("unpriced"):
        cost = f"{MISSING} (no price for {row.get('model') or 'this model'})"
    elif call_cost(row) is None:
        cost = f"{MISSING} (the call failed: nothing billed)"
    else:
        cost = cost_text(cost_value)
    costs = [
        ("Cost", cost),
        ("  server-tool fees", money(row.get("tool_fees_usd") or 0.0)),
        ("Saved", money(row.get("savings_usd") or 0.0)),
    ]
    if row.get("shadow_savings_usd"):
        costs.append(("Auto routing would save", money(row["shadow_savings_usd"])))
    costs.append(("Price table", str(row.get("pricing_version") or MISSING)))

    decision = row.get("routing_decision") or {}
    routing = [
        ("Mode", str(decision.get("mode") or MISSING)),
        ("Asked for", str(row.get("requested_model") or MISSING)),
        ("Answered by", str(row.get("model") or MISSING)),
        ("Routed", _yes(decision.get("was_routed"))),
        ("Reason", str(decision.get("reason") or MISSING)),
        ("Confidence", _confidence(decision.get("confidence"))),
    ]
    for field in ("intent", "complexity", "rule"):
        if decision.get(field) not in (None, ""):
            routing.append((field.title(), str(decision[field])))
    shadow = decision.get("shadow")
    if isinstance(shadow, Mapping) and shadow.get("to_model"):
        routing.append(
            (
                "Auto routing",
                f"would send it to {shadow['to_model']} "
                f"(confidence {_confidence(shadow.get('confidence'))}, "
                f"saving {money(shadow.get('saving_usd'))})",
            )
        )

    timing = [
        ("Latency", millis(row.get("latency_ms"))),
        ("First byte", millis(row.get("ttfb_ms"))),
    ]
    return [
        ("Call", call),
        ("Tokens", tokens),
        ("Cost", costs),
        ("Routing", routing),
        ("Timing", timing),
    ]


def details_html(
    row: Mapping[str, Any], key_names: Mapping[int, str] | None = None, tz: tzinfo | None = None
) -> str:
    """The detail of a call as HTML: its sections side by side (wrapping on a narrow page),
    the error in full under them, and the provider's usage report, folded."""
    blocks = []
    for title, lines in call_details(row, key_names, tz):
        cells = "".join(
            f'<tr><td style="color:#555;padding:0 10px 0 0;white-space:pre">'
            f"{html.escape(label)}</td><td>{html.escape(value)}</td></tr>"
            for label, value in lines
        )
        blocks.append(
            '<div style="flex:1 1 200px;min-width:0;overflow-wrap:anywhere">'
            f'<b>{html.escape(title)}</b><table style="font-size:12px;line-height:1.45">'
            f"{cells}</table></div>"
        )
    body = (
        '<div style="display:flex;flex-wrap:wrap;gap:6px 18px;line-height:1.45">'
        f"{''.join(blocks)}</div>"
    )
    if row.get("error"):
        body += (
            '<div class="lcm-call-error" style="margin-top:6px"><b>Error</b>'
            '<pre style="white-space:pre-wrap;overflow-wrap:anywhere;margin:2px 0;'
            f'color:#b00020;font-size:12px">{html.escape(str(row["error"]))}</pre></div>'
        )
    if row.get("usage") is not None:
        report = json.dumps(row["usage"], indent=2, sort_keys=True)
        body += (
            '<details style="margin-top:6px"><summary style="cursor:pointer">'
            "The provider's usage report</summary>"
            '<pre style="white-space:pre-wrap;overflow-wrap:anywhere;font-size:11px;margin:2px 0">'
            f"{html.escape(report)}</pre></details>"
        )
    return body


# -- the widget ----------------------------------------------------------------------------------


def _picker(options, description: str, width: str) -> widgets.Dropdown:
    return widgets.Dropdown(
        options=options,
        value=ALL,
        description=description,
        layout=widgets.Layout(width=width),
        style={"description_width": "initial"},
    )


class ProxyLogTable(Connected, widgets.VBox):
    """The calls through the proxy, newest first, a page at a time: filters, the detail of a
    call, feedback on routed calls.

    State for code and tests: `state` (loading, empty, error or data), `records` (this page,
    as shown), `filters`, `page` (0 is the newest), `detail_id` and `detail` (the call shown
    in detail, as the API answered it), `detail_buttons` ({log id: ▸ button}),
    `feedback_buttons` ({log id: (+ button, - button)}, routed calls only), `messages`.
    """

    def __init__(
        self,
        client: LCMClient | None = None,
        key_id: int | None = None,
        page_size: int = 20,
        *,
        tz: tzinfo | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.add_class("lcm-logtable")
        self.messages = Messages()
        self.client = client
        self.tz = tz
        self.page_size = max(1, min(int(page_size), MAX_PAGE_SIZE))
        self.filters = LogFilters(key_id=key_id)
        self.page = 0
        self.has_older = False
        # The `before` cursor of each page seen so far: page n is read with cursors[n].
        self._cursors: list[str | None] = [None]
        self._key_names: dict[int, str] = {}
        self._quiet = False
        self.feedback_buttons: dict[str, tuple[widgets.Button, widgets.Button]] = {}
        self.detail_buttons: dict[str, widgets.Button] = {}
        self.detail_id: str | None = None
        self.detail: dict[str, Any] | None = None

        self.key_picker = _picker([("All keys", ALL)], "Key", "180px")
        self.model_filter = widgets.Combobox(
            placeholder="any model",
            description="Model",
            ensure_option=False,
            continuous_update=False,  # asks the server on Enter or leaving the field
            layout=widgets.Layout(width="210px"),
            style={"description_width": "initial"},
        )
        self.provider_picker = _picker(
            [("All providers", ALL), *((p, p) for p in PROVIDERS)], "Provider", "170px"
        )
        self.status_picker = _picker(STATUS_CHOICES, "Status", "160px")
        self.from_picker = widgets.DatePicker(
            description="From",
            layout=widgets.Layout(width="175px"),
            style={"description_width": "initial"},
        )
        self.to_picker = widgets.DatePicker(
            description="To",
            layout=widgets.Layout(width="160px"),
            style={"description_width": "initial"},
        )
        self.clear_button = widgets.Button(
            description="Clear filters",
            icon="times",
            tooltip="Show every call (of the key picked)",
            layout=widgets.Layout(width="auto"),
        )
        self.clear_button.on_click(lambda _b: self.clear_filters())
        self.refresh_button = refresh_button(self.refresh, "Load the newest calls")
        self.newer_button = widgets.Button(description="Newer", icon="chevron-left")
        self.older_button = widgets.Button(description="Older", icon="chevron-right")
        for button in (self.newer_button, self.older_button):
            button.layout = widgets.Layout(width="auto")
        self.page_label = widgets.HTML()
        self.table = Table(
            columns(tz),
            lead=self._detail_cell,
            extra=self._feedback_cell,
            extra_label="Rate",
            # 12px and 8px apart: every column, feedback included, in the 840 px a notebook's
            # output has in a 1024 px wide JupyterLab window.
            gap="1px 8px",
            font_size="12px",
        )
        self.table.add_class("lcm-calls")
        self.newer_button.on_click(lambda _b: self.newer())
        self.older_button.on_click(lambda _b: self.older())
        self.pager = widgets.HBox(
            [self.newer_button, self.older_button, self.page_label],
            layout=widgets.Layout(align_items="center", grid_gap="8px"),
        )
        self.states = States(self.messages, [self.table, self.pager])
        row = widgets.Layout(flex_flow="row wrap", align_items="center", grid_gap="4px 12px")
        filters = (
            self.key_picker,
            self.model_filter,
            self.provider_picker,
            self.status_picker,
            self.from_picker,
            self.to_picker,
        )
        self.children = [
            widgets.HBox(
                [widgets.HTML(heading("Recent calls")), self.refresh_button],
                layout=widgets.Layout(align_items="center", grid_gap="12px"),
            ),
            widgets.HBox([*filters, self.clear_button], layout=row),
            self.messages,
            self.states.note,
            self.table,
            self.pager,
        ]
        for picker in filters:
            picker.observe(self._filter_changed, names="value")
        display(self.clear_button, False)
        self.refresh()

    # -- public state ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """What the table shows: loading, empty, error or data."""
        return self.states.state

    @property
    def records(self) -> list[Mapping[str, Any]]:
        """The calls of this page, as shown (newest first unless a column sort is in force)."""
        return self.table.rows

    @property
    def key_id(self) -> int | None:
        """The key whose calls are shown; None for every key."""
        return self.filters.key_id

    # -- loading ---------------------------------------------------------------------------------

    def _set_quietly(self, widget: widgets.Widget, value: Any) -> None:
        """Set a filter's value without it counting as the user's pick."""
        self._quiet = True
        try:
            widget.value = value
        finally:
            self._quiet = False

    def _load_keys(self) -> bool:
        """Key names for the Key column and the picker; a failure leaves ids shown as #id."""
        with reporting(self.messages, "list the proxy keys"):
            keys = self._connect().list_keys()
            self._key_names = {k["id"]: k["name"] for k in keys}
            options = [("All keys", ALL)] + [
                (f"{k['name']} (#{k['id']}){' · revoked' if k.get('revoked') else ''}", k["id"])
                for k in keys
            ]
            key_id = self.filters.key_id
            if key_id is not None and key_id not in self._key_names:
                options.append((f"#{key_id}", key_id))
            self._quiet = True  # new options are not a pick by the user
            try:
                self.key_picker.options = options
                self.key_picker.value = ALL if key_id is None else key_id
            finally:
                self._quiet = False
            return True
        return False

    def _load_models(self) -> None:
        """The model filter's suggestions: the models called lately. Only suggestions: a
        model typed by hand is asked for all the same, so a failure here says nothing."""
        try:
            items = self._connect().breakdown("model", MODEL_SUGGESTIONS, limit=1000)["items"]
        except LCMClientError:
            return
        self.model_filter.options = model_names(items)

    def refresh(self) -> None:
        """Reload the key names, the model suggestions and this page (the first page shows
        calls made since)."""
        self.messages.clear()
        if self._load_keys():
            self._load_models()
            self._load(self.page)
        else:
            self._show_error()

    def older(self) -> None:
        """The next page back in time."""
        if self.has_older:
            self._load(self.page + 1)

    def newer(self) -> None:
        """The page before this one (newer calls)."""
        if self.page > 0:
            self._load(self.page - 1)

    def _filter_changed(self, _change: dict) -> None:
        if self._quiet:
            return
        self.filters = self._read_filters()
        display(self.clear_button, self.filters.active)
        self._cursors, self.page = [None], 0
        self._load(0)

    def _read_filters(self) -> LogFilters:
        def picked(widget: widgets.Widget) -> Any:
            return None if widget.value == ALL else widget.value

        return LogFilters(
            key_id=picked(self.key_picker),
            model=(self.model_filter.value or "").strip() or None,
            provider=picked(self.provider_picker),
            status=picked(self.status_picker),
            first=self.from_picker.value,
            last=self.to_picker.value,
        )

    def set_filters(self, **changes: Any) -> None:
        """Show the calls these filters keep (LogFilters' fields: key_id, model, provider,
        status, first, last), from the newest; the pickers show them."""
        filters = replace(self.filters, **changes)
        pickers = (
            (self.key_picker, ALL if filters.key_id is None else filters.key_id),
            (self.model_filter, filters.model or ""),
            (self.provider_picker, filters.provider or ALL),
            (self.status_picker, filters.status or ALL),
            (self.from_picker, filters.first),
            (self.to_picker, filters.last),
        )
        for widget, value in pickers:
            self._set_quietly(widget, value)
        self.filters = filters
        display(self.clear_button, filters.active)
        self._cursors, self.page = [None], 0
        self._load(0)

    def clear_filters(self) -> None:
        """Every call again (of the key picked)."""
        self.set_filters(model=None, provider=None, status=None, first=None, last=None)

    def _show_error(self) -> None:
        """The error alone: no rows, no pager, no "No calls yet" beside it."""
        self.has_older = False
        self.feedback_buttons, self.detail_buttons = {}, {}
        self.detail_id = self.detail = None
        self.table.set_records([])
        self.states.show(ERROR)
        self._show_pager()

    def _load(self, page: int) -> bool:
        """Show page `page` of the calls the filters keep; False (and the error alone) if
        they could not be loaded."""
        try:
            params = self.filters.params(self.tz)
        except ValueError as exc:
            self._show_error()
            self.states.show(ERROR, str(exc))
            return False
        self.states.show(LOADING, "Loading the calls…")
        loaded = False
        with reporting(self.messages, "load the calls"):
            # One row more than a page says whether there is an older page at all.
            rows = self._connect().logs(
                limit=self.page_size + 1, before=self._cursors[page], **params
            )
            self.page = page
            self.has_older = len(rows) > self.page_size
            rows = rows[: self.page_size]
            del self._cursors[page + 1 :]
            if self.has_older:
                self._cursors.append(rows[-1]["id"])
            self.feedback_buttons, self.detail_buttons = {}, {}
            self.detail_id = self.detail = None
            self.table.set_records([log_record(r, self._key_names, self.tz) for r in rows])
            loaded = True
        if not loaded:
            self._show_error()
            return False
        if self.table.records:
            self.states.show(DATA)
        else:
            self.states.show(EMPTY, empty_text(self.filters))
        self._show_pager()
        return True

    def _show_pager(self) -> None:
        self.newer_button.disabled = self.page == 0
        self.older_button.disabled = not self.has_older
        shown = len(self.table.records)
        first = self.page * self.page_size + 1
        where = f"calls {first:,}-{first + shown - 1:,}" if shown else "no calls"
        if self.filters.active:
            where += f" matching {self.filters.describe()}"
        self.page_label.value = (
            f"<span style='color:#555'>Page {self.page + 1} · {html.escape(where)}</span>"
        )

    # -- the detail of a call --------------------------------------------------------------------

    def _detail_cell(self, record: Mapping[str, Any]) -> widgets.Widget:
        log_id = record["id"]
        button = widgets.Button(
            icon="chevron-down" if log_id == self.detail_id else "chevron-right",
            tooltip="Details of this call",
            layout=widgets.Layout(width="26px", height="24px", padding="0"),
        )
        button.add_class("lcm-details")
        button.on_click(lambda _b: self.show_detail(log_id))
        self.detail_buttons[log_id] = button
        return button

    def show_detail(self, log_id: str | None) -> None:
        """Show the detail of call `log_id` under its row, as `GET lcm/api/logs/{id}` has it;
        the same call again (or None) closes it."""
        if log_id is None or log_id == self.detail_id:
            self._close_detail()
            return
        with reporting(self.messages, "load the call"):
            row = self._connect().log(log_id)
            self._close_detail()
            close = widgets.Button(
                description="Close",
                icon="times",
                layout=widgets.Layout(width="auto", height="26px"),
            )
            close.on_click(lambda _b: self.show_detail(None))
            title = widgets.HTML(heading(f"{model_label(row)} · {status_label(row)}", size="13px"))
            panel = widgets.VBox(
                [
                    widgets.HBox(
                        [title, close],
                        layout=widgets.Layout(
                            justify_content="space-between", align_items="center"
                        ),
                    ),
                    widgets.HTML(details_html(row, self._key_names, self.tz)),
                ],
                layout=widgets.Layout(
                    padding="6px 10px",
                    margin="2px 0 8px",
                    border="1px solid #ccc",
                ),
            )
            panel.add_class("lcm-call-detail")
            self.detail_id, self.detail = log_id, row
            self.table.expand(log_id, panel)
            if log_id in self.detail_buttons:
                self.detail_buttons[log_id].icon = "chevron-down"
            if self.messages.kind == "error":
                self.messages.clear()

    def _close_detail(self) -> None:
        if self.detail_id in self.detail_buttons:
            self.detail_buttons[self.detail_id].icon = "chevron-right"
        self.detail_id = self.detail = None
        self.table.expand(None, None)

    # -- feedback --------------------------------------------------------------------------------

    def _feedback_cell(self, record: Mapping[str, Any]) -> widgets.Widget:
        if not record["routed"]:
            return widgets.HTML("")
        buttons = []
        for score in (1, -1):
            icon, _style, tooltip = SCORES[score]
            button = widgets.Button(
                icon=icon,
                tooltip=tooltip,
                layout=widgets.Layout(width="28px", height="24px", padding="0"),
            )
            button.on_click(lambda _b, log_id=record["id"], s=score: self.rate(log_id, s))
            buttons.append(button)
        plus, minus = buttons
        self.feedback_buttons[record["id"]] = (plus, minus)
        self._show_score(record["id"], record.get("feedback"))
        return widgets.HBox(buttons, layout=widgets.Layout(grid_gap="2px"))

    def _show_score(self, log_id: str, score: int | None) -> None:
        """Highlight the button of the recorded score (none when unrated)."""
        plus, minus = self.feedback_buttons[log_id]
        plus.button_style = SCORES[1][1] if score == 1 else ""
        minus.button_style = SCORES[-1][1] if score == -1 else ""

    def rate(self, log_id: str, score: int) -> None:
        """What a feedback button does: record +1 or -1 for a routed call (replacing any)."""
        with reporting(self.messages, "record the feedback"):
            recorded = self._connect().feedback(log_id, score)["feedback"]
            what = "the call"
            for record in self.table.records:
                if record["id"] == log_id:
                    record["feedback"] = recorded  # type: ignore[index]
                    what = record["model"]
            if log_id in self.feedback_buttons:
                self._show_score(log_id, recorded)
            self.messages.ok(f"Recorded {recorded:+d} for {what}.")
