"""The analytics REST API: cost over time and cost by model, provider or key.

`GET lcm/api/analytics/timeseries` and `GET lcm/api/analytics/breakdown`, JSON or
(`?format=csv`) CSV. Both read the usage rollups (store/rollup.py), never the raw
log, and shape it with core/analytics.py; days are calendar days in the configured
`analytics_timezone`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..core import analytics
from ..core.errors import BadRequest
from ..store import logs as log_table
from ..store import rollup
from ..store.timeutil import to_iso
from .api_handlers import LCMAPIHandler, answers_errors
from .services import LCMServices

MAX_BREAKDOWN_LIMIT = 1000


class AnalyticsHandler(LCMAPIHandler):
    """Shared parsing of the period, filters and output format."""

    auth_resource = "lcm:analytics"

    def period(self) -> analytics.Period:
        """The days asked for, in the configured timezone."""
        return analytics.resolve_period(
            self.get_argument("period", None) or None,
            self.get_argument("start", None) or None,
            self.get_argument("end", None) or None,
            analytics.load_timezone(self.lcm.settings.analytics_timezone),
        )

    async def filters(self) -> dict:
        """The key_id, provider, model, user and notebook filters given (the others None);
        a team's user (not an admin) sees their own calls only."""
        mine = await self.only_mine()
        return {
            "key_id": self.int_arg("key_id", None),
            "provider": self.get_argument("provider", None) or None,
            "model": self.get_argument("model", None) or None,
            "user": mine or self.get_argument("user", None) or None,
            "notebook": self.get_argument("notebook", None) or None,
        }

    def csv_wanted(self) -> bool:
        """True for `format=csv`, False for JSON (the default)."""
        fmt = self.get_argument("format", "json") or "json"
        if fmt not in ("json", "csv"):
            raise BadRequest("format must be json or csv", param="format")
        return fmt == "csv"

    def reply_csv(self, columns, records, name: str) -> None:
        """Answer records as a CSV download."""
        self.set_header("Content-Disposition", f'attachment; filename="lcm-{name}.csv"')
        # APIHandler.finish would set application/json over a Content-Type set here.
        self.finish(analytics.to_csv(columns, records), set_content_type="text/csv; charset=utf-8")


def timeseries_points(db, period: analytics.Period, filters: dict) -> list[dict]:
    """The timeseries points: one per day of the period, over the calls the filters keep."""
    totals = rollup.by_day(db, period.bounds(), **filters)
    return [t.point(day) for day, t in zip(period.days, totals, strict=True)]


class TimeseriesHandler(AnalyticsHandler):
    """`GET lcm/api/analytics/timeseries?period=|start=&end=&key_id=&model=&provider=&format=`."""

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        period, filters, as_csv = self.period(), await self.filters(), self.csv_wanted()
        await self.lcm.flush_logs()  # the calls just made count (as GET logs does)
        points = await self.lcm.store.run(timeseries_points, period, filters)
        if as_csv:
            self.reply_csv(analytics.POINT_FIELDS, points, "timeseries")
        else:
            self.reply({**period.to_json(), "points": points})


def breakdown_items(db, by: str, limit: int, period: analytics.Period, filters: dict) -> list[dict]:
    """The breakdown items; by key, each named after its key and carrying its key_id."""
    bounds = period.bounds()
    groups = rollup.by_group(db, by, bounds[0], bounds[-1], **filters)
    ranked = analytics.top_with_other(groups, limit)
    if by != "key":
        return [totals.item(name or "(none)") for name, totals in ranked]
    names = rollup.key_names(db, [kid for kid, _ in ranked if isinstance(kid, int)])
    items = []
    for kid, totals in ranked:
        if kid == analytics.OTHER:
            name, key_id = analytics.OTHER, None
        elif kid == rollup.NO_KEY:
            name, key_id = "(no key)", None
        else:
            assert isinstance(kid, int)
            name, key_id = names.get(kid, f"key {kid}"), kid
        items.append({**totals.item(name), "key_id": key_id})
    return items


class BreakdownHandler(AnalyticsHandler):
    """`GET lcm/api/analytics/breakdown?period=&by=model|provider|key&limit=&key_id=&...`."""

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        period, filters, as_csv = self.period(), await self.filters(), self.csv_wanted()
        by = self.get_argument("by", "model") or "model"
        if by not in analytics.BREAKDOWN_BY:
            raise BadRequest(f"by must be one of {', '.join(analytics.BREAKDOWN_BY)}", param="by")
        limit = self.int_arg("limit", 10, lo=1, hi=MAX_BREAKDOWN_LIMIT)
        await self.lcm.flush_logs()
        items = await self.lcm.store.run(breakdown_items, by, limit, period, filters)
        if as_csv:
            columns = (*analytics.ITEM_FIELDS, "key_id") if by == "key" else analytics.ITEM_FIELDS
            self.reply_csv(columns, items, f"breakdown-{by}")
        else:
            self.reply({**period.to_json(), "by": by, "limit": limit, "items": items})


class ShadowHandler(AnalyticsHandler):
    """`GET lcm/api/analytics/shadow?period=|start=&end=&key_id=`: what auto routing would
    have saved on the calls made with routing off, per key (the evidence to turn it on)."""

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        period, key_id = self.period(), self.int_arg("key_id", None)
        bounds = period.bounds()
        start, end = (
            to_iso(datetime.fromtimestamp(b, timezone.utc)) for b in (bounds[0], bounds[-1])
        )
        await self.lcm.flush_logs()
        keys = await self.lcm.store.run(log_table.shadow_savings, start, end, key_id)
        self.reply(
            {
                **period.to_json(),
                "keys": keys,
                "calls": sum(k["calls"] for k in keys),
                "saving_usd": sum(k["saving_usd"] for k in keys),
            }
        )


def analytics_handlers(lcm: LCMServices, prefix: str = "lcm/api") -> list[tuple]:
    """The URL rules of the analytics API, relative to the server's base_url."""
    kwargs = {"lcm": lcm}
    return [
        (rf"/{prefix}/analytics/timeseries", TimeseriesHandler, kwargs),
        (rf"/{prefix}/analytics/breakdown", BreakdownHandler, kwargs),
        (rf"/{prefix}/analytics/shadow", ShadowHandler, kwargs),
    ]
