"""PostgreSQL as the store: the same database interface as SQLite's, for servers on many machines.

The store's functions are plain synchronous functions over a database object, run on the
store's threads (store.py), so the event loop never waits on either engine. On SQLite that
object is a sqlite-utils Database; here it is `PostgresDatabase`, which offers the part of
that interface the store uses (`execute`, `executemany`, `query`, `atomic`, `table(...)`)
over a psycopg 3 connection, plus what only PostgreSQL has (`copy_rows`).

The store's SQL is written once, in the dialect both engines read (`?` placeholders, `ON
CONFLICT`, `RETURNING`); `_translate` turns its placeholders into psycopg's. Where the
engines differ (epoch of a timestamp, DDL types), the module concerned asks `db.dialect`.

Driver: psycopg 3 (with psycopg_pool), not asyncpg. Both are well kept and, measured on this
machine, close (COPY of a 500-row log batch: 29 ms psycopg, 26 ms asyncpg, SQLite 22 ms); but
the store's functions run on threads for SQLite, which has no async driver, and psycopg's
synchronous API lets one set of functions serve both engines unchanged, with COPY and a
pool that replaces broken connections.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import adapt, postgres
from psycopg.rows import dict_row

DIALECT = "postgresql"


class _NumericLoader(adapt.Loader):
    """numeric as int when whole, else float: SUM over bigint is numeric in PostgreSQL, an
    int in SQLite, and the store's callers expect what SQLite gives."""

    def load(self, data: Any) -> int | float:
        text = bytes(data)
        return float(text) if b"." in text or b"e" in text.lower() else int(text)


class _BoolDumper(adapt.Dumper):
    """Python bools as 0/1: the schema keeps SQLite's integer flags on both engines."""

    oid = postgres.types["int2"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def configure(conn: psycopg.Connection) -> None:
    """Adapters every connection of the store gets."""
    conn.adapters.register_loader("numeric", _NumericLoader)
    conn.adapters.register_dumper(bool, _BoolDumper)


def connect_raw(url: str, *, autocommit: bool = True) -> psycopg.Connection:
    """A configured psycopg connection to `url`."""
    conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    configure(conn)
    return conn


@functools.lru_cache(maxsize=1024)
def _translate(sql: str) -> str:
    """The store's SQL (`?` placeholders) in psycopg's form (`%s`, literal `%` doubled)."""
    parts = re.split(r"('(?:[^']|'')*')", sql)  # string literals at odd indexes
    return "".join(
        part.replace("%", "%%") if k % 2 else part.replace("%", "%%").replace("?", "%s")
        for k, part in enumerate(parts)
    )


class _Inserted:
    def __init__(self, last_pk: Any) -> None:
        self.last_pk = last_pk


class _Table:
    """The part of sqlite-utils' Table the store uses."""

    def __init__(self, db: PostgresDatabase, name: str) -> None:
        self.db = db
        self.name = name

    def insert(self, row: Mapping[str, Any], pk: str = "id") -> _Inserted:
        names = ", ".join(f'"{c}"' for c in row)
        marks = ", ".join("?" * len(row))
        cur = self.db.execute(
            f"INSERT INTO {self.name} ({names}) VALUES ({marks}) RETURNING {pk}", list(row.values())
        )
        inserted = cur.fetchone()
        assert inserted is not None  # RETURNING gives the inserted row
        return _Inserted(inserted[0])

    def update(self, pk_value: Any, cols: Mapping[str, Any], pk: str = "id") -> None:
        sets = ", ".join(f'"{c}" = ?' for c in cols)
        self.db.execute(f"UPDATE {self.name} SET {sets} WHERE {pk} = ?", [*cols.values(), pk_value])

    def upsert_all(self, rows: Iterable[Mapping[str, Any]], pk: str) -> None:
        for row in rows:
            names = ", ".join(f'"{c}"' for c in row)
            marks = ", ".join("?" * len(row))
            sets = ", ".join(f'"{c}" = excluded."{c}"' for c in row if c != pk)
            self.db.execute(
                f"INSERT INTO {self.name} ({names}) VALUES ({marks}) "
                f"ON CONFLICT ({pk}) DO UPDATE SET {sets}",
                list(row.values()),
            )


class PostgresDatabase:
    """One psycopg connection (autocommit: each statement is its own transaction unless in
    `atomic`), with the interface the store's functions use."""

    dialect = DIALECT

    def __init__(self, conn: psycopg.Connection, *, owned: bool = True) -> None:
        self.conn = conn
        self._owned = owned

    @classmethod
    def open(cls, url: str) -> PostgresDatabase:
        """A new connection of its own to `url`."""
        return cls(connect_raw(url))

    @property
    def broken(self) -> bool:
        """True once the connection is closed or lost (the owner opens a new one)."""
        return self.conn.closed or self.conn.broken

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor:
        """Run one statement; the cursor has rowcount and fetchone/fetchall (tuples)."""
        return self.conn.execute(_translate(sql), params or [])

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""
        with self.conn.cursor() as cur:
            cur.executemany(_translate(sql), list(rows))

    def query(self, sql: str, params: Sequence[Any] | None = None) -> Iterator[dict[str, Any]]:
        """The rows of a query, as dicts."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_translate(sql), params or [])
            rows = cur.fetchall()
        return iter(rows)

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        """A transaction (a savepoint when nested): committed on leaving, rolled back on error."""
        return self.conn.transaction()

    @contextlib.contextmanager
    def write_transaction(self, *, lock: int | None = None) -> Iterator[None]:
        """A transaction; with `lock`, holding that advisory lock from its start, so that
        check-then-write sequences of every server run one at a time, as under SQLite's
        BEGIN IMMEDIATE."""
        with self.conn.transaction():
            if lock is not None:
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock])
            yield

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read-only transaction whose reads all see one moment (REPEATABLE READ)."""
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def table(self, table_name: str) -> _Table:
        """Insert, update and upsert on one table."""
        return _Table(self, table_name)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Append rows with COPY: one round trip for a whole batch."""
        names = ", ".join(f'"{c}"' for c in columns)
        with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def close(self) -> None:
        """Close the connection (if this object opened it)."""
        if self._owned:
            self.conn.close()


class Pool:
    """A psycopg_pool connection pool for the store's threads: a thread borrows a connection
    for one function call; broken connections are replaced."""

    def __init__(self, url: str, *, size: int) -> None:
        from psycopg_pool import ConnectionPool

        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True, "connect_timeout": 10},
            configure=configure,
            check=ConnectionPool.check_connection,
            timeout=10.0,  # a call waiting for a connection fails after that, not 30 s
            open=True,
            name="lcm-store",
        )

    @contextlib.contextmanager
    def database(self) -> Iterator[PostgresDatabase]:
        """A database object over a borrowed connection."""
        with self._pool.connection() as conn:
            yield PostgresDatabase(conn, owned=False)

    def close(self) -> None:
        """Close every connection."""
        self._pool.close()
