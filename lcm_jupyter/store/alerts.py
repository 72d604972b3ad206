"""The alerts table: one row per key, month and threshold (the unique constraint dedups)."""

from __future__ import annotations

from typing import Any

from .db import Database
from .timeutil import utc_now_iso


def insert_alert(
    db: Database, *, key_id: int, month: str, threshold: int, severity: str, message: str
) -> int | None:
    """Store an alert; its id, or None when this (key, month, threshold) already has one."""
    row = db.execute(
        "INSERT INTO alerts (key_id, month, threshold, severity, message, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
        [key_id, month, threshold, severity, message, utc_now_iso()],
    ).fetchone()
    return row[0] if row else None


def list_alerts(
    db: Database, *, key_id: int | None = None, unread: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    """Newest alerts first, each with `read`."""
    where, params = [], []
    if key_id is not None:
        where.append("key_id = ?")
        params.append(key_id)
    if unread:
        where.append("read_at IS NULL")
    sql = "SELECT * FROM alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [{**row, "read": row["read_at"] is not None} for row in db.query(sql, params)]


def mark_read(db: Database, ids: list[int] | None) -> int:
    """Mark alerts read (all unread ones when `ids` is None); how many changed."""
    if ids is not None and not ids:
        return 0  # `IN ()` is an error on PostgreSQL
    now = utc_now_iso()
    with db.atomic():
        if ids is None:
            cur = db.execute("UPDATE alerts SET read_at = ? WHERE read_at IS NULL", [now])
        else:
            marks = ", ".join("?" * len(ids))
            cur = db.execute(
                f"UPDATE alerts SET read_at = ? WHERE read_at IS NULL AND id IN ({marks})",
                [now, *ids],
            )
    return cur.rowcount
