"""Bad input and hostile traffic: clean 4xx in the provider's shape, nothing lost, nothing leaked.

Through a real server: keyless floods leave no rows, deep JSON and tornado's own errors are
answered in the provider's shape, header-unsafe provider keys are refused when set, keys in
any query form never reach the provider, a non-streamed call whose client hung up is still
booked, and the first refusal for budget raises the critical alert.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from lcm_jupyter.core.budget import current_month, to_units

from .conftest import PROVIDER_KEY, openai_via, until

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_keyless_flood_writes_no_rows_and_is_counted(base_url, lcm, logs, api, make_key):
    record = await make_key()
    async with httpx.AsyncClient() as http:
        for i in range(200):
            headers = {} if i % 2 else {"authorization": f"Bearer lcm-random-{i}"}
            resp = await http.post(
                f"{base_url}lcm/proxy/openai/v1/chat/completions", json=CHAT, headers=headers
            )
            assert resp.status_code == 401
        # The server still answers a real call at once.
        ok = await http.post(
            f"{base_url}lcm/proxy/openai/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {record['key']}"},
        )
    assert ok.status_code == 200
    rows = await logs()
    assert [r["key_id"] for r in rows] == [record["id"]]
    _, body = await api("GET", "status")
    assert body["unauthenticated_requests"] == 200


@pytest.mark.parametrize("route", ["openai", "anthropic", "google"])
async def test_deeply_nested_json_is_a_400_in_the_providers_shape(base_url, make_key, route):
    record = await make_key()
    deep = "[" * 50_000 + "]" * 50_000
    headers = {
        "authorization": f"Bearer {record['key']}",
        "x-api-key": record["key"],
        "x-goog-api-key": record["key"],
        "content-type": "application/json",
    }
    path = {
        "openai": "v1/chat/completions",
        "anthropic": "v1/messages",
        "google": "v1beta/models/gemini-2.0-flash:generateContent",
    }[route]
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{base_url}lcm/proxy/{route}/{path}", content=deep, headers=headers)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert "nested too deeply" in error["message"]


async def test_deep_json_on_the_api_as_text(jp_fetch):
    resp = await jp_fetch(
        "lcm", "api", "keys", method="POST", body="[" * 50_000 + "]" * 50_000, raise_error=False
    )
    assert resp.code == 400
    assert "nested too deeply" in json.loads(resp.body)["error"]["message"]


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE"])
async def test_methods_the_proxy_does_not_take_get_a_json_405(base_url, method):
    async with httpx.AsyncClient() as http:
        resp = await http.request(method, f"{base_url}lcm/proxy/anthropic/v1/messages")
    assert resp.status_code == 405
    if method != "HEAD":
        body = resp.json()
        assert body["type"] == "error" and body["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("bad", ["sk-abc\r\nX-Evil: 1", "sk-a\nbc", "sk abc", "sk-\x00abc"])
async def test_a_provider_key_that_cannot_go_in_a_header_is_refused(api, bad):
    status, body = await api("POST", "keys", {"name": "k", "provider_api_keys": {"openai": bad}})
    assert status == 400 and body["error"]["param"] == "provider_api_keys"
    assert "line breaks" in body["error"]["message"]


async def test_keys_in_any_query_form_never_reach_the_provider(base_url, make_key, sim):
    record = await make_key()
    url = (
        f"{base_url}lcm/proxy/google/v1beta/models/gemini-2.0-flash:generateContent"
        f"?key={record['key']}&api_key=sk-secret1&KEY=sk-secret2&access_token=t&alt=json"
    )
    async with httpx.AsyncClient() as http:
        resp = await http.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert resp.status_code == 200
    forwarded = sim.requests[-1]
    assert forwarded.query == "alt=json"
    assert record["key"] not in str(forwarded.headers) and "sk-secret" not in forwarded.path


async def test_a_non_streamed_call_whose_client_left_is_still_booked(
    base_url, make_key, lcm, logs, sim
):
    record = await make_key(monthly_budget_usd=5.0)
    sim.latency = 0.5  # the provider is thinking when the client gives up
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                f"{base_url}lcm/proxy/openai/v1/chat/completions",
                json=CHAT,
                headers={"authorization": f"Bearer {record['key']}"},
                timeout=0.2,
            )
    await until(lambda: lcm.pipeline._inflight == set(), timeout=10)
    sim.latency = 0
    (row,) = await logs()
    assert row["status"] == 499 and row["cost_usd"] > 0 and row["output_tokens"] > 0
    state = await lcm.counters.budget(key_id=record["id"], month=current_month())
    assert state.spent == to_units(row["cost_usd"]) and state.reserved == 0


async def test_the_first_refusal_for_budget_raises_the_critical_alert_once(
    base_url, make_key, lcm, api
):
    record = await make_key(monthly_budget_usd=1.0, budget_alert_thresholds=[100])
    await lcm.counters.set_spent(key_id=record["id"], month=current_month(), spent=to_units(0.9999))
    client = openai_via(base_url, record["key"])
    for _ in range(3):
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(**CHAT, max_tokens=1000)
    await lcm.quiesce()
    _, body = await api("GET", "alerts")
    (alert,) = body["alerts"]
    assert alert["threshold"] == 100 and alert["severity"] == "critical"
    assert "$1.00" in alert["message"]


async def test_revocation_reaches_the_proxy_within_a_second(base_url, make_key, lcm, api):
    record = await make_key()
    client = openai_via(base_url, record["key"])
    await client.chat.completions.create(**CHAT)
    # Revoked behind this server's back, as another server sharing the database would.
    from lcm_jupyter.store.keys import revoke_key

    await lcm.store.run(revoke_key, lcm.box, record["id"])
    await asyncio.sleep(lcm.settings.key_cache_seconds)  # the promise under test
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(**CHAT)
    assert PROVIDER_KEY  # the provider key was never needed to tell


def test_the_database_is_created_readable_by_its_owner_only(tmp_path) -> None:
    import stat

    from lcm_jupyter.store.db import open_database

    path = tmp_path / "sub" / "lcm.sqlite3"
    open_database(path).conn.close()
    for name in ("lcm.sqlite3", "lcm.sqlite3-wal", "lcm.sqlite3-shm"):
        file = path.parent / name
        if file.exists():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, name


def test_opening_a_connection_keeps_the_locks_of_the_others(tmp_path) -> None:
    # Closing any descriptor of a database file drops every POSIX lock the process holds on
    # it. Were a new connection (a new thread's) to do that, another process closing its
    # own connection would find no reader left, think itself the last one and checkpoint
    # and delete the write-ahead log under this process's feet (seen as "disk I/O error"
    # and "file is not a database" with two servers on one file).
    import subprocess
    import sys

    from lcm_jupyter.store.db import connect, open_database

    path = tmp_path / "lcm.sqlite3"
    first = open_database(path)
    first.execute("SELECT count(*) FROM sqlite_master").fetchone()
    connect(path).conn.close()
    # What SQLite's closing connection tries: an exclusive lock on the readers' byte range.
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002)\n"
        "except OSError:\n    print('held')\nelse:\n    print('free')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "held"
    first.conn.close()
