"""`jupyter lcm db migrate|status`: the server's SQLite database copied into PostgreSQL, checked,
readable there with the same secret, and refused when it would mix or lose data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from lcm_jupyter.cli import _db
from lcm_jupyter.core.keys import hash_key
from lcm_jupyter.core.keyspec import validate_key_fields
from lcm_jupyter.core.logfilter import LogFilter
from lcm_jupyter.core.pricing import ModelPrice
from lcm_jupyter.core.secretbox import SecretBox, SecretMismatch
from lcm_jupyter.store import billed, rollup
from lcm_jupyter.store.alerts import insert_alert, list_alerts
from lcm_jupyter.store.db import open_database
from lcm_jupyter.store.feedback import set_feedback
from lcm_jupyter.store.keys import create_key, find_key_by_hash, list_keys, revoke_key
from lcm_jupyter.store.logs import list_logs
from lcm_jupyter.store.logwriter import LogWriter
from lcm_jupyter.store.pricing import load_overrides, save_overrides
from lcm_jupyter.store.secret import check_secret

from .test_cli import one_line, own_jupyter_dirs, run

ALL_TIME = (0, 2**40)


def pg_tables(url: str) -> list[str]:
    """The tables of a PostgreSQL database, read without migrating it."""
    import psycopg

    with psycopg.connect(url) as conn:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        return sorted(row[0] for row in conn.execute(sql))


@dataclass
class Source:
    """The server's SQLite database, as the store wrote it."""

    path: Path
    box: SecretBox
    plain_keys: list[str]
    deleted_key_id: int


def _log_row(n: int, key_id: int | None) -> dict:
    """A complete proxy_logs row (store/logrow.LogRow) of varied figures."""
    model = ("gpt-4o", "gpt-4o-mini", "claude-3-5-haiku")[n % 3]
    return {
        "id": f"{n:032x}",
        "key_id": key_id,
        "provider": "anthropic" if model.startswith("claude") else "openai",
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "requested_model": model,
        "model": model if n % 5 else "gpt-4o-mini",
        "stream": n % 2,
        "input_tokens": 100 + n,
        "output_tokens": 7 * n % 300,
        "cached_tokens": n % 11,
        "cache_write_tokens": 0,
        "reasoning_tokens": n % 4,
        "usage_json": json.dumps({"prompt_tokens": 100 + n}),
        "cost_usd": None if n % 17 == 0 else 0.0001 * n + 1e-7 / 3,
        "tool_fees_usd": 0.0,
        "unpriced": int(n % 17 == 0),
        "usage_estimated": int(n % 13 == 0),
        "pricing_version": "2026-01",
        "savings_usd": 0.00005 * (n % 3),
        "latency_ms": 120.5 + n,
        "ttfb_ms": None if n % 7 == 0 else 30.25,
        "status": 500 if n % 19 == 0 else 200,
        "error": "upstream failed" if n % 19 == 0 else None,
        "cache_hit": int(n % 23 == 0),
        "routing_decision": json.dumps({"was_routed": True, "from_model": "gpt-4o",
                                        "to_model": "gpt-4o-mini"}) if n % 5 == 0 else None,
        "shadow_savings_usd": 0.0,
        # Over four days and a half: whole days and partial ones, in several buckets each.
        "created_at": f"2026-04-{1 + n % 5:02d}T{n % 24:02d}:{n % 60:02d}:07.{n % 1000:03d}Z",
    }  # fmt: skip


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Jupyter's folders of this test alone, and a server config naming the database."""
    config = own_jupyter_dirs(tmp_path, monkeypatch)["JUPYTER_CONFIG_DIR"]
    (config / "jupyter_server_config.py").write_text(
        f"c.LCMExtension.db_path = {str(tmp_path / 'team' / 'lcm.sqlite3')!r}\n"
        f"c.LCMExtension.secret_key_file = {str(tmp_path / 'team' / 'secret.key')!r}\n",
        "utf-8",
    )
    return tmp_path


@pytest.fixture
def source(home, monkeypatch) -> Source:
    """The configured SQLite database with keys, a deleted key's id, an alert, a price
    override, a billed-once reference, the log (rated calls among it) and its rollups."""
    monkeypatch.setattr(_db, "BATCH_ROWS", 64)  # several COPY batches of the log
    path = home / "team" / "lcm.sqlite3"
    secret = Fernet.generate_key()
    (home / "team").mkdir()
    (home / "team" / "secret.key").write_bytes(secret)
    box = SecretBox(secret)
    db = open_database(path)
    try:
        check_secret(db, box, db_path=path, secret_file=home / "team" / "secret.key")
        plain_keys = []
        for name, keys, budget in [
            ("team-a", {"openai": "sk-a-0123456789", "anthropic": "sk-ant-a-0123"}, 50.0),
            ("team-b", {"openai": "sk-b-0123456789"}, None),
            ("old", {"google": "AIza-old-0123"}, 5.0),
            ("gone", {}, None),
        ]:
            fields = {"name": name, "provider_api_keys": keys, "monthly_budget_usd": budget}
            _, plain = create_key(db, box, validate_key_fields(fields, partial=False))
            plain_keys.append(plain)
        revoke_key(db, box, 3)
        # A key removed by hand: SQLite never gives its id again, nor must PostgreSQL.
        db.execute("DELETE FROM proxy_keys WHERE id = 4")
        insert_alert(
            db, key_id=1, month="2026-04", threshold=80, severity="warning", message="80% used"
        )
        save_overrides(db, [ModelPrice("my-model", "openai", Decimal("1.5"), Decimal("6"))])
        billed.claim(db, "resp_abc", f"{5:032x}", 1)
    finally:
        db.close()
    writer = LogWriter(path, batch_size=100, interval=60.0)
    writer.start()
    try:
        for n in range(1, 401):
            writer.submit(_log_row(n, (1, 2, 3, None)[n % 4]))
        assert writer.flush(timeout=30)
    finally:
        writer.close()
    assert (writer.written, writer.failed) == (400, 0)
    db = open_database(path)
    try:
        assert set_feedback(db, f"{5:032x}", 1, "good routing")
        assert set_feedback(db, f"{10:032x}", -1, None)
    finally:
        db.close()
    return Source(path, box, plain_keys, deleted_key_id=4)


def _store_view(db, box: SecretBox) -> dict:
    """What the store reads of a database, through its own functions."""
    start, end = ALL_TIME
    day = rollup.DAY_SECONDS
    april = [1775001600 + i * day for i in range(7)]  # 2026-04-01 00:00Z, daily
    return {
        "keys": list_keys(db, box),
        "logs": list_logs(db, LogFilter(), limit=10_000),
        "alerts": list_alerts(db),
        "prices": load_overrides(db),
        "by": {
            by: sorted(rollup.by_group(db, by, start, end), key=lambda g: str(g[0]))
            for by in ("model", "provider", "key")
        },
        # A period that is not whole days: usage_rollup and usage_rollup_day both read.
        "partial": sorted(rollup.by_group(db, "key", april[0] + 3600, april[3] + 7200)),
        # usage_rollup_dim, per key (an integer in SQLite, text in PostgreSQL) and in all.
        "days": [rollup.by_day(db, april, key_id=k) for k in (None, 1, 2, -1)],
        "days_model": rollup.by_day(db, april, model="gpt-4o-mini"),
    }


def test_migrate_copies_the_database_into_postgresql_readable_with_the_same_secret(
    source, pg_url, capsys
):
    assert run(["db", "migrate", "--to", pg_url]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["table", "sqlite", "postgresql"]
    tables = len(_db.COPIED)
    counts = {line.split()[0]: line.split()[1:] for line in lines[1 : 1 + tables]}
    assert list(counts) == list(_db.COPIED)
    assert counts["proxy_keys"] == ["3", "3"] and counts["proxy_logs"] == ["400", "400"]
    assert counts["lcm_meta"] == ["1", "1"] and counts["alerts"] == ["1", "1"]
    assert "MISMATCH" not in captured.out
    assert lines[1 + tables].startswith(
        "per key (3 keys and calls without a key): calls and cost equal, 400 calls, $"
    )
    assert lines[2 + tables].startswith("verified (")
    assert "c.LCMExtension.db_url" in captured.err

    src, pg = open_database(source.path), open_database(pg_url)
    try:
        assert _store_view(pg, source.box) == _store_view(src, source.box)
        secrets = pg.execute("SELECT id, provider_api_keys FROM proxy_keys ORDER BY id")
        assert (
            secrets.fetchall()
            == src.execute("SELECT id, provider_api_keys FROM proxy_keys ORDER BY id").fetchall()
        )  # the ciphertext as it was
        team_a = find_key_by_hash(pg, source.box, hash_key(source.plain_keys[0]))
        assert team_a is not None and team_a.id == 1
        assert team_a.provider_api_keys == {
            "openai": "sk-a-0123456789",
            "anthropic": "sk-ant-a-0123",
        }
        rated = {
            r["id"]: (r["feedback"], r["feedback_comment"])
            for r in _store_view(pg, source.box)["logs"]
            if r["feedback"]
        }
        assert rated == {f"{5:032x}": (1, "good routing"), f"{10:032x}": (-1, None)}
        # The same secret opens it; another is refused, as on SQLite.
        check_secret(pg, source.box, db_path=pg_url, secret_file=Path("s"))
        with pytest.raises(SecretMismatch):
            check_secret(
                pg, SecretBox(Fernet.generate_key()), db_path=pg_url, secret_file=Path("s")
            )
        assert billed.claim(pg, "resp_abc", "f" * 32, 1) == f"{5:032x}"  # billed once, still
        # New ids follow the copied ones (and the deleted key's).
        record, _ = create_key(pg, source.box, validate_key_fields({"name": "new"}, partial=False))
        assert record.id == source.deleted_key_id + 1
        alert = insert_alert(pg, key_id=2, month="2026-04", threshold=80, severity="w", message="m")
        assert alert == 2
    finally:
        src.close()
        pg.close()

    # Into a database that now holds data: refused, nothing written.
    assert run(["db", "migrate", "--to", pg_url]) == 1
    err = one_line(capsys)
    assert "already holds data (4 proxy_keys, 400 proxy_logs, 1 model_pricing, 2 alerts" in err
    assert "migrate into an empty database" in err and "nothing was written" in err
    pg = open_database(pg_url)
    try:
        assert pg.execute("SELECT COUNT(*) FROM proxy_logs").fetchone()[0] == 400
    finally:
        pg.close()


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["db", "migrate"], 2, "jupyter lcm db migrate needs --to postgresql://"),
        (["db", "migrate", "--to", "mysql://u:pw@h/db"], 2, "--to takes a PostgreSQL URL"),
        (["db", "migrate", "--to", "/tmp/other.sqlite3"], 2, "--to takes a PostgreSQL URL"),
        (["db", "bogus"], 2, "unknown command 'bogus' (commands: status, migrate"),
    ],
)
def test_migrate_refuses_a_command_line_without_a_postgresql_url(home, capsys, argv, code, says):
    assert run(argv) == code
    err = one_line(capsys)
    assert says in err and "pw" not in err


def test_migrate_refuses_a_missing_source_or_a_target_under_another_secret(
    source, home, pg_url, capsys
):
    assert run(["db", "migrate", "--to", pg_url, "--db-path", str(home / "none.sqlite3")]) == 1
    assert f"no SQLite database at {home / 'none.sqlite3'}" in one_line(capsys)
    assert not (home / "none.sqlite3").exists() and pg_tables(pg_url) == []
    pg = open_database(pg_url)
    try:
        # A server with another secret opened the empty database: it recorded its own.
        check_secret(pg, SecretBox(Fernet.generate_key()), db_path=pg_url, secret_file=Path("s"))
    finally:
        pg.close()
    assert run(["db", "migrate", "--to", pg_url]) == 1
    assert "records another secret_check than the SQLite database" in one_line(capsys)
    pg = open_database(pg_url)
    try:
        assert pg.execute("SELECT COUNT(*) FROM proxy_keys").fetchone()[0] == 0
    finally:
        pg.close()

    # A password in the URL is never shown, even when the server is unreachable.
    assert run(["db", "migrate", "--to", "postgresql://u:hunter2@127.0.0.1:1/db"]) == 1
    err = one_line(capsys)
    assert "cannot connect to postgresql://u:***@127.0.0.1:1/db" in err and "hunter2" not in err
    assert run(["db", "migrate", "--to", "postgresql://127.0.0.1:1/db?password=hunter2"]) == 1
    err = one_line(capsys)
    assert "cannot connect to postgresql://127.0.0.1:1/db?password=***" in err
    assert "hunter2" not in err


def test_a_copy_that_does_not_match_is_rolled_back(source, pg_url, capsys, monkeypatch):
    rows = _db.source_rows

    def one_log_row_lost(src, table, columns):
        found = rows(src, table, columns)
        if table == "proxy_logs":
            next(found)
        return found

    monkeypatch.setattr(_db, "source_rows", one_log_row_lost)
    assert run(["db", "migrate", "--to", pg_url]) == 1
    captured = capsys.readouterr()
    logs = next(line for line in captured.out.splitlines() if line.startswith("proxy_logs"))
    assert logs.split() == ["proxy_logs", "400", "399", "MISMATCH"]
    assert "key 2: 100 calls $" in captured.out and "in SQLite, 99 calls $" in captured.out
    assert "the copy does not match" in captured.err and "rolled back" in captured.err
    assert pg_tables(pg_url) == []  # the schema too: one transaction

    # The database the server is configured for (db_url) is the default target.
    monkeypatch.setattr(_db, "source_rows", rows)
    monkeypatch.setenv("LCM_DB_URL", pg_url)
    assert run(["db", "migrate"]) == 0
    assert "verified" in capsys.readouterr().out


def test_status_says_the_engine_place_migrations_and_rows(source, pg_url, capsys, monkeypatch):
    assert run(["db"]) == 0
    out = capsys.readouterr().out
    assert "engine: sqlite\n" in out and f"database: {source.path} (" in out
    from lcm_jupyter.store.migrations import migrations

    names = [m.name for m in migrations._migrations]
    assert f"migrations: {len(names)} applied (latest {names[-1]}); pending: none" in out
    assert "secret: check value recorded" in out
    assert any(line.split() == ["proxy_logs", "400"] for line in out.splitlines())
    assert "shared_holds" in out and "_sqlite_migrations" not in out

    open_database(pg_url).close()  # migrated, as a server leaves it
    user, rest = pg_url.split("://", 1)[1].split("@", 1)
    monkeypatch.setenv("LCM_DB_URL", f"postgresql://{user}:hunter2@{rest}")  # trust: ignored
    assert run(["db", "status"]) == 0
    out = capsys.readouterr().out
    assert "engine: postgresql\n" in out and f"database: postgresql://{user}:***@{rest} (" in out
    assert "hunter2" not in out
    from lcm_jupyter.store.migrations_pg import MIGRATIONS

    names = [name for name, _ in MIGRATIONS]
    assert f"migrations: {len(names)} applied (latest {names[-1]}); pending: none" in out
    assert "secret: not recorded yet" in out
    assert any(line.split() == ["proxy_logs", "0"] for line in out.splitlines())
