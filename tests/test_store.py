"""The store: schema from migrations, the batched log writer, keys at rest."""

from __future__ import annotations

import os
import stat
import threading

from lcm_jupyter.core.keys import hash_key
from lcm_jupyter.core.keyspec import validate_key_fields
from lcm_jupyter.core.secretbox import SecretBox, load_or_create_key
from lcm_jupyter.store import keys as key_table
from lcm_jupyter.store.db import connect, open_database
from lcm_jupyter.store.logwriter import LogWriter
from lcm_jupyter.store.migrations import migrations


def _row(i: int) -> dict:
    return {
        "id": f"{i:032x}",
        "created_at": "2026-11-26T00:00:00.000Z",
        "status": 200,
        "cost_usd": 0.5,
    }


def test_migrations_build_the_expected_schema_once(tmp_path):
    db = open_database(tmp_path / "a.db")
    tables = set(db.table_names())
    assert {"proxy_keys", "proxy_logs", "model_pricing", "alerts"} <= tables
    cols = {c.name for c in db.table("proxy_logs").columns}
    assert {
        "id",
        "key_id",
        "provider",
        "endpoint",
        "requested_model",
        "model",
        "stream",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "cost_usd",
        "savings_usd",
        "latency_ms",
        "status",
        "error",
        "cache_hit",
        "routing_decision",
        "feedback",
        "feedback_comment",
        "created_at",
        "pricing_version",
        "unpriced",
    } <= cols
    (first,) = db.query("SELECT count(*) AS n FROM _sqlite_migrations")
    db.conn.close()
    again = open_database(tmp_path / "a.db")  # re-applying is a no-op
    (second,) = again.query("SELECT count(*) AS n FROM _sqlite_migrations")
    assert first["n"] == second["n"] == len(migrations.pending(connect(tmp_path / "b.db")))
    names = [m.name for m in migrations.applied(again)]
    assert names == sorted(names)  # numbered, applied in order


def test_log_writer_batches_and_flushes(tmp_path):
    writer = LogWriter(tmp_path / "a.db", batch_size=50, interval=5.0)
    writer.start()
    for i in range(120):
        writer.submit(_row(i))
    assert writer.flush(timeout=10)
    db = open_database(tmp_path / "a.db")
    assert db.table("proxy_logs").count == 120
    writer.close()


def test_close_writes_every_row_even_if_never_started(tmp_path):
    writer = LogWriter(tmp_path / "a.db", interval=60.0)
    for i in range(10):
        writer.submit(_row(i))
    writer.close()
    assert open_database(tmp_path / "a.db").table("proxy_logs").count == 10


def test_a_bad_row_does_not_take_its_batch_with_it(tmp_path):
    writer = LogWriter(tmp_path / "a.db", interval=0.05)
    writer.start()
    writer.submit(_row(1))
    writer.submit({"id": "bad", "created_at": None})  # NOT NULL violated
    writer.submit(_row(2))
    writer.close()
    db = open_database(tmp_path / "a.db")
    assert [r["id"] for r in db.query("SELECT id FROM proxy_logs ORDER BY id")] == [
        _row(1)["id"],
        _row(2)["id"],
    ]
    assert (writer.written, writer.failed) == (2, 1)


def test_concurrent_submitters_lose_nothing(tmp_path):
    writer = LogWriter(tmp_path / "a.db", batch_size=64, interval=0.01)
    writer.start()

    def submit(start: int) -> None:
        for i in range(start, start + 500):
            writer.submit(_row(i))

    threads = [threading.Thread(target=submit, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert open_database(tmp_path / "a.db").table("proxy_logs").count == 2000


def test_secret_file_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "sub" / "secret.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    box = SecretBox(key)
    token = box.encrypt("sk-secret")
    assert "sk-secret" not in token and box.decrypt(token) == "sk-secret"


def test_key_records_round_trip_encrypted(tmp_path):
    db = open_database(tmp_path / "a.db")
    box = SecretBox(load_or_create_key(tmp_path / "k"))
    fields = validate_key_fields(
        {"name": "k", "provider_api_keys": {"google": "AIzaSyA-very-secret-key"}}, partial=False
    )
    record, plain = key_table.create_key(db, box, fields)
    assert record.provider_api_keys == {"google": "AIzaSyA-very-secret-key"}
    assert record.public()["provider_api_keys"] == {"google": "AIza...-key"}
    assert key_table.find_key_by_hash(db, box, hash_key(plain)).id == record.id
    assert key_table.find_key_by_hash(db, box, hash_key(plain + "x")) is None
    raw = db.execute("SELECT provider_api_keys FROM proxy_keys").fetchone()[0]
    assert "AIzaSyA" not in raw
    assert key_table.revoke_key(db, box, record.id).revoked


def test_writer_survives_a_row_sqlite_cannot_hold(tmp_path):
    writer = LogWriter(tmp_path / "a.db", interval=0.05)
    writer.start()
    writer.submit(_row(1))
    writer.submit({**_row(2), "input_tokens": 10**30})  # over int64
    writer.submit(_row(3))
    assert writer.flush(timeout=10)
    writer.submit(_row(4))  # and it is still writing
    writer.close()
    ids = [r["id"] for r in open_database(tmp_path / "a.db").query("SELECT id FROM proxy_logs")]
    assert sorted(ids) == sorted(_row(i)["id"] for i in (1, 3, 4))
    assert writer.failed == 1


def test_the_key_record_has_exactly_the_declared_fields():
    """core.keyspec.KEY_FIELDS is the one declaration of a key's fields: the stored record,
    the public record and the form follow it, so KeyRecord must hold exactly those."""
    from dataclasses import fields

    from lcm_jupyter.core.keyspec import KEY_FIELDS
    from lcm_jupyter.store.keys import META, KeyRecord

    declared = {f.name for f in KEY_FIELDS}
    assert {f.name for f in fields(KeyRecord)} == declared | set(META)
    assert not declared & set(META)


def test_the_log_row_declares_exactly_the_tables_columns(tmp_path):
    """store.logrow.LogRow is the one declaration of a call's row: every writer is type-checked
    against it, so it must name exactly the migrated table's columns."""
    from lcm_jupyter.store.db import open_database
    from lcm_jupyter.store.logrow import FEEDBACK_COLUMNS, LogRow

    db = open_database(tmp_path / "lcm.sqlite3")
    columns = {c.name for c in db["proxy_logs"].columns}
    assert set(LogRow.__annotations__) | set(FEEDBACK_COLUMNS) == columns
    assert not set(LogRow.__annotations__) & set(FEEDBACK_COLUMNS)


def test_a_write_by_another_process_between_read_and_insert_loses_no_row(tmp_path, monkeypatch):
    """The writer reads (the rollup's last rowid) before it inserts. Another connection that
    writes in between (the shared database counters do, all the time) must not make the
    insert fail: the writer holds the write lock from its transaction's start."""
    import sqlite3

    from lcm_jupyter.store import rollup

    path = tmp_path / "a.db"
    open_database(path).conn.close()
    other = sqlite3.connect(path, timeout=0.1, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE other_writes (n INTEGER)")
    real = rollup.last_rowid
    wrote: list[bool] = []

    def read_then_let_another_write(db):
        found = real(db)
        try:
            other.execute("INSERT INTO other_writes VALUES (1)")
            wrote.append(True)
        except sqlite3.OperationalError:  # the writer holds the lock: it has to wait
            wrote.append(False)
        return found

    monkeypatch.setattr(rollup, "last_rowid", read_then_let_another_write)
    writer = LogWriter(path, interval=0.01)
    writer.submit(_row(1))
    writer.close()
    assert (writer.written, writer.failed) == (1, 0)
    assert wrote == [False]
    assert open_database(path).table("proxy_logs").count == 1
