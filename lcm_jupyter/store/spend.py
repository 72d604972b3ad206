"""Spend as the call log records it: the source of truth that budget counters are rebuilt from."""

from __future__ import annotations

from .counters import MONEY_SCALE
from .db import Database
from .rollup import sql_units


def month_spend_units(
    db: Database, *, start: str, end: str, key_id: int | None = None
) -> dict[int, int]:
    """Settled spend per key between two stored timestamps [start, end), in counter units.

    Each row is converted to units before summing (in the database), so the total
    is exact and matches what the counters added call by call.
    """
    sql = (
        f"SELECT key_id, SUM({sql_units('cost_usd', MONEY_SCALE, db.dialect)}) AS units "
        "FROM proxy_logs WHERE created_at >= ? AND created_at < ? "
        "AND key_id IS NOT NULL AND cost_usd IS NOT NULL"
    )
    params: list = [start, end]
    if key_id is not None:
        sql += " AND key_id = ?"
        params.append(key_id)
    sql += " GROUP BY key_id"
    return {row["key_id"]: row["units"] or 0 for row in db.query(sql, params)}
