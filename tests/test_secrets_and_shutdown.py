"""Secrets never reach logs or the upstream; stopping the server loses no log row."""

from __future__ import annotations

import contextlib
import logging
import sqlite3

import httpx

from .conftest import PROVIDER_KEY, openai_via, until


async def test_keys_are_never_logged(base_url, make_key, logs, caplog, sim, lcm_config):
    caplog.set_level(logging.DEBUG)
    record = await make_key()
    key = record["key"]
    url = f"{base_url}lcm/proxy/google/v1beta/models/gemini-2.0-flash:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    async with httpx.AsyncClient() as http:
        ok = await http.post(url, params={"key": key}, json=body)
        bad_json = await http.post(url, params={"key": key}, content=b"{nope")
        sim.inject_error(500)
        failed = await http.post(url, headers={"x-goog-api-key": key}, json=body)
    assert (ok.status_code, bad_json.status_code, failed.status_code) == (200, 400, 500)
    assert "key=" not in sim.requests[0].query  # stripped before forwarding
    rows = await logs()
    assert len(rows) == 3
    dump = "\n".join(sqlite3.connect(lcm_config["db_path"]).iterdump())
    # What the server side logged (the test's own HTTP client logs its URLs: not ours).
    server_log = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "lcm/proxy/google" in server_log  # the access log is in there
    for secret in (key, PROVIDER_KEY):
        assert secret not in server_log
        assert secret not in dump
        assert secret not in str(rows)


async def test_stopping_the_server_writes_every_queued_row(base_url, make_key, lcm, lcm_config):
    record = await make_key()
    client = openai_via(base_url, record["key"])
    ids = []
    for i in range(20):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"call {i}"}]
        )
        ids.append(raw.headers["x-lcm-request-id"])
    await lcm.stop()  # no flush first: stop itself must drain the writer
    db = sqlite3.connect(lcm_config["db_path"])
    logged = {row[0] for row in db.execute("SELECT id FROM proxy_logs")}
    assert logged == set(ids)


async def test_calls_in_flight_at_stop_finish_and_are_logged(base_url, make_key, lcm, sim):
    import asyncio

    record = await make_key()
    sim.chunk_delay = 0.1
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "stream while the server stops"}],
    }

    async def one() -> int:
        async with (
            httpx.AsyncClient() as http,
            http.stream(
                "POST",
                f"{base_url}lcm/proxy/openai/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {record['key']}"},
            ) as resp,
        ):
            return len([c async for c in resp.aiter_bytes()])

    calls = [asyncio.ensure_future(one()) for _ in range(5)]
    await until(lambda: len(sim.requests) == 5)  # all five are streaming now
    await lcm.stop()
    sim.chunk_delay = 0
    assert all(n > 0 for n in await asyncio.gather(*calls))
    db = sqlite3.connect(lcm.settings.db_path)
    rows = db.execute("SELECT status, cost_usd FROM proxy_logs").fetchall()
    assert len(rows) == 5 and all(s == 200 and c > 0 for s, c in rows)


async def test_calls_cancelled_by_a_stop_are_logged_with_a_status(base_url, make_key, lcm, sim):
    import asyncio

    record = await make_key()
    sim.latency = 2.0  # the provider has not answered when the server stops

    async def one() -> None:
        async with httpx.AsyncClient() as http:
            with contextlib.suppress(httpx.HTTPError):
                await http.post(
                    f"{base_url}lcm/proxy/openai/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                    headers={"authorization": f"Bearer {record['key']}"},
                )

    call = asyncio.ensure_future(one())
    await until(lambda: sim.requests)  # the provider has the call, and is slow to answer
    await lcm.pipeline.drain(timeout=0.05)  # what a stop does once its grace time is over
    assert await lcm.flush_logs()
    db = sqlite3.connect(lcm.settings.db_path)
    rows = db.execute("SELECT status, error FROM proxy_logs").fetchall()
    assert rows == [(503, "The server stopped before the call completed.")]
    sim.latency = 0
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
