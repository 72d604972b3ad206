"""Reading the call log."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from ..core.logfilter import LogFilter
from .db import Database
from .logrow import BOOL_COLUMNS, JSON_COLUMNS
from .rollup import DAY_SECONDS
from .timeutil import to_iso


def _public(row: dict[str, Any]) -> dict[str, Any]:
    for name in JSON_COLUMNS:
        if row.get(name):
            row[name] = json.loads(row[name])
    for name in BOOL_COLUMNS:
        row[name] = bool(row[name])
    row["usage"] = row.pop("usage_json")
    row.pop("team_budget_ids", None)  # the budget counters' record (store/team.py)
    return row


# The model a call is counted under, as the rollups count it (store/rollup.py's ROW_SQL):
# the migration that indexes it spells it the same way, or SQLite would not use the index.
MODEL_SQL = "COALESCE(model, requested_model, '')"
# The analytics' error: an HTTP error, or no answer at all (rollup.py's `errors`).
ERROR_SQL = "(status IS NULL OR status >= 400)"


def _likely(term: str, dialect: str) -> str:
    """The term marked likely true, on SQLite: a status or provider term is no reason to
    leave the time index (the planner would otherwise take an equality on an unindexed
    column for a rare one, and sort the whole log instead of reading it newest first until
    a page is full). PostgreSQL's planner has statistics to judge that by."""
    return f"likely({term})" if dialect == "sqlite" else f"({term})"


def _status_sql(where: LogFilter) -> tuple[str, list[Any]]:
    code, hundreds = where.status_code(), where.status_class()
    if code is not None:
        return "status = ?", [code]
    if hundreds is not None:
        return "status >= ? AND status < ?", [hundreds * 100, hundreds * 100 + 100]
    return {
        "ok": ("status < 400", []),
        "error": (ERROR_SQL, []),
        "cache_hit": ("cache_hit != 0", []),
    }[str(where.status)]


def _filter_sql(where: LogFilter, dialect: str) -> tuple[list[str], list[Any]]:
    terms: list[str] = []
    params: list[Any] = []
    if where.key_id is not None:
        terms.append("key_id = ?")
        params.append(where.key_id)
    if where.model is not None:
        terms.append(f"{MODEL_SQL} = ?")
        params.append(where.model)
    if where.provider is not None:
        terms.append(_likely("provider = ?", dialect))
        params.append(where.provider)
    if where.user is not None:
        terms.append('"user" = ?')
        params.append(where.user)
    if where.notebook is not None:
        terms.append("notebook = ?")
        params.append(where.notebook)
    if where.status is not None:
        sql, values = _status_sql(where)
        terms.append(_likely(sql, dialect))
        params.extend(values)
    if where.since is not None:
        terms.append("created_at >= ?")
        params.append(to_iso(where.since))
    if where.until is not None:
        terms.append("created_at < ?")
        params.append(to_iso(where.until))
    return terms, params


def list_logs(
    db: Database, where: LogFilter, *, limit: int = 100, before: str | None = None
) -> list[dict[str, Any]] | None:
    """Newest calls first (by time, then id), those `where` keeps; `before` is the id of the
    last call of the previous page. None when `before` is no logged call's id.

    Every filter reads an index in time order: (key_id, created_at), the model's
    (migration 0009), or created_at, so a page costs the rows it shows (and the rows
    skipped on the way for a provider or status filter), never a sort of the whole log.
    """
    terms, params = _filter_sql(where, db.dialect)
    if before:
        cursor = list(db.query("SELECT created_at FROM proxy_logs WHERE id = ?", [before]))
        if not cursor:
            return None
        # A row value: (time, id) pairs order the log as the page does, ties included.
        terms.append("(created_at, id) < (?, ?)")
        params.extend([cursor[0]["created_at"], before])
    sql = "SELECT * FROM proxy_logs"
    if terms:
        sql += " WHERE " + " AND ".join(terms)
    sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
    params.append(limit)
    return [_public(dict(r)) for r in db.query(sql, params)]


def get_log(db: Database, log_id: str) -> dict[str, Any] | None:
    """One call by its id."""
    rows = list(db.query("SELECT * FROM proxy_logs WHERE id = ?", [log_id]))
    return _public(dict(rows[0])) if rows else None


def unpriced_models(db: Database, since: int) -> list[dict[str, Any]]:
    """Models called without a price from the UTC day of `since` (epoch seconds) on, latest
    first: model, provider, requests and last_seen (the start of its latest 15 minutes, UTC).

    Read from the rollups, not the log, so it stays quick however many calls there were:
    the per-day table finds them, the 15-minute table only dates their last day.
    """
    sql = (
        "SELECT d.model, d.provider, d.requests, ("
        "  SELECT MAX(u.bucket) FROM usage_rollup u WHERE u.bucket >= d.last_day"
        "  AND u.bucket < d.last_day + ? AND u.model = d.model AND u.provider = d.provider"
        "  AND u.unpriced_requests > 0"
        ") AS last FROM ("
        "  SELECT model, provider, SUM(unpriced_requests) AS requests, MAX(day) AS last_day"
        "  FROM usage_rollup_day WHERE day >= ? AND unpriced_requests > 0 AND model != ''"
        "  GROUP BY model, provider"
        ") d ORDER BY last DESC, d.model DESC"
    )
    return [
        {
            "model": row["model"],
            "provider": row["provider"] or None,
            "requests": row["requests"],
            "last_seen": to_iso(datetime.fromtimestamp(row["last"], timezone.utc)),
        }
        for row in db.query(sql, [DAY_SECONDS, since - since % DAY_SECONDS])
    ]


def shadow_savings(
    db: Database, start: str, end: str, key_id: int | None = None
) -> list[dict[str, Any]]:
    """Per key, the calls made with routing off that auto routing would have sent to a
    cheaper model, and what that would have saved (same usage), from `start` to `end`."""
    sql = (
        "SELECT l.key_id, k.name, COUNT(*) AS calls, SUM(l.shadow_savings_usd) AS saving_usd "
        "FROM proxy_logs l LEFT JOIN proxy_keys k ON k.id = l.key_id "
        "WHERE l.shadow_savings_usd > 0 AND l.created_at >= ? AND l.created_at < ?"
    )
    params: list[Any] = [start, end]
    if key_id is not None:
        sql += " AND l.key_id = ?"
        params.append(key_id)
    sql += " GROUP BY l.key_id, k.name ORDER BY saving_usd DESC"
    return [dict(r) for r in db.query(sql, params)]
