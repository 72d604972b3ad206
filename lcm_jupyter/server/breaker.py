"""Redis with a circuit breaker: a Redis that is down or slow never fails or stalls a call.

`FailoverCounters` sends every operation to Redis while it answers. The first
failure (error or timeout) opens the circuit: operations go to the in-memory
counters, which are first made right from proxy_logs, and Redis is probed in the
background until it answers again; then it is made right from proxy_logs too
and takes over. Each switch is logged once.

A rebuild reads the log, so at a switch no booking may land in the old store after
the snapshot (it would be missing from the new one) nor before it in a way the
snapshot misses: the rebuild first waits for operations in flight on the old store
(a call's row is queued in the same step its booking returns), and operations wait
while the new store is rebuilt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..store.counters import Admission, BudgetState, Counters

log = logging.getLogger("lcm_jupyter")

Resync = Callable[[Counters], Awaitable[Any]]


class FailoverCounters:
    """The Counters interface over a primary (Redis) with an in-memory fallback."""

    def __init__(
        self,
        primary: Counters,
        fallback: Counters,
        *,
        resync: Resync | None = None,
        probe_interval: float = 1.0,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self._resync = resync
        self._probe_interval = probe_interval
        self._open = False  # True while Redis is considered down
        self._opened_at = 0.0
        self._probe: asyncio.Task | None = None
        # Calls wait on this while the fallback is being rebuilt: an empty memory
        # store would otherwise admit spend that the logs already count.
        self._fallback_ready = asyncio.Event()
        # Held clear while Redis is rebuilt to take over again: calls wait instead of
        # booking in memory after the snapshot.
        self._switched = asyncio.Event()
        self._switched.set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.failovers = 0

    @property
    def name(self) -> str:
        """Which store answers now: "redis" or "memory (redis down)"."""
        return (
            f"{self.fallback.name} ({self.primary.name} down)" if self._open else self.primary.name
        )

    @property
    def degraded(self) -> bool:
        """True while the fallback answers."""
        return self._open

    def set_resync(self, resync: Resync) -> None:
        """What makes a store right from the logs before it takes over."""
        self._resync = resync

    async def _call(self, op: str, **kwargs: Any) -> Any:
        await self._switched.wait()
        if not self._open:
            self._inflight += 1
            self._idle.clear()
            try:
                return await getattr(self.primary, op)(**kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any Redis failure: answer from memory instead
                failure = exc
            finally:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.set()
            await self._trip(failure)
        await self._fallback_ready.wait()
        return await getattr(self.fallback, op)(**kwargs)

    async def _settle_in_flight(self) -> None:
        # Operations started on Redis end within its timeout: successes have queued their
        # rows by then (same step), failures are waiting for the fallback.
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=5.0)
        except asyncio.TimeoutError:
            log.warning("lcm: Redis calls still in flight after 5s; rebuilding anyway")

    async def _trip(self, exc: BaseException) -> None:
        if self._open:
            return
        self._open = True
        self._fallback_ready.clear()
        self._opened_at = time.monotonic()
        self.failovers += 1
        log.warning(
            "lcm: Redis unavailable (%s: %s); using in-memory counters until it answers again",
            exc.__class__.__name__,
            exc,
        )
        if self._resync is not None:
            await self._settle_in_flight()
            try:
                await self._resync(self.fallback)
            except Exception:
                log.exception("lcm: could not rebuild in-memory counters from the logs")
        self._fallback_ready.set()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        while self._open:
            await asyncio.sleep(self._probe_interval)
            try:
                # Connections pooled before the outage are dead: each would fail its first
                # operation after the switch back and trip the breaker again.
                await self.primary.reconnect()
                if not await self.primary.ping():
                    continue
                # Memory operations complete in one step, so none is in flight here; new
                # ones wait until Redis, rebuilt from the log, has taken over.
                self._switched.clear()
                if self._resync is not None:
                    await self._resync(self.primary)
            except asyncio.CancelledError:
                self._switched.set()
                raise
            except Exception:
                self._switched.set()
                continue
            self._open = False
            self._switched.set()
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

    async def mark_alert(self, **kwargs: Any) -> bool:
        """See Counters.mark_alert."""
        return await self._call("mark_alert", **kwargs)

    async def cache_get(self, key: str) -> bytes | None:
        """See Counters.cache_get."""
        return await self._call("cache_get", key=key)

    async def cache_set(self, key: str, value: bytes, ttl: int) -> None:
        """See Counters.cache_set."""
        return await self._call("cache_set", key=key, value=value, ttl=ttl)

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
