"""A JupyterHub team's month: what each user and group spent, their budgets, and (for
admins) a row to set a user's or a group's monthly budget.

    from lcm_jupyter.ui import TeamView
    TeamView()                    # this month
    TeamView(month="2026-11")     # an earlier one

Everything comes from `GET lcm/api/team` through LCMClient: per user their groups, spend,
budget, remainder, calls, top models and top notebooks; per group its members and the
same figures; and who is asking (`me`, `admin`). A non-admin sees their own row and
their groups, and no budget row. The budget row PUTs `lcm/api/budgets/users/{name}` or
`.../groups/{name}` (amount, alert thresholds, alerts on) and loads the view again; a
refusal (403 for a non-admin) is one line on the message line.

Turning the API's answer into table records and the budget row's values into the API's
fields is done by the plain functions at the top, tested without a frontend.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import bqplot as bq
import ipywidgets as widgets

from ..client import LCMClient
from ..core.budget import current_month, month_bounds
from ..core.errors import BadRequest
from ..core.keyspec import DEFAULT_THRESHOLDS, FIELDS, validate_key_fields
from ._common import (
    DATA,
    EMPTY,
    ERROR,
    LOADING,
    AlertThresholds,
    Column,
    Connected,
    Messages,
    States,
    Table,
    count,
    display,
    field_row,
    fixed,
    heading,
    money,
    refresh_button,
    reporting,
)
from .dashboard import (
    BAR_COLOR,
    calls_text,
    dollar_ticks,
    hover_tip,
    hovered_index,
    ranked_bars,
)
from .keyform import humanize, number_text, parse_number

MONTHS_BACK = 12  # the month picker offers the server's month and the eleven before it
TOP_SHOWN = 3  # top models and notebooks named in a user's row (all of them in its tooltip)
BAR_HEIGHT = 26  # pixels per user in the spend chart
KINDS = {"users": "user", "groups": "group"}  # the budget row's choice -> its noun
OVER_COLOR = "#d1495b"  # a user's bar once their budget is spent


# -- data shaping (pure) -------------------------------------------------------------------------


def recent_months(month: str, n: int = MONTHS_BACK) -> list[str]:
    """`month` (YYYY-MM) and the `n - 1` before it, newest first."""
    month_bounds(month)  # a ValueError for anything that is not a month
    year, mon = int(month[:4]), int(month[5:7])
    out = []
    for _ in range(n):
        out.append(f"{year:04d}-{mon:02d}")
        year, mon = (year - 1, 12) if mon == 1 else (year, mon - 1)
    return out


def top_text(entries: Sequence[Mapping[str, Any]], n: int = TOP_SHOWN) -> str:
    """A user's top models or notebooks in one line: "gpt-4o $1.20, o3 $0.40 (+2)"."""
    shown = [f"{e.get('name')} {money(e.get('cost_usd'))}" for e in entries[:n]]
    more = len(entries) - n
    return ", ".join(shown) + (f" (+{more})" if more > 0 else "")


def top_tip(entries: Sequence[Mapping[str, Any]]) -> str:
    """Every top model or notebook, one a line with its cost and calls (a cell's tooltip)."""
    return "\n".join(
        f"{e.get('name')}: {money(e.get('cost_usd'))}, {calls_text(e.get('requests') or 0)}"
        for e in entries
    )


def user_records(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The users table's records of a `GET lcm/api/team` answer, in its order (by spend)."""
    records = []
    for user in answer.get("users", []):
        models, notebooks = user.get("top_models") or [], user.get("top_notebooks") or []
        records.append(
            {
                "name": user["name"],
                "groups": ", ".join(user.get("groups") or []),
                "spent_usd": user.get("spent_usd"),
                "budget_usd": user.get("budget_usd"),
                "remaining_usd": user.get("remaining_usd"),
                "requests": user.get("requests") or 0,
                "top_models": top_text(models),
                "top_models_tip": top_tip(models),
                "top_notebooks": top_text(notebooks),
                "top_notebooks_tip": top_tip(notebooks),
            }
        )
    return records


def group_records(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The groups table's records of a `GET lcm/api/team` answer."""
    return [
        {
            "name": group["name"],
            "members": ", ".join(group.get("members") or []),
            "spent_usd": group.get("spent_usd"),
            "budget_usd": group.get("budget_usd"),
            "remaining_usd": group.get("remaining_usd"),
            "requests": group.get("requests") or 0,
        }
        for group in answer.get("groups", [])
    ]


def budget_values(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The budget row's values for a budget record (GET lcm/api/budgets/users/{name}); for
    none, no budget and the usual alerts."""
    record = record or {}
    thresholds = record.get("budget_alert_thresholds")
    return {
        "monthly_budget_usd": number_text(record.get("budget_usd")),
        "budget_alerts_enabled": bool(record.get("budget_alerts_enabled", True)),
        "budget_alert_thresholds": list(DEFAULT_THRESHOLDS if thresholds is None else thresholds),
    }


def budget_payload(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The PUT body for the budget row's `values` (as `budget_values` gives them), and a
    message per field that is wrong: the key's own checks (core.keyspec), so the row
    refuses what the API would. Alerts off with nothing ticked leaves the thresholds be."""
    errors: dict[str, str] = {}
    raw: dict[str, Any] = {"budget_alerts_enabled": bool(values["budget_alerts_enabled"])}
    thresholds = sorted(values.get("budget_alert_thresholds") or [])
    if thresholds or raw["budget_alerts_enabled"]:
        raw["budget_alert_thresholds"] = thresholds
    try:
        raw["monthly_budget_usd"] = parse_number(values["monthly_budget_usd"], integer=False)
    except ValueError as exc:
        errors["monthly_budget_usd"] = str(exc)
    payload: dict[str, Any] = {}
    for field, value in raw.items():
        try:
            payload.update(validate_key_fields({field: value}, partial=True))
        except BadRequest as exc:
            errors[field] = humanize(exc.message, field)
    return payload, errors


def _money_or_none(value: float | None) -> str:
    return "no budget" if value is None else money(value)


USER_COLUMNS = (
    Column("name", "User"),
    Column("groups", "Groups", max_width="8em"),
    Column("spent_usd", "Spent", money, numeric=True),
    Column("budget_usd", "Budget", _money_or_none, numeric=True),
    Column("remaining_usd", "Remaining", money, numeric=True, heading_tip="Budget left"),
    Column("requests", "Calls", count, numeric=True),
    # Cut to fit a 1024 px window; every model or notebook, with its calls, in the tooltip.
    Column("top_models", "Top models", max_width="12em", tip="top_models_tip"),
    Column("top_notebooks", "Top notebooks", max_width="12em", tip="top_notebooks_tip"),
)
GROUP_COLUMNS = (
    Column("name", "Group"),
    Column("members", "Members", max_width="24em"),
    Column("spent_usd", "Spent", money, numeric=True),
    Column("budget_usd", "Budget", _money_or_none, numeric=True),
    Column("remaining_usd", "Remaining", money, numeric=True, heading_tip="Budget left"),
    Column("requests", "Calls", count, numeric=True),
)


# -- the widget ----------------------------------------------------------------------------------


class TeamView(Connected, widgets.VBox):
    """Spend and budgets per user and group for a month, and the budget row (admins).

    State for code and tests: `state` (loading, empty, error or data), `answer` (the last
    `GET lcm/api/team`), `month`, `user_table`, `group_table`, `budget_fields` (amount,
    alerts, thresholds), `budgets` (kind -> name -> budget record, admins), `messages`.
    """

    def __init__(
        self, client: LCMClient | None = None, *, month: str | None = None, **kwargs: Any
    ) -> None:
        if month is not None:
            month_bounds(month)  # a ValueError here, not a message later
        kwargs.setdefault("layout", widgets.Layout(width="100%", padding="4px"))
        super().__init__(**kwargs)
        self.client = client
        self.messages = Messages()
        self.answer: dict[str, Any] = {}
        self.budgets: dict[str, dict[str, Mapping[str, Any]]] = {k: {} for k in KINDS}
        self._quiet = False
        self.bar_users: list[Mapping[str, Any]] = []

        self.title = widgets.HTML()
        self.month_picker = widgets.Dropdown(
            options=[month] if month else [],
            value=month,
            description="Month",
            layout=widgets.Layout(width="170px"),
            style={"description_width": "initial"},
        )
        self.month_picker.observe(self._month_changed, names="value")
        self.refresh_button = refresh_button(self.refresh, "Load the figures again")
        controls = widgets.HBox(
            [self.title, self.month_picker, self.refresh_button],
            layout=widgets.Layout(align_items="center", grid_gap="4px 12px", flex_flow="row wrap"),
        )

        self._build_chart()
        self.user_table = Table(
            USER_COLUMNS, row_key="name", empty="No user made calls.", gap="2px 10px"
        )
        self.group_table = Table(GROUP_COLUMNS, row_key="name", empty="No groups.", gap="2px 10px")
        self.groups_heading = widgets.HTML(
            heading("Groups", "members' spend together", "14px"),
            layout=widgets.Layout(margin="10px 0 0 0"),
        )
        self._build_budget_row()

        self.body = widgets.VBox(
            [
                self.chart,
                widgets.HTML(heading("Users", "the month's spend, most first", "14px")),
                self.user_table,
                self.groups_heading,
                self.group_table,
                self.budget_row,
            ]
        )
        self.states = States(self.messages, [self.body])
        self.children = [controls, self.states.note, self.body, self.messages]
        self.refresh()

    @property
    def state(self) -> str:
        """loading, empty, error or data."""
        return self.states.state

    @property
    def month(self) -> str | None:
        """The month shown (YYYY-MM); None (this month) until the server has answered."""
        return self.month_picker.value

    # -- layout ----------------------------------------------------------------------------------

    def _build_chart(self) -> None:
        self.bars, axes = ranked_bars()
        self.bars.on_hover(self._bar_hovered)
        self.spent_axis = axes[1]
        self.chart = bq.Figure(
            marks=[self.bars],
            axes=axes,
            title="Spend per user",
            fig_margin={"top": 40, "bottom": 45, "left": 150, "right": 30},
            animation_duration=300,
            layout=widgets.Layout(width="100%", max_width="760px", height="200px"),
        )

    def _build_budget_row(self) -> None:
        self.kind_picker = widgets.ToggleButtons(
            options=[(noun.title(), kind) for kind, noun in KINDS.items()], value="users"
        )
        self.kind_picker.style.button_width = "70px"
        self.name_picker = widgets.Combobox(
            placeholder="a user's name",
            ensure_option=False,
            layout=fixed(widgets.Layout(width="220px")),
        )
        thresholds = AlertThresholds()
        self.budget_fields: dict[str, Any] = {
            "monthly_budget_usd": widgets.Text(
                placeholder="no budget", layout=fixed(widgets.Layout(width="140px"))
            ),
            "budget_alerts_enabled": thresholds.switch,
            "budget_alert_thresholds": thresholds,
        }
        self.budget_note = widgets.HTML()
        self.save_button = widgets.Button(
            description="Set budget", button_style="primary", icon="check"
        )
        self.save_button.on_click(lambda _b: self.save())
        self.kind_picker.observe(lambda _c: self._kind_changed(), names="value")
        self.name_picker.observe(lambda _c: self._fill_budget(), names="value")
        f = self.budget_fields
        self.budget_form = widgets.VBox(
            [
                field_row("Budget of", self.kind_picker, self.name_picker, self.budget_note),
                field_row("Monthly budget (USD)", f["monthly_budget_usd"]),
                field_row(
                    "Budget alerts",
                    thresholds.switch,
                    thresholds,
                    tooltip="An alert when the month's spend reaches these shares of the budget",
                ),
                widgets.HBox([self.save_button], layout=widgets.Layout(margin="6px 0 0 0")),
            ]
        )
        self.budget_heading = widgets.HTML()
        self.budget_row = widgets.VBox(
            [self.budget_heading, self.budget_form], layout=widgets.Layout(margin="10px 0 0 0")
        )
        self._set_budget_values(budget_values(None))

    # -- loading ---------------------------------------------------------------------------------

    def _month_changed(self, _change: Any) -> None:
        if not self._quiet:
            self.refresh()

    def refresh(self) -> None:
        """Load the month again (what the Refresh button does); errors show in the widget."""
        self.states.show(LOADING, "Loading the team…")
        loaded = False
        with reporting(self.messages, "load the team"):
            client = self._connect()
            answer = client.team(self.month)
            budgets: dict[str, dict[str, Mapping[str, Any]]] = {k: {} for k in KINDS}
            if answer.get("admin"):  # the thresholds and alert switch the team answer lacks
                budgets["users"] = {b["name"]: b for b in client.user_budgets()}
                budgets["groups"] = {b["name"]: b for b in client.group_budgets()}
            self.answer, self.budgets = answer, budgets
            self._show(answer)
            loaded = True
        if not loaded:
            self.states.show(ERROR)
            return
        if answer.get("users") or answer.get("groups"):
            self.states.show(DATA)
        else:
            self.states.show(EMPTY, f"No calls by anyone in {answer.get('month')}.")

    def _show(self, answer: Mapping[str, Any]) -> None:
        self._quiet = True
        try:
            # Budgets run by UTC month (core.budget): this one and those before it, and the
            # month asked for if it is older.
            months = recent_months(current_month())
            if answer["month"] not in months:
                months.append(answer["month"])
            self.month_picker.options = months
            self.month_picker.value = answer["month"]
        finally:
            self._quiet = False
        admin = bool(answer.get("admin"))
        who = f"you are {answer.get('me')}" + (" (admin)" if admin else "")
        self.title.value = heading(f"Team spend, {answer['month']}", who, "16px")
        users = user_records(answer)
        self.user_table.set_records(users)
        groups = group_records(answer)
        self.group_table.set_records(groups)
        display(self.groups_heading, bool(groups))
        display(self.group_table, bool(groups))
        self._show_chart(users)
        display(self.budget_form, admin)
        if admin:
            note = "set a user's or a group's monthly budget (blank: none)"
        else:
            note = "budgets are set by an admin of the JupyterHub"
        self.budget_heading.value = heading("Budgets", note, "14px")
        self._kind_changed()

    def _show_chart(self, users: Sequence[Mapping[str, Any]]) -> None:
        self.bar_users = list(users)
        spent = [float(u["spent_usd"] or 0.0) for u in users]
        over = [
            u["budget_usd"] is not None and float(u["spent_usd"] or 0.0) >= float(u["budget_usd"])
            for u in users
        ]
        with self.bars.hold_sync():
            self.bars.x = [u["name"] for u in users]
            self.bars.y = spent
            self.bars.colors = [OVER_COLOR if o else BAR_COLOR for o in over] or [BAR_COLOR]
        dollar_ticks(self.spent_axis, max(spent, default=0.0), 4)
        self.chart.title = f"Spend per user, {self.month}"
        self.chart.layout.height = f"{max(160, BAR_HEIGHT * len(users) + 90)}px"
        display(self.chart, bool(users))

    def _bar_hovered(self, _mark: Any, content: Mapping[str, Any]) -> None:
        index = hovered_index(content)
        if index is not None and 0 <= index < len(self.bar_users):
            user = self.bar_users[index]
            lines = [f"<b>{html.escape(user['name'])}</b>", f"Spent {money(user['spent_usd'])}"]
            if user["budget_usd"] is not None:
                lines.append(f"Budget {money(user['budget_usd'])}")
            self.bars.tooltip.value = hover_tip(lines)

    # -- the budget row --------------------------------------------------------------------------

    def _kind_changed(self) -> None:
        kind = self.kind_picker.value
        names = {*self.budgets[kind]}
        names.update(r["name"] for r in self.answer.get(kind, []))
        self.name_picker.options = sorted(names)
        self.name_picker.placeholder = f"a {KINDS[kind]}'s name"
        self._fill_budget()

    def _fill_budget(self) -> None:
        """Show the budget of the user or group picked (a new name: none yet)."""
        kind, name = self.kind_picker.value, self.name_picker.value.strip()
        record = self.budgets[kind].get(name)
        if record is None:  # no budget record to read: the team answer's figure, if any
            row = next((r for r in self.answer.get(kind, []) if r["name"] == name), None)
            record = {"budget_usd": row.get("budget_usd")} if row else None
        self._set_budget_values(budget_values(record))
        self.budget_note.value = ""
        if record is not None and record.get("budget_usd") is not None:
            left = money(record.get("remaining_usd"))
            self.budget_note.value = f'<span style="color:#555">{left} left this month</span>'

    def _set_budget_values(self, values: Mapping[str, Any]) -> None:
        f = self.budget_fields
        f["monthly_budget_usd"].value = values["monthly_budget_usd"]
        f["budget_alerts_enabled"].value = values["budget_alerts_enabled"]
        f["budget_alert_thresholds"].set(values["budget_alert_thresholds"])

    def budget_values(self) -> dict[str, Any]:
        """What the budget row holds, in the shape `budget_payload` takes."""
        f = self.budget_fields
        return {
            "monthly_budget_usd": f["monthly_budget_usd"].value,
            "budget_alerts_enabled": f["budget_alerts_enabled"].value,
            "budget_alert_thresholds": f["budget_alert_thresholds"].chosen,
        }

    def save(self) -> bool:
        """Set the budget of the user or group picked (PUT), then load the view again; True
        when the server took it. A wrong field or a refusal is one line on the message line."""
        kind, name = self.kind_picker.value, self.name_picker.value.strip()
        noun = KINDS[kind]
        if not name:
            self.messages.error(f"Pick or type the {noun} whose budget to set.")
            return False
        payload, errors = budget_payload(self.budget_values())
        if errors:
            problems = [
                f"{FIELDS[f].label.capitalize()}: {m[:1].lower()}{m[1:]}" for f, m in errors.items()
            ]
            self.messages.error(" ".join(problems) + " Nothing was saved.")
            return False
        usd = payload["monthly_budget_usd"]
        record = None
        with reporting(self.messages, f"set the budget of {noun} '{name}'"):
            client = self._connect()
            setter = client.set_user_budget if kind == "users" else client.set_group_budget
            record = setter(
                name,
                usd,
                thresholds=payload.get("budget_alert_thresholds"),
                alerts=payload["budget_alerts_enabled"],
            )
        if record is None:
            return False
        self.refresh()  # keeps the user or group picked: the row shows what was saved
        if self.state != ERROR:
            amount = "no budget" if usd is None else f"{money(usd)} a month"
            self.messages.ok(f"The budget of {noun} '{name}' is now {amount}.")
        return True
