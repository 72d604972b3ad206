"""`jupyter lcm db status|migrate`: the server's database, and moving it to PostgreSQL.

`migrate` copies the SQLite database the server is configured with (LCMExtension.db_path)
into an empty PostgreSQL database, in one PostgreSQL transaction, then checks the copy
against the source before committing it: the same rows in every table, the same number
of calls and the same cost per key. Provider keys are copied encrypted, as they are, with
the check value of their secret (lcm_meta): the servers on PostgreSQL need the same secret
key, and a server with another one is refused there as it is here. The log is read in a
SQLite snapshot and streamed in batches of COPY, so a log of any size fits in memory.

Not copied: the holds and rate windows the servers share while Redis is away
(shared_holds, shared_rate: they expire within minutes), which servers count on Redis
(lcm_servers: a second old) and the migration bookkeeping (PostgreSQL keeps its own).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from traitlets import Unicode

from ..core.budget import MONEY_SCALE
from ..core.money import format_count, format_money
from ..store.db import SCHEMES, describe, is_postgres
from ._base import CommandError, LCMCommand, UsageError, subcommands

COPIED = (
    "lcm_meta",
    "model_pricing",
    "proxy_keys",
    "team_budgets",
    "alerts",
    "billed_refs",
    "proxy_logs",
    "usage_rollup",
    "usage_rollup_day",
    "usage_rollup_dim",
)
"""The tables `migrate` copies, in this order."""
BOOKKEEPING = frozenset({"_sqlite_migrations", "lcm_migrations", "sqlite_sequence"})
"""The engines' own tables: which migrations ran, SQLite's AUTOINCREMENT counters."""
TRANSIENT = ("shared_holds", "shared_rate", "lcm_servers")
NOT_COPIED = BOOKKEEPING | set(TRANSIENT)
"""Transient (the counters the servers share while Redis is away) or bookkeeping."""
IDENTITY = ("proxy_keys", "team_budgets", "alerts")
"""Tables whose ids are PostgreSQL identity columns: their sequences go past the copied ids."""
BATCH_ROWS = 5000
"""Rows per COPY: a batch of the log in memory at a time, never the whole log."""
# Column values PostgreSQL's schema types differently: SQLite's usage_rollup_dim.value has
# no type (key ids stay integers there), PostgreSQL's is TEXT (store/rollup.py dim_value).
CONVERT: dict[str, dict[str, Callable[[Any], Any]]] = {"usage_rollup_dim": {"value": str}}
_PROGRESS_ROWS = 100_000


def _redact(message: str, url: str) -> str:
    """A driver's message about `url`, without the password (should it quote it)."""
    split = urlsplit(url)
    secrets = [split.password, *(v for k, v in parse_qsl(split.query) if k == "password")]
    for secret in secrets:
        if secret and len(secret) > 3:  # not every "a" of the message for a password "a"
            message = message.replace(secret, "***")
    return message


def _connect_postgres(url: str):
    """A PostgresDatabase on `url` (no migration run), or a CommandError saying why not."""
    import psycopg  # a dependency of the package, imported when PostgreSQL is used

    from ..store.postgres import PostgresDatabase

    try:
        return PostgresDatabase.open(url)
    except psycopg.Error as exc:
        first = _redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        raise CommandError(f"cannot connect to {describe(url)}: {first}") from None


def _open_sqlite(path: Path, *, migrate: bool):
    """The SQLite database at `path` (which must exist), migrated if asked."""
    from ..store.db import connect, open_database

    if not path.is_file():
        raise CommandError(
            f"no SQLite database at {path} (LCMExtension.db_path, from the Jupyter config, "
            "LCM_DB_PATH or --db-path): the server creates it on its first start"
        )
    try:
        return open_database(path) if migrate else connect(path)
    except sqlite3.DatabaseError as exc:
        raise CommandError(f"cannot open {path} as a SQLite database: {exc}") from None


def _tables(db) -> list[str]:
    """The tables of the database (the store's schema), by name."""
    if db.dialect == "sqlite":  # not SQLite's own (sqlite_sequence, ANALYZE's sqlite_stat1)
        sql = (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
            "ORDER BY name"
        )
    else:
        sql = (
            "SELECT table_name AS name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        )
    return [row["name"] for row in db.query(sql)]


def _columns(db, table: str) -> list[str]:
    if db.dialect == "sqlite":
        return [row["name"] for row in db.query(f"PRAGMA table_info({table})")]
    sql = (
        "SELECT column_name AS name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position"
    )
    return [row["name"] for row in db.query(sql, [table])]


def _count(db, table: str) -> int:
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def _order(tables: Sequence[str]) -> list[str]:
    """The store's tables first, in COPIED's order, then the others."""
    known = [t for t in (*COPIED, *TRANSIENT) if t in tables]
    return known + [t for t in tables if t not in known]


def _per_key(db) -> dict[int, tuple[int, int]]:
    """{key id (-1: none): (calls, cost in units of 1e-10 USD)} from the log: integers, so
    equal on both engines to the unit (store/rollup.py's rounding)."""
    from ..store.rollup import NO_KEY, sql_units

    units = sql_units("cost_usd", MONEY_SCALE, db.dialect)
    sql = (
        f"SELECT COALESCE(key_id, {NO_KEY}) AS k, COUNT(*) AS n, COALESCE(SUM({units}), 0) AS u "
        "FROM proxy_logs GROUP BY 1"
    )
    return {row["k"]: (row["n"], row["u"]) for row in db.query(sql)}


def _rollup_sums(db, table: str) -> tuple[int, int]:
    """(requests, cost units) a rollup table holds in all."""
    row = db.execute(
        f"SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(cost_units), 0) FROM {table}"
    ).fetchone()
    return int(row[0]), int(row[1])


def source_rows(src, table: str, columns: Sequence[str]) -> Iterator[tuple]:
    """The rows of a source table as PostgreSQL takes them, streamed (a cursor, not a list)."""
    names = ", ".join(f'"{c}"' for c in columns)
    order = " ORDER BY rowid" if table == "proxy_logs" else ""  # the log in its own order
    convert = [(columns.index(c), f) for c, f in CONVERT.get(table, {}).items() if c in columns]
    for row in src.conn.execute(f"SELECT {names} FROM {table}{order}"):
        if convert:
            values = list(row)
            for i, f in convert:
                if values[i] is not None:
                    values[i] = f(values[i])
            row = tuple(values)
        yield row


class DbStatusApp(LCMCommand):
    """Which database the server uses: engine, place, migrations, rows."""

    name = "jupyter-lcm-db-status"
    description = (
        "Show the server's database: its engine, where it is (password hidden), its "
        "migrations and the rows of each table."
    )

    def start(self) -> int:  # type: ignore[override]
        target = self.settings.store_target
        if is_postgres(target):
            db = _connect_postgres(str(target))
        else:
            db = _open_sqlite(Path(target), migrate=False)
        try:
            self._show(db, target)
        finally:
            db.close()
        return 0

    def _show(self, db, target: Path | str) -> None:
        from ..store import migrations_pg
        from ..store.migrations import migrations

        if db.dialect == "sqlite":
            size = Path(target).stat().st_size
            applied = [m.name for m in migrations.applied(db)]
            pending = [m.name for m in migrations.pending(db)]
        else:
            size = db.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            done = db.execute("SELECT to_regclass('lcm_migrations')").fetchone()[0]
            sql = "SELECT name FROM lcm_migrations ORDER BY name"
            applied = [row["name"] for row in db.query(sql)] if done else []
            pending = [name for name, _ in migrations_pg.MIGRATIONS if name not in applied]
        tables = _tables(db)
        print(f"engine: {db.dialect}")
        print(f"database: {describe(target)} ({_size(size)})")
        latest = f" (latest {applied[-1]})" if applied else ""
        waiting = ", ".join(pending) or "none"
        print(f"migrations: {len(applied)} applied{latest}; pending: {waiting}")
        if "lcm_meta" in tables:
            secret = db.execute("SELECT 1 FROM lcm_meta WHERE name = 'secret_check'").fetchone()
            print(
                "secret: "
                + ("check value recorded" if secret else "not recorded yet (no server opened it)")
            )
        shown = [t for t in _order(tables) if t not in BOOKKEEPING]
        width = max([5, *(len(t) for t in shown)])
        print(f"{'table':{width}}  {'rows':>12}")
        for table in shown:
            print(f"{table:{width}}  {format_count(_count(db, table)):>12}")


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError  # pragma: no cover


class DbMigrateApp(LCMCommand):
    """Copy the SQLite database into an empty PostgreSQL database, checked."""

    name = "jupyter-lcm-db-migrate"
    description = (
        "Copy the server's SQLite database (LCMExtension.db_path) into an empty PostgreSQL "
        "database, in one transaction, and check the copy: rows per table, calls and cost "
        "per key."
    )
    examples = "jupyter lcm db migrate --to postgresql://lcm:PASSWORD@db.example.org/lcm"

    to = Unicode(
        "",
        config=True,
        help="The empty PostgreSQL database to copy into (postgresql://user:password@host:"
        "5432/dbname); default: LCMExtension.db_url.",
    )
    aliases = {**LCMCommand.aliases, "to": "DbMigrateApp.to"}

    def start(self) -> int:  # type: ignore[override]
        settings = self.settings
        url = self.to or settings.db_url or ""
        if not url:
            raise UsageError(
                f"{self.command} needs --to postgresql://user:password@host:5432/dbname "
                "(an empty PostgreSQL database)"
            )
        if not is_postgres(url):
            raise UsageError(
                f"--to takes a PostgreSQL URL ({' or '.join(SCHEMES)}...), got {describe(url)!r}"
            )
        path = Path(settings.db_path)
        src = _open_sqlite(path, migrate=True)  # the server would migrate it on start too
        try:
            unknown = [t for t in _tables(src) if t not in (*COPIED, *NOT_COPIED)]
            if unknown:
                raise CommandError(
                    f"{path} has tables this command does not know how to copy "
                    f"({', '.join(unknown)}): nothing was written"
                )
            pg = _connect_postgres(url)
            try:
                return self._migrate(src, pg, path, url)
            finally:
                pg.close()
        finally:
            src.close()

    def _migrate(self, src, pg, path: Path, url: str) -> int:
        import psycopg

        from ..store.db import migrate

        where = describe(url)
        began = time.monotonic()
        try:
            with src.snapshot(), pg.atomic():
                migrate(pg)  # the schema, in this same transaction
                self._refuse_unless_empty(src, pg, where)
                print(f"copying {path} into {where}", file=sys.stderr, flush=True)
                last_log = src.execute("SELECT COALESCE(MAX(rowid), 0) FROM proxy_logs")
                last_log = last_log.fetchone()[0]
                for table in COPIED:
                    self._copy(src, pg, table, where)
                self._move_sequences(src, pg)
                counts, keys, ok = _verify(src, pg)
                _print_verification(counts, keys, ok)
                if not ok:
                    raise CommandError(
                        f"the copy does not match {path} (above): it was rolled back, nothing "
                        f"was written to {where}"
                    )
        except psycopg.Error as exc:
            first = _redact((str(exc).strip().splitlines() or [type(exc).__name__])[0], url)
            raise CommandError(
                f"PostgreSQL refused the copy ({first}): rolled back, nothing was written "
                f"to {where}"
            ) from None
        except sqlite3.Error as exc:
            raise CommandError(
                f"reading {path} failed ({exc}): rolled back, nothing was written to {where}"
            ) from None
        print(f"verified ({time.monotonic() - began:.1f} s)")
        later = src.execute("SELECT COALESCE(MAX(rowid), 0) FROM proxy_logs").fetchone()[0]
        if later != last_log:
            print(
                f"warning: calls were logged in {path} during the copy and are not in "
                f"{where}: stop the servers, then migrate again into a new, empty database",
                file=sys.stderr,
            )
        print(
            f"next: set c.LCMExtension.db_url (LCM_DB_URL) to {where} on every server, with "
            f"this server's secret key ({self.settings.secret_key_file} or LCM_SECRET_KEY)",
            file=sys.stderr,
        )
        return 0

    def _refuse_unless_empty(self, src, pg, where: str) -> None:
        first = ("proxy_keys", "proxy_logs")
        tables = [*first, *(t for t in COPIED if t not in first and t != "lcm_meta")]
        held = {t: _count(pg, t) for t in tables}
        held = {t: n for t, n in held.items() if n}
        if held:
            what = ", ".join(f"{format_count(n)} {t}" for t, n in held.items())
            raise CommandError(
                f"{where} already holds data ({what}): migrate into an empty database "
                "(create one, e.g. `createdb lcm` or CREATE DATABASE lcm, and pass its URL "
                "with --to); nothing was written"
            )
        # A server that opened the empty database recorded its secret: the same is fine.
        ours = {row["name"]: row["value"] for row in src.query("SELECT * FROM lcm_meta")}
        theirs = {row["name"]: row["value"] for row in pg.query("SELECT * FROM lcm_meta")}
        clash = sorted(n for n, v in theirs.items() if ours.get(n) != v)
        if clash:
            raise CommandError(
                f"{where} records another {', '.join(clash)} than the SQLite database (a "
                "server with another secret key opened it): migrate into a new, empty "
                "database; nothing was written"
            )

    def _copy(self, src, pg, table: str, where: str) -> None:
        columns = _columns(src, table)
        missing = sorted(set(columns) - set(_columns(pg, table)))
        if missing:
            raise CommandError(
                f"{where}'s {table} has no column {', '.join(missing)} (a schema this "
                "version does not know): nothing was written"
            )
        rows = source_rows(src, table, columns)
        if table == "lcm_meta":  # rows a server recorded already are the same (checked)
            sql = "INSERT INTO lcm_meta (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
            pg.executemany(sql, list(rows))
            return
        total = _count(src, table) if table == "proxy_logs" else 0
        copied = 0
        while batch := list(islice(rows, BATCH_ROWS)):
            pg.copy_rows(table, columns, batch)
            copied += len(batch)
            if total > _PROGRESS_ROWS and copied % _PROGRESS_ROWS < BATCH_ROWS:
                print(
                    f"  {table}: {format_count(copied)} of {format_count(total)} rows",
                    file=sys.stderr,
                    flush=True,
                )

    def _move_sequences(self, src, pg) -> None:
        """Each identity sequence past the highest id SQLite gave (its sqlite_sequence:
        ids of rows deleted since are not given again there either)."""
        given = {r["name"]: r["seq"] for r in src.query("SELECT * FROM sqlite_sequence")}
        for table in IDENTITY:
            top = pg.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
            top = max(int(top), int(given.get(table) or 0))
            if top > 0:
                pg.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), ?)", [top])


def _verify(src, pg) -> tuple[list[tuple[str, int, int]], tuple[dict, dict], bool]:
    """(table, source rows, target rows) per table; per-key (calls, cost units) on each side;
    whether all agree, the rollups' totals included."""
    counts = [(t, _count(src, t), _count(pg, t)) for t in COPIED]
    keys = (_per_key(src), _per_key(pg))
    rollups = [t for t in COPIED if t.startswith("usage_rollup")]
    ok = (
        all(a == b for _, a, b in counts)
        and keys[0] == keys[1]
        and all(_rollup_sums(src, t) == _rollup_sums(pg, t) for t in rollups)
    )
    return counts, keys, ok


def _print_verification(
    counts: list[tuple[str, int, int]], keys: tuple[dict, dict], ok: bool
) -> None:
    width = max(len(t) for t, _, _ in counts)
    print(f"{'table':{width}}  {'sqlite':>12}  {'postgresql':>12}")
    for table, a, b in counts:
        mark = "" if a == b else "  MISMATCH"
        print(f"{table:{width}}  {format_count(a):>12}  {format_count(b):>12}{mark}")
    ours, theirs = keys
    calls = sum(n for n, _ in ours.values())
    if ours == theirs:
        from ..store.rollup import NO_KEY

        keyless = " and calls without a key" if NO_KEY in ours else ""
        print(
            f"per key ({len(ours) - bool(keyless)} keys{keyless}): calls and cost equal, "
            f"{format_count(calls)} calls, "
            f"{_money(sum(u for _, u in ours.values()))}"
        )
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key, (0, 0)), theirs.get(key, (0, 0))
        if a != b:
            print(
                f"key {key}: {format_count(a[0])} calls {_money(a[1])} in SQLite, "
                f"{format_count(b[0])} calls {_money(b[1])} in "
                "PostgreSQL  MISMATCH"
            )
    if not ok and ours == theirs and all(a == b for _, a, b in counts):
        print("the usage rollups' totals differ  MISMATCH")


def _money(units: int) -> str:
    """Units of 1e-10 USD (MONEY_SCALE) as money, every digit."""
    return format_money(Decimal(units).scaleb(-10), exact=True)


class DbApp(LCMCommand):
    """The server's database: status, or migrate it from SQLite to PostgreSQL."""

    name = "jupyter-lcm-db"
    description = (
        "The server's database: its status (the default), or migrate it from SQLite to PostgreSQL."
    )
    subcommands = subcommands(status=DbStatusApp, migrate=DbMigrateApp)
    default_subcommand = "status"
