"""Budget alerts: one per key, month and threshold, stored and optionally sent to a webhook.

Runs off the request path. Dedup is twofold: SET NX in the shared store (shared by
every server process) and the unique constraint of the alerts table, so neither
a Redis outage nor two processes crossing at once can make a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from ..core.budget import alert_message, crossed_thresholds, to_units, to_usd, webhook_payload
from ..store import alerts as alert_table
from ..store.counters import SharedKV
from ..store.keys import KeyRecord
from ..store.store import Store

log = logging.getLogger("lcm_jupyter")

WEBHOOK_TIMEOUT_SECONDS = 5.0


class AlertService:
    """Turns budget threshold crossings into alerts."""

    def __init__(
        self,
        *,
        store: Store,
        counters: SharedKV | None = None,
        locale: str = "en",
        webhook_url: str | None = None,
    ) -> None:
        self.store = store
        self.counters = counters
        self.locale = locale
        self.webhook_url = webhook_url
        self.sent = 0

    async def check(
        self, key: KeyRecord, month: str, before: int, after: int, *, spent: int | None = None
    ) -> list[int]:
        """Record the alerts of thresholds crossed from `before` to `after` units; their ids.

        `spent` is the spend the message shows, when it is not `after` (a call refused
        for budget counts as reaching it, though less was settled).
        """
        budget_usd = key.monthly_budget_usd or 0.0
        shown = to_usd(after if spent is None else spent)
        created = []
        for threshold in crossed_thresholds(
            before, after, to_units(budget_usd), key.budget_alert_thresholds
        ):
            if self.counters is not None:
                try:
                    if not await self.counters.mark_alert(
                        key_id=key.id, month=month, threshold=threshold.percent
                    ):
                        continue
                except Exception:  # counters down: the table's unique constraint still dedups
                    log.debug("lcm: alert mark failed; relying on the alerts table", exc_info=True)
            message = alert_message(
                key_name=key.name,
                percent=threshold.percent,
                spent_usd=shown,
                budget_usd=budget_usd,
                month=month,
                locale=self.locale,
            )
            alert_id = await self.store.run(
                alert_table.insert_alert,
                key_id=key.id,
                month=month,
                threshold=threshold.percent,
                severity=threshold.severity,
                message=message,
            )
            if alert_id is None:
                continue
            created.append(alert_id)
            log.warning("lcm: %s", message)
            if self.webhook_url:
                payload = webhook_payload(
                    key_name=key.name,
                    key_id=key.id,
                    percent=threshold.percent,
                    severity=threshold.severity,
                    message=message,
                    spent_usd=shown,
                    budget_usd=budget_usd,
                    month=month,
                )
                await self._post(payload)
        return created

    async def _post(self, payload: dict) -> None:
        assert self.webhook_url  # called only when one is set
        try:
            timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(
                    self.webhook_url,
                    data=json.dumps(payload),
                    headers={"content-type": "application/json"},
                ) as resp,
            ):
                if resp.status >= 400:
                    log.warning("lcm: alert webhook answered %s", resp.status)
                else:
                    self.sent += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("lcm: alert webhook failed: %s", exc)
