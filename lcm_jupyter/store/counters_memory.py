"""`Counters` in process memory: the embedded default and the fallback while Redis is away.

Same semantics as `RedisCounters`, for one process. Every operation runs without
an await, so on one asyncio loop each is atomic. Nothing here lives forever: a
sweep (at most once per `sweep_interval`, run by whichever operation comes first)
drops idle windows, expired reservations, settle markers and alert marks, month
counters past their TTL and expired cache entries; the cache is also an LRU
bounded in entries and bytes.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .counters import (
    BUDGET_TTL_SECONDS,
    LOCAL_SETTLED_TTL_SECONDS,
    RATE_WINDOW_SECONDS,
    RESERVATION_TTL_SECONDS,
    Admission,
    Admissions,
    BudgetState,
    RateState,
    Settlements,
)

_Window = OrderedDict[str, float]
"""call_id -> admitted at, oldest first."""


class _Month:
    """A key's month: settled spend (with its TTL), live reservations, settled call ids."""

    __slots__ = ("reservations", "reserved", "seq", "settled", "spent", "spent_expires")

    def __init__(self) -> None:
        self.spent = 0
        self.spent_expires = -math.inf  # no counter yet, as a missing Redis key
        # call_id -> (expires, amount); one TTL for all, so insertion order is expiry order.
        self.reservations: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.reserved = 0
        # call_id -> (expires, sequence number, cost): a retried settle counts once, and a
        # rebuild from the log adds back the settlements whose rows are not written yet.
        self.settled: OrderedDict[str, tuple[float, int, int]] = OrderedDict()
        self.seq = 0

    def current_spent(self, now: float) -> int:
        """Settled spend, 0 once the counter outlived its TTL."""
        if now >= self.spent_expires:
            self.spent = 0
        return self.spent

    def set_spent(self, spent: int, now: float) -> None:
        """Change the counter, which restarts its TTL."""
        self.spent = spent
        self.spent_expires = now + BUDGET_TTL_SECONDS

    def drop_expired(self, now: float) -> int:
        """Drop reservations and settle marks past expiry (O(expired)); returns the reserved."""
        while self.reservations:
            call_id, (expires, _) = next(iter(self.reservations.items()))
            if expires > now:
                break
            self.forget(call_id)
        while self.settled and next(iter(self.settled.values()))[0] <= now:
            self.settled.popitem(last=False)
        return self.reserved

    def held(self, call_id: str) -> int:
        """What the call holds now (0 if nothing)."""
        entry = self.reservations.get(call_id)
        return 0 if entry is None else entry[1]

    def forget(self, call_id: str) -> None:
        """Drop one reservation, if any."""
        held = self.reservations.pop(call_id, None)
        if held is not None:
            self.reserved -= held[1]

    def reserve(self, call_id: str, amount: int, expires: float) -> None:
        """Hold `amount` for the call (replacing what it held)."""
        self.forget(call_id)
        self.reservations[call_id] = (expires, amount)
        self.reserved += amount

    def idle(self, now: float) -> bool:
        """Nothing left that a later call could read."""
        return not self.reservations and not self.settled and now >= self.spent_expires


class MemoryCounters:
    """`Counters` in memory: atomic on one event loop, cleaned up as it goes."""

    name = "memory"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        window_seconds: float = RATE_WINDOW_SECONDS,
        reservation_ttl: float = RESERVATION_TTL_SECONDS,
        settled_ttl: float = LOCAL_SETTLED_TTL_SECONDS,
        cache_max_entries: int = 10_000,
        cache_max_bytes: int = 256 * 1024 * 1024,
        sweep_interval: float = 60.0,
    ) -> None:
        self._clock = clock
        self._window = window_seconds
        self._reservation_ttl = reservation_ttl
        self._settled_ttl = settled_ttl
        self._cache_max_entries = cache_max_entries
        self._cache_max_bytes = cache_max_bytes
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval
        self._windows: dict[int, _Window] = {}
        self._months: dict[tuple[int, str], _Month] = {}
        self._alerts: dict[tuple[int, str, int], float] = {}  # -> expires
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # LRU first
        self._cache_bytes = 0

    def _now(self) -> float:
        """The clock; sweeps first when a sweep is due."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        return now

    def _month(self, key_id: int, month: str) -> _Month:
        state = self._months.get((key_id, month))
        if state is None:  # not setdefault: that would build a _Month on every call
            state = self._months[key_id, month] = _Month()
        return state

    def _trim(self, window: _Window, now: float) -> None:
        """Drop calls that left the window."""
        horizon = now - self._window
        while window and next(iter(window.values())) <= horizon:
            window.popitem(last=False)

    async def admit(
        self,
        *,
        key_id: int,
        call_id: str,
        rpm: int | None,
        month: str,
        budget: int | None,
        reserve: int,
        soft: bool = False,
    ) -> Admission:
        """Check the sliding window and reserve `reserve` units against `budget`, atomically."""
        if reserve < 0:
            raise ValueError("reserve must not be negative")
        now = self._now()
        state = self._months.get((key_id, month))
        reserved = state.drop_expired(now) if state else 0
        spent = state.current_spent(now) if state else 0
        window = self._windows.get(key_id) if rpm is not None else None
        if window is not None:
            self._trim(window, now)
        count = len(window) if window else 0

        def decide(reason: str | None) -> Admission:
            rate = None
            if rpm is not None:
                # Until the (count - rpm + 1)th oldest call leaves: one more fits then.
                k = max(count - rpm, 0)
                entry = next(itertools.islice(window.values(), k, None), None) if window else None
                if entry is not None:
                    reset = entry + self._window - now
                else:
                    reset = self._window if reason == "rate_limit" else 0.0  # rpm 0: never
                rate = RateState(reason != "rate_limit", rpm, max(rpm - count, 0), reset)
            return Admission(reason is None, reason, rate, spent, reserved)

        if rpm is not None and count >= rpm:
            return decide("rate_limit")
        if budget is not None:
            if soft:
                if spent >= budget:
                    return decide("budget")
            else:
                held = state.held(call_id) if state else 0
                if spent + reserved - held + reserve > budget:
                    return decide("budget")
                state = self._month(key_id, month)
                state.reserve(call_id, reserve, now + self._reservation_ttl)
                reserved = state.reserved
        if rpm is not None:
            window = self._windows.setdefault(key_id, OrderedDict())
            window.pop(call_id, None)  # a repeated call_id moves, as in a ZSET
            window[call_id] = now
            count = len(window)
        return decide(None)

    async def settle(self, *, key_id: int, call_id: str, month: str, cost: int) -> BudgetState:
        """Release the call's reservation (if any) and add its actual `cost`, once per call."""
        now = self._now()
        state = self._month(key_id, month)
        state.drop_expired(now)
        if call_id not in state.settled:
            state.forget(call_id)
            state.set_spent(state.current_spent(now) + cost, now)
            state.seq += 1
            state.settled[call_id] = (now + self._settled_ttl, state.seq, cost)
        return BudgetState(state.current_spent(now), state.reserved)

    async def release(self, *, key_id: int, call_id: str, month: str) -> None:
        """Drop the call's reservation without spending (a failed or cached call)."""
        state = self._months.get((key_id, month))
        if state is not None:
            state.drop_expired(self._now())
            state.forget(call_id)

    async def budget(self, *, key_id: int, month: str) -> BudgetState:
        """Settled spend and live reservations of a key's month."""
        now = self._now()
        state = self._months.get((key_id, month))
        if state is None:
            return BudgetState(0, 0)
        return BudgetState(state.current_spent(now), state.drop_expired(now))

    async def set_spent(
        self, *, key_id: int, month: str, spent: int, drop_reservations: bool = False
    ) -> int:
        """Make the month's settled spend `spent` (reconcile); returns the old value."""
        now = self._now()
        state = self._month(key_id, month)
        old = state.current_spent(now)
        state.set_spent(spent, now)
        if drop_reservations:
            for call_id in list(state.reservations):
                state.forget(call_id)
        return old

    async def recent_settlements(self, *, key_id: int, month: str) -> Settlements:
        """See Counters.recent_settlements (kept `settled_ttl`: one process's own calls,
        whose rows its rebuild flushes first)."""
        state = self._months.get((key_id, month))
        if state is None:
            return Settlements()
        state.drop_expired(self._now())
        costs = {call_id: cost for call_id, (_, _, cost) in state.settled.items()}
        return Settlements(state.seq, costs, id(self), tuple(state.reservations))

    async def rebase_spent(
        self,
        *,
        key_id: int,
        month: str,
        base: int,
        since: Settlements,
        exclude: Sequence[str] = (),
        forget: Sequence[str] = (),
        drop_reservations: bool = False,
    ) -> tuple[int, int]:
        """See Counters.rebase_spent."""
        skip = set(exclude)
        state = self._months.get((key_id, month))
        later = 0
        after = since.mark
        if state is not None and since.origin == id(self):
            # Numbered in insertion order: the newest are at the end.
            for call_id, (_, seq, cost) in reversed(state.settled.items()):
                if seq <= after:
                    break
                if call_id not in skip:
                    later += cost
        old = await self.set_spent(
            key_id=key_id, month=month, spent=base + later, drop_reservations=drop_reservations
        )
        if forget and state is not None:
            for call_id in forget:
                state.forget(call_id)
        return old, base + later

    async def recent_admissions(self, *, key_id: int) -> list[tuple[str, float]]:
        """See Counters.recent_admissions."""
        now = self._now()
        window = self._windows.get(key_id)
        if not window:
            return []
        self._trim(window, now)
        return [(call_id, now - at) for call_id, at in window.items()]

    async def add_admissions(self, *, key_id: int, admissions: Admissions) -> int:
        """See Counters.add_admissions."""
        now = self._now()
        window = self._windows.setdefault(key_id, OrderedDict())
        added = 0
        for call_id, age in admissions:
            if call_id not in window and age < self._window:
                window[call_id] = now - max(age, 0.0)
                added += 1
        if added:  # the window is read oldest first
            self._windows[key_id] = OrderedDict(sorted(window.items(), key=lambda e: e[1]))
        elif not window:
            del self._windows[key_id]
        return added

    async def mark_alert(self, *, key_id: int, month: str, threshold: int) -> bool:
        """True the first time this (key, month, threshold) is marked, False after."""
        now = self._now()
        key = (key_id, month, threshold)
        if self._alerts.get(key, -math.inf) > now:
            return False
        self._alerts[key] = now + BUDGET_TTL_SECONDS
        return True

    async def cache_get(self, key: str) -> bytes | None:
        """A cached response, or None."""
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self._now():
            self._cache_drop(key)
            return None
        self._cache.move_to_end(key)
        return entry[1]

    async def cache_set(self, key: str, value: bytes, ttl: int) -> None:
        """Cache a response for `ttl` seconds (nothing when `ttl` is not positive)."""
        if ttl <= 0 or len(value) > self._cache_max_bytes:
            return
        now = self._now()
        self._cache_drop(key)
        self._cache[key] = (now + ttl, value)
        self._cache_bytes += len(value)
        while len(self._cache) > self._cache_max_entries or (
            self._cache_bytes > self._cache_max_bytes
        ):
            self._cache_drop(next(iter(self._cache)))

    def _cache_drop(self, key: str) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            self._cache_bytes -= len(entry[1])

    async def ping(self) -> bool:
        """Always True: memory answers."""
        return True

    async def reconnect(self) -> None:
        """Nothing to reconnect."""

    async def close(self) -> None:
        """Nothing to release."""

    def sweep(self) -> None:
        """Drop everything stale now (operations also do it once per `sweep_interval`)."""
        self._sweep(self._clock())

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self._sweep_interval
        for key_id, window in list(self._windows.items()):
            self._trim(window, now)
            if not window:
                del self._windows[key_id]
        for month_key, state in list(self._months.items()):
            state.drop_expired(now)
            if state.idle(now):
                del self._months[month_key]
        for alert, expires in list(self._alerts.items()):
            if expires <= now:
                del self._alerts[alert]
        for key, (expires, _) in list(self._cache.items()):
            if expires <= now:
                self._cache_drop(key)
