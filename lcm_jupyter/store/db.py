"""Opening the SQLite database: one connection per thread, WAL, migrated on open."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from .migrations import migrations


def connect(path: Path | str) -> sqlite_utils.Database:
    """A new connection to the database at `path`, for use by one thread only."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _create_private(Path(path))
    # check_same_thread off: each connection is confined to one thread by its owner,
    # but may be closed from another at shutdown.
    conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
    db = sqlite_utils.Database(conn)
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


def open_database(path: Path | str) -> sqlite_utils.Database:
    """A connection to `path` with every pending migration applied."""
    db = connect(path)
    migrations.apply(db)
    return db


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A transaction that takes the write lock at its start (BEGIN IMMEDIATE), committed on
    leaving, rolled back on an exception. One that read first and wrote later (deferred)
    would fail its upgrade at once, without the busy timeout, whenever another connection
    wrote in between, and the servers sharing a database write all the time."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
