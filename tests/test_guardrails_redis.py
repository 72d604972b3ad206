"""Guardrails on a real Redis shared by several server processes, and Redis going away."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from lcm_jupyter.cli import _create_key
from lcm_jupyter.core.budget import current_month, to_units
from lcm_jupyter.core.settings import Settings

from .conftest import PROVIDER_KEY, openai_via
from .servers import free_port, server_env, start_server, stop, wait_ready


@pytest.fixture
def lcm_config(lcm_config, redis_server, redis_url):
    lcm_config["redis_url"] = redis_server.url
    return lcm_config


def _chat(i: int) -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"call {i}"}],
        "max_tokens": 30,
    }


async def test_redis_outage_keeps_calls_flowing_and_counters_are_rebuilt(
    base_url, make_key, lcm, logs, redis_server
):
    record = await make_key(monthly_budget_usd=10.0, rate_limit_rpm=100)
    client = openai_via(base_url, record["key"])
    for i in range(3):
        await client.chat.completions.create(**_chat(i))
    assert lcm.counters.name == "redis"

    redis_server.stop()
    started = time.monotonic()
    for i in range(3, 6):
        await client.chat.completions.create(**_chat(i))  # still served
    assert time.monotonic() - started < 3  # and not stalled waiting on Redis
    assert lcm.counters.degraded
    assert await lcm.quiesce()  # each call is booked just after its answer went out
    memory = await lcm.counters.fallback.budget(key_id=record["id"], month=current_month())

    redis_server.start()
    for _ in range(100):
        if not lcm.counters.degraded:
            break
        await asyncio.sleep(0.1)
    assert not lcm.counters.degraded, "the breaker did not close after Redis came back"
    for i in range(6, 8):
        await client.chat.completions.create(**_chat(i))

    rows = await logs()
    assert len(rows) == 8 and all(r["status"] == 200 for r in rows)
    logged = sum(to_units(r["cost_usd"]) for r in rows)
    redis_state = await lcm.counters.primary.budget(key_id=record["id"], month=current_month())
    # One failover: connections pooled before the outage are not reused to fail again.
    assert lcm.counters.failovers == 1 and not lcm.counters.degraded
    assert redis_state.spent == logged  # rebuilt from the logs, then counted on
    assert memory.spent == sum(to_units(r["cost_usd"]) for r in rows[2:])  # the first six


async def test_sliding_window_holds_across_server_processes(sim, redis_url, tmp_path):
    env = server_env(tmp_path, LCM_REDIS_URL=redis_url, LCM_OPENAI_BASE_URL=sim.url)
    settings = Settings(
        db_path=tmp_path / "shared.sqlite3", secret_key_file=tmp_path / "secret.key"
    )
    _, key = _create_key(
        settings, name="shared", rate_limit_rpm=7, provider_api_keys={"openai": PROVIDER_KEY}
    )
    ports = [free_port() for _ in range(3)]
    procs = [start_server(p, env, tmp_path) for p in ports]
    try:
        urls = [f"http://127.0.0.1:{p}/" for p in ports]
        await asyncio.gather(*(wait_ready(u, p) for u, p in zip(urls, procs, strict=True)))

        async def call(i: int) -> int:
            async with httpx.AsyncClient(timeout=10) as http:
                resp = await http.post(
                    urls[i % 3] + "lcm/proxy/openai/v1/chat/completions",
                    json=_chat(i),
                    headers={"authorization": f"Bearer {key}"},
                )
                return resp.status_code

        statuses = await asyncio.gather(*(call(i) for i in range(20)))
        assert statuses.count(200) == 7  # one window for all three processes
        assert statuses.count(429) == 13
    finally:
        stop(procs)


async def test_bookings_in_flight_when_redis_hangs_count_once(
    base_url, make_key, lcm, logs, redis_server, sim
):
    record = await make_key(monthly_budget_usd=10.0)
    client = openai_via(base_url, record["key"])
    await client.chat.completions.create(**_chat(0))
    sim.latency = 0.3  # admitted on Redis, then Redis hangs while they are upstream
    calls = [asyncio.ensure_future(client.chat.completions.create(**_chat(i))) for i in range(6)]
    await asyncio.sleep(0.15)
    redis_server.pause()
    try:
        await asyncio.gather(*calls)
        assert await lcm.quiesce()
        assert lcm.counters.degraded
        rows = await logs()
        logged = sum(to_units(r["cost_usd"]) for r in rows)
        memory = await lcm.counters.fallback.budget(key_id=record["id"], month=current_month())
        assert memory.spent == logged  # none lost, none twice
    finally:
        sim.latency = 0
        redis_server.resume()
    for _ in range(100):
        if not lcm.counters.degraded:
            break
        await asyncio.sleep(0.1)
    await client.chat.completions.create(**_chat(9))
    assert await lcm.quiesce()
    rows = await logs()
    state = await lcm.counters.primary.budget(key_id=record["id"], month=current_month())
    assert state.spent == sum(to_units(r["cost_usd"]) for r in rows)
    assert state.reserved == 0  # the hung reservations were dropped at the switch back


async def test_reservations_in_flight_survive_a_failover(
    base_url, make_key, lcm, redis_server, sim
):
    from lcm_jupyter.core.budget import reservation_units
    from lcm_jupyter.core.catalog import default_table

    price = default_table().resolve("gpt-4o-mini")
    per_call = reservation_units(price, _chat(0), default_output_tokens=4096, unpriced_units=0)
    record = await make_key(monthly_budget_usd=per_call * 10 / 10**10)
    client = openai_via(base_url, record["key"])

    async def one(i):
        try:
            await client.chat.completions.create(**_chat(0))
            return "ok"
        except openai.RateLimitError:
            return "refused"

    sim.latency = 0.6
    first = [asyncio.ensure_future(one(i)) for i in range(10)]  # reserved in Redis
    await asyncio.sleep(0.2)
    redis_server.pause()
    try:
        second = [asyncio.ensure_future(one(i)) for i in range(10)]  # now against memory
        results = await asyncio.gather(*first, *second)
    finally:
        sim.latency = 0
        redis_server.resume()
    assert lcm.counters.degraded
    assert results.count("ok") == 10  # the memory store knew the ten in flight
