"""Billed-once references: a background response or a batch's results is billed by the
first call that retrieves it, whichever server it runs on (the primary key decides)."""

from __future__ import annotations

from .db import Database
from .timeutil import utc_now_iso


def claim(db: Database, ref: str, log_id: str, key_id: int | None) -> str | None:
    """Claim `ref` for the call `log_id`: None if this call is the first, else the first's id."""
    cur = db.execute(
        "INSERT INTO billed_refs (ref, log_id, key_id, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [ref, log_id, key_id, utc_now_iso()],
    )
    if cur.rowcount:
        return None
    rows = list(db.query("SELECT log_id FROM billed_refs WHERE ref = ?", [ref]))
    return rows[0]["log_id"] if rows else None
