"""The guardrail counters: one behaviour, checked on Redis and in memory alike.

Memory runs on a fake clock (exact); Redis on its own clock, so the Redis variant
waits for real and compares times within a tolerance. Windows and reservation
TTLs are shortened through the constructors so that no test waits a minute.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from lcm_jupyter.store.counters import (
    BUDGET_TTL_SECONDS,
    RESERVATION_TTL_SECONDS,
    SETTLED_TTL_SECONDS,
    alert_key,
    budget_key,
    cache_key,
    rate_key,
)
from lcm_jupyter.store.counters_memory import MemoryCounters
from lcm_jupyter.store.counters_redis import RedisCounters, settled_key

MONTH = "2026-05"
# Generous: a full GC in this big test process can pause the loop for ~100 ms.
TIMEOUT = 0.5


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """Makes counters of one kind and moves their time: fake for memory, real for Redis."""

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind = kind
        self.url = url
        self.clock = FakeClock()
        self.tol = 1e-6  # seconds, for reset_seconds: both run on the fake clock
        self.made: list = []

    def make(self, **kwargs):
        """A new counters instance; on Redis, another "process" sharing the same store."""
        if self.kind == "memory":
            counters = MemoryCounters(clock=self.clock, **kwargs)
        else:
            # The scripts take the time from the caller: windows move without sleeping.
            counters = RedisCounters(self.url, timeout=TIMEOUT, clock=self.clock, **kwargs)
        self.made.append(counters)
        return counters

    async def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.clock.now += seconds


@pytest.fixture(params=["memory", "redis"])
def backend(request, jp_asyncio_loop):
    """Both implementations, one after the other; everything made is closed after the test."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    made = Backend(request.param, url)
    yield made
    for counters in made.made:
        jp_asyncio_loop.run_until_complete(counters.close())


@pytest.fixture
def counters(backend, jp_asyncio_loop):
    """Counters with the production window and TTLs, created inside the test's loop."""

    async def create():
        return backend.make()

    return jp_asyncio_loop.run_until_complete(create())


@pytest.fixture
def raw(redis_url):
    """A plain synchronous client on the test Redis, to look at keys directly."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


def admit(counters, call_id, *, rpm=None, budget=None, reserve=0, soft=False, key_id=1):
    return counters.admit(
        key_id=key_id,
        call_id=call_id,
        rpm=rpm,
        month=MONTH,
        budget=budget,
        reserve=reserve,
        soft=soft,
    )


# --- rate limit ---------------------------------------------------------------------------


async def test_admits_rpm_calls_then_rejects_until_the_oldest_leaves(counters, backend):
    for i in range(3):
        got = await admit(counters, f"c{i}", rpm=3)
        assert got.allowed and got.reason is None
        assert got.rate.allowed and got.rate.limit == 3
        assert got.rate.remaining == 3 - i - 1
    got = await admit(counters, "c3", rpm=3)
    assert not got.allowed and got.reason == "rate_limit"
    assert not got.rate.allowed and got.rate.remaining == 0
    assert got.rate.reset_seconds == pytest.approx(60.0, abs=backend.tol)
    assert got.rate.reset_seconds <= 60.0
    # Another key has its own window.
    assert (await admit(counters, "other", rpm=3, key_id=2)).allowed


async def test_no_rate_limit_and_no_budget_admits_without_recording(counters):
    got = await admit(counters, "c", reserve=500)
    assert got.allowed and got.rate is None and got.reserved == 0
    state = await counters.budget(key_id=1, month=MONTH)
    assert (state.spent, state.reserved) == (0, 0)


async def test_zero_rpm_rejects_everything(counters, backend):
    got = await admit(counters, "c", rpm=0)
    assert got.reason == "rate_limit"
    assert got.rate.reset_seconds == pytest.approx(60.0, abs=backend.tol)


async def test_the_window_slides_rather_than_resetting_in_buckets(backend):
    counters = backend.make(window_seconds=1.0)
    assert (await admit(counters, "a", rpm=2)).allowed  # leaves at 1.0
    await backend.advance(0.5)
    assert (await admit(counters, "b", rpm=2)).allowed  # leaves at 1.5
    full = await admit(counters, "c", rpm=2)
    assert full.reason == "rate_limit"
    assert full.rate.reset_seconds == pytest.approx(0.5, abs=backend.tol)
    await backend.advance(0.6)  # t = 1.1: "a" left, "b" is still in
    # A fixed 1-second bucket would have started afresh and admitted both of these.
    assert (await admit(counters, "c", rpm=2)).allowed
    again = await admit(counters, "d", rpm=2)
    assert again.reason == "rate_limit"
    assert again.rate.reset_seconds == pytest.approx(0.4, abs=backend.tol)


async def test_a_lowered_rpm_waits_for_enough_calls_to_leave(backend):
    counters = backend.make(window_seconds=2.0)
    for i in range(3):
        assert (await admit(counters, f"c{i}", rpm=5)).allowed
        await backend.advance(0.1)
    got = await admit(counters, "x", rpm=2)
    # Two of the three must leave before a third call fits under 2: c1 at 2.1 s.
    assert got.reason == "rate_limit"
    assert got.rate.reset_seconds == pytest.approx(2.1 - 0.3, abs=backend.tol)


async def test_a_repeated_call_id_takes_one_slot(counters):
    assert (await admit(counters, "same", rpm=2)).rate.remaining == 1
    assert (await admit(counters, "same", rpm=2)).rate.remaining == 1
    assert (await admit(counters, "other", rpm=2)).rate.remaining == 0


# --- budget -------------------------------------------------------------------------------


async def test_concurrent_admits_reserve_exactly_what_the_budget_holds(counters):
    reserve = 1_000
    results = await asyncio.gather(
        *(admit(counters, f"c{i}", budget=10 * reserve, reserve=reserve) for i in range(50))
    )
    admitted = [f"c{i}" for i, got in enumerate(results) if got.allowed]
    assert len(admitted) == 10
    assert {got.reason for got in results if not got.allowed} == {"budget"}
    assert max(got.reserved for got in results) == 10 * reserve

    costs = {call_id: 100 + i for i, call_id in enumerate(admitted)}
    await asyncio.gather(
        *(
            counters.settle(key_id=1, call_id=call_id, month=MONTH, cost=cost)
            for call_id, cost in costs.items()
        )
    )
    state = await counters.budget(key_id=1, month=MONTH)
    assert state.spent == sum(costs.values())
    assert state.reserved == 0

    # What was not spent fits again: 10_000 - 1_045 leaves room for 8 more.
    results = await asyncio.gather(
        *(admit(counters, f"d{i}", budget=10 * reserve, reserve=reserve) for i in range(20))
    )
    assert sum(got.allowed for got in results) == (10 * reserve - state.spent) // reserve


async def test_settling_twice_counts_once(counters):
    assert (await admit(counters, "c", budget=1_000, reserve=300)).reserved == 300
    first = await counters.settle(key_id=1, call_id="c", month=MONTH, cost=120)
    assert (first.spent, first.reserved) == (120, 0)
    again = await counters.settle(key_id=1, call_id="c", month=MONTH, cost=120)
    assert (again.spent, again.reserved) == (120, 0)
    # A call that never reserved (soft mode, budget None) still settles, once.
    assert (await counters.settle(key_id=1, call_id="n", month=MONTH, cost=0)).spent == 120
    assert (await counters.settle(key_id=1, call_id="s", month=MONTH, cost=5)).spent == 125
    assert (await counters.settle(key_id=1, call_id="s", month=MONTH, cost=5)).spent == 125


async def test_release_frees_the_reservation_without_spending(counters):
    assert (await admit(counters, "a", budget=1_000, reserve=600)).allowed
    assert (await admit(counters, "zero", budget=1_000, reserve=0)).allowed
    assert (await admit(counters, "b", budget=1_000, reserve=600)).reason == "budget"
    await counters.release(key_id=1, call_id="a", month=MONTH)
    await counters.release(key_id=1, call_id="zero", month=MONTH)
    await counters.release(key_id=1, call_id="a", month=MONTH)  # twice, or unknown: no-op
    state = await counters.budget(key_id=1, month=MONTH)
    assert (state.spent, state.reserved) == (0, 0)
    assert (await admit(counters, "b", budget=1_000, reserve=600)).allowed


async def test_expired_reservations_free_their_amount(backend):
    counters = backend.make(reservation_ttl=0.3)
    assert (await admit(counters, "lost", budget=1_000, reserve=800)).allowed
    await backend.advance(0.1)
    assert (await admit(counters, "kept", budget=1_000, reserve=100)).reserved == 900
    assert (await admit(counters, "x", budget=1_000, reserve=800)).reason == "budget"
    await backend.advance(0.25)  # "lost" expired, "kept" not yet
    assert (await counters.budget(key_id=1, month=MONTH)).reserved == 100
    got = await admit(counters, "x", budget=1_000, reserve=800)
    assert got.allowed and got.reserved == 900
    # Settling a call whose reservation expired still adds its cost, and nothing else.
    state = await counters.settle(key_id=1, call_id="lost", month=MONTH, cost=50)
    assert (state.spent, state.reserved) == (50, 900)


async def test_a_budget_rejection_takes_no_rate_limit_slot(counters):
    assert (await admit(counters, "a", rpm=2, budget=100, reserve=100)).rate.remaining == 1
    rejected = await admit(counters, "b", rpm=2, budget=100, reserve=100)
    assert rejected.reason == "budget"
    assert rejected.rate.allowed and rejected.rate.remaining == 1
    await counters.release(key_id=1, call_id="a", month=MONTH)
    assert (await admit(counters, "c", rpm=2, budget=100, reserve=100)).rate.remaining == 0
    assert (await admit(counters, "d", rpm=2, budget=100, reserve=0)).reason == "rate_limit"


async def test_a_rate_limit_rejection_reserves_nothing(counters):
    assert (await admit(counters, "a", rpm=1, budget=1_000, reserve=100)).allowed
    got = await admit(counters, "b", rpm=1, budget=1_000, reserve=100)
    assert got.reason == "rate_limit" and got.reserved == 100
    assert (await counters.budget(key_id=1, month=MONTH)).reserved == 100


async def test_soft_mode_admits_until_spend_reaches_the_budget(counters):
    got = await admit(counters, "a", budget=100, reserve=10_000, soft=True)
    assert got.allowed and got.reserved == 0
    assert (await counters.settle(key_id=1, call_id="a", month=MONTH, cost=99)).spent == 99
    assert (await admit(counters, "b", budget=100, reserve=10_000, soft=True)).allowed
    assert (await counters.settle(key_id=1, call_id="b", month=MONTH, cost=1)).spent == 100
    got = await admit(counters, "c", budget=100, reserve=0, soft=True)
    assert got.reason == "budget" and got.spent == 100


async def test_months_and_keys_are_separate(counters):
    await counters.set_spent(key_id=1, month=MONTH, spent=100)
    assert (await admit(counters, "a", budget=100, reserve=1)).reason == "budget"
    other_month = await counters.admit(
        key_id=1, call_id="a", rpm=None, month="2026-06", budget=100, reserve=1
    )
    assert other_month.allowed and other_month.spent == 0
    assert (await admit(counters, "a", budget=100, reserve=1, key_id=2)).allowed


async def test_set_spent_returns_the_old_value(counters):
    assert await counters.set_spent(key_id=1, month=MONTH, spent=500) == 0
    assert await counters.set_spent(key_id=1, month=MONTH, spent=700) == 500
    assert (await counters.settle(key_id=1, call_id="c", month=MONTH, cost=1)).spent == 701
    assert (await counters.budget(key_id=1, month=MONTH)).spent == 701


async def test_money_stays_exact_beyond_double_precision(counters):
    big = 2**62 + 1  # about $460 million: a double would round it
    await counters.set_spent(key_id=1, month=MONTH, spent=big)
    assert (await counters.settle(key_id=1, call_id="c", month=MONTH, cost=2)).spent == big + 2
    got = await admit(counters, "r", budget=2**63 - 1, reserve=2**53 + 1)
    assert got.allowed and got.spent == big + 2 and got.reserved == 2**53 + 1
    await counters.release(key_id=1, call_id="r", month=MONTH)
    assert (await counters.budget(key_id=1, month=MONTH)).reserved == 0


# --- alerts and cache ---------------------------------------------------------------------


async def test_an_alert_is_marked_once_under_concurrency(counters):
    marks = await asyncio.gather(
        *(counters.mark_alert(key_id=1, month=MONTH, threshold=80) for _ in range(20))
    )
    assert marks.count(True) == 1
    assert await counters.mark_alert(key_id=1, month=MONTH, threshold=100)
    assert await counters.mark_alert(key_id=1, month="2026-06", threshold=80)
    assert not await counters.mark_alert(key_id=1, month=MONTH, threshold=80)


async def test_cache_round_trip(counters, backend):
    assert await counters.cache_get("d1") is None
    await counters.cache_set("d1", b"\x00response", 1)
    await counters.cache_set("d2", b"never", 0)
    assert await counters.cache_get("d1") == b"\x00response"
    assert await counters.cache_get("d2") is None
    if backend.kind == "memory":
        await backend.advance(1.1)
        assert await counters.cache_get("d1") is None
        return
    # Redis expires the entry itself (SET EX), on its own clock: wait until it has.
    deadline = time.monotonic() + 5
    while await counters.cache_get("d1") is not None:
        assert time.monotonic() < deadline, "the entry outlived its TTL"
        await asyncio.sleep(0.05)


async def test_ping(counters):
    assert await counters.ping()


# --- Redis only ---------------------------------------------------------------------------


async def test_redis_keys_carry_ttls(redis_url, raw):
    counters = RedisCounters(redis_url, timeout=TIMEOUT)
    try:
        await admit(counters, "c", rpm=5, budget=1_000, reserve=10)
        await counters.settle(key_id=1, call_id="s", month=MONTH, cost=3)
        await counters.mark_alert(key_id=1, month=MONTH, threshold=50)
        await counters.cache_set("digest", b"body", 30)
        await counters.set_spent(key_id=2, month=MONTH, spent=1)
    finally:
        await counters.close()
    budget_ttl = pytest.approx(BUDGET_TTL_SECONDS, abs=5)
    assert raw.ttl(budget_key(1, MONTH)) == budget_ttl
    assert raw.ttl(budget_key(2, MONTH)) == budget_ttl
    assert raw.ttl(alert_key(1, MONTH, 50)) == budget_ttl
    assert 60_000 <= raw.pttl(rate_key(1)) <= 61_000
    assert 0 < raw.ttl(cache_key("digest")) <= 30
    assert 0 < raw.ttl(settled_key(1, MONTH)) <= SETTLED_TTL_SECONDS
    resv = [k for k in raw.keys("lcm:resv*") if k.decode().endswith(f":1:{MONTH}")]
    assert len(resv) == 3
    for key in resv:
        assert RESERVATION_TTL_SECONDS <= raw.ttl(key) <= RESERVATION_TTL_SECONDS + 1
    # Once no reservation is left, the reservation keys are gone, not left at zero.
    counters = RedisCounters(redis_url, timeout=TIMEOUT)
    await counters.release(key_id=1, call_id="c", month=MONTH)
    await counters.close()
    assert raw.keys("lcm:resv*") == []
    assert all(raw.ttl(key) > 0 for key in raw.keys("*"))


async def test_two_processes_share_one_window_and_one_budget(redis_url):
    one, two = (RedisCounters(redis_url, timeout=TIMEOUT) for _ in range(2))
    try:
        assert (await admit(one, "a", rpm=3, budget=300, reserve=100)).allowed
        assert (await admit(two, "b", rpm=3, budget=300, reserve=100)).allowed
        got = await admit(one, "c", rpm=3, budget=300, reserve=100)
        assert got.allowed and got.reserved == 300 and got.rate.remaining == 0
        assert (await admit(two, "d", rpm=3, budget=1_000, reserve=0)).reason == "rate_limit"
        # Settled in the other process, counted once for both.
        assert (await two.settle(key_id=1, call_id="a", month=MONTH, cost=40)).reserved == 200
        assert (await one.settle(key_id=1, call_id="a", month=MONTH, cost=40)).spent == 40
        assert await one.budget(key_id=1, month=MONTH) == await two.budget(key_id=1, month=MONTH)
        assert await one.mark_alert(key_id=1, month=MONTH, threshold=1)
        assert not await two.mark_alert(key_id=1, month=MONTH, threshold=1)
    finally:
        await one.close()
        await two.close()


async def test_a_burst_beyond_the_pool_waits_for_a_connection(redis_url):
    counters = RedisCounters(redis_url, timeout=TIMEOUT, max_connections=4)
    try:
        results = await asyncio.gather(
            *(admit(counters, f"c{i}", rpm=150, budget=10**6, reserve=1) for i in range(200))
        )
    finally:
        await counters.close()
    assert sum(got.allowed for got in results) == 150
    assert {got.reason for got in results if not got.allowed} == {"rate_limit"}
    assert max(got.reserved for got in results) == 150


async def test_a_dead_or_hung_redis_fails_fast_and_recovers(redis_server, redis_url):
    # Short enough to show failing fast, long enough not to trip on a GC pause.
    counters = RedisCounters(redis_server.url, timeout=0.2)
    try:
        assert (await admit(counters, "before", budget=100, reserve=10)).allowed

        redis_server.stop()
        start = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            await admit(counters, "down", budget=100, reserve=10)
        assert time.monotonic() - start < 0.5
        assert not await counters.ping()

        redis_server.start()  # same port, empty: nothing was persisted
        assert await counters.ping()
        assert (await admit(counters, "after", budget=100, reserve=10)).reserved == 10

        redis_server.pause()
        start = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await counters.settle(key_id=1, call_id="after", month=MONTH, cost=1)
        assert time.monotonic() - start < 0.5
        redis_server.resume()
        # The timed-out settle may still run once Redis wakes up; retried, it counts once.
        state = await counters.settle(key_id=1, call_id="after", month=MONTH, cost=1)
        assert (state.spent, state.reserved) == (1, 0)
    finally:
        await counters.close()


# --- memory only --------------------------------------------------------------------------


async def test_memory_drops_what_went_stale():
    clock = FakeClock()
    counters = MemoryCounters(clock=clock, reservation_ttl=30.0, sweep_interval=10.0)
    for key_id in range(100):
        await counters.admit(
            key_id=key_id, call_id="c", rpm=10, month=MONTH, budget=1_000, reserve=5
        )
        await counters.mark_alert(key_id=key_id, month=MONTH, threshold=80)
        await counters.cache_set(f"d{key_id}", b"x" * 10, 5)
    await counters.settle(key_id=0, call_id="c", month=MONTH, cost=1)
    assert len(counters._windows) == 100 and len(counters._months) == 100

    clock.now += 61  # windows idle, reservations and settle marks expired, cache entries too
    counters.sweep()
    assert counters._windows == {}
    assert list(counters._months) == [(0, MONTH)]  # its spend remains
    assert not counters._months[0, MONTH].settled
    assert counters._cache == {} and counters._cache_bytes == 0
    assert len(counters._alerts) == 100

    clock.now += BUDGET_TTL_SECONDS  # the month's counter and alert marks are past their TTL
    await counters.budget(key_id=5, month=MONTH)  # any operation sweeps when one is due
    assert counters._months == {} and counters._alerts == {}
    assert await counters.set_spent(key_id=0, month=MONTH, spent=1) == 0


async def test_memory_cache_is_a_bounded_lru():
    counters = MemoryCounters(clock=FakeClock(), cache_max_entries=3, cache_max_bytes=100)
    for name in "abc":
        await counters.cache_set(name, b"x" * 20, 60)
    assert await counters.cache_get("a") == b"x" * 20  # now the most recent
    await counters.cache_set("d", b"x" * 20, 60)
    assert await counters.cache_get("b") is None  # the least recently used went
    assert list(counters._cache) == ["c", "a", "d"]
    await counters.cache_set("e", b"y" * 80, 60)  # 140 bytes: evict until it fits
    assert list(counters._cache) == ["d", "e"] and counters._cache_bytes == 100
    await counters.cache_set("huge", b"z" * 101, 60)
    assert await counters.cache_get("huge") is None
    await counters.cache_set("e", b"small", 60)
    assert counters._cache_bytes == 25


async def test_calls_of_one_loop_turn_go_to_redis_as_one_pipeline(redis_url):
    counters = RedisCounters(redis_url, timeout=TIMEOUT)
    sent = []
    pipeline = counters._batch._pipeline

    async def counting(batch):
        sent.append(len(batch))
        return await pipeline(batch)

    counters._batch._pipeline = counting
    try:
        # A fresh (or restarted) Redis has no scripts: the batch comes back "no script",
        # the scripts are loaded and the calls sent again, once.
        await counters._redis.script_flush()
        got = await asyncio.gather(
            *(admit(counters, f"c{i}", rpm=100, budget=1_000, reserve=100) for i in range(12))
        )
        assert sent == [12, 12]
        # Each call has its own answer, in order: the 11th and 12th do not fit the budget.
        assert [a.allowed for a in got] == [True] * 10 + [False] * 2
        assert [a.reserved for a in got[:10]] == [100 * (i + 1) for i in range(10)]
        sent.clear()
        states = await asyncio.gather(
            *(counters.settle(key_id=1, call_id=f"c{i}", month=MONTH, cost=10) for i in range(3))
        )
        assert sent == [3, 3]  # the settle script is loaded on its first use, too
        assert [s.spent for s in states] == [10, 20, 30]
        sent.clear()
        await asyncio.gather(
            *(counters.settle(key_id=1, call_id=f"c{i}", month=MONTH, cost=10) for i in range(6))
        )
        assert sent == [6]  # loaded now; and c0-c2 were settled already: no-ops
        assert (await counters.budget(key_id=1, month=MONTH)).spent == 60
    finally:
        await counters.close()
