"""The PostgreSQL fixtures give a real, recent server and a fresh database per test."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit

import pytest

psycopg = pytest.importorskip("psycopg")

USER_TABLES = (
    "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
)


def test_server_is_postgresql_13_or_newer(pg_server):
    with psycopg.connect(pg_server.url) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        number = conn.execute("SHOW server_version_num").fetchone()[0]
    assert version.startswith("PostgreSQL ")
    assert int(number) >= 130000


def test_server_allows_many_connections(pg_server):
    with psycopg.connect(pg_server.url) as conn:
        assert int(conn.execute("SHOW max_connections").fetchone()[0]) >= 300


_seen: list[str] = []  # the databases of test_databases_in_a_row, in the order they ran


@pytest.mark.parametrize("turn", [1, 2])
def test_databases_in_a_row(pg_server, pg_url, turn):
    """Each test gets a new, empty database; those of the tests before it are dropped."""
    assert pg_url not in _seen
    before = [urlsplit(url).path.lstrip("/") for url in _seen]
    _seen.append(pg_url)
    with psycopg.connect(pg_server.url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", [before])
        assert rows.fetchall() == []
    with psycopg.connect(pg_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        assert name == urlsplit(pg_url).path.lstrip("/")
        assert conn.execute(USER_TABLES).fetchone()[0] == 0
        conn.execute("CREATE TABLE leftover (id int)")  # the next test must not see it


def test_url_reachable_from_another_process(pg_url):
    assert urlsplit(pg_url).hostname  # TCP: no host would mean a unix socket
    code = (
        "import sys, psycopg\n"
        "with psycopg.connect(sys.argv[1]) as conn:\n"
        "    conn.execute('CREATE TABLE t (x int)')\n"
        "    conn.execute('INSERT INTO t VALUES (42)')\n"
    )
    subprocess.run([sys.executable, "-c", code, pg_url], check=True, timeout=30)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT x FROM t").fetchone()[0] == 42
