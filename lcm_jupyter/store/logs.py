"""Reading the call log."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlite_utils import Database

from .rollup import DAY_SECONDS
from .timeutil import to_iso

_JSON_COLUMNS = ("routing_decision", "usage_json")
_BOOL_COLUMNS = ("stream", "unpriced", "cache_hit", "usage_estimated")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    for name in _JSON_COLUMNS:
        if row.get(name):
            row[name] = json.loads(row[name])
    for name in _BOOL_COLUMNS:
        row[name] = bool(row[name])
    row["usage"] = row.pop("usage_json")
    return row


def list_logs(
    db: Database, *, key_id: int | None = None, limit: int = 100, before: str | None = None
) -> list[dict[str, Any]]:
    """Newest calls first; `before` is a log id, for paging back."""
    where, params = [], []
    if key_id is not None:
        where.append("key_id = ?")
        params.append(key_id)
    if before:
        where.append("id < ?")
        params.append(before)
    sql = "SELECT * FROM proxy_logs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
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
    sql += " GROUP BY l.key_id ORDER BY saving_usd DESC"
    return [dict(r) for r in db.query(sql, params)]
