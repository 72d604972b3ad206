"""Recent proxied calls as a table: cost, savings, latency, routing, and feedback on routed ones.

    from lcm_jupyter.ui import ProxyLogTable
    ProxyLogTable(page_size=20)

Pages walk back through the log with the API's `before=` cursor (log ids sort by time);
the +/- buttons rate a routed call's answer, which is what the routing quality gate reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import tzinfo
from typing import Any

import ipywidgets as widgets

from ..client import LCMClient
from ._common import (
    ALL,
    Column,
    Connected,
    Messages,
    Table,
    count,
    heading,
    local_time,
    millis,
    refresh_button,
    reporting,
    usd,
)

MAX_PAGE_SIZE = 999  # the API answers at most 1000 rows; one more than a page is asked for
ERROR_WIDTH = 40  # characters of an error shown in the status cell


def is_routed(row: Mapping[str, Any]) -> bool:
    """Whether the call was sent to another model than the one asked for."""
    decision = row.get("routing_decision") or {}
    return bool(decision.get("was_routed"))


def model_label(row: Mapping[str, Any]) -> str:
    """The model that answered; a routed call also names the one asked for (`mini ← big`)."""
    model = row.get("model") or row.get("requested_model") or "?"
    requested = row.get("requested_model")
    if is_routed(row) and requested and requested != model:
        return f"{model} ← {requested}"
    return model


def status_label(row: Mapping[str, Any]) -> str:
    """The HTTP status, marked for a cache hit, with the start of the error for a failure."""
    status = row.get("status")
    text = "—" if status is None else str(status)
    if row.get("cache_hit"):
        text += " · cache hit"
    error = row.get("error")
    if error and (status is None or status >= 400):
        short = error if len(error) <= ERROR_WIDTH else error[: ERROR_WIDTH - 1] + "…"
        text += f" · {short}"
    return text


def log_record(
    row: Mapping[str, Any], key_names: Mapping[int, str] | None = None, tz: tzinfo | None = None
) -> dict[str, Any]:
    """One log row as the table shows it (raw numbers kept, so columns sort by value)."""
    key_id = row.get("key_id")
    names = key_names or {}
    return {
        "id": row["id"],
        "time": local_time(row.get("created_at"), tz),
        "key": names.get(key_id, f"#{key_id}") if key_id is not None else "—",
        "model": model_label(row),
        "input_tokens": row.get("input_tokens"),
        "output_tokens": row.get("output_tokens"),
        # None only for a call the price table could not price (never a silent $0).
        "cost_usd": row.get("cost_usd"),
        "savings_usd": row.get("savings_usd"),
        "latency_ms": row.get("latency_ms"),
        "status": status_label(row),
        "routed": is_routed(row),
        "cache_hit": bool(row.get("cache_hit")),
        "feedback": row.get("feedback"),
    }


def _cost(value: float | None) -> str:
    return "unpriced" if value is None else usd(value)


def _savings(value: float | None) -> str:
    return "" if not value else usd(value)


COLUMNS = (
    Column("time", "Time"),
    Column("key", "Key"),
    Column("model", "Model"),
    Column("input_tokens", "In", count, numeric=True),
    Column("output_tokens", "Out", count, numeric=True),
    Column("cost_usd", "Cost", _cost, numeric=True),
    Column("savings_usd", "Saved", _savings, numeric=True),
    Column("latency_ms", "Latency", millis, numeric=True),
    Column("status", "Status"),
)
# score: (icon, button style when recorded, tooltip)
SCORES = {
    1: ("thumbs-up", "success", "+1: the routed model answered well"),
    -1: ("thumbs-down", "danger", "-1: the routed model answered badly"),
}


class ProxyLogTable(Connected, widgets.VBox):
    """The newest calls through the proxy, a page at a time, with feedback on routed calls.

    State for code and tests: `records` (this page, as shown), `page` (0 is the newest),
    `feedback_buttons` ({log id: (+ button, - button)}, routed calls only), `messages`.
    """

    def __init__(
        self,
        client: LCMClient | None = None,
        key_id: int | None = None,
        page_size: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.add_class("lcm-logtable")
        self.messages = Messages()
        self.client = client
        self.page_size = max(1, min(int(page_size), MAX_PAGE_SIZE))
        self.key_id = key_id
        self.page = 0
        self.has_older = False
        # The `before` cursor of each page seen so far: page n is read with cursors[n].
        self._cursors: list[str | None] = [None]
        self._key_names: dict[int, str] = {}
        self._quiet = False
        self.feedback_buttons: dict[str, tuple[widgets.Button, widgets.Button]] = {}

        self.key_picker = widgets.Dropdown(
            options=[("All keys", ALL)],
            value=ALL,
            description="Key",
            layout=widgets.Layout(width="240px"),
            style={"description_width": "32px"},
        )
        self.refresh_button = refresh_button(self.refresh, "Load the newest calls")
        self.newer_button = widgets.Button(description="Newer", icon="chevron-left")
        self.older_button = widgets.Button(description="Older", icon="chevron-right")
        for button in (self.newer_button, self.older_button):
            button.layout = widgets.Layout(width="auto")
        self.page_label = widgets.HTML()
        self.table = Table(
            COLUMNS,
            extra=self._feedback_cell,
            extra_label="Feedback",
            empty="No calls yet: calls made through the proxy show here.",
        )
        self.newer_button.on_click(lambda _b: self.newer())
        self.older_button.on_click(lambda _b: self.older())
        self.children = [
            widgets.HBox(
                [
                    widgets.HTML(heading("Recent calls")),
                    self.key_picker,
                    self.refresh_button,
                ],
                layout=widgets.Layout(align_items="center", grid_gap="12px"),
            ),
            self.table,
            widgets.HBox(
                [self.newer_button, self.older_button, self.page_label],
                layout=widgets.Layout(align_items="center", grid_gap="8px"),
            ),
            self.messages,
        ]
        self.key_picker.observe(self._key_picked, names="value")
        self.refresh()

    @property
    def records(self) -> list[Mapping[str, Any]]:
        """The calls of this page, as shown (newest first unless a column sort is in force)."""
        return self.table.rows

    # -- loading ---------------------------------------------------------------------------------

    def _load_keys(self) -> None:
        """Key names for the Key column and the picker; a failure leaves ids shown as #id."""
        self._quiet = True  # new options are not a pick by the user
        with reporting(self.messages, "list the proxy keys"):
            keys = self._connect().list_keys()
            self._key_names = {k["id"]: k["name"] for k in keys}
            options = [("All keys", ALL)] + [
                (f"{k['name']} (#{k['id']}){' · revoked' if k.get('revoked') else ''}", k["id"])
                for k in keys
            ]
            if self.key_id is not None and self.key_id not in self._key_names:
                options.append((f"#{self.key_id}", self.key_id))
            self.key_picker.options = options
            self.key_picker.value = ALL if self.key_id is None else self.key_id
        self._quiet = False

    def _key_picked(self, change: dict) -> None:
        if self._quiet:
            return
        shown = (self.key_id, self._cursors, self.page)
        self.key_id = None if change["new"] == ALL else change["new"]
        self.messages.clear()
        self._cursors, self.page = [None], 0
        if not self._load(0):
            # The calls shown are still the other key's: so are the picker and the pager.
            self.key_id, self._cursors, self.page = shown
            self._quiet = True
            self.key_picker.value = change["old"]
            self._quiet = False
            self._show_pager()

    def refresh(self) -> None:
        """Reload the key names and this page (the first page shows calls made since)."""
        self.messages.clear()
        self._load_keys()
        self._load(self.page)

    def older(self) -> None:
        """The next page back in time."""
        if self.has_older:
            self.messages.clear()
            self._load(self.page + 1)

    def newer(self) -> None:
        """The page before this one (newer calls)."""
        if self.page > 0:
            self.messages.clear()
            self._load(self.page - 1)

    def _load(self, page: int) -> bool:
        """Show page `page`; on a failure the page shown stays, the message says why, and
        the answer is False."""
        loaded = False
        with reporting(self.messages, "load the calls"):
            # One row more than a page says whether there is an older page at all.
            rows = self._connect().logs(
                key_id=self.key_id, limit=self.page_size + 1, before=self._cursors[page]
            )
            self.page = page
            self.has_older = len(rows) > self.page_size
            rows = rows[: self.page_size]
            del self._cursors[page + 1 :]
            if self.has_older:
                self._cursors.append(rows[-1]["id"])
            self.feedback_buttons = {}
            self.table.set_records([log_record(r, self._key_names) for r in rows])
            loaded = True
        self._show_pager()
        return loaded

    def _show_pager(self) -> None:
        self.newer_button.disabled = self.page == 0
        self.older_button.disabled = not self.has_older
        shown = len(self.table.records)
        if shown:
            first = self.page * self.page_size + 1
            where = f"calls {first:,}-{first + shown - 1:,}"
        else:
            where = "no calls"
        self.page_label.value = f"<span style='color:#555'>Page {self.page + 1} · {where}</span>"

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
                layout=widgets.Layout(width="36px", height="26px", padding="0"),
            )
            button.on_click(lambda _b, log_id=record["id"], s=score: self.rate(log_id, s))
            buttons.append(button)
        plus, minus = buttons
        self.feedback_buttons[record["id"]] = (plus, minus)
        self._show_score(record["id"], record.get("feedback"))
        return widgets.HBox(buttons, layout=widgets.Layout(grid_gap="4px"))

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
