"""Budgets and rate limits on the request path, and reconciliation from the call log.

`Guard.admit` is the pipeline's one guardrail step (rate limit plus budget
reservation in a single round trip); `Guard.settle` books the actual cost once
the call is over and hands threshold crossings to the alerts, off the request
path. `reconcile` makes the counters equal to what proxy_logs says was spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
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
from ..store import team as team_table
from ..store.counters import RATE_WINDOW_SECONDS, Counters, RateState, Settlements
from ..store.db import connect
from ..store.keys import KeyRecord
from ..store.spend import month_spend_units, user_spend_units
from ..store.store import Store
from ..store.team import TeamBudget, base_call, scope_call
from ..store.timeutil import to_iso
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
    scopes: tuple[TeamBudget, ...] = ()
    """The team budgets (its user's, their groups') holding `reserve` for the call too."""

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


class _Snapshot:
    """One read transaction on a connection of its own: every read in it sees the database
    as it was at the first (SQLite WAL, PostgreSQL REPEATABLE READ), however long the awaits
    between them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._path = store.path
        self._db: Any = None
        self._open = contextlib.ExitStack()

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(db, *args, **kwargs)` in the snapshot (the first call opens it)."""
        if str(self._path) == ":memory:":  # one process's private database: no other writer
            return await self._store.run(fn, *args, **kwargs)
        return await asyncio.to_thread(self._run, fn, args, kwargs)

    def _run(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if self._db is None:
            self._db = connect(self._path)
            self._open.enter_context(self._db.snapshot())
        return fn(self._db, *args, **kwargs)

    async def close(self) -> None:
        """End the read transaction and close its connection."""
        db, self._db = self._db, None
        if db is not None:

            def end() -> None:
                try:
                    self._open.close()
                finally:
                    db.close()

            await asyncio.to_thread(end)


def _logged_ids(db: Any, ids: Iterable[str]) -> set[str]:
    """Which of the call ids `ids` have a row in the log (asked 500 at a time)."""
    ids = list(ids)
    logged: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id FROM proxy_logs WHERE id IN ({marks})"
        logged.update(row[0] for row in db.execute(sql, chunk).fetchall())
    return logged


def _unlogged(
    db: Any, *, month: str, candidates: Iterable[str], key_id: int | None
) -> tuple[set[str], dict[int, dict[str, int]]]:
    """In the snapshot: which `candidates` (call ids) have a row, and per key the calls the
    shared database holds as settled without a row yet (call_id -> units)."""
    logged = _logged_ids(db, candidates)
    sql = (
        "SELECT key_id, call_id, units FROM shared_holds h WHERE month = ? AND settled = 1 "
        "AND key_id >= 0 AND NOT EXISTS (SELECT 1 FROM proxy_logs l WHERE l.id = h.call_id)"
    )
    params: list[Any] = [month]
    if key_id is not None:
        sql += " AND key_id = ?"
        params.append(key_id)
    held: dict[int, dict[str, int]] = {}
    for kid, call_id, units in db.execute(sql, params).fetchall():
        held.setdefault(kid, {})[call_id] = int(units)
    if key_id is None:
        # A team budget's holds are named after their calls (scope_call): the call's row
        # is looked up by the call's own id.
        sql = "SELECT key_id, call_id, units FROM shared_holds WHERE month = ? AND settled = 1 "
        scoped = db.execute(sql + "AND key_id < 0", [month]).fetchall()
        present = _logged_ids(db, {base_call(call_id) for _, call_id, _ in scoped})
        for kid, call_id, units in scoped:
            if base_call(call_id) not in present:
                held.setdefault(kid, {})[call_id] = int(units)
    return logged, held


_ADMITTED_SQL = (
    # A call the limits admitted: answered by the provider or the cache, or failed after
    # admission (the provider unreachable or too slow, the client gone). Not the refusals
    # (rate limit, budget, limits unavailable: 429/503 before any upstream answer) nor the
    # requests refused before the limits (4xx).
    "(status IS NULL OR status < 400 OR ttfb_ms IS NOT NULL OR cache_hit = 1 "
    "OR status IN (499, 502, 504))"
)


def _logged_admissions(db: Any, key_ids: list[int], since: str) -> list[tuple[int, str, str]]:
    """(key_id, call_id, created_at) of the calls admitted since `since`, from the log."""
    if not key_ids:
        return []
    marks = ",".join("?" * len(key_ids))
    return db.execute(
        f"SELECT key_id, id, created_at FROM proxy_logs WHERE created_at >= ? "
        f"AND key_id IN ({marks}) AND {_ADMITTED_SQL}",
        [since, *key_ids],
    ).fetchall()


def scope_record(scope: TeamBudget) -> KeyRecord:
    """A team budget as the alerts see a key: its counter id, name and thresholds."""
    return KeyRecord(
        id=scope.counter_id,
        name=f"{scope.kind} {scope.name}",
        key_prefix="",
        provider="auto",
        monthly_budget_usd=scope.monthly_budget_usd,
        budget_alerts_enabled=scope.budget_alerts_enabled,
        budget_alert_thresholds=scope.budget_alert_thresholds,
        rate_limit_rpm=None,
        routing_mode="off",
        routing_rules=[],
        cache_ttl_seconds=0,
        created_at=scope.updated_at,
        updated_at=scope.updated_at,
        revoked_at=None,
        owner=scope.name if scope.kind == "user" else None,
    )


async def _rebase(
    counters: Counters,
    counter_id: int,
    month: str,
    truth: int,
    pending: dict[str, int],
    recent: Settlements,
    in_log: set[str],
    drop: bool,
) -> tuple[int, int]:
    """Make one counter (a key's or a team budget's) what the log says, as `rebuild` does:
    the log's `truth`, plus the calls settled in the shared database and not logged
    (`pending`), plus the recent settlements whose rows the log lacks."""
    base = truth + sum(pending.values())
    base += sum(
        cost
        for call_id, cost in recent.costs.items()
        if base_call(call_id) not in in_log and call_id not in pending
    )
    # `drop` (Redis taking over again): forget the reservations of calls that are over
    # (logged, or settled in the database), made on Redis before the outage or by admits
    # that timed out; not those of calls still in flight on any server.
    over = [c for c in recent.held if base_call(c) in in_log or c in pending] if drop else []
    return await counters.rebase_spent(
        key_id=counter_id,
        month=month,
        base=base,
        since=recent,
        exclude=list(pending),
        forget=over,
    )


def _epoch(stamp: str) -> float:
    """A stored timestamp (ISO 8601 UTC, "Z") as epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


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
        clock: Callable[[], float] = time.time,
        track_admissions: bool = True,
    ) -> None:
        self.counters = counters
        self._clock = clock  # wall clock (epoch seconds): the log's timestamps are on it
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
        # This process's admissions of the last minute per key with a rate limit (call_id,
        # when), at most rpm of them (the newest: more could not change a window): a store
        # taking over gets them in its window, also when the store left cannot be read (a
        # dead Redis) and before their rows exist. Off when nothing can take over.
        self._track = track_admissions
        self._admitted: dict[int, deque[tuple[str, float]]] = {}

    def worst_case(
        self,
        price: RateCard | None,
        body: dict | None,
        *,
        generates: bool,
        wire: str | None,
        raw_size: int,
    ) -> int:
        """What a call reserves of a budget: its worst-case cost, in money units."""
        return reservation_units(
            price,
            body,
            default_output_tokens=self.default_output_tokens if generates else 0,
            unpriced_units=self._unpriced_units,
            wire=wire,
            raw_size=raw_size,
        )

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
        scopes: Sequence[TeamBudget] = (),
    ) -> Hold | None:
        """Admit a call or raise RateLimited/BudgetExceeded; None when nothing limits it.

        `generates`: False for calls that produce no output tokens (embeddings), so no
        default output allowance is held for them. `metered`: False for pass-through
        endpoints, which are never priced. `month`: the one the call is logged in (its
        start), so that counter and log agree at a month's edge. `scopes`: the team budgets
        the call is charged to besides its key's, each reserving the same worst case.
        """
        budget = key.monthly_budget_usd
        if key.rate_limit_rpm is None and budget is None and not scopes:
            return None
        month = month or current_month()
        reserve = 0
        if (budget is not None or scopes) and not self.soft_budgets:
            if price is None and metered and not self._unpriced_units:
                # Its cost would be logged as unknown and never reach the counter.
                raise ModelNotPriced(unpriced_model_message(model), param="model")
            reserve = self.worst_case(
                price, body, generates=generates, wire=wire, raw_size=raw_size
            )
        booked = await self._admit_scopes(scopes, call_id, month, reserve)
        try:
            return await self._admit_key(key, call_id, month, reserve, booked)
        except BaseException:
            await self._release_scopes(booked, call_id, month)
            raise

    async def _admit_scopes(
        self, scopes: Sequence[TeamBudget], call_id: str, month: str, reserve: int
    ) -> tuple[TeamBudget, ...]:
        """Reserve in each team budget in turn; refused by one, release the others."""
        booked: list[TeamBudget] = []
        try:
            for scope in scopes:
                assert scope.monthly_budget_usd is not None  # TeamBudgets.for_user's
                limit = to_units(scope.monthly_budget_usd)
                admission = await self.counters.admit(
                    key_id=scope.counter_id,
                    call_id=scope_call(call_id, scope.id),
                    rpm=None,
                    month=month,
                    budget=limit,
                    reserve=reserve,
                    soft=self.soft_budgets,
                )
                if admission.reason == "unavailable":
                    raise self._unavailable()
                if not admission.allowed:
                    self._alert_refused(scope_record(scope), month, admission.spent)
                    raise BudgetExceeded(
                        budget_exceeded_message(
                            spent_usd=to_usd(admission.spent),
                            reserved_usd=to_usd(admission.reserved),
                            budget_usd=scope.monthly_budget_usd,
                            month=month,
                            whose=f"The {scope.kind} {scope.name}'s ",
                            advice="A team admin can raise it; or wait for next month.",
                        )
                    )
                booked.append(scope)
        except BaseException:
            await self._release_scopes(booked, call_id, month)
            raise
        return tuple(booked)

    async def _release_scopes(self, scopes: Iterable[TeamBudget], call_id: str, month: str) -> None:
        for scope in scopes:
            try:
                await self.counters.release(
                    key_id=scope.counter_id, call_id=scope_call(call_id, scope.id), month=month
                )
            except Exception:  # its hold expires on its own (the counters' hold TTL)
                log.exception("lcm: could not release call %s in %s", call_id, scope.name)

    @staticmethod
    def _unavailable() -> LimitsUnavailable:
        return LimitsUnavailable(
            "This key's rate limit and budget cannot be checked now: Redis is unavailable "
            "and this server refuses calls with limits meanwhile "
            "(LCMExtension.on_redis_outage = 'refuse'). Try again shortly.",
            headers={"retry-after": "5"},
        )

    async def _admit_key(
        self,
        key: KeyRecord,
        call_id: str,
        month: str,
        reserve: int,
        scopes: tuple[TeamBudget, ...],
    ) -> Hold | None:
        budget = key.monthly_budget_usd
        if key.rate_limit_rpm is None and budget is None:
            hold = Hold(key, call_id, month, None, False, reserve, scopes=scopes)
            if reserve:
                self._live[call_id] = hold
            return hold
        admission = await self.counters.admit(
            key_id=key.id,
            call_id=call_id,
            rpm=key.rate_limit_rpm,
            month=month,
            budget=None if budget is None else to_units(budget),
            reserve=reserve if budget is not None else 0,
            soft=self.soft_budgets,
        )
        hold = Hold(key, call_id, month, admission.rate, budget is not None, reserve, scopes=scopes)
        if admission.allowed:
            if reserve:
                self._live[call_id] = hold
            if key.rate_limit_rpm is not None and self._track:
                self._note_admission(key.id, key.rate_limit_rpm, call_id)
            return hold
        if admission.reason == "unavailable":
            raise self._unavailable()
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
        if budget is not None:
            self._alert_refused(key, month, admission.spent)
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
        if hold is None or hold.done or not (hold.reserved or hold.scopes):
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
            if hold.reserved:
                if cost_usd is None:
                    await self.counters.release(key_id=key.id, call_id=hold.call_id, month=month)
                else:
                    state = await self.counters.settle(
                        key_id=key.id, call_id=hold.call_id, month=month, cost=cost
                    )
            if hold.scopes:
                await self._settle_scopes(hold, None if cost_usd is None else cost)
        except Exception:  # the answer is already out: never fail the call for this
            log.exception("lcm: could not settle call %s", hold.call_id)
        finally:
            record()
            self._books.leave()
        if state is not None:
            self._alert_crossed(key, month, state.spent, cost)

    def _alert_refused(self, budgeted: KeyRecord, month: str, spent: int) -> None:
        """A call refused for `budgeted`'s budget (a key's, or a team budget's record): for
        the user it is reached, whatever is left unspent, so the thresholds up to 100% fire
        now (once each: the alerts dedup them)."""
        if budgeted.budget_alerts_enabled and budgeted.monthly_budget_usd is not None:
            limit = to_units(budgeted.monthly_budget_usd)
            self._spawn(self.alerts.check(budgeted, month, spent, limit, spent=spent))

    def _alert_crossed(self, budgeted: KeyRecord, month: str, spent: int, cost: int) -> None:
        """The alerts of the thresholds a settled `cost` took `budgeted`'s spend across."""
        if not (budgeted.budget_alerts_enabled and budgeted.monthly_budget_usd and cost):
            return
        before = spent - cost
        # Most calls cross no threshold: a task for each would cost the loop for nothing.
        limit = to_units(budgeted.monthly_budget_usd)
        if crossed_thresholds(before, spent, limit, budgeted.budget_alert_thresholds):
            self._spawn(self.alerts.check(budgeted, month, before, spent))

    async def _settle_scopes(self, hold: Hold, cost: int | None) -> None:
        if cost is None:
            await self._release_scopes(hold.scopes, hold.call_id, hold.month)
            return
        for scope in hold.scopes:
            state = await self.counters.settle(
                key_id=scope.counter_id,
                call_id=scope_call(hold.call_id, scope.id),
                month=hold.month,
                cost=cost,
            )
            self._alert_crossed(scope_record(scope), hold.month, state.spent, cost)

    async def _replace_reservations(
        self, counters: Counters, key_id: int | None, month: str
    ) -> None:
        for hold in list(self._live.values()):
            if hold.done or hold.month != month or (key_id is not None and hold.key.id != key_id):
                continue
            # No window, no limit: only put the worst case back where budgets see it.
            if hold.reserved:
                await counters.admit(
                    key_id=hold.key.id,
                    call_id=hold.call_id,
                    rpm=None,
                    month=month,
                    budget=_NO_LIMIT,
                    reserve=hold.reserve,
                )
            for scope in hold.scopes:
                await counters.admit(
                    key_id=scope.counter_id,
                    call_id=scope_call(hold.call_id, scope.id),
                    rpm=None,
                    month=month,
                    budget=_NO_LIMIT,
                    reserve=hold.reserve,
                )

    def _note_admission(self, key_id: int, rpm: int, call_id: str) -> None:
        now = self._clock()
        recent = self._admitted.get(key_id)
        if recent is None or recent.maxlen != max(rpm, 1):
            recent = self._admitted[key_id] = deque(recent or (), maxlen=max(rpm, 1))
        recent.append((call_id, now))
        while recent[0][1] <= now - RATE_WINDOW_SECONDS:
            recent.popleft()

    async def _rebuild_windows(
        self, counters: Counters, source: Counters | None, keys: list[KeyRecord]
    ) -> int:
        """Give the store taking over each rate window's admissions of the last minute.

        The union, each call once (by id): this process's own admissions (also those still
        in flight), what the store being left holds when it can be read (the shared
        database's window after an outage: every server's admissions through it), and the
        log's admitted calls of the last minute (other servers' calls before an outage,
        when Redis is gone). What none of them has: another server's calls in flight or not
        logged yet (its log writer flushes every 0.25 s) until that server switches too and
        adds its own. Returns how many admissions were added.
        """
        limited = [k.id for k in keys if k.rate_limit_rpm is not None]
        if not limited:
            return 0
        now = self._clock()
        merged: dict[int, dict[str, float]] = {kid: {} for kid in limited}

        def add(kid: int, call_id: str, age: float) -> None:
            if age < RATE_WINDOW_SECONDS:
                found = merged[kid]
                # The later admission time of two sources: the stricter window.
                found[call_id] = min(age, found.get(call_id, age))

        since = to_iso(datetime.fromtimestamp(now - RATE_WINDOW_SECONDS, timezone.utc))
        for kid, call_id, created in await self.store.run(_logged_admissions, limited, since):
            add(kid, call_id, max(now - _epoch(created), 0.0))
        for kid in limited:
            for call_id, at in self._admitted.get(kid, ()):
                add(kid, call_id, now - at)
        if source is not None:
            try:
                windows = await asyncio.gather(
                    *(source.recent_admissions(key_id=kid) for kid in limited)
                )
            except Exception as exc:  # a dead Redis at the trip: the log and memory stand in
                log.info("lcm: the %s rate windows cannot be read (%s)", source.name, exc)
            else:
                for kid, window in zip(limited, windows, strict=True):
                    for call_id, age in window:
                        add(kid, call_id, age)
        counts = await asyncio.gather(
            *(
                counters.add_admissions(key_id=kid, admissions=list(merged[kid].items()))
                for kid in limited
                if merged[kid]
            )
        )
        return sum(counts)

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
        *,
        source: Counters | None = None,
        windows: bool = False,
    ) -> dict[str, Any]:
        """`reconcile` without the books lock, for the circuit breaker's switch-over.

        The breaker trips inside a counters call, possibly one made under the lock. That
        is safe unlocked: a call whose booking is in flight has not queued its row yet,
        so the sum leaves it out and its booking then lands on the rebuilt store.

        Each key's spend becomes, atomically in the store: the log (read in one snapshot),
        plus the settlements the store recorded recently whose rows the snapshot lacks (calls
        other servers settled and have not logged yet: never erased), plus those made since
        (the store numbers them), plus the calls the shared database holds as settled and
        not logged. `drop`: also forget the reservations of calls that are over (the store
        held them through an outage), keeping those of calls in flight on any server.
        `windows` (a switch of store): the rate windows too, from this process's
        admissions, the log and `source` (the store being left), see `_rebuild_windows`.
        """
        counters = counters or self.counters
        month = month or current_month()
        # Rows still queued would be missing from the sums: write them first, or stop.
        if self._flush is not None and not await self._flush():
            raise RuntimeError("the call log could not be flushed; counters left as they are")
        start, end = month_bounds(month)
        keys = await self.store.run(key_table.list_keys, self._box)
        keys = [k for k in keys if key_id is None or k.id == key_id]
        # The team budgets with the keys: their counters are rebuilt alike, from the log's
        # record of what each call was charged to.
        scopes = [] if key_id is not None else await self.store.run(team_table.list_budgets)
        snapshot = _Snapshot(self.store)
        try:
            # The snapshot first: a call settled after it has its row written after it too.
            logged = await snapshot.run(month_spend_units, start=start, end=end, key_id=key_id)
            # A user's budget counts all their calls of the month; a group's, the calls
            # charged to it (whoever was in the group then).
            logged_groups: dict[int, int] = {}
            logged_users: dict[str, int] = {}
            if scopes:
                logged_groups = await snapshot.run(
                    team_table.budget_spend_units, start=start, end=end
                )
                logged_users = await snapshot.run(user_spend_units, start=start, end=end)
            ids = [k.id for k in keys] + [b.counter_id for b in scopes]
            recents: list[Settlements] = await asyncio.gather(
                *(counters.recent_settlements(key_id=i, month=month) for i in ids)
            )
            candidates = {base_call(call_id) for r in recents for call_id in (*r.costs, *r.held)}
            in_log, held = await snapshot.run(
                _unlogged, month=month, candidates=candidates, key_id=key_id
            )
        finally:
            await snapshot.close()
        scope_recents = recents[len(keys) :]
        recents = recents[: len(keys)]
        report = []
        for key, recent in zip(keys, recents, strict=True):
            truth = logged.get(key.id, 0)
            before, now = await _rebase(
                counters, key.id, month, truth, held.get(key.id, {}), recent, in_log, drop
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
                        # What the rebuild changed: calls settled and not logged yet are
                        # in the counter rightly, and no drift.
                        "drift_usd": to_usd(before - now) if counted else None,
                    }
                )
        team = []
        for scope, recent in zip(scopes, scope_recents, strict=True):
            if scope.kind == "user":
                truth = logged_users.get(scope.name, 0)
            else:
                truth = logged_groups.get(scope.id, 0)
            pending = held.get(scope.counter_id, {})
            before, now = await _rebase(
                counters, scope.counter_id, month, truth, pending, recent, in_log, drop
            )
            if before or truth:
                team.append(
                    {
                        "kind": scope.kind,
                        "name": scope.name,
                        "budget_usd": scope.monthly_budget_usd,
                        "counter_usd": to_usd(before),
                        "logged_usd": to_usd(truth),
                        "drift_usd": to_usd(before - now),
                    }
                )
        await self._replace_reservations(counters, key_id, month)
        if windows:
            try:
                added = await self._rebuild_windows(counters, source, keys)
            except Exception:
                log.exception("lcm: could not rebuild the rate windows in the %s", counters.name)
            else:
                if added:
                    log.info("lcm: %d admission(s) of the last minute carried over", added)
        # An empty counter (a fresh in-memory store, an expired Redis key) is loaded, not
        # corrected: only a counter that held a different figure is worth a warning.
        drifted = [r for r in report if r["drift_usd"] and r["counter_usd"]]
        if drifted:
            log.warning("lcm: reconcile %s corrected %d key(s): %s", month, len(drifted), drifted)
        loaded = sum(1 for r in report if r["logged_usd"] and r["counter_usd"] == 0)
        if loaded:
            log.info("lcm: reconcile %s loaded %d key(s)' spend from the log", month, loaded)
        return {
            "month": month,
            "store": getattr(counters, "name", "?"),
            "keys": report,
            "team_budgets": team,
        }

    async def drain(self) -> None:
        """Wait for alert tasks still running."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
