"""What the breaker carries across a switch of store, with two servers on one database and one
Redis that dies or hangs on cue (issue 12: limits never fail open).

- Rate windows: the store taking over holds every admission of the last minute (this
  server's, the log's, and the store left when it can be read), in either direction, for
  each `on_redis_outage` policy: a key called through an outage is admitted its rpm once a
  minute, not once per store.
- Spend: a rebuild from the log (a reconcile, the return to Redis) keeps the calls other
  servers settled on Redis and have not logged yet, and counts none twice.

Each server is an `LCMServices` (its own log writer, breaker and Guard) on the same SQLite
file and the same real Redis; the Guard is called directly (no HTTP), so each call's place in
the sequence is exact. Nothing sleeps in place of a condition: the tests poll the breaker's
state.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from lcm_jupyter.core.budget import current_month, to_usd
from lcm_jupyter.core.errors import LimitsUnavailable, RateLimited
from lcm_jupyter.core.keyspec import validate_key_fields
from lcm_jupyter.core.settings import Settings
from lcm_jupyter.server.breaker import FailoverCounters, State
from lcm_jupyter.server.services import LCMServices
from lcm_jupyter.store.counters_db import DatabaseCounters
from lcm_jupyter.store.counters_memory import MemoryCounters
from lcm_jupyter.store.counters_redis import RedisCounters
from lcm_jupyter.store.keys import create_key
from lcm_jupyter.store.store import Store
from lcm_jupyter.store.timeutil import to_iso

from .test_counters import FakeClock

MONTH = current_month()


class Cue:
    """Whether "Redis" is down, for every server at once (or for one, with `only`)."""

    def __init__(self) -> None:
        self.down = False


class Flaky:
    """A server's real Redis counters, failing on cue as a dead or hung Redis would."""

    def __init__(self, inner: Any, cue: Cue) -> None:
        self.inner = inner
        self.cue = cue
        self.name = inner.name

    def __getattr__(self, op: str):
        target = getattr(self.inner, op)

        async def call(**kwargs):
            if self.cue.down:
                raise RedisConnectionError("down on cue")
            return await target(**kwargs)

        return call

    async def ping(self) -> bool:
        if self.cue.down:
            raise RedisConnectionError("down on cue")
        return await self.inner.ping()

    async def reconnect(self) -> None:
        await self.inner.reconnect()

    async def close(self) -> None:
        await self.inner.close()


def _breaker(server: LCMServices) -> FailoverCounters:
    assert isinstance(server.counters, FailoverCounters)
    return server.counters


class Cluster:
    """`n` servers on one database and one Redis; each server's Redis fails on its cue."""

    def __init__(self, tmp_path, redis_url: str, policy: str, n: int = 2) -> None:
        self.settings = Settings(
            db_path=tmp_path / "lcm.sqlite3",
            secret_key_file=tmp_path / "secret.key",
            redis_url=redis_url,
            on_redis_outage=policy,
        )
        self.redis_url = redis_url
        self.servers = [LCMServices(self.settings) for _ in range(n)]
        self.cues = [Cue() for _ in range(n)]
        self.ids = 0

    async def start(self) -> None:
        for server, cue in zip(self.servers, self.cues, strict=True):
            await server.start()
            breaker = _breaker(server)
            breaker.primary = Flaky(breaker.primary, cue)
            breaker._probe_interval = 0.01

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()

    async def key(self, **fields):
        server = self.servers[0]
        checked = validate_key_fields({"name": "k", **fields}, partial=False)
        key, _ = await server.store.run(create_key, server.box, checked)
        return key

    def kill(self, *which: int) -> None:
        for i in which or range(len(self.cues)):
            self.cues[i].down = True

    async def restart_redis(self, *, empty: bool) -> None:
        """Redis back (restarted empty after a kill, or with its data after a pause); wait
        until every server has switched back."""
        if empty:
            with redis.Redis.from_url(self.redis_url) as client:
                client.flushdb()
        for cue in self.cues:
            cue.down = False
        for _ in range(1000):
            if all(_breaker(s).state is State.CLOSED for s in self.servers):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the breakers did not close")

    async def call(self, i: int, key, *, finish: bool = True, cost: float = 0.0):
        """Admit a call on server `i`: its hold, or None when refused. `finish`: the call
        ends at once and its row is written (else it stays in flight)."""
        server = self.servers[i]
        self.ids += 1
        call_id = f"s{i}-c{self.ids}"
        try:
            hold = await server.guard.admit(key, call_id, None, None, metered=False)
        except (RateLimited, LimitsUnavailable):
            return None
        if finish:
            await self.finish(i, hold, cost)
        return hold

    async def finish(self, i: int, hold, cost: float = 0.0, *, log: bool = True) -> dict:
        """Settle the call; its row written now (`log`) or returned to write later."""
        server = self.servers[i]
        row = {
            "id": hold.call_id,
            "key_id": hold.key.id,
            "cost_usd": cost,
            "status": 200,
            "ttfb_ms": 5.0,
            "model": "gpt-4o-mini",
            "created_at": to_iso(datetime.now(timezone.utc)),
        }
        record = (lambda: server.log_writer.submit(row)) if log else (lambda: None)
        await server.guard.settle(hold, cost, record)
        if log:
            assert await server.flush_logs()
        return row

    async def admitted(self, key, attempts: int, servers=(0, 1)) -> int:
        got = 0
        for n in range(attempts):
            got += await self.call(servers[n % len(servers)], key) is not None
        return got


@pytest.fixture
def cluster_of(tmp_path, redis_url, jp_asyncio_loop):
    made = []

    async def make(policy: str, n: int = 2) -> Cluster:
        cluster = Cluster(tmp_path, redis_url, policy, n)
        made.append(cluster)
        await cluster.start()
        return cluster

    yield make
    for cluster in made:
        jp_asyncio_loop.run_until_complete(cluster.stop())


# --- rate windows across the switch ------------------------------------------------------------


async def test_shared_two_servers_admit_the_rpm_once_through_a_kill_and_back(cluster_of):
    """Before the kill: server 0's calls finished and logged, server 1's still in flight.
    Each store that takes over knows all of them: the minute admits exactly its rpm."""
    c = await cluster_of("shared")
    key = await c.key(rate_limit_rpm=10)
    for _ in range(4):
        assert await c.call(0, key)
    in_flight = [await c.call(1, key, finish=False) for _ in range(3)]
    assert all(in_flight)
    c.kill()  # both servers switch to the shared database at their next call
    assert await c.admitted(key, 20) == 3  # 10 - the 7 admitted on Redis this minute
    assert all(_breaker(s).state is State.OPEN for s in c.servers)
    for hold in in_flight:
        await c.finish(1, hold)
    await c.restart_redis(empty=True)  # killed: it comes back with nothing
    assert await c.admitted(key, 10) == 0  # Redis got the database's window back


async def test_shared_a_hung_redis_keeps_its_window_and_gets_the_outages(cluster_of):
    c = await cluster_of("shared")
    key = await c.key(rate_limit_rpm=10)
    for i in range(5):
        assert await c.call(i % 2, key)
    c.kill()
    assert await c.admitted(key, 10) == 5
    await c.restart_redis(empty=False)  # paused: back with its 5, plus the outage's 5
    assert await c.admitted(key, 10) == 0


async def test_local_each_server_starts_its_memory_window_from_the_minute(cluster_of):
    """`local`: each server counts alone while Redis is away, but from the minute's
    admissions (its own and the logged ones), not from zero; and Redis gets them all back."""
    c = await cluster_of("local")
    key = await c.key(rate_limit_rpm=10)
    for i in range(6):
        assert await c.call(i % 2, key)
    c.kill()
    # Both switch to memory now, each with a call still in flight.
    first = [await c.call(i, key, finish=False) for i in (0, 1)]
    assert all(first)
    # Each memory window started at 6: 4 on each server (n servers: at most n x rpm, and
    # what one server logs before the other switches counts on both).
    assert await c.admitted(key, 10, servers=(0,)) == 3
    assert await c.admitted(key, 10, servers=(1,)) == 3
    for i, hold in enumerate(first):
        await c.finish(i, hold)
    await c.restart_redis(empty=True)
    assert await c.admitted(key, 10) == 0  # 14 in the minute: Redis knows every one


async def test_refuse_redis_comes_back_with_the_minute_it_lost(cluster_of):
    c = await cluster_of("refuse")
    key = await c.key(rate_limit_rpm=10)
    for i in range(6):
        assert await c.call(i % 2, key)
    c.kill()
    assert await c.admitted(key, 4) == 0  # refused while Redis is away
    await c.restart_redis(empty=True)
    assert await c.admitted(key, 10) == 4  # not 10: the 6 before the kill still count


# --- spend: a rebuild never erases another server's settlements ---------------------------------


async def test_a_reconcile_keeps_what_another_server_settled_and_has_not_logged(cluster_of):
    c = await cluster_of("shared")
    key = await c.key(monthly_budget_usd=1.0)
    costs = [0.00001 * (i + 1) for i in range(5)]
    pending = []
    for i, cost in enumerate(costs):
        hold = await c.call(i % 2, key, finish=False)
        if i % 2:  # server 1 settled on Redis; its rows are still queued
            pending.append(await c.finish(1, hold, cost, log=False))
        else:
            await c.finish(0, hold, cost)
    report = await c.servers[0].reconcile()
    state = await c.servers[0].counters.budget(key_id=key.id, month=MONTH)
    assert state.spent == sum(round(x * 10**10) for x in costs)  # nothing erased
    (row,) = [r for r in report["keys"] if r["key_id"] == key.id]
    assert row["drift_usd"] == 0 and row["logged_usd"] == to_usd(
        sum(round(x * 10**10) for x in costs[::2])
    )
    # The rows arrive: the log counts them now, the counter not twice.
    for row in pending:
        c.servers[1].log_writer.submit(row)
    assert await c.servers[1].flush_logs()
    await c.servers[0].reconcile()
    assert (await c.servers[0].counters.budget(key_id=key.id, month=MONTH)).spent == state.spent


async def test_a_return_to_redis_keeps_what_another_server_settled_there(cluster_of):
    """The chaos suite's case: server 0 loses Redis alone and comes back (rebuilding the
    shared counter) while server 1 settles calls on Redis whose rows are not written yet.
    Meanwhile server 0 refuses calls with limits: server 1 still counts on Redis, which the
    database cannot see, and deciding alone there would admit a budget of its own."""
    c = await cluster_of("shared")
    key = await c.key(monthly_budget_usd=1.0)
    assert await c.call(0, key, cost=0.00002)
    c.kill(0)
    assert await c.call(0, key, cost=0.00003) is None  # refused on the database
    assert _breaker(c.servers[0]).state is State.OPEN
    hold = await c.call(1, key, finish=False)
    pending = await c.finish(1, hold, 0.00005, log=False)  # on Redis, not logged
    c.cues[0].down = False
    for _ in range(1000):
        if _breaker(c.servers[0]).state is State.CLOSED:
            break
        await asyncio.sleep(0.01)
    assert _breaker(c.servers[0]).state is State.CLOSED
    state = await c.servers[1].counters.budget(key_id=key.id, month=MONTH)
    assert state.spent == 200_000 + 500_000  # nothing erased, nothing twice
    c.servers[1].log_writer.submit(pending)
    assert await c.servers[1].flush_logs()
    report = await c.servers[1].reconcile()
    (row,) = [r for r in report["keys"] if r["key_id"] == key.id]
    assert row["drift_usd"] == 0 and row["counter_usd"] == row["logged_usd"] == to_usd(700_000)


# --- the stores' own operations -------------------------------------------------------------


async def test_admissions_cross_stores_by_age_and_once_per_call(redis_url, tmp_path):
    clock = FakeClock()
    store = Store(tmp_path / "db.sqlite3")
    stores = [
        MemoryCounters(clock=clock),
        RedisCounters(redis_url, timeout=0.5, clock=clock),
        DatabaseCounters(store, clock=clock),
    ]
    try:
        for counters in stores:
            assert (await counters.admit(
                key_id=1, call_id="own", rpm=3, month=MONTH, budget=None, reserve=0
            )).allowed  # fmt: skip
            added = await counters.add_admissions(
                key_id=1, admissions=[("a", 50.0), ("b", 10.0), ("own", 1.0), ("old", 60.0)]
            )
            assert added == 2  # "own" is there already, "old" left the window
            assert await counters.add_admissions(key_id=1, admissions=[("a", 5.0)]) == 0
            window = dict(await counters.recent_admissions(key_id=1))
            assert window == {"a": 50.0, "b": 10.0, "own": 0.0}
            refused = await counters.admit(
                key_id=1, call_id="x", rpm=3, month=MONTH, budget=None, reserve=0
            )
            assert not refused.allowed and refused.rate.reset_seconds == pytest.approx(10.0)
            clock.now += 10.0  # "a" leaves: one place
            assert (await counters.admit(
                key_id=1, call_id="x", rpm=3, month=MONTH, budget=None, reserve=0
            )).allowed  # fmt: skip
            clock.now -= 10.0
    finally:
        await stores[1].close()
        store.close()


async def test_a_rebase_adds_the_settlements_made_since_its_read(redis_url):
    clock = FakeClock()
    for counters in (MemoryCounters(clock=clock), RedisCounters(redis_url, clock=clock)):
        try:
            await counters.settle(key_id=1, call_id="logged", month=MONTH, cost=100)
            await counters.settle(key_id=1, call_id="unlogged", month=MONTH, cost=20)
            seen = await counters.recent_settlements(key_id=1, month=MONTH)
            assert seen.costs == {"logged": 100, "unlogged": 20}
            await counters.settle(key_id=1, call_id="later", month=MONTH, cost=3)
            await counters.settle(key_id=1, call_id="excluded", month=MONTH, cost=4000)
            # The log has "logged" (100); "unlogged" the caller adds; "later" the store.
            old, new = await counters.rebase_spent(
                key_id=1, month=MONTH, base=120, since=seen, exclude=["excluded"]
            )
            assert (old, new) == (4123, 123)
            assert (await counters.budget(key_id=1, month=MONTH)).spent == 123
            # A mark from another store adds nothing.
            other = MemoryCounters(clock=clock)
            await other.settle(key_id=1, call_id="elsewhere", month=MONTH, cost=1)
            mark = await other.recent_settlements(key_id=1, month=MONTH)
            assert await counters.rebase_spent(key_id=1, month=MONTH, base=7, since=mark) == (
                123,
                7,
            )
        finally:
            await counters.close()


async def test_a_return_to_redis_keeps_the_reservations_of_calls_in_flight(cluster_of):
    """Server 0 is back on Redis first and admits a call; server 1's return (which forgets
    the reservations of calls that ended during the outage) must not forget that one's."""
    from lcm_jupyter.core.budget import reservation_units
    from lcm_jupyter.core.catalog import default_table

    card = default_table().resolve("gpt-4o-mini")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    reserve = reservation_units(card, body, default_output_tokens=4096, unpriced_units=0)
    c = await cluster_of("shared")
    key = await c.key(monthly_budget_usd=to_usd(reserve * 10))
    guard = [s.guard for s in c.servers]
    stale = await guard[1].admit(key, "before", card, body, model="gpt-4o-mini")  # on Redis
    c.kill()
    await c.finish(1, stale, 0.00001)  # settled in the database: its Redis hold is stale
    assert _breaker(c.servers[1]).state is State.OPEN
    assert await c.call(0, key)  # server 0 on the database too
    c.cues[0].down = False
    for _ in range(1000):
        if _breaker(c.servers[0]).state is State.CLOSED:
            break
        await asyncio.sleep(0.01)
    live = await guard[0].admit(key, "live", card, body, model="gpt-4o-mini")  # on Redis
    await c.restart_redis(empty=False)  # server 1 comes back too
    state = await c.servers[0].counters.budget(key_id=key.id, month=MONTH)
    assert state.reserved == reserve  # the live call's hold kept, the stale one forgotten
    await c.finish(0, live, 0.00002)
    state = await c.servers[1].counters.budget(key_id=key.id, month=MONTH)
    assert (state.spent, state.reserved) == (300_000, 0)
