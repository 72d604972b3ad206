"""The usage rollup: proxy_logs summed per 15 minutes and (key, provider, model).

Analytics read this table, not the call log: 90 days are at most 8,640 buckets
times the groups active in each, however many calls there were. The bucket is 15
minutes of UTC because every timezone in use today is offset from UTC by a multiple
of 15 minutes (Asia/Kolkata +5:30, Asia/Kathmandu +5:45), so local days of any
configured timezone are whole runs of buckets.

Money is summed as integer units of 1e-10 USD, each row rounded exactly as SQLite's
`ROUND(cost_usd * MONEY_SCALE)` rounds it (as spend.py does), so the rollup equals
the same sum taken straight from proxy_logs, to the unit. Latency is summed in
whole microseconds for the same reason. NULL key, provider or model are stored as
-1 and '' so that the primary key matches them on upsert.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from sqlite_utils import Database

from ..core.analytics import Totals
from ..core.budget import MONEY_SCALE

BUCKET_SECONDS = 900
NO_KEY = -1

SCHEMA = """
CREATE TABLE usage_rollup (
    bucket INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    cost_units INTEGER NOT NULL DEFAULT 0,
    savings_units INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    latency_us_sum INTEGER NOT NULL DEFAULT 0,
    latency_count INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    unpriced_requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, key_id, provider, model)
) WITHOUT ROWID
"""
# WITHOUT ROWID clusters the rows by bucket: a period is one contiguous range scan.

_SUMS = (
    "requests",
    "cost_units",
    "savings_units",
    "input_tokens",
    "output_tokens",
    "latency_us_sum",
    "latency_count",
    "errors",
    "unpriced_requests",
)
_UPSERT = (
    f"INSERT INTO usage_rollup (bucket, key_id, provider, model, {', '.join(_SUMS)}) "
    f"VALUES ({', '.join('?' * (4 + len(_SUMS)))}) "
    "ON CONFLICT (bucket, key_id, provider, model) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _SUMS)
)


def _sql_units(column: str, scale: int) -> str:
    return f"CAST(ROUND({column} * {scale}) AS INTEGER)"


# The same per-row figures as `_row_totals`, in SQL: for the backfill and for checks.
ROW_SQL = {
    "bucket": f"CAST(strftime('%s', created_at) AS INTEGER) / {BUCKET_SECONDS} * {BUCKET_SECONDS}",
    "key_id": f"COALESCE(key_id, {NO_KEY})",
    "provider": "COALESCE(provider, '')",
    "model": "COALESCE(model, requested_model, '')",
    "requests": "1",
    "cost_units": f"COALESCE({_sql_units('cost_usd', MONEY_SCALE)}, 0)",
    "savings_units": f"COALESCE({_sql_units('savings_usd', MONEY_SCALE)}, 0)",
    "input_tokens": "COALESCE(input_tokens, 0)",
    "output_tokens": "COALESCE(output_tokens, 0)",
    "latency_us_sum": f"COALESCE({_sql_units('latency_ms', 1000)}, 0)",
    "latency_count": "latency_ms IS NOT NULL",
    "errors": "(status IS NULL OR status >= 400)",
    "unpriced_requests": "(cost_usd IS NULL OR COALESCE(unpriced, 0) != 0)",
}


def _sqlite_round(value: float) -> int:
    """`CAST(ROUND(value) AS INTEGER)` as SQLite computes it (half away from zero, on doubles)."""
    return int(value + 0.5) if value >= 0 else -int(-value + 0.5)


def _units(value: Any, scale: int) -> int:
    return 0 if value is None else _sqlite_round(float(value) * scale)


def bucket_of(created_at: str) -> int:
    """The bucket (epoch seconds, a multiple of BUCKET_SECONDS) of a stored timestamp."""
    moment = datetime.fromisoformat(created_at)
    if moment.tzinfo is None:  # SQLite reads a timestamp without offset as UTC: so do we
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = int(moment.timestamp())
    return seconds - seconds % BUCKET_SECONDS


def _row_totals(row: Mapping[str, Any]) -> tuple[tuple, tuple]:
    key_id = row.get("key_id")
    status = row.get("status")
    cost = row.get("cost_usd")
    latency = row.get("latency_ms")
    group = (
        bucket_of(row.get("created_at")),
        NO_KEY if key_id is None else int(key_id),
        row.get("provider") or "",
        row.get("model") or row.get("requested_model") or "",
    )
    sums = (
        1,
        _units(cost, MONEY_SCALE),
        _units(row.get("savings_usd"), MONEY_SCALE),
        int(row.get("input_tokens") or 0),
        int(row.get("output_tokens") or 0),
        _units(latency, 1000),
        int(latency is not None),
        int(status is None or int(status) >= 400),
        int(cost is None or bool(row.get("unpriced"))),
    )
    return group, sums


def add_batch(conn: sqlite3.Connection, rows: Iterable[Mapping[str, Any]]) -> int:
    """Add freshly inserted proxy_logs rows to the rollup; the number of upserts made.

    The batch is summed per bucket and group here first, so 500 calls of a few
    keys and models are a handful of upserts. Call it in the rows' transaction.
    """
    sums: dict[tuple, list[int]] = {}
    for row in rows:
        group, values = _row_totals(row)
        acc = sums.get(group)
        if acc is None:
            sums[group] = list(values)
        else:
            for i, v in enumerate(values):
                acc[i] += v
    conn.executemany(_UPSERT, [(*group, *acc) for group, acc in sums.items()])
    return len(sums)


def create_and_backfill(db: Database) -> None:
    """Create the rollup and fill it from every proxy_logs row already written."""
    db.execute(SCHEMA)
    group = ("bucket", "key_id", "provider", "model")
    select = (
        ", ".join(ROW_SQL[c] for c in group) + ", " + ", ".join(f"SUM({ROW_SQL[c]})" for c in _SUMS)
    )
    db.execute(
        f"INSERT INTO usage_rollup ({', '.join(group)}, {', '.join(_SUMS)}) "
        f"SELECT {select} FROM proxy_logs WHERE strftime('%s', created_at) IS NOT NULL "
        "GROUP BY 1, 2, 3, 4"
    )


def _where(
    start: int, end: int, *, key_id: int | None, provider: str | None, model: str | None
) -> tuple[str, list]:
    clauses, params = ["bucket >= ? AND bucket < ?"], [start, end]
    for column, value in (("key_id", key_id), ("provider", provider), ("model", model)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses), params


_SELECT_SUMS = ", ".join(f"SUM({c}) AS {c}" for c in _SUMS)


def by_bucket(
    db: Database,
    start: int,
    end: int,
    *,
    key_id: int | None = None,
    provider: str | None = None,
    model: str | None = None,
) -> list[tuple[int, Totals]]:
    """Totals per bucket in [start, end) epoch seconds, over the groups the filters keep."""
    where, params = _where(start, end, key_id=key_id, provider=provider, model=model)
    sql = f"SELECT bucket, {_SELECT_SUMS} FROM usage_rollup WHERE {where} GROUP BY bucket"
    return [(row["bucket"], Totals.from_row(row)) for row in db.query(sql, params)]


_GROUP_COLUMN = {"model": "model", "provider": "provider", "key": "key_id"}


def by_group(
    db: Database,
    by: str,
    start: int,
    end: int,
    *,
    key_id: int | None = None,
    provider: str | None = None,
    model: str | None = None,
) -> list[tuple[Any, Totals]]:
    """Totals per model, provider or key_id in [start, end) epoch seconds."""
    column = _GROUP_COLUMN[by]
    where, params = _where(start, end, key_id=key_id, provider=provider, model=model)
    sql = f"SELECT {column} AS grp, {_SELECT_SUMS} FROM usage_rollup WHERE {where} GROUP BY grp"
    return [(row["grp"], Totals.from_row(row)) for row in db.query(sql, params)]


def key_names(db: Database, ids: Iterable[int]) -> dict[int, str]:
    """The names of the given key ids (unknown ids are left out)."""
    wanted = [i for i in ids if i != NO_KEY]
    if not wanted:
        return {}
    marks = ", ".join("?" * len(wanted))
    sql = f"SELECT id, name FROM proxy_keys WHERE id IN ({marks})"
    return {row["id"]: row["name"] for row in db.query(sql, wanted)}
