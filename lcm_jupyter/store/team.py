"""A team's budgets per user and per group (`team_budgets`), and spend as the log records it.

A user's spend is what the calls of their keys cost (the log's `user`, the key's owner at
the call); a group's is its members' spend. The budget counters of these budgets share the
keys' counters under ids of their own: `-id` (`counter_id`), never a key's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.keyspec import DEFAULT_THRESHOLDS
from ..core.secretbox import SecretBox
from .counters import MONEY_SCALE
from .db import Database
from .logs import MODEL_SQL
from .rollup import sql_units
from .timeutil import utc_now_iso

KINDS = ("user", "group")


@dataclass(frozen=True, slots=True)
class TeamBudget:
    """One user's or group's monthly budget."""

    id: int
    kind: str
    name: str
    monthly_budget_usd: float | None
    budget_alerts_enabled: bool
    budget_alert_thresholds: list[int]
    updated_at: str

    @property
    def counter_id(self) -> int:
        """Its id among the budget counters (the keys' are positive)."""
        return -self.id

    def public(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "monthly_budget_usd": self.monthly_budget_usd,
            "budget_alerts_enabled": self.budget_alerts_enabled,
            "budget_alert_thresholds": self.budget_alert_thresholds,
            "updated_at": self.updated_at,
        }


def _from_row(row: Mapping[str, Any]) -> TeamBudget:
    return TeamBudget(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        monthly_budget_usd=row["monthly_budget_usd"],
        budget_alerts_enabled=bool(row["budget_alerts_enabled"]),
        budget_alert_thresholds=json.loads(row["budget_alert_thresholds"]),
        updated_at=row["updated_at"],
    )


def list_budgets(db: Database, kind: str | None = None) -> list[TeamBudget]:
    """Every user's and group's budget (of one kind), by kind and name."""
    where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
    sql = f"SELECT * FROM team_budgets {where} ORDER BY kind, name"
    return [_from_row(r) for r in db.query(sql, params)]


def get_budget(db: Database, kind: str, name: str) -> TeamBudget | None:
    rows = list(db.query("SELECT * FROM team_budgets WHERE kind = ? AND name = ?", [kind, name]))
    return _from_row(rows[0]) if rows else None


def set_budget(
    db: Database,
    kind: str,
    name: str,
    *,
    monthly_budget_usd: float | None,
    budget_alerts_enabled: bool | None = None,
    budget_alert_thresholds: Iterable[int] | None = None,
) -> TeamBudget:
    """Create or change a user's or group's budget (None: no limit); the record."""
    current = get_budget(db, kind, name)
    enabled = (
        budget_alerts_enabled
        if budget_alerts_enabled is not None
        else (current.budget_alerts_enabled if current else True)
    )
    thresholds = (
        list(budget_alert_thresholds)
        if budget_alert_thresholds is not None
        else (current.budget_alert_thresholds if current else list(DEFAULT_THRESHOLDS))
    )
    with db.atomic():
        db.execute(
            "INSERT INTO team_budgets (kind, name, monthly_budget_usd, budget_alerts_enabled, "
            "budget_alert_thresholds, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, name) DO UPDATE SET "
            "monthly_budget_usd = excluded.monthly_budget_usd, "
            "budget_alerts_enabled = excluded.budget_alerts_enabled, "
            "budget_alert_thresholds = excluded.budget_alert_thresholds, "
            "updated_at = excluded.updated_at",
            [kind, name, monthly_budget_usd, int(enabled), json.dumps(thresholds), utc_now_iso()],
        )
    found = get_budget(db, kind, name)
    assert found is not None  # just written
    return found


def budget_spend_units(db: Database, *, start: str, end: str) -> dict[int, int]:
    """Settled spend per team budget id between two stored timestamps [start, end), in
    counter units: the calls each was charged to (the log's `team_budget_ids`)."""
    sql = (
        f"SELECT team_budget_ids AS ids, "
        f"SUM({sql_units('cost_usd', MONEY_SCALE, db.dialect)}) AS units FROM proxy_logs "
        "WHERE created_at >= ? AND created_at < ? AND team_budget_ids IS NOT NULL "
        "AND cost_usd IS NOT NULL GROUP BY team_budget_ids"
    )
    spent: dict[int, int] = {}
    for row in db.query(sql, [start, end]):
        for budget_id in parse_ids(row["ids"]):
            spent[budget_id] = spent.get(budget_id, 0) + (row["units"] or 0)
    return spent


def charged_ids(budgets: Iterable[TeamBudget]) -> str | None:
    """The log's `team_budget_ids` of a call charged to `budgets`."""
    ids = [b.id for b in budgets]
    return f",{','.join(map(str, ids))}," if ids else None


def parse_ids(charged: str | None) -> list[int]:
    """The budget ids of a `team_budget_ids` value."""
    return [int(i) for i in (charged or "").split(",") if i]


SCOPE_SEPARATOR = "@"


def scope_call(call_id: str, budget_id: int) -> str:
    """A call's id in a team budget's counter: its own there (the shared database holds one
    reservation per id)."""
    return f"{call_id}{SCOPE_SEPARATOR}{budget_id}"


def base_call(call_id: str) -> str:
    """The call's own id, of an id in a team budget's counter or its own."""
    return call_id.partition(SCOPE_SEPARATOR)[0]


def month_by_user(db: Database, *, start: str, end: str, top: int = 3) -> dict[str, dict[str, Any]]:
    """Per user, the calls of [start, end): requests, cost (units) and the top models (as the
    analytics count a call's model) and notebooks by cost, for the admin view. Read from the
    log."""
    units = sql_units("cost_usd", MONEY_SCALE, db.dialect)
    where = 'created_at >= ? AND created_at < ? AND "user" IS NOT NULL'
    params: list[Any] = [start, end]
    out: dict[str, dict[str, Any]] = {}
    for dim, expr in (("models", MODEL_SQL), ("notebooks", "notebook")):
        sql = (
            f'SELECT "user" AS name, {expr} AS grp, COUNT(*) AS requests, '
            f"COALESCE(SUM({units}), 0) AS units FROM proxy_logs WHERE {where} "
            f'GROUP BY "user", {expr}'
        )
        for row in db.query(sql, params):
            entry = out.setdefault(
                row["name"], {"requests": 0, "cost_units": 0, "models": [], "notebooks": []}
            )
            if dim == "models":
                entry["requests"] += row["requests"]
                entry["cost_units"] += row["units"]
            entry[dim].append((row["grp"], row["units"], row["requests"]))
    for entry in out.values():
        for dim in ("models", "notebooks"):
            entry[dim] = sorted(entry[dim], key=lambda g: (-g[1], -g[2], g[0] or ""))[:top]
    return out


TEAM_KEYS = "team_provider_keys"
"""lcm_meta's row of the team's provider keys (encrypted as keys' are)."""


def team_provider_keys(db: Database, box: SecretBox) -> dict[str, str]:
    """The provider keys an admin set for the whole team: {provider: key}."""
    found = db.execute("SELECT value FROM lcm_meta WHERE name = ?", [TEAM_KEYS]).fetchone()
    stored = json.loads(found[0]) if found else {}
    return {provider: box.decrypt(token) for provider, token in stored.items()}


def set_team_provider_keys(
    db: Database, box: SecretBox, changes: Mapping[str, str | None]
) -> dict[str, str]:
    """Set (or with None, remove) the team's provider keys per provider; all of them after."""
    with db.atomic():
        keys = {**team_provider_keys(db, box), **changes}
        kept = {p: box.encrypt(k) for p, k in keys.items() if k}
        db.execute(
            "INSERT INTO lcm_meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [TEAM_KEYS, json.dumps(kept)],
        )
    return team_provider_keys(db, box)
