"""The management REST API (Jupyter-authenticated): keys, logs, pricing.

Every handler requires the Jupyter login (`@web.authenticated`) and the
authorizer's consent on an `lcm:*` resource; kernels log in with a credential of
their own that only these handlers accept (kernel_auth.py). Client mistakes answer
4xx with `{"error": {"message", "code", "param"}}`, never a 500.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..core.analytics import load_timezone
from ..core.budget import current_month, to_usd
from ..core.errors import BadRequest, LCMError, NotFound, PermissionDenied
from ..core.keyspec import validate_key_fields
from ..core.logfilter import parse_log_filter
from ..core.pricing import ModelPrice, PricingError
from ..store import alerts as alert_table
from ..store import feedback as feedback_table
from ..store import keys as key_table
from ..store import logs as log_table
from ..store.db import describe
from .kernel_auth import KERNEL_USER, LCM_ONLY, kernel_user
from .services import LCMServices
from .team import HubAPI, Member

MAX_LOG_PAGE = 1000
LOG_FILTER_ARGS = (
    "model",
    "provider",
    "status",
    "start",
    "end",
    "since",
    "until",
    "user",
    "notebook",
)
UNPRICED_DAYS = 90
"""GET lcm/api/pricing lists the unpriced models called in this many days."""
MAX_ID = 2**62
"""Ids and whole-number arguments above this are refused: SQLite integers are int64."""


def answers_errors(method):
    """Render an LCMError raised by a handler method as its JSON error (not a 500)."""

    @functools.wraps(method)
    async def wrapper(self: LCMAPIHandler, *args: str) -> None:
        try:
            await method(self, *args)
        except LCMError as err:
            self.fail(err)

    return wrapper


def _found(value, what: str):
    if value is None:
        raise NotFound(f"no {what}")
    return value


class LCMAPIHandler(APIHandler):
    """Shared plumbing: the services, the kernels' login, JSON in and out, errors as JSON."""

    auth_resource = "lcm"
    _kernel_authenticated = False

    def initialize(self, lcm: LCMServices) -> None:
        self.lcm = lcm

    async def prepare(self) -> None:  # type: ignore[override]  # as APIHandler's own
        user = kernel_user(self)  # a 403 for a wrong kernel credential
        if user is None:
            await super().prepare()  # Jupyter's login: token, password cookie, JupyterHub
            return
        if not self.check_host():
            raise web.HTTPError(403)
        # Like Jupyter's token: a header no browser sends by itself, so no XSRF or origin
        # check (which Jupyter skips for token-authenticated requests too).
        self._kernel_authenticated = True
        self.current_user = self._jupyter_current_user = user

    @property
    def authorizer(self):
        """Jupyter's authorizer; for the kernel credential, one that allows `lcm:*` only."""
        return LCM_ONLY if self._kernel_authenticated else super().authorizer

    async def member(self) -> Member:
        """Who asks, as the team sees them (server/team.py). Under JupyterHub, the hub user
        logged in; else, and for the kernels' credential, this server's user. Off team mode,
        whoever may use the server is its admin, as they always were."""
        directory = self.lcm.team.directory
        user = self.current_user
        hub = HubAPI.from_environment() is not None
        name = user.username if hub and user is not KERNEL_USER else directory.owner
        member = await directory.member(name)
        if not self.lcm.settings.team_mode:
            return Member(member.name, True, member.groups)
        return member

    async def only_mine(self) -> str | None:
        """The user whose calls and keys the asker may see: None (all) for an admin."""
        member = await self.member()
        return None if member.admin else member.name

    async def require_admin(self, what: str) -> Member:
        """The asker, if a team admin (off team mode, everyone is); 403 otherwise."""
        member = await self.member()
        if not member.admin:
            raise PermissionDenied(
                f"In team mode only a team admin may {what} ({member.name} is not one: the "
                "hub's admins, holders of the hub scope custom:lcm:admin, or "
                "LCMExtension.team_admins)."
            )
        return member

    def json_body(self) -> Any:
        """The request body as JSON; BadRequest if it is not."""
        raw = self.request.body
        if not raw or not raw.strip():
            raise BadRequest("a JSON body is required")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from exc
        except RecursionError:
            raise BadRequest("the body is nested too deeply to be read") from None

    def optional_body(self) -> dict:
        """The JSON object body, {} when there is none; BadRequest for anything else."""
        if not self.request.body.strip():
            return {}
        body = self.json_body()
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    def reply(self, data: Any, status: int = 200) -> None:
        """Answer `data` as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def fail(self, err: LCMError) -> None:
        """Answer an error as JSON with its status."""
        self.set_status(err.status)
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps({"error": {"message": err.message, "code": err.code, "param": err.param}})
        )

    def int_arg(self, name: str, default: int | None, *, lo: int = 0, hi: int = MAX_ID):
        """A whole-number query argument, checked."""
        raw = self.get_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{name} must be a whole number", param=name) from None
        if value < lo or value > hi:
            raise BadRequest(f"{name} must be between {lo} and {hi}", param=name)
        return value


def _is_id(value: Any) -> bool:
    """True for a whole number that can be a row id (not a bool, not beyond int64)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def _key_id(raw: str) -> int:
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise NotFound(f"no key {raw!r}")
    return int(raw)


class KeysHandler(LCMAPIHandler):
    """`GET|POST lcm/api/keys`."""

    auth_resource = "lcm:keys"

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        include_revoked = self.get_argument("include_revoked", "true") != "false"
        records = await self.lcm.store.run(
            key_table.list_keys, self.lcm.box, include_revoked=include_revoked
        )
        mine = await self.only_mine()
        self.reply({"keys": [r.public() for r in records if mine is None or r.owner == mine]})

    @web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        me = await self.require_admin("create keys")
        owner = me.name if self.lcm.settings.team_mode else None
        fields = validate_key_fields(self.json_body(), partial=False)
        if self.lcm.settings.team_mode and fields["monthly_budget_usd"] is None:
            raise BadRequest(
                "In team mode every key has a budget: set monthly_budget_usd.",
                param="monthly_budget_usd",
            )
        record, plain = await self.lcm.store.run(
            key_table.create_key, self.lcm.box, fields, owner=owner
        )
        self.reply({**record.public(), "key": plain}, status=201)


class KeyHandler(LCMAPIHandler):
    """`GET|PATCH|DELETE lcm/api/keys/{id}`; DELETE revokes (the key's logs stay)."""

    auth_resource = "lcm:keys"

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self, key_id: str) -> None:
        self.reply((await self._visible(key_id)).public())

    async def _visible(self, key_id: str):
        """The key, if the asker may see it (a team's user: their own); else NotFound."""
        record = await self.lcm.store.run(key_table.get_key, self.lcm.box, _key_id(key_id))
        mine = await self.only_mine()
        if record is not None and mine is not None and record.owner != mine:
            record = None
        return _found(record, f"key {key_id}")

    @web.authenticated
    @authorized
    @answers_errors
    async def patch(self, key_id: str) -> None:
        kid = _key_id(key_id)
        await self.require_admin("change keys")
        fields = validate_key_fields(self.json_body(), partial=True)
        if self.lcm.settings.team_mode and fields.get("monthly_budget_usd", 0) is None:
            raise BadRequest("In team mode every key has a budget.", param="monthly_budget_usd")
        record = await self.lcm.store.run(key_table.update_key, self.lcm.box, kid, fields)
        self.lcm.keys.forget(kid)
        record = _found(record, f"key {key_id}")
        if "monthly_budget_usd" in fields:
            # Spend of keys without a budget is not counted live: count it now.
            await self.lcm.reconcile(key_id=kid)
        self.reply(record.public())

    @web.authenticated
    @authorized
    @answers_errors
    async def delete(self, key_id: str) -> None:
        kid = _key_id(key_id)
        await self._visible(key_id)  # a user may revoke their own key
        record = await self.lcm.store.run(key_table.revoke_key, self.lcm.box, kid)
        self.lcm.keys.forget(kid)
        self.reply(_found(record, f"key {key_id}").public())


class LogsHandler(LCMAPIHandler):
    """`GET lcm/api/logs?key_id=&model=&provider=&status=&start=&end=&since=&until=&limit=&before=`:
    newest first; `next_before` pages back through the same filters (core/logfilter.py)."""

    auth_resource = "lcm:logs"

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        args = {name: self.get_argument(name, None) for name in LOG_FILTER_ARGS}
        mine = await self.only_mine()
        if mine is not None:  # a team's user sees their own calls only
            args["user"] = mine
        where = parse_log_filter(
            args,
            load_timezone(self.lcm.settings.analytics_timezone),
            key_id=self.int_arg("key_id", None),
        )
        limit = self.int_arg("limit", 100, lo=1, hi=MAX_LOG_PAGE)
        before = self.get_argument("before", None) or None
        # Rows are written in batches: write the queued ones, so a call just made shows.
        await self.lcm.flush_logs()
        rows = await self.lcm.store.run(log_table.list_logs, where, limit=limit, before=before)
        if rows is None:
            raise BadRequest(
                "before must be a logged call's id (the previous page's next_before)",
                param="before",
            )
        next_before = rows[-1]["id"] if len(rows) == limit else None
        self.reply({"logs": rows, "next_before": next_before})


class LogHandler(LCMAPIHandler):
    """`GET lcm/api/logs/{id}`."""

    auth_resource = "lcm:logs"

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self, log_id: str) -> None:
        row = await self.lcm.store.run(log_table.get_log, log_id)
        if row is None:  # so recent that its row is still on its way: write it, look again
            await self.lcm.pipeline.idle(timeout=1.0)
            await self.lcm.flush_logs()
            row = await self.lcm.store.run(log_table.get_log, log_id)
        mine = await self.only_mine()
        if row is not None and mine is not None and row["user"] != mine:
            row = None
        self.reply(_found(row, f"log {log_id}"))


class FeedbackHandler(LCMAPIHandler):
    """`POST lcm/api/logs/{id}/feedback` `{score: 1|-1, comment?}`; a second post replaces it."""

    auth_resource = "lcm:logs"

    @web.authenticated
    @authorized
    @answers_errors
    async def post(self, log_id: str) -> None:
        body = self.json_body()
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object {score, comment?}")
        score, comment = body.get("score"), body.get("comment")
        if score not in (1, -1) or isinstance(score, bool):
            raise BadRequest("score must be 1 or -1", param="score")
        if comment is not None and (not isinstance(comment, str) or len(comment) > 2000):
            raise BadRequest("comment must be a string of at most 2000 characters", param="comment")
        result = await self.lcm.store.run(feedback_table.set_feedback, log_id, score, comment)
        if result is None:
            # The call may be so recent that its row is still on its way: write it, look again.
            await self.lcm.pipeline.idle(timeout=1.0)
            await self.lcm.flush_logs()
            result = await self.lcm.store.run(feedback_table.set_feedback, log_id, score, comment)
        previous, row = _found(result, f"log {log_id}")
        self.lcm.router.rated(row["routing_decision"], score, previous)
        self.reply({"id": log_id, "feedback": score, "comment": comment, "previous": previous})


class RoutingQualityHandler(LCMAPIHandler):
    """`GET lcm/api/routing/quality`: positive share of routed answers per pair and intent."""

    auth_resource = "lcm:routing"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        board = self.lcm.router.board
        self.reply(
            {
                "threshold": board.threshold,
                "min_ratings": board.min_ratings,
                "scores": [
                    {**score.to_json(), "gated": board.gate(score.from_model, score.to_model)}
                    for score in board.scores()
                ],
            }
        )


class PricingHandler(LCMAPIHandler):
    """`GET|PUT lcm/api/pricing`: the price table in force, and the models called in the last
    UNPRICED_DAYS days that it cannot price (`unpriced_models`); PUT sets overrides."""

    auth_resource = "lcm:pricing"

    async def _table(self) -> dict[str, Any]:
        # Calls just made count as seen: write their queued rows (and rollup) first.
        await self.lcm.flush_logs()
        since = int(time.time()) - UNPRICED_DAYS * 86400
        seen = await self.lcm.store.run(log_table.unpriced_models, since)
        table = self.lcm.pricing.table
        return {
            "version": table.version,
            "currency": "USD",
            "unit": "per_million_tokens",
            "models": [card.to_dict() for card in table.rows()],
            # Calls logged without a price whose model the table in force still cannot price.
            "unpriced_models": [
                m for m in seen if not table.is_known(m["model"], m.get("provider"))
            ],
        }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self._table())

    @web.authenticated
    @authorized
    @answers_errors
    async def put(self) -> None:
        """Body: one price object, a list of them, or {"models": [...]}."""
        await self.require_admin("set prices")
        body = self.json_body()
        items = body.get("models") if isinstance(body, dict) and "models" in body else body
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list) or not items:
            raise BadRequest('send a price object, a list of them, or {"models": [...]}')
        try:
            prices = [ModelPrice.from_dict(item, source="override") for item in items]
        except PricingError as exc:
            raise BadRequest(str(exc)) from exc
        await self.lcm.pricing.set_prices(prices)
        self.reply(await self._table())


class PricingModelHandler(LCMAPIHandler):
    """`DELETE lcm/api/pricing/{model}`: drop an override, back to the bundled price."""

    auth_resource = "lcm:pricing"

    @web.authenticated
    @authorized
    @answers_errors
    async def delete(self, model: str) -> None:
        await self.require_admin("set prices")
        if not await self.lcm.pricing.reset_price(model):
            raise NotFound(f"no price override for {model!r}")
        self.reply({"model": model, "override": False})


def _budget(lcm: LCMServices, record, month: str, state) -> dict[str, Any]:
    """A key's month as the budgets API answers it."""
    budget = record.monthly_budget_usd
    spent, reserved = to_usd(state.spent), to_usd(state.reserved)
    return {
        "key_id": record.id,
        "month": month,
        "budget_usd": budget,
        "spent_usd": spent,
        "reserved_usd": reserved,
        "remaining_usd": None if budget is None else max(budget - spent - reserved, 0.0),
        "budget_mode": lcm.settings.budget_mode,
        "counters": lcm.counters.name,
    }


class BudgetsHandler(LCMAPIHandler):
    """`GET lcm/api/budgets`: every key's month at once (a dashboard's one call, not one per
    key; the counters' reads of one event-loop turn go to Redis as one pipeline)."""

    auth_resource = "lcm:budgets"

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        records = await self.lcm.store.run(key_table.list_keys, self.lcm.box)
        mine = await self.only_mine()
        records = [r for r in records if mine is None or r.owner == mine]
        month = current_month()
        states = await asyncio.gather(
            *(self.lcm.counters.budget(key_id=r.id, month=month) for r in records)
        )
        budgets = [
            {**_budget(self.lcm, r, month, state), "name": r.name, "revoked": r.revoked}
            for r, state in zip(records, states, strict=True)
        ]
        self.reply({"month": month, "budgets": budgets})


class BudgetHandler(LCMAPIHandler):
    """`GET lcm/api/budgets/{key_id}`: this month's budget, spend, reservations, remainder."""

    auth_resource = "lcm:budgets"

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self, key_id: str) -> None:
        kid = _key_id(key_id)
        record = _found(
            await self.lcm.store.run(key_table.get_key, self.lcm.box, kid), f"key {key_id}"
        )
        month = current_month()
        state = await self.lcm.counters.budget(key_id=kid, month=month)
        self.reply(_budget(self.lcm, record, month, state))


class ReconcileHandler(LCMAPIHandler):
    """`POST lcm/api/reconcile` `{key_id?}`: rebuild budget counters from the log; per key
    with spend this month its logged spend, and for keys with a budget the counter and its
    drift (null for keys without one: nothing is counted for them, so nothing drifts)."""

    auth_resource = "lcm:budgets"

    @web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        await self.require_admin("reconcile")
        key_id = self.optional_body().get("key_id")
        if key_id is not None and not _is_id(key_id):
            raise BadRequest("key_id must be a key's id", param="key_id")
        self.reply(await self.lcm.reconcile(key_id=key_id))


class AlertsHandler(LCMAPIHandler):
    """`GET lcm/api/alerts?unread=&key_id=&limit=`; `POST lcm/api/alerts/read {ids?}`."""

    auth_resource = "lcm:alerts"

    @web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        key_id = self.int_arg("key_id", None)
        limit = self.int_arg("limit", 100, lo=1, hi=MAX_LOG_PAGE)
        unread = self.get_argument("unread", "false") in ("1", "true", "yes")
        alerts = await self.lcm.store.run(
            alert_table.list_alerts, key_id=key_id, unread=unread, limit=limit
        )
        me = await self.member()
        if not me.admin:
            # A team's user: their keys' alerts, and their own and their groups' budgets'
            # (a team budget alerts under its counter id, store/team.py).
            keys = await self.lcm.store.run(key_table.list_keys, self.lcm.box)
            mine = {k.id for k in keys if k.owner == me.name}
            mine |= {b.counter_id for b in await self.lcm.team.all() if me.sees(b.kind, b.name)}
            alerts = [a for a in alerts if a["key_id"] in mine]
        self.reply({"alerts": alerts, "unread": sum(1 for a in alerts if not a["read"])})


class AlertsReadHandler(LCMAPIHandler):
    """`POST lcm/api/alerts/read` `{"ids": [...]}` (no ids: all): mark alerts read."""

    auth_resource = "lcm:alerts"

    @web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        ids = self.optional_body().get("ids")
        if ids is not None and (not isinstance(ids, list) or not all(map(_is_id, ids))):
            raise BadRequest("ids must be a list of alert ids", param="ids")
        changed = await self.lcm.store.run(alert_table.mark_read, ids)
        self.reply({"marked_read": changed})


class StatusHandler(LCMAPIHandler):
    """`GET lcm/api/status`: version, database, counters backend, price table, writer health."""

    auth_resource = "lcm:status"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from .._version import __version__

        lcm = self.lcm
        writer = lcm.log_writer
        self.reply(
            {
                "version": __version__,
                "db_path": str(lcm.settings.db_path),
                "database": describe(lcm.settings.store_target),
                "counters": lcm.counters.name,
                "redis_configured": bool(lcm.settings.redis_url),
                "pricing_version": lcm.pricing.table.version,
                "budget_mode": lcm.settings.budget_mode,
                "logs_written": writer.written,
                "logs_failed": writer.failed,
                # Refused for a missing or unknown proxy key: counted here, never logged.
                "unauthenticated_requests": lcm.pipeline.unauthenticated,
            }
        )


def api_handlers(lcm: LCMServices, prefix: str = "lcm/api") -> list[tuple]:
    """The URL rules of the REST API, relative to the server's base_url."""
    kwargs = {"lcm": lcm}
    return [
        (rf"/{prefix}/status", StatusHandler, kwargs),
        (rf"/{prefix}/keys", KeysHandler, kwargs),
        (rf"/{prefix}/keys/([^/]+)", KeyHandler, kwargs),
        (rf"/{prefix}/logs", LogsHandler, kwargs),
        (rf"/{prefix}/logs/([^/]+)", LogHandler, kwargs),
        (rf"/{prefix}/logs/([^/]+)/feedback", FeedbackHandler, kwargs),
        (rf"/{prefix}/routing/quality", RoutingQualityHandler, kwargs),
        (rf"/{prefix}/pricing", PricingHandler, kwargs),
        (rf"/{prefix}/pricing/(.+)", PricingModelHandler, kwargs),
        (rf"/{prefix}/budgets", BudgetsHandler, kwargs),
        (rf"/{prefix}/budgets/([^/]+)", BudgetHandler, kwargs),
        (rf"/{prefix}/reconcile", ReconcileHandler, kwargs),
        (rf"/{prefix}/alerts", AlertsHandler, kwargs),
        (rf"/{prefix}/alerts/read", AlertsReadHandler, kwargs),
    ]
