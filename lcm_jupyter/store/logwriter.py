"""The batched call-log writer: rows go in from the event loop, writes happen on one thread.

`submit` never blocks (a queue put). The writer thread owns its own connection,
sleeps `interval`, then writes everything queued meanwhile in transactions of at
most `batch_size` rows; it does not wake per row, which under load would cost the
event loop's thread a context switch per call. `flush` and `close` wake it at
once. A failed write is retried (on a new connection if the old one was lost); a batch
that a bad row spoils is written row by row so that the good rows land. On PostgreSQL a
batch goes in with one COPY. `close` drains everything, and so does exit, so no
row is lost when the server stops.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import rollup
from .db import Database, is_postgres, open_database

_Errors = tuple[type[BaseException], ...]


def _errors(target: Path | str) -> tuple[_Errors, _Errors]:
    """(worth a retry of the same batch: a busy SQLite file, a lost PostgreSQL connection;
    a row the database refuses, so the batch is written row by row)."""
    transient: _Errors = (sqlite3.OperationalError,)
    refused: _Errors = (sqlite3.Error, ValueError, OverflowError, TypeError)
    if is_postgres(target):
        import psycopg  # only when PostgreSQL is used: it takes a while to import

        transient += (psycopg.OperationalError,)
        refused += (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)
    return transient, refused


log = logging.getLogger(__name__)

_STOP = object()


class _Flush:
    """A marker in the queue: set once every row queued before it is written."""

    def __init__(self) -> None:
        self.done = threading.Event()


class LogWriter:
    """Writes proxy_logs rows in batches on a background thread."""

    def __init__(
        self,
        db_path: Path | str,  # or a postgresql:// URL
        *,
        batch_size: int = 500,
        interval: float = 0.25,
        table: str = "proxy_logs",
        prepare: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._db_path = db_path
        self._transient, self._refused = _errors(db_path)
        # Work a row asks for that can wait for the writer thread (the shadow routing
        # judgement): done there, off the event loop, just before the row is written.
        self.prepare = prepare
        # Told, on the writer thread, which rows each transaction committed (the journal
        # then deletes what it no longer needs to replay).
        self.on_commit: Callable[[list[Mapping[str, Any]]], None] | None = None
        self._batch_size = batch_size
        self._interval = interval
        self._table = table
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self.written = 0
        self.failed = 0

    def start(self) -> None:
        """Start the writer thread; at interpreter exit, queued rows are still written."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lcm-log-writer", daemon=True)
            self._thread.start()
            # A server stopped by a signal it has no handler for (jupyter_server installs
            # its SIGINT one only on a terminal) never runs stop_extension: drain at exit.
            atexit.register(self._close_at_exit)

    def _close_at_exit(self) -> None:
        if self._thread is not None:
            self.close()

    def submit(self, row: Mapping[str, Any]) -> None:
        """Queue one row; returns at once."""
        self._queue.put(row)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Block until every row submitted so far is written; False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            return self._queue.empty()
        marker = _Flush()
        self._queue.put(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything still queued, then stop the thread."""
        if self._thread is None:
            self.start()  # rows may have been queued before start: write them too
        assert self._thread is not None
        self._queue.put(_STOP)
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("lcm log writer did not finish within %ss; rows may be unwritten", timeout)
        self._thread = None
        atexit.unregister(self._close_at_exit)

    def _run(self) -> None:
        self._db: Database | None = None
        try:
            stopping = False
            while not stopping:
                self._wake.wait(self._interval)
                self._wake.clear()
                try:
                    stopping = self._drain()
                except Exception:  # never let the thread die: the queue would grow unwritten
                    log.exception("lcm log writer: unexpected error; carrying on")
        finally:
            if self._db is not None:
                self._db.close()

    def _connection(self) -> Database:
        """The writer's connection, (re)opened when there is none or it was lost."""
        db = self._db
        if db is not None and getattr(db, "broken", False):  # a lost PostgreSQL connection
            db.close()
            db = None
        if db is None:
            db = self._db = open_database(self._db_path)
        return db

    def _drain(self) -> bool:
        """Write what is queued, in order; True once the stop marker is reached."""
        batch: list[Mapping[str, Any]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP or isinstance(item, _Flush):
                if batch:
                    self._write(batch)
                    batch = []
                if isinstance(item, _Flush):
                    item.done.set()
                    continue
                return True
            if self.prepare is not None:
                try:
                    self.prepare(item)
                except Exception:  # the row matters more than what it was to be told
                    log.exception("lcm log writer: preparing row %s failed", item.get("id"))
                # Hand the GIL back between rows: the event loop never waits behind a batch
                # of judgements (a switch interval, 5 ms, each time otherwise).
                time.sleep(0)
            for name in [k for k in item if k[:1] == "_"]:
                del item[name]  # work for `prepare`, not a column
            batch.append(item)
            if len(batch) >= self._batch_size:
                self._write(batch)
                batch = []
        if batch:
            self._write(batch)
        return False

    def _write(self, batch: list[Mapping[str, Any]]) -> None:
        for attempt in range(5):
            try:
                db = self._connection()
                with db.write_transaction():
                    self._insert(db, batch)
                self.written += len(batch)
                self._committed(batch)
                return
            except self._transient as exc:
                # Locked or busy database (another process writing), or a lost connection:
                # wait and retry.
                log.warning("lcm log write failed (attempt %d): %s", attempt + 1, exc)
                time.sleep(0.05 * 2**attempt)
            except self._refused as exc:
                log.warning("lcm log batch refused (%s); writing its rows one by one", exc)
                break
        landed = []
        for row in batch:
            try:
                db = self._connection()
                with db.write_transaction():
                    self._insert(db, [row])
                self.written += 1
                landed.append(row)
            except (*self._transient, *self._refused):
                self.failed += 1
                log.exception("lcm could not write log row %s", row.get("id"))
        self._committed(landed)

    def _committed(self, rows: list[Mapping[str, Any]]) -> None:
        if self.on_commit is not None and rows:
            try:
                self.on_commit(rows)
            except Exception:  # never let the thread die for it
                log.exception("lcm log writer: on_commit failed")

    def _insert(self, db: Database, rows: list[Mapping[str, Any]]) -> None:
        # One append per column set (the pipeline's rows all share one): executemany on
        # SQLite, where sqlite-utils' per-row work would hold the GIL the event loop needs;
        # COPY on PostgreSQL.
        rolled_up = self._table == "proxy_logs"
        pg = db.dialect == "postgresql"
        after = rollup.last_rowid(db) if rolled_up and not pg else 0
        groups: dict[tuple[str, ...], list[tuple]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(tuple(row.values()))
        for columns, values in groups.items():
            db.copy_rows(self._table, columns, values)
        if rolled_up:
            # In the rows' own transaction: the rollups never count a row that is not there.
            rollup.add_rows(db, [row["id"] for row in rows] if pg else after)
