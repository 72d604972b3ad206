"""The team's REST API: budgets per user and per group, and the admin view's figures.

- `GET lcm/api/budgets/users`, `GET lcm/api/budgets/groups`: the month's budgets with spend
  (a user sees their own and their groups'; an admin every one).
- `GET|PUT lcm/api/budgets/users/{name}`, `.../groups/{name}`: PUT `{monthly_budget_usd,
  budget_alert_thresholds?, budget_alerts_enabled?}`, admins only (403 otherwise).
- `GET lcm/api/team?month=`: users (spend, budget, top models and notebooks) and groups.
- `GET|PUT lcm/api/team/provider_keys`: the team's provider keys (masked; PUT
  `{provider: key or null}`, admins only), which calls use when their proxy key has none
  for the provider (the other way to hand them over than the spawner's environment).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..core.budget import current_month, month_bounds, to_usd
from ..core.errors import BadRequest, NotFound
from ..core.keys import mask_secret
from ..core.keyspec import DEFAULT_THRESHOLDS, FIELDS
from ..core.settings import PROVIDERS
from ..store import team as team_table
from ..store.spend import user_spend_units
from ..store.team import KINDS, TeamBudget
from .api_handlers import LCMAPIHandler, answers_errors

_PLURAL = {f"{kind}s": kind for kind in KINDS}
_BUDGET_FIELDS = ("monthly_budget_usd", "budget_alert_thresholds", "budget_alerts_enabled")


def _kind(plural: str) -> str:
    kind = _PLURAL.get(plural)
    if kind is None:
        raise NotFound(f"no budgets of {plural!r} (users or groups)")
    return kind


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """A team budget's fields from a PUT body, checked as a key's same fields are."""
    unknown = sorted(set(body) - set(_BUDGET_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", param=unknown[0])
    return {name: FIELDS[name].check(value) for name, value in body.items()}


class TeamHandler(LCMAPIHandler):
    """Shared: the services' team budgets, and the month's figures of a budget."""

    auth_resource = "lcm:budgets"

    @property
    def team(self):
        return self.lcm.team

    async def _states(self, budgets: list[TeamBudget], month: str) -> list[dict[str, Any]]:
        """Each budget's month as its counter has it (calls in flight held)."""
        states = await asyncio.gather(
            *(self.lcm.counters.budget(key_id=b.counter_id, month=month) for b in budgets)
        )
        return [
            _state(budget, month, state.spent, state.reserved)
            for budget, state in zip(budgets, states, strict=True)
        ]

    async def _visible(self, kind: str) -> list[TeamBudget]:
        me = await self.member()
        budgets = await self.lcm.store.run(team_table.list_budgets, kind)
        return [b for b in budgets if me.sees(b.kind, b.name)]


class TeamBudgetsHandler(TeamHandler):
    """`GET lcm/api/budgets/users|groups`."""

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self, plural: str) -> None:
        kind = _kind(plural)
        month = current_month()
        budgets = await self._states(await self._visible(kind), month)
        self.reply({"month": month, "budgets": budgets})


class TeamBudgetHandler(TeamHandler):
    """`GET|PUT lcm/api/budgets/users|groups/{name}`."""

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self, plural: str, name: str) -> None:
        kind, name = _kind(plural), unquote(name)
        me = await self.member()
        if not me.sees(kind, name):
            raise NotFound(f"no {kind} {name!r} you may see")
        month = current_month()
        found = await self.lcm.store.run(team_table.get_budget, kind, name)
        if found is not None:
            (state,) = await self._states([found], month)
            self.reply(state)
            return
        # No budget (yet): the month without a limit; a user's spend is their calls' (a
        # group's is what its budget would be charged: nothing).
        spent = {}
        if kind == "user":
            start, end = month_bounds(month)
            spent = await self.lcm.store.run(user_spend_units, start=start, end=end, users=[name])
        unset = TeamBudget(0, kind, name, None, True, list(DEFAULT_THRESHOLDS), "")
        self.reply(_state(unset, month, spent.get(name, 0), 0))

    @web.authenticated
    @authorized
    @answers_errors
    async def put(self, plural: str, name: str) -> None:
        kind, name = _kind(plural), unquote(name)
        await self.require_admin("set budgets")
        if not name.strip() or len(name) > 200:
            raise BadRequest("a user or group name is required", param="name")
        fields = _fields(self.optional_body())
        if "monthly_budget_usd" not in fields:  # the thresholds alone: the limit stays
            current = await self.lcm.store.run(team_table.get_budget, kind, name)
            fields["monthly_budget_usd"] = current.monthly_budget_usd if current else None
        budget = await self.lcm.store.run(
            team_table.set_budget,
            kind,
            name,
            monthly_budget_usd=fields["monthly_budget_usd"],
            budget_alerts_enabled=fields.get("budget_alerts_enabled"),
            budget_alert_thresholds=fields.get("budget_alert_thresholds"),
        )
        self.team.forget()
        # Its counter starts from what the log says (a user's calls of the month so far).
        await self.lcm.reconcile()
        (state,) = await self._states([budget], current_month())
        self.reply(state)


def _state(budget: TeamBudget, month: str, spent: int, reserved: int) -> dict[str, Any]:
    """A budget's month as the API shows it, from its spend and holds in money units."""
    limit = budget.monthly_budget_usd
    spent_usd, reserved_usd = to_usd(spent), to_usd(reserved)
    left = None if limit is None else max(limit - spent_usd - reserved_usd, 0.0)
    return {
        **budget.public(),
        "month": month,
        "budget_usd": limit,
        "spent_usd": spent_usd,
        "reserved_usd": reserved_usd,
        "remaining_usd": left,
    }


class TeamViewHandler(TeamHandler):
    """`GET lcm/api/team?month=YYYY-MM`: what the admin view shows. Spend is the log's; for
    this month a budget's spend and what is left are its counter's (calls in flight held)."""

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        month = self.get_argument("month", None) or current_month()
        try:
            start, end = month_bounds(month)
        except ValueError:
            raise BadRequest("month must be YYYY-MM", param="month") from None
        me = await self.member()
        await self.lcm.flush_logs()
        budgets = await self.lcm.store.run(team_table.list_budgets)
        # Every user's figures: a group's total counts all its members, whoever asks.
        figures = await self.lcm.store.run(team_table.month_by_user, start=start, end=end)
        names = set(figures) | {b.name for b in budgets if b.kind == "user"}
        if not me.admin:
            names = {me.name}
        members = {name: await self.team.directory.member(name) for name in sorted(names)}
        states = await self._month_states(budgets, month, start, end)
        users = []
        for name in sorted(names):
            entry = figures.get(name, _NOTHING)
            users.append(
                {
                    "name": name,
                    "groups": list(members[name].groups),
                    "spent_usd": to_usd(entry["cost_units"]),
                    **_limits(states.get(("user", name))),
                    "requests": entry["requests"],
                    "top_models": _top(entry["models"]),
                    "top_notebooks": _top(entry["notebooks"], none="(none)"),
                }
            )
        users.sort(key=lambda u: (-u["spent_usd"], u["name"]))
        group_names = {b.name for b in budgets if b.kind == "group"}
        group_names |= {g for m in members.values() for g in m.groups}
        if not me.admin:
            group_names &= set(me.groups)
        groups = []
        for name in sorted(group_names):
            listed = await self.team.directory.members_of(name)
            if listed is None:  # the hub would not say: the members this view knows of
                listed = sorted(n for n, m in members.items() if name in m.groups)
            state = states.get(("group", name))
            spent = sum(figures.get(n, _NOTHING)["cost_units"] for n in listed)
            groups.append(
                {
                    "name": name,
                    "members": listed,
                    # What its budget counts when it has one; else its members' spend.
                    "spent_usd": state["spent_usd"] if state else to_usd(spent),
                    **_limits(state),
                    "requests": sum(figures.get(n, _NOTHING)["requests"] for n in listed),
                }
            )
        self.reply(
            {"month": month, "me": me.name, "admin": me.admin, "users": users, "groups": groups}
        )

    async def _month_states(
        self, budgets: list[TeamBudget], month: str, start: str, end: str
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Each budget's month: this month's from its counter; an earlier one's from the
        log, with nothing "left" (the limit shown is today's)."""
        if month == current_month():
            states = await self._states(budgets, month)
        else:
            users = await self.lcm.store.run(user_spend_units, start=start, end=end)
            charged = await self.lcm.store.run(team_table.budget_spend_units, start=start, end=end)
            states = [
                {
                    **_state(
                        b,
                        month,
                        users.get(b.name, 0) if b.kind == "user" else charged.get(b.id, 0),
                        0,
                    ),
                    "remaining_usd": None,
                }
                for b in budgets
            ]
        return {(s["kind"], s["name"]): s for s in states}


_NOTHING: dict[str, Any] = {"requests": 0, "cost_units": 0, "models": [], "notebooks": []}


def _limits(state: dict[str, Any] | None) -> dict[str, Any]:
    """A user's or group's budget as the view shows it (all None without one)."""
    if state is None:
        return dict.fromkeys(
            ("budget_usd", "remaining_usd", "budget_alerts_enabled", "budget_alert_thresholds")
        )
    return {
        "budget_usd": state["budget_usd"],
        "remaining_usd": state["remaining_usd"],
        "budget_alerts_enabled": state["budget_alerts_enabled"],
        "budget_alert_thresholds": state["budget_alert_thresholds"],
    }


class TeamProviderKeysHandler(TeamHandler):
    """`GET|PUT lcm/api/team/provider_keys`."""

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        keys = await self.lcm.store.run(team_table.team_provider_keys, self.lcm.box)
        self.reply({"provider_api_keys": {p: mask_secret(k) for p, k in keys.items()}})

    @web.authenticated
    @authorized
    @answers_errors
    async def put(self) -> None:
        await self.require_admin("set the team's provider keys")
        body = self.optional_body()
        # A key checked as a proxy key's own are; null removes the provider's.
        removed = {p: None for p, k in body.items() if k is None}
        unknown = sorted(set(removed) - set(PROVIDERS))
        if unknown:
            raise BadRequest(f"unknown provider {unknown[0]!r}", param="provider_api_keys")
        given = FIELDS["provider_api_keys"].check({p: k for p, k in body.items() if k is not None})
        keys = await self.lcm.store.run(
            team_table.set_team_provider_keys, self.lcm.box, {**given, **removed}
        )
        self.team.forget()
        self.reply({"provider_api_keys": {p: mask_secret(k) for p, k in keys.items()}})


def _top(groups: list[tuple[Any, int, int]], none: str = "") -> list[dict[str, Any]]:
    return [
        {"name": name or none, "cost_usd": to_usd(units), "requests": count}
        for name, units, count in groups
    ]


def team_handlers(lcm, prefix: str = "lcm/api") -> list[tuple]:
    """The URL rules of the team API (before `budgets/{key_id}`'s, which would match them)."""
    kwargs = {"lcm": lcm}
    kinds = "|".join(f"{k}s" for k in KINDS)
    return [
        (rf"/{prefix}/budgets/({kinds})", TeamBudgetsHandler, kwargs),
        (rf"/{prefix}/budgets/({kinds})/([^/]+)", TeamBudgetHandler, kwargs),
        (rf"/{prefix}/team", TeamViewHandler, kwargs),
        (rf"/{prefix}/team/provider_keys", TeamProviderKeysHandler, kwargs),
    ]
