"""Budgets and rate limits on the request path, and reconciliation from the call log.

`Guard.admit` is the pipeline's one guardrail step (rate limit plus budget
reservation in a single round trip); `Guard.settle` books the actual cost once
the call is over and hands threshold crossings to the alerts, off the request
path. `reconcile` makes the counters equal to what proxy_logs says was spent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ..core.budget import (
    budget_exceeded_message,
    current_month,
    month_bounds,
    reservation_units,
    to_units,
    to_usd,
)
from ..core.errors import BudgetExceeded, RateLimited
from ..core.pricing import ModelPrice
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


@dataclass(slots=True)
class Hold:
    """What `admit` granted one call: settle or release it exactly once."""

    key: KeyRecord
    call_id: str
    month: str
    rate: RateState | None
    reserved: bool
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
    ) -> None:
        self.counters = counters
        self.store = store
        self._box = box
        self.alerts = alerts
        self.soft_budgets = soft_budgets
        self.default_output_tokens = default_output_tokens
        self._unpriced_units = to_units(unpriced_reserve_usd)
        self._tasks: set[asyncio.Task] = set()

    async def admit(
        self,
        key: KeyRecord,
        call_id: str,
        price: ModelPrice | None,
        body: dict | None,
        *,
        generates: bool = True,
    ) -> Hold | None:
        """Admit a call or raise RateLimited/BudgetExceeded; None when the key has no limits.

        `generates`: False for calls that produce no output tokens (embeddings), so no
        default output allowance is held for them.
        """
        budget = key.monthly_budget_usd
        if key.rate_limit_rpm is None and budget is None:
            return None
        month = current_month()
        reserve = 0
        if budget is not None and not self.soft_budgets:
            reserve = reservation_units(
                price,
                body,
                default_output_tokens=self.default_output_tokens if generates else 0,
                unpriced_units=self._unpriced_units,
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
        hold = Hold(key, call_id, month, admission.rate, reserved=budget is not None)
        if admission.allowed:
            return hold
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
        if key.budget_alerts_enabled:
            # In hard mode settled spend stops short of the budget (the next call's worst
            # case no longer fits): being refused is reaching it, as far as alerts go.
            budget_units = to_units(budget)
            self._spawn(
                self.alerts.check(
                    key,
                    month,
                    admission.spent,
                    max(budget_units, admission.spent),
                    spent=admission.spent,
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

    async def settle(self, hold: Hold, cost_usd: float | None) -> None:
        """Book the call's cost (None or a cache hit: release only), once; alerts follow."""
        if hold.done or not hold.reserved:
            hold.done = True
            return
        hold.done = True
        key, month = hold.key, hold.month
        try:
            if cost_usd is None:
                await self.counters.release(key_id=key.id, call_id=hold.call_id, month=month)
                return
            cost = to_units(cost_usd)
            state = await self.counters.settle(
                key_id=key.id, call_id=hold.call_id, month=month, cost=cost
            )
        except Exception:  # the answer is already out: never fail the call for this
            log.exception("lcm: could not settle call %s", hold.call_id)
            return
        if key.budget_alerts_enabled and key.monthly_budget_usd and cost:
            self._spawn(self.alerts.check(key, month, state.spent - cost, state.spent))

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
    ) -> dict[str, Any]:
        """Set each key's month counter to the spend proxy_logs records; report the drift."""
        counters = counters or self.counters
        month = month or current_month()
        start, end = month_bounds(month)
        logged = await self.store.run(month_spend_units, start=start, end=end, key_id=key_id)
        keys = await self.store.run(key_table.list_keys, self._box)
        report = []
        for key in keys:
            if key_id is not None and key.id != key_id:
                continue
            truth = logged.get(key.id, 0)
            before = await counters.set_spent(key_id=key.id, month=month, spent=truth)
            if before or truth:
                report.append(
                    {
                        "key_id": key.id,
                        "name": key.name,
                        "counter_usd": to_usd(before),
                        "logged_usd": to_usd(truth),
                        "drift_usd": to_usd(before - truth),
                    }
                )
        drifted = [r for r in report if r["drift_usd"]]
        if drifted:
            log.warning("lcm: reconcile %s corrected %d key(s): %s", month, len(drifted), drifted)
        return {"month": month, "store": getattr(counters, "name", "?"), "keys": report}

    async def drain(self) -> None:
        """Wait for alert tasks still running."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
