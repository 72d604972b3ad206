"""Redis behind a circuit breaker: a Redis that is down or slow never fails or stalls a call,
and never lets a limit fail open.

The breaker is an explicit state machine::

    CLOSED  --a Redis operation fails or times out-->  OPEN
    OPEN    --a probe finds Redis answering------------>  HALF_OPEN
    HALF_OPEN --Redis rebuilt from the log------------->  CLOSED
    HALF_OPEN --the rebuild fails--------------------->  OPEN

- CLOSED: every operation goes to Redis.
- OPEN: operations go to the fallback, which is made right from the call log first (the
  trip waits for the Redis operations in flight, whose rows are queued in the same step
  their booking returns, then resyncs the fallback; calls wait meanwhile). What the
  fallback is, is the operator's choice (`on_redis_outage`): the shared database, so that
  servers sharing Redis keep sharing their limits; this process's memory; or none (calls
  with limits are refused until Redis is back).
- HALF_OPEN: Redis answered a probe. New operations wait while Redis is rebuilt from the
  log (the fallback answers in one step, so none is in flight), then it takes over.

Each transition is logged once. The resync (spend from the log, plus this process's calls
in flight with a reservation, plus each rate window's admissions of the last minute) is the
breaker's own step, given at construction.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..store.counters import Admission, BudgetState, Counters, Settlements

log = logging.getLogger("lcm_jupyter")

Resync = Callable[[Counters], Awaitable[Any]]


class State(enum.Enum):
    """Where operations go."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class FailoverCounters:
    """The Counters interface over a primary (Redis) with a fallback, as a circuit breaker."""

    def __init__(
        self,
        primary: Counters,
        fallback: Counters,
        *,
        resync: Resync | None = None,
        probe_interval: float = 1.0,
        settle_timeout: float = 5.0,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self._resync = resync
        self._probe_interval = probe_interval
        self._settle_timeout = settle_timeout
        self.state = State.CLOSED
        self._opened_at = 0.0
        self._probe: asyncio.Task | None = None
        # Set whenever operations may proceed: clear while the store taking over is rebuilt
        # (an empty fallback would admit spend the log already counts; a Redis about to
        # take over must not miss a booking made after its snapshot).
        self._ready = asyncio.Event()
        self._ready.set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.failovers = 0
        self.transitions: list[tuple[State, State, str]] = []
        self._last_ok = -1e9  # monotonic time of the last operation Redis answered
        self.changed = asyncio.Event()  # set at every transition (whoever waits clears it)

    @property
    def name(self) -> str:
        """Which store answers now: "redis", or e.g. "database (redis down)"."""
        if self.state is State.CLOSED:
            return self.primary.name
        return f"{self.fallback.name} ({self.primary.name} down)"

    @property
    def degraded(self) -> bool:
        """True while Redis is not the store that answers."""
        return self.state is not State.CLOSED

    def set_resync(self, resync: Resync) -> None:
        """What makes a store right from the logs before it takes over."""
        self._resync = resync

    def _to(self, state: State, why: str) -> None:
        self.transitions.append((self.state, state, why))
        self.state = state
        self.changed.set()

    async def _call(self, op: str, **kwargs: Any) -> Any:
        await self._ready.wait()
        if self.state is State.CLOSED:
            self._inflight += 1
            self._idle.clear()
            try:
                result = await getattr(self.primary, op)(**kwargs)
                self._last_ok = time.monotonic()
                return result
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any Redis failure: the fallback answers instead
                failure = exc
            finally:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.set()
            await self._trip(failure)
            await self._ready.wait()
        result = await getattr(self.fallback, op)(**kwargs)
        if self.state is State.CLOSED and getattr(result, "reason", None) == "unavailable":
            # Refused while waiting for Redis to be gone for every server, and Redis came
            # back for this one meanwhile: Redis decides.
            return await self._call(op, **kwargs)
        return result

    async def counting_on_primary(self, *, recent: float = 1.5) -> bool:
        """Whether this server counts on Redis now: closed, and Redis answered an operation
        in the last `recent` seconds or answers a ping (an idle server's word must not
        outlive a Redis that is gone)."""
        if self.state is not State.CLOSED:
            return False
        if time.monotonic() - self._last_ok < recent:
            return True
        try:
            return await self.primary.ping()
        except Exception:  # any failure to answer is a no
            return False

    async def _trip(self, exc: BaseException) -> None:
        """CLOSED -> OPEN: rebuild the fallback from the log, then let calls through."""
        if self.state is not State.CLOSED:
            return
        self._ready.clear()
        self._to(State.OPEN, f"{exc.__class__.__name__}: {exc}")
        self._opened_at = time.monotonic()
        self.failovers += 1
        log.warning(
            "lcm: Redis unavailable (%s: %s); the %s counters answer until it is back",
            exc.__class__.__name__,
            exc,
            self.fallback.name,
        )
        try:
            # Operations started on Redis end within its timeout: successes have queued
            # their rows by then (same step), failures wait here for the fallback.
            await asyncio.wait_for(self._idle.wait(), timeout=self._settle_timeout)
        except asyncio.TimeoutError:
            log.warning(
                "lcm: Redis calls still in flight after %ss; rebuilding anyway",
                self._settle_timeout,
            )
        if self._resync is not None:
            try:
                await self._resync(self.fallback)
            except Exception:
                log.exception("lcm: could not rebuild the %s counters from the log", "fallback")
        self._ready.set()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        """OPEN -> HALF_OPEN -> CLOSED once Redis answers and is rebuilt from the log."""
        while self.state is State.OPEN:
            await asyncio.sleep(self._probe_interval)
            try:
                # Connections pooled before the outage are dead: each would fail its first
                # operation after the switch back and trip the breaker again.
                await self.primary.reconnect()
                if not await self.primary.ping():
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
            self._ready.clear()
            self._to(State.HALF_OPEN, "Redis answered a probe")
            try:
                if self._resync is not None:
                    await self._resync(self.primary)
            except asyncio.CancelledError:
                self._to(State.OPEN, "stopped while rebuilding Redis")
                self._ready.set()
                raise
            except Exception as exc:
                self._to(State.OPEN, f"rebuilding Redis failed: {exc}")
                self._ready.set()
                continue
            self._to(State.CLOSED, "Redis rebuilt from the log")
            self._ready.set()
            log.warning(
                "lcm: Redis is back after %.1fs; its counters were rebuilt from the logs",
                time.monotonic() - self._opened_at,
            )

    async def admit(self, **kwargs: Any) -> Admission:
        """See Counters.admit."""
        return await self._call("admit", **kwargs)

    async def settle(self, **kwargs: Any) -> BudgetState:
        """See Counters.settle."""
        return await self._call("settle", **kwargs)

    async def release(self, **kwargs: Any) -> None:
        """See Counters.release."""
        return await self._call("release", **kwargs)

    async def budget(self, **kwargs: Any) -> BudgetState:
        """See Counters.budget."""
        return await self._call("budget", **kwargs)

    async def set_spent(self, **kwargs: Any) -> int:
        """See Counters.set_spent."""
        return await self._call("set_spent", **kwargs)

    async def recent_settlements(self, **kwargs: Any) -> Settlements:
        """See Counters.recent_settlements."""
        return await self._call("recent_settlements", **kwargs)

    async def rebase_spent(self, **kwargs: Any) -> tuple[int, int]:
        """See Counters.rebase_spent (a mark read from the other store adds nothing)."""
        return await self._call("rebase_spent", **kwargs)

    async def recent_admissions(self, **kwargs: Any) -> list[tuple[str, float]]:
        """See Counters.recent_admissions."""
        return await self._call("recent_admissions", **kwargs)

    async def add_admissions(self, **kwargs: Any) -> int:
        """See Counters.add_admissions."""
        return await self._call("add_admissions", **kwargs)

    async def reconnect(self) -> None:
        """See Counters.reconnect."""
        return await self._call("reconnect")

    async def ping(self) -> bool:
        """True when the store answering now answers."""
        return await self._call("ping")

    async def close(self) -> None:
        """Stop probing and close both stores."""
        if self._probe is not None:
            self._probe.cancel()
        await self.primary.close()
        await self.fallback.close()
