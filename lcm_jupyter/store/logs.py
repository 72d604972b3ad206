"""Reading the call log."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

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
