"""The guardrail counters: one interface, in Redis, in memory, or in the shared database.

Rate-limit windows, monthly budget spend and reservations live behind `Counters` (what
admission needs); alert dedup and the response cache beside them (`SharedKV`), in the same
store but outside the circuit breaker. Redis is the shared view of every server process
(JupyterHub: many servers, one Redis); the in-memory twin is the embedded default; while
Redis is away the shared database (`counters_db.py`), this process's memory, or nothing
(`RefusingCounters`) stands in, as `on_redis_outage` says. Either way, proxy_logs stays
the source of truth that `set_spent` (reconcile) restores.

Money is counted in integer units of 1e-10 USD (`MONEY_SCALE` per dollar): every
price in the table (at most 4 decimals per million tokens) is then exact, INCRBY
is exact and atomic where INCRBYFLOAT would accumulate float error, and an int64
still holds budgets up to about $900 million.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..core.budget import MONEY_SCALE

__all__ = [
    "MONEY_SCALE",
    "Admission",
    "Admissions",
    "BudgetState",
    "Counters",
    "RateState",
    "RefusingCounters",
    "Settlements",
    "SharedKV",
]

BUDGET_TTL_SECONDS = 45 * 24 * 3600
"""How long a month's budget counter and alert marks live (a month and a half)."""

RESERVATION_TTL_SECONDS = 15 * 60
"""A reservation not settled by then is dropped (its call's process died)."""

RATE_WINDOW_SECONDS = 60.0

SETTLED_TTL_SECONDS = RESERVATION_TTL_SECONDS
"""How long Redis remembers a settled call id, so that a retried settle counts once.

A retry (redis-py's, after a reply was lost) comes within seconds; a settle later than a
reservation's life could not be told from a late one anyway. The markers are one entry
per call, so their life bounds what they cost: 24 h of them was the largest structure."""

RECENT_SETTLED_SECONDS = 120.0
"""How long a settlement stays in its key-month's "recent settlements" (call id -> cost).

A rebuild sets spent = the log + the recent settlements whose rows are not in the log yet:
a row is written within the log writer's flush interval (0.25 s) after its settle, so two
minutes covers any server whose writer is working (one that cannot write for two minutes
fails its own rebuilds: they flush first)."""

LOCAL_SETTLED_TTL_SECONDS = 60.0
"""The same for the in-memory counters: in one process nothing crosses a network, so a
repeated settle can only be an immediate retry; a short life keeps memory flat under load."""


@dataclass(frozen=True, slots=True)
class RateState:
    """The outcome of a rate-limit check."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float
    """Until the oldest call in the window leaves it (one more is admitted then)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of `admit`: rate limit and budget reservation, decided together."""

    allowed: bool
    reason: str | None
    """None when allowed; else "rate_limit" or "budget"."""
    rate: RateState | None
    """None when the key has no rate limit."""
    spent: int
    """Settled spend this month, in money units."""
    reserved: int
    """Reserved by calls in flight (this one included when allowed), in money units."""


@dataclass(frozen=True, slots=True)
class Settlements:
    """A key-month's recent settlements, as one read of the store saw them."""

    mark: int = 0
    """The store's settlement sequence at the read: later settlements are numbered above it."""
    costs: dict[str, int] = field(default_factory=dict)
    """call_id -> cost in units, of the settlements of the last `RECENT_SETTLED_SECONDS`."""
    origin: int = 0
    """Which store numbered them (its id()): a mark means nothing to another store."""
    held: tuple[str, ...] = ()
    """The month's calls holding a reservation at the read (a rebuild forgets those over)."""


Admissions = Sequence[tuple[str, float]]
"""(call_id, seconds ago) of admissions in a rate window, each store counting on its own
clock (ages, not times, cross between stores)."""


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A key's month: settled spend and what calls in flight hold."""

    spent: int
    reserved: int


class Counters(Protocol):
    """Atomic read-modify-write operations the pipeline needs, each one round trip."""

    @property
    def name(self) -> str:
        """Which store answers ("memory", "redis", ...), for status lines."""

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
        """Check the sliding window and reserve `reserve` units against `budget`, atomically.

        Rejected on rate limit: nothing is recorded. Rejected on budget: the call
        does not count in the window either. `budget` None: no budget check and no
        reservation. `soft`: admit while settled spend is under the budget,
        reserving nothing.
        """
        ...

    async def settle(self, *, key_id: int, call_id: str, month: str, cost: int) -> BudgetState:
        """Release the call's reservation (if any) and add its actual `cost`."""
        ...

    async def release(self, *, key_id: int, call_id: str, month: str) -> None:
        """Drop the call's reservation without spending (a failed or cached call)."""
        ...

    async def budget(self, *, key_id: int, month: str) -> BudgetState:
        """Settled spend and live reservations of a key's month."""
        ...

    async def set_spent(
        self, *, key_id: int, month: str, spent: int, drop_reservations: bool = False
    ) -> int:
        """Make the month's settled spend `spent` (reconcile); returns the old value.

        `drop_reservations`: also forget the month's reservations (after an outage, the
        calls that made them were settled elsewhere).
        """
        ...

    async def recent_settlements(self, *, key_id: int, month: str) -> Settlements:
        """The month's settlements of the last `RECENT_SETTLED_SECONDS`, and the mark to
        pass to `rebase_spent` (settlements after the read are numbered above it)."""
        ...

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
        """Atomically make spent = `base` + the costs of the settlements made since `since`
        (what this store's `recent_settlements` returned; numbered above its mark) except
        the calls in `exclude` (already in `base`); returns (old spent, new spent). `since`
        read from another store (the breaker moved in between): `base` alone. In the same
        step, `forget` drops the reservations of those calls (over: their rows are logged),
        `drop_reservations` all of them.

        What a rebuild from the log uses: `base` is the log (read before the mark) plus the
        recent settlements its rows did not have yet, so calls other servers settle while it
        runs are neither erased nor counted twice.
        """
        ...

    async def recent_admissions(self, *, key_id: int) -> list[tuple[str, float]]:
        """The key's rate window: (call_id, seconds ago) of each admission in the last minute."""
        ...

    async def add_admissions(self, *, key_id: int, admissions: Admissions) -> int:
        """Put admissions (call_id, seconds ago) into the key's rate window, each call once
        (a call id already there stays as it is; those older than the window are skipped);
        returns how many were added. Several servers may add the same ones at once."""
        ...

    async def ping(self) -> bool:
        """True when the store answers."""
        ...

    async def reconnect(self) -> None:
        """Drop pooled connections, so that the next operations open fresh ones (those
        pooled before an outage are dead, and each would fail once)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class SharedKV(Protocol):
    """What the response cache and alert dedup keep beside the counters (Redis or memory).

    Not behind the circuit breaker: neither decides anything a limit depends on. A cache
    that fails is a miss; an alert mark that fails leaves the dedup to the alerts table.
    """

    async def mark_alert(self, *, key_id: int, month: str, threshold: int) -> bool:
        """True the first time this (key, month, threshold) is marked, False after."""
        ...

    async def cache_get(self, key: str) -> bytes | None:
        """A cached response, or None."""
        ...

    async def cache_set(self, key: str, value: bytes, ttl: int) -> None:
        """Cache a response for `ttl` seconds."""
        ...


class RefusingCounters:
    """No counters at all: calls with limits are refused while Redis is away
    (`on_redis_outage = "refuse"`); calls without limits never reach the counters."""

    name = "none"

    async def admit(self, **_: object) -> Admission:
        """Refused: nothing can hold a limit now."""
        return Admission(False, "unavailable", None, 0, 0)

    async def settle(self, **_: object) -> BudgetState:
        """Nothing to book into (the call's row has its cost; Redis is rebuilt from it)."""
        return BudgetState(0, 0)

    async def release(self, **_: object) -> None:
        """Nothing held."""

    async def budget(self, **_: object) -> BudgetState:
        """Unknown now: nothing counted here."""
        return BudgetState(0, 0)

    async def set_spent(self, **_: object) -> int:
        """Nothing to set."""
        return 0

    async def recent_settlements(self, **_: object) -> Settlements:
        """Nothing settled here."""
        return Settlements()

    async def rebase_spent(self, **_: object) -> tuple[int, int]:
        """Nothing to set."""
        return 0, 0

    async def recent_admissions(self, **_: object) -> list[tuple[str, float]]:
        """Nothing admitted here."""
        return []

    async def add_admissions(self, **_: object) -> int:
        """No window to fill."""
        return 0

    async def ping(self) -> bool:
        """Always answers."""
        return True

    async def reconnect(self) -> None:
        """Nothing to reconnect."""

    async def close(self) -> None:
        """Nothing to release."""


def budget_key(key_id: int, month: str) -> str:
    """The Redis key of a month's settled spend, as DESIGN.md names it."""
    return f"lcm:budget:{key_id}:{month}"


def alert_key(key_id: int, month: str, threshold: int) -> str:
    """The Redis key that dedups one budget alert."""
    return f"lcm:budget-alert:{key_id}:{month}:{threshold}"


def rate_key(key_id: int) -> str:
    """The Redis key of a key's sliding window."""
    return f"lcm:rl:{key_id}"


def recent_key(key_id: int, month: str) -> str:
    """The Redis key of a month's recent settlements (ZSET: "ms cost call_id" by sequence)."""
    return f"lcm:recent:{key_id}:{month}"


def recent_seq_key(key_id: int, month: str) -> str:
    """The Redis key numbering a month's settlements."""
    return f"lcm:recent-seq:{key_id}:{month}"


def cache_key(digest: str) -> str:
    """The Redis key of a cached response."""
    return f"lcm:cache:{digest}"


class SoftSharedKV:
    """A `SharedKV` whose failures cost nothing: a failed cache read is a miss, a failed
    write is skipped, a failed alert mark says "marked here first" (the alerts table's
    unique row still dedups). After a failure the store is left alone for `pause` seconds,
    so that a Redis that is down does not make every cached call wait for its timeout."""

    def __init__(self, inner: SharedKV, *, pause: float = 1.0) -> None:
        import time

        self._inner = inner
        self._pause = pause
        self._clock = time.monotonic
        self._skip_until = 0.0

    def _usable(self) -> bool:
        return self._clock() >= self._skip_until

    def _failed(self) -> None:
        self._skip_until = self._clock() + self._pause

    async def mark_alert(self, *, key_id: int, month: str, threshold: int) -> bool:
        """See SharedKV.mark_alert."""
        if self._usable():
            try:
                return await self._inner.mark_alert(key_id=key_id, month=month, threshold=threshold)
            except Exception:
                self._failed()
        return True

    async def cache_get(self, key: str) -> bytes | None:
        """See SharedKV.cache_get."""
        if self._usable():
            try:
                return await self._inner.cache_get(key)
            except Exception:
                self._failed()
        return None

    async def cache_set(self, key: str, value: bytes, ttl: int) -> None:
        """See SharedKV.cache_set."""
        if self._usable():
            try:
                await self._inner.cache_set(key, value, ttl)
            except Exception:
                self._failed()
