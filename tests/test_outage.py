"""Limits never fail open: the breaker's states, and the shared database while Redis is away.

- `DatabaseCounters`, two "servers" (two stores on one database file): budgets and rate
  windows hold exactly across them, a settled call counts once (in its hold until its row
  is written, then in the log), an abandoned hold expires.
- The breaker against a real Redis that fails on cue: CLOSED -> OPEN -> HALF_OPEN ->
  CLOSED, each store rebuilt from the log before it answers.
- Two real Jupyter servers sharing one database and one Redis that is killed under load:
  no budget overspent, no rate limit exceeded (`on_redis_outage = "shared"`, the default).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from lcm_jupyter.cli import _create_key
from lcm_jupyter.core.budget import current_month, reservation_units, to_units
from lcm_jupyter.core.catalog import default_table
from lcm_jupyter.core.settings import Settings
from lcm_jupyter.server.breaker import FailoverCounters, State
from lcm_jupyter.store import counters_db
from lcm_jupyter.store.counters_db import DatabaseCounters
from lcm_jupyter.store.counters_memory import MemoryCounters
from lcm_jupyter.store.logwriter import LogWriter
from lcm_jupyter.store.store import Store

from .conftest import PROVIDER_KEY
from .servers import free_port, server_env, start_server, stop, wait_ready
from .test_counters import FakeClock

MONTH = current_month()


@pytest.fixture
def two_servers(tmp_path):
    """Two stores on one database file: what two server processes share."""
    path = tmp_path / "shared.sqlite3"
    stores = [Store(path), Store(path)]
    clock = FakeClock()
    counters = [
        DatabaseCounters(s, server_id=n, clock=clock, handover_wait=0.2)
        for s, n in zip(stores, "ab", strict=True)
    ]
    yield counters, path, clock
    for store in stores:
        store.close()


async def test_a_server_on_the_database_refuses_limits_while_another_counts_on_redis(
    two_servers,
):
    """Redis away for server a alone: b still counts in Redis, which a cannot see, so a
    deciding alone would admit a whole budget beside b's. a waits for b to leave Redis (in a
    whole outage it does at once), then refuses calls with limits (503, as `refuse` does)
    until b stops counting on Redis or its word is over 3 s old."""
    (a, b), _, clock = two_servers
    limits = dict(rpm=10, month=MONTH, budget=1_000, reserve=100)
    await b.note_redis(True)
    refused = await a.admit(key_id=1, call_id="c1", **limits)
    assert (refused.allowed, refused.reason) == (False, "unavailable")

    async def b_leaves_redis_soon():
        await asyncio.sleep(0.05)
        await b.note_redis(False)

    # b leaving Redis while a waits: a decides then, and admits.
    waited, _ = await asyncio.gather(
        a.admit(key_id=1, call_id="c0", **limits), b_leaves_redis_soon()
    )
    assert waited.allowed
    await a.release(key_id=1, call_id="c0", month=MONTH)
    await b.note_redis(True)
    await a.note_redis(True)  # its own word never stops itself
    await b.note_redis(False)
    assert (await a.admit(key_id=1, call_id="c2", **limits)).allowed
    await b.note_redis(True)
    assert not (await a.admit(key_id=1, call_id="c3", **limits)).allowed
    clock.now += counters_db.REDIS_SEEN_SECONDS + 0.01  # b gone quiet: Redis gone for all
    admitted = await a.admit(key_id=1, call_id="c4", **limits)
    assert admitted.allowed and admitted.reserved == 200  # c2's hold and c4's


async def test_a_budget_holds_exactly_across_servers(two_servers):
    (a, b), _, _ = two_servers

    async def admit(i: int):
        counters = (a, b)[i % 2]
        return await counters.admit(
            key_id=1, call_id=f"c{i}", rpm=None, month=MONTH, budget=1000, reserve=100
        )

    results = await asyncio.gather(*(admit(i) for i in range(50)))
    admitted = [r for r in results if r.allowed]
    assert len(admitted) == 10
    assert {r.reason for r in results if not r.allowed} == {"budget"}
    assert (await a.budget(key_id=1, month=MONTH)).reserved == 1000


async def test_a_rate_window_holds_exactly_across_servers(two_servers):
    (a, b), _, clock = two_servers
    results = await asyncio.gather(
        *(
            (a, b)[i % 2].admit(
                key_id=2, call_id=f"r{i}", rpm=7, month=MONTH, budget=None, reserve=0
            )
            for i in range(20)
        )
    )
    assert sum(r.allowed for r in results) == 7
    refused = [r for r in results if not r.allowed]
    assert all(r.reason == "rate_limit" and r.rate.reset_seconds == 60 for r in refused)
    clock.now += 59.5
    again = await b.admit(key_id=2, call_id="late", rpm=7, month=MONTH, budget=None, reserve=0)
    assert not again.allowed and again.rate.reset_seconds == pytest.approx(0.5)
    clock.now += 0.5  # the window has slid past all seven
    assert (
        await b.admit(key_id=2, call_id="late", rpm=7, month=MONTH, budget=None, reserve=0)
    ).allowed


async def test_a_settled_call_counts_once_before_and_after_its_row_is_written(two_servers):
    (a, b), path, _ = two_servers
    assert (
        await a.admit(key_id=3, call_id="x", rpm=None, month=MONTH, budget=500, reserve=400)
    ).allowed
    state = await a.settle(key_id=3, call_id="x", month=MONTH, cost=300)
    assert (state.spent, state.reserved) == (300, 0)
    # The other server sees the settled spend before the row exists...
    assert not (
        await b.admit(key_id=3, call_id="y", rpm=None, month=MONTH, budget=500, reserve=201)
    ).allowed
    # ...and once the row is written, the log counts it, not the hold too.
    writer = LogWriter(path)
    writer.start()
    writer.submit(
        {"id": "x", "key_id": 3, "cost_usd": 300 / 10**10, "status": 200,
         "created_at": f"{MONTH}-01T00:00:01.000Z"}
    )  # fmt: skip
    assert await asyncio.to_thread(writer.flush)
    writer.close()
    state = await b.budget(key_id=3, month=MONTH)
    assert (state.spent, state.reserved) == (300, 0)
    assert (
        await b.admit(key_id=3, call_id="y", rpm=None, month=MONTH, budget=500, reserve=200)
    ).allowed


async def test_an_abandoned_hold_expires_and_a_release_frees_it(two_servers):
    (a, b), _, clock = two_servers
    await a.admit(key_id=4, call_id="dead", rpm=None, month=MONTH, budget=100, reserve=100)
    assert not (
        await b.admit(key_id=4, call_id="n", rpm=None, month=MONTH, budget=100, reserve=1)
    ).allowed
    clock.now += counters_db.RESERVATION_TTL_SECONDS + 1
    assert (
        await b.admit(key_id=4, call_id="n", rpm=None, month=MONTH, budget=100, reserve=60)
    ).allowed
    await b.release(key_id=4, call_id="n", month=MONTH)
    assert (await a.budget(key_id=4, month=MONTH)).reserved == 0


# --- the breaker against a Redis that fails on cue ------------------------------------------


class OnCue:
    """Real Redis counters that fail, on cue, as a dead Redis would."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.down = False
        self.name = inner.name

    def __getattr__(self, op: str):
        target = getattr(self.inner, op)

        async def call(**kwargs):
            if self.down:
                raise RedisConnectionError("down on cue")
            return await target(**kwargs)

        return call

    async def ping(self) -> bool:
        if self.down:
            raise RedisConnectionError("down on cue")
        return await self.inner.ping()


async def test_the_breaker_moves_through_its_states_and_rebuilds_each_store(redis_url):
    from lcm_jupyter.store.counters_redis import RedisCounters

    redis = OnCue(RedisCounters(redis_url, timeout=0.5))
    memory = MemoryCounters()
    rebuilt = []

    async def resync(store) -> None:
        rebuilt.append(store)
        await store.set_spent(key_id=1, month=MONTH, spent=1000)  # what the log says

    breaker = FailoverCounters(redis, memory, resync=resync, probe_interval=0.05)
    try:
        ok = await breaker.admit(
            key_id=1, call_id="a", rpm=None, month=MONTH, budget=10**6, reserve=5
        )
        assert ok.allowed and breaker.state is State.CLOSED and rebuilt == []
        redis.down = True
        state = await breaker.settle(key_id=1, call_id="a", month=MONTH, cost=5)
        assert breaker.state is State.OPEN and rebuilt == [memory]
        assert state.spent == 1005  # answered by the fallback, rebuilt from the log first
        assert breaker.name == "memory (redis down)"
        redis.down = False
        for _ in range(200):
            if breaker.state is State.CLOSED:
                break
            await asyncio.sleep(0.01)
        assert breaker.state is State.CLOSED and rebuilt == [memory, redis]
        assert [(a.value, b.value) for a, b, _ in breaker.transitions] == [
            ("closed", "open"),
            ("open", "half-open"),
            ("half-open", "closed"),
        ]
        assert (await breaker.budget(key_id=1, month=MONTH)).spent == 1000
    finally:
        await breaker.close()


# --- two servers, one database, one Redis that dies --------------------------------------------


def _chat(i: int) -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"question {i}"}],
        "max_tokens": 20,
    }


async def test_two_servers_keep_their_limits_exactly_while_redis_is_down(
    sim, redis_server, redis_url, tmp_path
):
    env = server_env(
        tmp_path, LCM_REDIS_URL=redis_url, LCM_OPENAI_BASE_URL=sim.url, LCM_REDIS_TIMEOUT="0.2"
    )
    settings = Settings(
        db_path=tmp_path / "shared.sqlite3", secret_key_file=tmp_path / "secret.key"
    )
    card = default_table().resolve("gpt-4o-mini")
    per_call = reservation_units(card, _chat(0), default_output_tokens=4096, unpriced_units=0)
    budgeted, budget_key = _create_key(
        settings, name="budget", monthly_budget_usd=per_call * 10 / 10**10,
        provider_api_keys={"openai": PROVIDER_KEY},
    )  # fmt: skip
    _, rated_key = _create_key(
        settings, name="rate", rate_limit_rpm=12, provider_api_keys={"openai": PROVIDER_KEY}
    )
    ports = [free_port() for _ in range(2)]
    procs = [start_server(p, env, tmp_path) for p in ports]
    try:
        urls = [f"http://127.0.0.1:{p}/" for p in ports]
        await asyncio.gather(*(wait_ready(u, p) for u, p in zip(urls, procs, strict=True)))
        redis_server.stop()  # killed before the calls: both servers must notice and agree

        async def call(i: int, key: str) -> int:
            async with httpx.AsyncClient(timeout=20) as http:
                resp = await http.post(
                    urls[i % 2] + "lcm/proxy/openai/v1/chat/completions",
                    json=_chat(i),
                    headers={"authorization": f"Bearer {key}"},
                )
                return resp.status_code

        budget_calls = await asyncio.gather(*(call(i, budget_key) for i in range(30)))
        rate_calls = await asyncio.gather(*(call(i, rated_key) for i in range(30)))
        # Ten worst cases fit; a call that ends costs less than it held, so a late call may
        # fit in what the ended ones left: how many are answered depends on when each ends
        # (more than ten on a fast machine): what holds is that none is spent past the budget.
        assert set(budget_calls) == {200, 429}
        assert rate_calls.count(200) == 12 and rate_calls.count(429) == 18
        # What was spent, as the log says: never over the budget.
        async with httpx.AsyncClient() as http:
            logs = (
                await http.get(
                    f"{urls[0]}lcm/api/logs",
                    params={"key_id": budgeted.id, "limit": 100, "token": "t"},
                )
            ).json()["logs"]
        spent = sum(to_units(r["cost_usd"]) for r in logs if r["status"] == 200)
        assert spent <= per_call * 10
    finally:
        redis_server.start()
        stop(procs)


# --- the Guard, over a Redis that fails on cue, with the shared database behind it ---------


async def test_the_guard_keeps_a_budget_exact_through_a_redis_outage_and_back(redis_url, tmp_path):
    """Calls admitted on Redis, still in flight when it dies, hold their worst case in the
    database the breaker falls back to; settled there, then on Redis again when it returns:
    the budget admits exactly what fits, and every figure ends where the log says."""
    from lcm_jupyter.core.budget import to_usd
    from lcm_jupyter.core.errors import BudgetExceeded
    from lcm_jupyter.core.keyspec import validate_key_fields
    from lcm_jupyter.server.services import LCMServices
    from lcm_jupyter.store.keys import create_key

    settings = Settings(
        db_path=tmp_path / "lcm.sqlite3",
        secret_key_file=tmp_path / "secret.key",
        redis_url=redis_url,
        on_redis_outage="shared",
    )
    services = LCMServices(settings)
    await services.start()
    breaker = services.counters
    redis = breaker.primary = OnCue(breaker.primary)
    try:
        card = default_table().resolve("gpt-4o-mini")
        body = _chat(0)
        reserve = reservation_units(card, body, default_output_tokens=4096, unpriced_units=0)
        # Room for four worst cases, to the unit.
        fields = validate_key_fields(
            {"name": "b", "monthly_budget_usd": to_usd(reserve * 4)}, partial=False
        )
        key, _ = await services.store.run(create_key, services.box, fields)
        month = current_month()
        created = f"{month}-02T00:00:00.000Z"

        async def admit(call_id: str):
            return await services.guard.admit(key, call_id, card, body, model="gpt-4o-mini")

        def row(call_id: str, cost: int):
            return lambda: services.log_writer.submit(
                {"id": call_id, "key_id": key.id, "cost_usd": cost / 10**10, "status": 200,
                 "created_at": created, "model": "gpt-4o-mini"}
            )  # fmt: skip

        first, second = await admit("c1"), await admit("c2")  # on Redis
        assert breaker.state is State.CLOSED
        redis.down = True
        third = await admit("c3")  # trips: the database now holds c1 and c2 as well
        assert breaker.state is State.OPEN
        assert (await breaker.budget(key_id=key.id, month=month)).reserved == 3 * reserve
        await admit("c4")
        with pytest.raises(BudgetExceeded):
            await admit("c5")  # four worst cases held: nothing more fits
        for hold, cost in ((first, 1000), (second, 2000), (third, 3000)):
            await services.guard.settle(hold, cost / 10**10, row(hold.call_id, cost))
        state = await breaker.budget(key_id=key.id, month=month)
        assert (state.spent, state.reserved) == (6000, reserve)  # c4 still in flight
        redis.down = False
        for _ in range(500):
            if breaker.state is State.CLOSED:
                break
            await asyncio.sleep(0.01)
        assert breaker.state is State.CLOSED
        # Redis rebuilt from the log (6000) with the call still in flight held again.
        state = await breaker.budget(key_id=key.id, month=month)
        assert (state.spent, state.reserved) == (6000, reserve)
    finally:
        await services.stop()
