"""Spend as the call log records it: the source of truth that budget counters are rebuilt from."""

from __future__ import annotations

from sqlite_utils import Database

from .counters import MONEY_SCALE


def month_spend_units(
    db: Database, *, start: str, end: str, key_id: int | None = None
) -> dict[int, int]:
    """Settled spend per key between two stored timestamps [start, end), in counter units.

    Each row is converted to units before summing (in SQLite, in C), so the total
    is exact and matches what the counters added call by call.
    """
    sql = (
        f"SELECT key_id, SUM(CAST(ROUND(cost_usd * {MONEY_SCALE}) AS INTEGER)) AS units "
        "FROM proxy_logs WHERE created_at >= ? AND created_at < ? "
        "AND key_id IS NOT NULL AND cost_usd IS NOT NULL"
    )
    params: list = [start, end]
    if key_id is not None:
        sql += " AND key_id = ?"
        params.append(key_id)
    sql += " GROUP BY key_id"
    return {row["key_id"]: row["units"] or 0 for row in db.query(sql, params)}
