"""Spend as the call log records it: the source of truth that budget counters are rebuilt from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .counters import MONEY_SCALE
from .db import Database
from .rollup import sql_units


def _spend_by(
    db: Database, column: str, *, start: str, end: str, only: list[Any] | None
) -> dict[Any, int]:
    """Settled spend per value of `column` between two stored timestamps [start, end), in
    counter units, each row converted before summing (in the database), so the total is
    exact and matches what the counters added call by call. `only`: those values."""
    sql = (
        f"SELECT {column} AS grp, SUM({sql_units('cost_usd', MONEY_SCALE, db.dialect)}) AS units "
        f"FROM proxy_logs WHERE created_at >= ? AND created_at < ? "
        f"AND {column} IS NOT NULL AND cost_usd IS NOT NULL"
    )
    params: list[Any] = [start, end]
    if only is not None:
        sql += f" AND {column} IN ({', '.join('?' * len(only))})"
        params += only
    sql += f" GROUP BY {column}"
    return {row["grp"]: row["units"] or 0 for row in db.query(sql, params)}


def month_spend_units(
    db: Database, *, start: str, end: str, key_id: int | None = None
) -> dict[int, int]:
    """Settled spend per key between two stored timestamps [start, end), in counter units."""
    return _spend_by(db, "key_id", start=start, end=end, only=None if key_id is None else [key_id])


def user_spend_units(
    db: Database, *, start: str, end: str, users: Iterable[str] | None = None
) -> dict[str, int]:
    """Settled spend per user (the log's `user`: a team's) between two stored timestamps
    [start, end), in counter units."""
    only = None if users is None else sorted(set(users))
    if only == []:
        return {}
    # Quoted: PostgreSQL reserves "user".
    return _spend_by(db, '"user"', start=start, end=end, only=only)
