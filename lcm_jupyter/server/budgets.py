"""Budgets and rate limits on the request path, and reconciliation from the call log.

`Guard.admit` is the pipeline's one guardrail step (rate limit plus budget
reservation in a single round trip); `Guard.settle` books the actual cost once
the call is over and hands threshold crossings to the alerts, off the request
path. `reconcile` makes the counters equal to what proxy_logs says was spent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..core.budget import (
    budget_exceeded_message,
    crossed_thresholds,
    current_month,
    month_bounds,
    reservation_units,
    to_units,
    to_usd,
    unpriced_model_message,
)
from ..core.errors import BudgetExceeded, LimitsUnavailable, ModelNotPriced, RateLimited
from ..core.pricing import RateCard
from ..core.ratelimit import (
    rate_limit_headers,
    rate_limited_message,
    retry_after,
    retry_after_ms,
)
from ..store import keys as key_table
from ..store.counters import Counters, RateState
from ..store.keys import KeyRecord
from ..store.spend import month_spend_units
from ..store.store import Store
from .alerts import AlertService

log = logging.getLogger("lcm_jupyter")

_NO_LIMIT = 2**62  # a budget no reservation reaches: for re-placing known reservations


@dataclass(slots=True)
class Hold:
    """What `admit` granted one call: settle or release it exactly once."""

    key: KeyRecord
    call_id: str
    month: str
    rate: RateState | None
    reserved: bool
    reserve: int = 0
    done: bool = False

    def headers(self) -> list[tuple[str, str]]:
        """The rate-limit headers every answer to this call carries."""
        if self.rate is None:
            return []
        return rate_limit_headers(
            limit=self.rate.limit,
            remaining=self.rate.remaining,
            reset_seconds=self.rate.reset_seconds,
        )


class _Books:
    """Bookings run side by side; a reconcile runs alone, once those in flight are done.

    Not a lock around each booking: a Redis booking is a network round trip, and bookings
    in a row through one lock go no faster than one per turn or two of a busy event loop
    (about 100 a second at 32 connections), far below the rate calls end at.
    """

    def __init__(self) -> None:
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()  # clear while a reconcile runs
        self._open.set()
        self._exclusive = asyncio.Lock()

    async def enter(self) -> None:
        """Start a booking: at once, unless a reconcile runs."""
        while not self._open.is_set():
            await self._open.wait()
        self._active += 1
        self._idle.clear()

    def leave(self) -> None:
        """End a booking."""
        self._active -= 1
        if not self._active:
            self._idle.set()

    async def __aenter__(self) -> None:
        """Alone (reconcile): new bookings wait, those in flight end first."""
        await self._exclusive.acquire()
        self._open.clear()
        try:
            await self._idle.wait()
        except BaseException:
            self._open.set()
            self._exclusive.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._open.set()
        self._exclusive.release()


class Guard:
    """Rate limits, budget reservations and settlement against the shared counters."""

    def __init__(
        self,
        *,
        counters: Counters,
        store: Store,
        box: Any,
        alerts: AlertService,
        soft_budgets: bool = False,
        default_output_tokens: int = 4096,
        unpriced_reserve_usd: float = 0.0,
        flush: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.counters = counters
        self._flush = flush
        # Held while a call's cost is booked and its row queued, and while reconcile
        # flushes, sums and sets: a call can then never be in the counter but missing
        # from the sum (its cost wiped) or in the sum and booked again.
        self._books = _Books()
        self.store = store
        self._box = box
        self.alerts = alerts
        self.soft_budgets = soft_budgets
        self.default_output_tokens = default_output_tokens
        self._unpriced_units = to_units(unpriced_reserve_usd)
        self._tasks: set[asyncio.Task] = set()
        # This process's calls in flight that hold a reservation: a store rebuilt from the
        # log (failover either way) knows only settled spend, and gets these back.
        self._live: dict[str, Hold] = {}

    async def admit(
        self,
        key: KeyRecord,
        call_id: str,
        price: RateCard | None,
        body: dict | None,
        *,
        generates: bool = True,
        metered: bool = True,
        model: str | None = None,
        month: str | None = None,
        wire: str | None = None,
        raw_size: int = 0,
    ) -> Hold | None:
        """Admit a call or raise RateLimited/BudgetExceeded; None when the key has no limits.

        `generates`: False for calls that produce no output tokens (embeddings), so no
        default output allowance is held for them. `metered`: False for pass-through
        endpoints, which are never priced. `month`: the one the call is logged in (its
        start), so that counter and log agree at a month's edge.
        """
        budget = key.monthly_budget_usd
        if key.rate_limit_rpm is None and budget is None:
            return None
        month = month or current_month()
        reserve = 0
        if budget is not None and not self.soft_budgets:
            if price is None and metered and not self._unpriced_units:
                # Its cost would be logged as unknown and never reach the counter.
                raise ModelNotPriced(unpriced_model_message(model), param="model")
            reserve = reservation_units(
                price,
                body,
                default_output_tokens=self.default_output_tokens if generates else 0,
                unpriced_units=self._unpriced_units,
                wire=wire,
                raw_size=raw_size,
            )
        admission = await self.counters.admit(
            key_id=key.id,
            call_id=call_id,
            rpm=key.rate_limit_rpm,
            month=month,
            budget=None if budget is None else to_units(budget),
            reserve=reserve,
            soft=self.soft_budgets,
        )
        hold = Hold(key, call_id, month, admission.rate, budget is not None, reserve)
        if admission.allowed:
            if reserve:
                self._live[call_id] = hold
            return hold
        if admission.reason == "unavailable":
            raise LimitsUnavailable(
                "This key's rate limit and budget cannot be checked now: Redis is unavailable "
                "and this server refuses calls with limits meanwhile "
                "(LCMExtension.on_redis_outage = 'refuse'). Try again shortly.",
                headers={"retry-after": "5"},
            )
        if admission.reason == "rate_limit" and admission.rate is not None:
            rate = admission.rate
            raise RateLimited(
                rate_limited_message(limit=rate.limit, reset_seconds=rate.reset_seconds),
                headers=dict(
                    [
                        *hold.headers(),
                        ("retry-after", retry_after(rate.reset_seconds)),
                        # the SDKs prefer this one: they then wait exactly, not a whole second
                        ("retry-after-ms", retry_after_ms(rate.reset_seconds)),
                    ]
                ),
            )
        if budget is not None and key.budget_alerts_enabled:
            # Refused for budget: for the user it is reached, whatever is left unspent, so
            # the thresholds up to 100% fire now (once each: the alerts dedup them).
            self._spawn(
                self.alerts.check(
                    key, month, admission.spent, to_units(budget), spent=admission.spent
                )
            )
        raise BudgetExceeded(
            budget_exceeded_message(
                spent_usd=to_usd(admission.spent),
                reserved_usd=to_usd(admission.reserved),
                budget_usd=budget or 0.0,
                month=month,
            ),
            headers=dict(hold.headers()),
        )

    async def settle(
        self, hold: Hold | None, cost_usd: float | None, record: Callable[[], Any]
    ) -> None:
        """Book the call's cost (None: release only) once, then `record` its log row.

        The row is queued after the counter moved, under the books lock: a failover that
        rebuilds memory counters from the log meanwhile cannot count the call twice.
        """
        if hold is None or hold.done or not hold.reserved:
            if hold is not None:
                hold.done = True
            record()
            return
        hold.done = True
        self._live.pop(hold.call_id, None)
        key, month = hold.key, hold.month
        cost = 0 if cost_usd is None else to_units(cost_usd)
        state = None
        await self._books.enter()
        try:
            if cost_usd is None:
                await self.counters.release(key_id=key.id, call_id=hold.call_id, month=month)
            else:
                state = await self.counters.settle(
                    key_id=key.id, call_id=hold.call_id, month=month, cost=cost
                )
        except Exception:  # the answer is already out: never fail the call for this
            log.exception("lcm: could not settle call %s", hold.call_id)
        finally:
            record()
            self._books.leave()
        if state is not None and key.budget_alerts_enabled and key.monthly_budget_usd and cost:
            before = state.spent - cost
            # Most calls cross no threshold: a task for each would cost the loop for nothing.
            budget = to_units(key.monthly_budget_usd)
            if crossed_thresholds(before, state.spent, budget, key.budget_alert_thresholds):
                self._spawn(self.alerts.check(key, month, before, state.spent))

    async def _replace_reservations(
        self, counters: Counters, key_id: int | None, month: str
    ) -> None:
        for hold in list(self._live.values()):
            if hold.done or hold.month != month or (key_id is not None and hold.key.id != key_id):
                continue
            # No window, no limit: only put the worst case back where budgets see it.
            await counters.admit(
                key_id=hold.key.id,
                call_id=hold.call_id,
                rpm=None,
                month=month,
                budget=_NO_LIMIT,
                reserve=hold.reserve,
            )

    def _spawn(self, coro) -> None:
        # Alerts run off the request path; kept referenced so they are not collected.
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reconcile(
        self,
        *,
        counters: Counters | None = None,
        key_id: int | None = None,
        month: str | None = None,
        drop_reservations: bool = False,
    ) -> dict[str, Any]:
        """Set each key's month counter to the spend proxy_logs records; report the drift."""
        async with self._books:
            return await self.rebuild(counters, key_id, month, drop_reservations)

    async def rebuild(
        self,
        counters: Counters | None = None,
        key_id: int | None = None,
        month: str | None = None,
        drop: bool = False,
    ) -> dict[str, Any]:
        """`reconcile` without the books lock, for the circuit breaker's switch-over.

        The breaker trips inside a counters call, possibly one made under the lock. That
        is safe unlocked: a call whose booking is in flight has not queued its row yet,
        so the sum leaves it out and its booking then lands on the rebuilt store.
        """
        counters = counters or self.counters
        month = month or current_month()
        # Rows still queued would be missing from the sums: write them first, or stop.
        if self._flush is not None and not await self._flush():
            raise RuntimeError("the call log could not be flushed; counters left as they are")
        start, end = month_bounds(month)
        logged = await self.store.run(month_spend_units, start=start, end=end, key_id=key_id)
        keys = await self.store.run(key_table.list_keys, self._box)
        report = []
        for key in keys:
            if key_id is not None and key.id != key_id:
                continue
            truth = logged.get(key.id, 0)
            before = await counters.set_spent(
                key_id=key.id, month=month, spent=truth, drop_reservations=drop
            )
            # Calls are booked on the counter only for keys with a budget: for the others
            # the counter is what the last reconcile put there, and nothing can drift.
            counted = key.monthly_budget_usd is not None
            if before or truth:
                report.append(
                    {
                        "key_id": key.id,
                        "name": key.name,
                        "budget_usd": key.monthly_budget_usd,
                        "counter_usd": to_usd(before) if counted else None,
                        "logged_usd": to_usd(truth),
                        "drift_usd": to_usd(before - truth) if counted else None,
                    }
                )
        await self._replace_reservations(counters, key_id, month)
        # An empty counter (a fresh in-memory store, an expired Redis key) is loaded, not
        # corrected: only a counter that held a different figure is worth a warning.
        drifted = [r for r in report if r["drift_usd"] and r["counter_usd"]]
        if drifted:
            log.warning("lcm: reconcile %s corrected %d key(s): %s", month, len(drifted), drifted)
        loaded = sum(1 for r in report if r["logged_usd"] and r["counter_usd"] == 0)
        if loaded:
            log.info("lcm: reconcile %s loaded %d key(s)' spend from the log", month, loaded)
        return {"month": month, "store": getattr(counters, "name", "?"), "keys": report}

    async def drain(self) -> None:
        """Wait for alert tasks still running."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
