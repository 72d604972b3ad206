"""The usage rollups: proxy_logs summed at the grains analytics read, so they never read the log.

Three tables, kept up by the log writer in each batch's own transaction (`add_rows`):

- `usage_rollup`: per 15 minutes of UTC and (key, provider, model). The bucket is 15
  minutes because every timezone in use today is offset from UTC by a multiple of 15
  minutes (Asia/Kolkata +5:30, Asia/Kathmandu +5:45), so the local days of any
  configured timezone are whole runs of buckets. Busy, it has a row per bucket and group.
- `usage_rollup_dim`: per 15 minutes and one value of one dimension (`total`, `key_id`,
  `provider`, `model`, and a team's `user` and `notebook`). A 90-day timeseries,
  unfiltered or with one filter, reads its 8,640 rows however many keys and models there
  are; a breakdown by user or notebook reads the period's rows of that dimension.
- `usage_rollup_day`: per UTC day and (key, provider, model). A breakdown reads a
  period's whole UTC days here and only its partial days at either end (under a day
  each) from `usage_rollup`.

Every figure comes from one set of SQL expressions over proxy_logs (`row_sql`), used by
the writer and by the migrations' backfills alike, on both engines. Money is summed as
integer units of 1e-10 USD, each row rounded half away from zero (`sql_units`, SQLite's
`ROUND`) as spend.py does, so every table equals the same sum taken straight from
proxy_logs, to the unit; latency is summed in whole microseconds for the same reason.
NULL key, provider or model are stored as -1 and '' so that primary keys match them on
upsert. A row whose created_at the database cannot read as a time is in no rollup.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from ..core.analytics import Totals
from ..core.budget import MONEY_SCALE
from .timeutil import to_iso

if TYPE_CHECKING:
    from .db import Database

BUCKET_SECONDS = 900
DAY_SECONDS = 86400
NO_KEY = -1
FILTERS = ("key_id", "provider", "model")
ATTRIBUTION = ("user", "notebook")
"""Dimensions only usage_rollup_dim has (a team's: who made a call, from which notebook)."""

SUMS = (
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


def sql_units(column: str, scale: int, dialect: str) -> str:
    """SQL for `column * scale` as a whole number, rounded half away from zero on both
    engines (SQLite's ROUND; PostgreSQL's round of a double would round half to even)."""
    if dialect == "sqlite":
        return f"CAST(ROUND({column} * {scale}) AS INTEGER)"
    return f"CAST(SIGN({column}) * FLOOR(ABS({column} * {scale}) + 0.5) AS BIGINT)"


# When a row's created_at falls, in whole epoch seconds (NULL where it is no time). On
# PostgreSQL a cast of a bad time is an error, not NULL: the migration defines lcm_epoch
# (EPOCH_FUNCTION) to read it as SQLite's strftime does; at about 6 us a call (its
# exception block) it is called once per row, as `lcm_e` (see _log_rows).
_EPOCH = {
    "sqlite": "strftime('%s', created_at)",
    "postgresql": "lcm_e",
}
EPOCH_FUNCTION = """
CREATE FUNCTION lcm_epoch(stamp TEXT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE SET timezone = 'UTC' AS $$
BEGIN
    RETURN FLOOR(EXTRACT(EPOCH FROM CAST(stamp AS TIMESTAMPTZ)));
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$
"""


def row_sql(dialect: str, *, attribution: bool = False) -> dict[str, str]:
    """One proxy_logs row's group and figures, in SQL: what every rollup sums.

    `attribution`: with its user and notebook ('' where none), on a log that has them
    (migration 0012; the backfills of 0004 and 0005 run before it)."""
    who = {"user": "COALESCE(\"user\", '')", "notebook": "COALESCE(notebook, '')"}
    return {
        "bucket": f"CAST({_EPOCH[dialect]} AS BIGINT) / {BUCKET_SECONDS} * {BUCKET_SECONDS}",
        "key_id": f"COALESCE(key_id, {NO_KEY})",
        "provider": "COALESCE(provider, '')",
        "model": "COALESCE(model, requested_model, '')",
        **(who if attribution else {}),
        "requests": "1",
        "cost_units": f"COALESCE({sql_units('cost_usd', MONEY_SCALE, dialect)}, 0)",
        "savings_units": f"COALESCE({sql_units('savings_usd', MONEY_SCALE, dialect)}, 0)",
        "input_tokens": "COALESCE(input_tokens, 0)",
        "output_tokens": "COALESCE(output_tokens, 0)",
        "latency_us_sum": f"COALESCE({sql_units('latency_ms', 1000, dialect)}, 0)",
        "latency_count": "CASE WHEN latency_ms IS NOT NULL THEN 1 ELSE 0 END",
        "errors": "CASE WHEN status IS NULL OR status >= 400 THEN 1 ELSE 0 END",
        "unpriced_requests": "CASE WHEN cost_usd IS NULL OR COALESCE(unpriced, 0) != 0 "
        "THEN 1 ELSE 0 END",
    }


_GROUP = ("bucket", "key_id", "provider", "model")
_GROUP_TYPES = {"bucket": "INTEGER", "key_id": "INTEGER", "provider": "TEXT", "model": "TEXT"}
# A batch's sums keep who and which notebook too, for the dimension table.
_BATCH_TYPES = {**_GROUP_TYPES, **dict.fromkeys(ATTRIBUTION, "TEXT")}
# In SQLite `value` has no type, so key ids stay integers and names stay text; PostgreSQL
# needs one type, text (`dim_value` gives the filter's value in it).
_TABLES = {
    "usage_rollup": _GROUP_TYPES,
    "usage_rollup_day": {"day": "INTEGER", **{c: _GROUP_TYPES[c] for c in FILTERS}},
    "usage_rollup_dim": {"dim": "TEXT", "value": "", "bucket": "INTEGER"},
}
_BATCH = {"sqlite": "temp.usage_batch2", "postgresql": "pg_temp.usage_batch2"}

# How the rows of a 15-minute group table (usage_rollup, or a batch's own sums) feed
# each table: (table, {group column: expression over the 15-minute group row}).
_SAME = {c: c for c in _GROUP}


def _dims(dialect: str, dims: Sequence[str]) -> tuple[tuple[str, dict[str, str]], ...]:
    def value(c: str) -> str:
        column = f'"{c}"'
        return column if dialect == "sqlite" or c != "key_id" else f"CAST({column} AS TEXT)"

    return tuple(
        ("usage_rollup_dim", {"dim": f"'{c}'", "value": value(c), "bucket": "bucket"}) for c in dims
    )


def _summaries(dialect: str) -> tuple[tuple[str, dict[str, str]], ...]:
    day = {"day": f"bucket - bucket % {DAY_SECONDS}", **{c: c for c in FILTERS}}
    return (
        ("usage_rollup_day", day),
        ("usage_rollup_dim", {"dim": "'total'", "value": "''", "bucket": "bucket"}),
        *_dims(dialect, FILTERS),
    )


def dim_value(value: Any, dialect: str) -> Any:
    """A filter's value as usage_rollup_dim stores it."""
    return value if dialect == "sqlite" else str(value)


def _columns(groups: dict[str, str], dialect: str) -> str:
    """The column definitions of a table keyed by `groups` (name: type) that holds SUMS."""
    pg = dialect != "sqlite"
    keys = [
        " ".join(
            filter(
                None,
                (
                    _quoted(name),
                    ("BIGINT" if kind == "INTEGER" else kind or "TEXT") if pg else kind,
                    "NOT NULL",
                ),
            )
        )
        for name, kind in groups.items()
    ]
    sums = [f"{c} {'BIGINT' if pg else 'INTEGER'} NOT NULL DEFAULT 0" for c in SUMS]
    return f"({', '.join(keys + sums)}, PRIMARY KEY ({', '.join(map(_quoted, groups))}))"


def _create(db: Database, table: str) -> None:
    # WITHOUT ROWID clusters the rows by their key: a period is one contiguous range scan.
    tail = " WITHOUT ROWID" if db.dialect == "sqlite" else ""
    db.execute(f"CREATE TABLE {table} {_columns(_TABLES[table], db.dialect)}{tail}")


def _quoted(name: str) -> str:
    # Every group column named as an identifier: PostgreSQL reserves "user".
    return f'"{name}"'


def _upsert(table: str, groups: dict[str, str], source: str) -> str:
    """SQL adding `source`'s rows (group columns and SUMS), regrouped by `groups`, to `table`."""
    return (
        f"INSERT INTO {table} AS t ({', '.join([*map(_quoted, groups), *SUMS])}) "
        f"SELECT {', '.join(groups.values())}, {', '.join(f'SUM({c})' for c in SUMS)} "
        f"FROM {source} WHERE true GROUP BY {', '.join(str(n + 1) for n in range(len(groups)))} "
        f"ON CONFLICT ({', '.join(map(_quoted, groups))}) DO UPDATE SET "
        + ", ".join(f"{c} = t.{c} + excluded.{c}" for c in SUMS)
    )


def _log_rows(where: str, dialect: str, *, attribution: bool = False) -> str:
    figures = ", ".join(
        f'{sql} AS "{name}"' for name, sql in row_sql(dialect, attribution=attribution).items()
    )
    source = "proxy_logs"
    if dialect == "postgresql":
        source = f"(SELECT *, lcm_epoch(created_at) AS lcm_e FROM proxy_logs WHERE {where}) AS l"
        where = "true"
    readable = f"{_EPOCH[dialect]} IS NOT NULL"
    return f"(SELECT {figures} FROM {source} WHERE {where} AND {readable}) AS log_rows"


def _batch_sql(dialect: str) -> tuple[str, str, list[str]]:
    """Create the batch table, fill it (from the rows above a rowid on SQLite, from the
    rows with the given ids on PostgreSQL), feed every rollup from it."""
    batch = _BATCH[dialect]
    # Named apart from earlier versions' batch table (a pooled connection may hold one).
    create = f"CREATE TEMP TABLE IF NOT EXISTS usage_batch2 {_columns(_BATCH_TYPES, dialect)}"
    where = "rowid > ?" if dialect == "sqlite" else "id = ANY(?)"
    groups = {c: f'"{c}"' for c in _BATCH_TYPES}
    fill = _upsert(batch, groups, _log_rows(where, dialect, attribution=True))
    feeds = (("usage_rollup", _SAME), *_summaries(dialect), *_dims(dialect, ATTRIBUTION))
    feed = [_upsert(t, g, batch) for t, g in feeds]
    return create, fill, feed


_BATCH_SQL = {dialect: _batch_sql(dialect) for dialect in _BATCH}


def last_rowid(db: Database) -> int:
    """The highest proxy_logs rowid (0 if none): rows inserted after reading it come above it.
    SQLite only: on PostgreSQL the writer names its rows by id."""
    return db.execute("SELECT COALESCE(MAX(rowid), 0) FROM proxy_logs").fetchone()[0]


def add_rows(db: Database, rows: int | Sequence[str]) -> None:
    """Add proxy_logs rows to every rollup: on SQLite those above a rowid, on PostgreSQL
    those with the given ids. Call it in their transaction.

    The rows are summed per 15-minute group once, into a small temporary table (a
    500-call batch of a few keys and models is a few hundred groups at most), and
    each rollup is fed from those sums. All in the database: the GIL stays free meanwhile.
    """
    create, fill, feed = _BATCH_SQL[db.dialect]
    db.execute(create)
    db.execute(f"DELETE FROM {_BATCH[db.dialect]}")
    db.execute(fill, [rows if isinstance(rows, int) else list(rows)])
    for sql in feed:
        db.execute(sql)


def _fill_from_log(db: Database) -> None:
    db.execute(_upsert("usage_rollup", _SAME, _log_rows("true", db.dialect)))


def _fill_summaries(db: Database) -> None:
    for table, groups in _summaries(db.dialect):
        db.execute(_upsert(table, groups, "usage_rollup"))


def create_and_backfill(db: Database) -> None:
    """Create usage_rollup and fill it from every proxy_logs row already written (0004)."""
    _create(db, "usage_rollup")
    _fill_from_log(db)


def create_summaries(db: Database) -> None:
    """Create the per-day and per-dimension tables and fill them from usage_rollup (0005)."""
    _create(db, "usage_rollup_day")
    _create(db, "usage_rollup_dim")
    _fill_summaries(db)


def backfill_dims(db: Database) -> None:
    """Add the user and notebook dimensions of every proxy_logs row already written (0012)."""
    source = _log_rows("true", db.dialect, attribution=True)
    for table, groups in _dims(db.dialect, ATTRIBUTION):
        db.execute(_upsert(table, groups, source))


def rebuild(db: Database) -> None:
    """Empty every rollup table and refill it from proxy_logs, on a database that has them:
    the backfills above (0004, then 0005 from usage_rollup, then 0012). Call it in a
    transaction, with no log writer running."""
    for table in _TABLES:
        db.execute(f"DELETE FROM {table}")
    _fill_from_log(db)
    _fill_summaries(db)
    backfill_dims(db)


def create_tables(db: Database) -> None:
    """Create every rollup table, empty, and lcm_epoch (PostgreSQL's schema migration)."""
    db.execute(EPOCH_FUNCTION)
    for table in _TABLES:
        _create(db, table)


_SELECT_SUMS = ", ".join(f"SUM({c}) AS {c}" for c in SUMS)


def _given(*values: Any) -> dict[str, Any]:
    names = (*FILTERS, *ATTRIBUTION)
    return {c: v for c, v in zip(names, values, strict=True) if v is not None}


def _from_log(
    db: Database, group: str | None, given: dict[str, Any], start: int, end: int
) -> list[dict[str, Any]]:
    """SUMS of the log's rows in the buckets from `start` up to `end` that `given` keeps,
    per `group` (a column of the rollups' groups, or None: per bucket): what no rollup
    holds (a user or notebook with another filter). Read through the log's time index."""
    lo = -(-start // BUCKET_SECONDS) * BUCKET_SECONDS
    # Stored times are UTC text: a bucket's rows lie within its own instants.
    span = "created_at >= ? AND created_at < ?"
    params: list[Any] = [_iso(lo), _iso(max(-(-end // BUCKET_SECONDS) * BUCKET_SECONDS, lo))]
    source = _log_rows(span, db.dialect, attribution=True)
    where = "".join(f" AND {_quoted(c)} = ?" for c in given)
    params += [lo, end, *given.values()]
    column = _quoted(group) if group else "bucket"
    sql = (
        f"SELECT {column} AS grp, {_SELECT_SUMS} FROM {source} "
        f"WHERE bucket >= ? AND bucket < ?{where} GROUP BY {column}"
    )
    return list(db.query(sql, params))


def _iso(epoch: int) -> str:
    return to_iso(datetime.fromtimestamp(epoch, timezone.utc))


def by_day(
    db: Database,
    bounds: Sequence[int],
    *,
    key_id: int | None = None,
    provider: str | None = None,
    model: str | None = None,
    user: str | None = None,
    notebook: str | None = None,
) -> list[Totals]:
    """Totals per day, day i being [bounds[i], bounds[i+1]) in epoch seconds, over the
    calls the filters keep; days without calls are zero.

    With no filter or one, from usage_rollup_dim; with several, from usage_rollup, or from
    the log itself when a user or notebook is among them.
    """
    given = _given(key_id, provider, model, user, notebook)
    days = ", ".join("(?, ?, ?)" for _ in range(len(bounds) - 1))
    if len(given) > 1 and set(given) & set(ATTRIBUTION):
        totals = [Totals() for _ in range(len(bounds) - 1)]
        starts = list(bounds)
        for row in _from_log(db, None, given, bounds[0], bounds[-1]):
            # The day of a bucket: the last whose first bucket is at or before it.
            i = bisect_right([-(-b // BUCKET_SECONDS) * BUCKET_SECONDS for b in starts], row["grp"])
            totals[i - 1].add(Totals.from_row(row))
        return totals
    if len(given) <= 1:
        ((dim, value),) = given.items() or [("total", "")]
        if db.dialect == "sqlite":
            # Each day is a range of the value's rows: summed per day in SQLite.
            sql = (
                f"WITH days (i, lo, hi) AS (VALUES {days}) SELECT i, {_SELECT_SUMS} FROM days "
                "JOIN usage_rollup_dim ON dim = ? AND value = ? AND bucket >= lo "
                "AND bucket < hi GROUP BY i"
            )
        else:
            # The same, said so that PostgreSQL's planner must read each day as one range
            # of the primary key: joined, it nests the days under a scan of all the value's
            # rows (90 x 8,640 comparisons; 210-280 ms over 10M calls against 21-41 ms).
            sql = (
                f"WITH days (i, lo, hi) AS (VALUES {days}) SELECT i, sums.* FROM days "
                f"CROSS JOIN LATERAL (SELECT {_SELECT_SUMS} FROM usage_rollup_dim "
                "WHERE dim = ? AND value = ? AND bucket >= lo AND bucket < hi) AS sums "
                "WHERE sums.requests IS NOT NULL"
            )
        params = [dim, dim_value(value, db.dialect)]
    else:
        # Each bucket of each day looked up on its own: with a key given, that seeks to
        # the key's few groups in the bucket instead of reading every group's row.
        step = BUCKET_SECONDS
        sql = (
            f"WITH RECURSIVE days (i, lo, hi) AS (VALUES {days}), slots (i, bucket, hi) AS "
            f"(SELECT i, lo, hi FROM days WHERE lo < hi UNION ALL "
            f"SELECT i, bucket + {step}, hi FROM slots WHERE bucket + {step} < hi) "
            f"SELECT i, {_SELECT_SUMS} FROM slots JOIN usage_rollup USING (bucket) "
            f"WHERE {' AND '.join(f'{c} = ?' for c in given)} GROUP BY i"
        )
        params = list(given.values())
    # Each day from its first bucket: the same buckets as from its first instant.
    day_params = [
        x
        for i, (lo, hi) in enumerate(pairwise(bounds))
        for x in (i, -(-lo // BUCKET_SECONDS) * BUCKET_SECONDS, hi)
    ]
    totals = [Totals() for _ in range(len(bounds) - 1)]
    for row in db.query(sql, day_params + params):
        totals[row["i"]] = Totals.from_row(row)
    return totals


_GROUP_COLUMN = {
    "model": "model",
    "provider": "provider",
    "key": "key_id",
    "user": "user",
    "notebook": "notebook",
}


def by_group(
    db: Database,
    by: str,
    start: int,
    end: int,
    *,
    key_id: int | None = None,
    provider: str | None = None,
    model: str | None = None,
    user: str | None = None,
    notebook: str | None = None,
) -> list[tuple[Any, Totals]]:
    """Totals per model, provider, key_id, user or notebook in [start, end) epoch seconds.

    The whole UTC days inside the period come from usage_rollup_day; the rest, under a
    day at either end, from usage_rollup. By user or notebook, from usage_rollup_dim,
    unfiltered; with a filter involving them, from the log itself.
    """
    given = _given(key_id, provider, model, user, notebook)
    column = _GROUP_COLUMN[by]
    if column in ATTRIBUTION or set(given) & set(ATTRIBUTION):
        if given:
            rows = _from_log(db, column, given, start, end)
        else:
            lo = -(-start // BUCKET_SECONDS) * BUCKET_SECONDS
            sql = (
                f"SELECT value AS grp, {_SELECT_SUMS} FROM usage_rollup_dim "
                "WHERE dim = ? AND bucket >= ? AND bucket < ? GROUP BY value"
            )
            rows = list(db.query(sql, [column, lo, end]))
        return [(row["grp"], Totals.from_row(row)) for row in rows]
    first_day = -(-start // DAY_SECONDS) * DAY_SECONDS
    end_day = end // DAY_SECONDS * DAY_SECONDS
    if first_day < end_day:
        ranges = [
            ("usage_rollup_day", "day", first_day, end_day),
            ("usage_rollup", "bucket", start, first_day),
            ("usage_rollup", "bucket", end_day, end),
        ]
    else:
        ranges = [("usage_rollup", "bucket", start, end)]
    parts, params = [], []
    for table, time, lo, hi in ranges:
        if lo < hi:
            where = " ".join(f"AND {c} = ?" for c in given)
            parts.append(
                f"SELECT {column} AS grp, {', '.join(SUMS)} FROM {table} "
                f"WHERE {time} >= ? AND {time} < ? {where}"
            )
            params += [lo, hi, *given.values()]
    if not parts:
        return []
    sql = f"SELECT grp, {_SELECT_SUMS} FROM ({' UNION ALL '.join(parts)}) AS parts GROUP BY grp"
    return [(row["grp"], Totals.from_row(row)) for row in db.query(sql, params)]


def key_names(db: Database, ids: Iterable[int]) -> dict[int, str]:
    """The names of the given key ids (unknown ids are left out)."""
    wanted = [i for i in ids if i != NO_KEY]
    if not wanted:
        return {}
    marks = ", ".join("?" * len(wanted))
    sql = f"SELECT id, name FROM proxy_keys WHERE id IN ({marks})"
    return {row["id"]: row["name"] for row in db.query(sql, wanted)}
