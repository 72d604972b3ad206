"""Opening the database: SQLite at a path (one connection per thread, WAL) or PostgreSQL at a
`postgresql://` URL, migrated on open.

The store's functions take a `Database`: the part of sqlite-utils' Database they use, which
`SQLiteDatabase` is and postgres.PostgresDatabase offers, so that they do not know which
engine they run on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import sqlite_utils

from .migrations import migrations

if TYPE_CHECKING:
    from .postgres import PostgresDatabase

SCHEMES = ("postgresql://", "postgres://")

# PostgreSQL advisory locks: one for the shared counters' check-and-reserve (counters_db),
# as SQLite's BEGIN IMMEDIATE is one lock for the whole file; one for migrations.
COUNTERS_LOCK = 0x4C434D01
MIGRATIONS_LOCK = 0x4C434D00


class Database(Protocol):
    """What the store's functions use of a database connection, on either engine."""

    dialect: str

    def execute(self, sql: str, params: Any = None) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...

    def copy_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None: ...

    def query(self, sql: str, params: Any = None) -> Iterator[dict[str, Any]]: ...

    def atomic(self) -> contextlib.AbstractContextManager[Any]: ...

    def write_transaction(
        self, *, lock: int | None = None
    ) -> contextlib.AbstractContextManager[Any]: ...

    def snapshot(self) -> contextlib.AbstractContextManager[Any]: ...

    def table(self, table_name: str) -> Any: ...

    def close(self) -> None: ...


class SQLiteDatabase(sqlite_utils.Database):
    """sqlite-utils' Database with what the store's functions need on both engines."""

    dialect = "sqlite"

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        """Run one statement once per parameter row."""
        return self.conn.executemany(sql, rows)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Append rows: one prepared INSERT run over them all (in C)."""
        self.conn.executemany(_insert_sql(table, tuple(columns)), rows)

    @contextlib.contextmanager
    def write_transaction(self, *, lock: int | None = None) -> Iterator[None]:
        """A transaction that takes the write lock at its start (BEGIN IMMEDIATE), committed
        on leaving, rolled back on an exception. One that read first and wrote later
        (deferred) would fail its upgrade at once, without the busy timeout, whenever another
        connection wrote in between, and the servers sharing a database write all the time.
        (`lock` names PostgreSQL's advisory lock; SQLite's write lock is the whole file's.)"""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: the first read fixes what every later one sees (WAL)."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"


def is_postgres(target: Path | str) -> bool:
    """Whether a store target (db_url or db_path) is a PostgreSQL URL (else a SQLite path)."""
    return str(target).startswith(SCHEMES)


def describe(target: Path | str) -> str:
    """The target as messages show it: a URL without its password, whether in
    `user:password@` or in a `password=` parameter (libpq reads one there too)."""
    shown = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(target))
    return re.sub(r"([?&]password=)[^&]*", r"\1***", shown)


def connect(target: Path | str) -> Database:
    """A new connection to the database at `target`, for use by one thread only."""
    if is_postgres(target):
        from .postgres import PostgresDatabase  # the driver only when PostgreSQL is used

        return PostgresDatabase.open(str(target))
    path = target
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _create_private(Path(path))
    # check_same_thread off: each connection is confined to one thread by its owner,
    # but may be closed from another at shutdown.
    conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
    db = SQLiteDatabase(conn)
    # WAL lets the API read while the log writer writes; NORMAL is durable across
    # process crashes (only an OS crash can lose the last commits).
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def _create_private(path: Path) -> None:
    """Create the database file empty and owner-only (the log holds usage and the keys'
    encrypted secrets; SQLite gives its WAL and shared-memory files the same mode)."""
    # O_EXCL, never a plain open: closing any descriptor of a database file drops every
    # POSIX lock this process holds on it (SQLite's other connections' included), and
    # another process could then write under them and corrupt the file.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def migrate(db: Database) -> None:
    """Apply every pending migration of the database's engine."""
    if db.dialect == "postgresql":
        from . import migrations_pg

        migrations_pg.apply(cast("PostgresDatabase", db))
    else:
        migrations.apply(cast(SQLiteDatabase, db))


@contextlib.contextmanager
def _migration_lock(target: Path | str) -> Iterator[None]:
    """Servers that open one blank SQLite file at once take turns migrating it (sqlite-utils
    checks what is pending, then applies it, with nothing held in between). An flock on a
    file beside the database: never the database file itself, whose descriptors must not be
    opened and closed beside SQLite's (see _create_private). PostgreSQL has its advisory lock."""
    if is_postgres(target) or str(target) == ":memory:":
        yield
        return
    import fcntl

    fd = os.open(f"{target}.migrate-lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def open_database(target: Path | str) -> Database:
    """A connection to `target` with every pending migration applied."""
    db = connect(target)
    try:
        with _migration_lock(target):
            migrate(db)
    except BaseException:
        db.close()
        raise
    return db
