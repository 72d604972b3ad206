"""Async access to the database from the event loop.

Every query runs on a small pool of threads, so the event loop never waits on the
database. On SQLite each thread has its own connection (sqlite3's same-thread rule); on
PostgreSQL the threads borrow connections from a pool (postgres.Pool) for each call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .db import Database, connect, is_postgres, open_database

T = TypeVar("T")


class Store:
    """Runs functions `fn(db, *args)` on the database threads."""

    def __init__(self, target: Path | str, *, threads: int = 2) -> None:
        self.path = target
        # Migrate once, up front, so the pool threads only connect.
        open_database(target).close()
        self._pool = None
        if is_postgres(target):
            from .postgres import Pool

            self._pool = Pool(str(target), size=threads)
        self._local = threading.local()
        self._connections: list[Database] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="lcm-db")

    def _db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path)
            with self._lock:
                self._connections.append(db)
        return db

    def _call(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        if self._pool is not None:
            with self._pool.database() as db:
                return fn(db, *args, **kwargs)
        return fn(self._db(), *args, **kwargs)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(db, *args, **kwargs)` on a database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._call, fn, args, kwargs))

    def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The same, blocking: for code that is not on the event loop."""
        return self._executor.submit(self._call, fn, args, kwargs).result()

    def close(self) -> None:
        """Finish queued work and close every connection."""
        self._executor.shutdown(wait=True)
        if self._pool is not None:
            self._pool.close()
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
