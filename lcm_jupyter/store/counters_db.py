"""`Counters` on the shared database: what keeps limits from failing open while Redis is away.

Servers that share Redis also share the database (the SQLite file, or PostgreSQL for teams).
When Redis goes away each could fall back to counters of its own, but then each would
admit a whole budget, and each a whole rate limit. These counters decide in the
database instead, in one write transaction per call (`BEGIN IMMEDIATE`: SQLite lets one
writer in at a time, across processes), so every server sees every other's holds:

- spend settled and logged: the per-day usage rollup, kept in the log rows' own
  transactions, so it is exact and never counts a row that is not there;
- spend settled but not logged yet, and reservations of calls in flight: `shared_holds`,
  one row per call (a settled hold is dropped as soon as its log row exists, in the same
  transaction that sums, so nothing is counted twice or missed);
- the rate window: `shared_rate`, one row per admitted call for a minute.

Slower than Redis (a transaction per call), exact across servers: no budget overspent,
no rate limit exceeded. Used only while Redis is away (`on_redis_outage = "shared"`).

Exact only while every server decides here. When Redis is away for one server alone (a
network partition, or its own timeouts under load), the others go on counting in Redis,
which this server cannot see, and each side would admit a whole budget. So every server
that counts on Redis says so once a second in `lcm_servers` (`note_redis`), and a server
deciding here waits while another has said so in the last REDIS_SEEN_SECONDS, and then
refuses calls with limits, as `refuse` does. In a whole outage every server stops saying so
as its breaker opens (or at most REDIS_SEEN_SECONDS later), and the wait ends there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from ..core.budget import month_bounds
from .counters import (
    RATE_WINDOW_SECONDS,
    RESERVATION_TTL_SECONDS,
    Admission,
    Admissions,
    BudgetState,
    RateState,
    Settlements,
)
from .db import COUNTERS_LOCK, Database
from .store import Store

__all__ = ["DatabaseCounters"]


def _epoch(stamp: str) -> int:
    """A stored timestamp (month_bounds) as epoch seconds."""
    import calendar

    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))


REDIS_SEEN_SECONDS = 3.0
"""How long a server's word that it counts on Redis stands (it repeats it every second)."""


def note_redis(db: Database, server_id: str, at: float) -> None:
    """Record when `server_id` last counted on Redis (0: it does not now)."""
    db.execute(
        "INSERT INTO lcm_servers (server_id, redis_ok_at) VALUES (?, ?) "
        "ON CONFLICT (server_id) DO UPDATE SET redis_ok_at = excluded.redis_ok_at",
        [server_id, at],
    )


def others_on_redis(db: Database, server_id: str, now: float) -> bool:
    """Whether a server other than `server_id` has said it counts on Redis lately."""
    return (
        db.execute(
            "SELECT 1 FROM lcm_servers WHERE server_id != ? AND redis_ok_at > ? LIMIT 1",
            [server_id, now - REDIS_SEEN_SECONDS],
        ).fetchone()
        is not None
    )


# A call's hold, put or replaced (a repeated call id replaces its own).
_PUT_HOLD = (
    "INSERT INTO shared_holds (call_id, key_id, month, units, settled, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO UPDATE SET key_id = excluded.key_id, "
    "month = excluded.month, units = excluded.units, settled = excluded.settled, "
    "expires_at = excluded.expires_at"
)


def _logged(db: Database, key_id: int, month: str) -> int:
    """Spend of a key's month as the log (its per-day rollup) has it, in units."""
    start, end = (_epoch(s) for s in month_bounds(month))
    row = db.execute(
        "SELECT COALESCE(SUM(cost_units), 0) FROM usage_rollup_day "
        "WHERE key_id = ? AND day >= ? AND day < ?",
        [key_id, start, end],
    ).fetchone()
    return int(row[0])


def _holds(db: Database, key_id: int, month: str, now: float) -> tuple[int, int]:
    """(settled not yet logged, reserved in flight) of a key's month, after cleanup."""
    # A settled call whose row is written is counted by the log now; an expired hold
    # belongs to a process that died.
    db.execute(
        "DELETE FROM shared_holds WHERE key_id = ? AND month = ? AND (expires_at < ? OR "
        "(settled = 1 AND EXISTS (SELECT 1 FROM proxy_logs l WHERE l.id = shared_holds.call_id)))",
        [key_id, month, now],
    )
    settled, reserved = db.execute(
        "SELECT COALESCE(SUM(CASE WHEN settled = 1 THEN units END), 0), "
        "COALESCE(SUM(CASE WHEN settled = 1 THEN 0 ELSE units END), 0) "
        "FROM shared_holds WHERE key_id = ? AND month = ?",
        [key_id, month],
    ).fetchone()
    return int(settled), int(reserved)


def _admit(
    db: Database,
    server_id: str,
    now: float,
    key_id: int,
    call_id: str,
    rpm: int | None,
    month: str,
    budget: int | None,
    reserve: int,
    soft: bool,
) -> Admission:
    with db.write_transaction(lock=COUNTERS_LOCK):
        if others_on_redis(db, server_id, now):
            return Admission(False, "unavailable", None, 0, 0)
        rate = None
        if rpm is not None:
            db.execute(
                "DELETE FROM shared_rate WHERE key_id = ? AND at <= ?",
                [key_id, now - RATE_WINDOW_SECONDS],
            )
            count, first = db.execute(
                "SELECT COUNT(*), MIN(at) FROM shared_rate WHERE key_id = ?", [key_id]
            ).fetchone()
            if count >= rpm:
                reset = RATE_WINDOW_SECONDS
                if rpm > 0:
                    # A place frees when the rpm-th newest call leaves the window.
                    (oldest,) = db.execute(
                        "SELECT at FROM shared_rate WHERE key_id = ? ORDER BY at LIMIT 1 OFFSET ?",
                        [key_id, count - rpm],
                    ).fetchone()
                    reset = max(oldest + RATE_WINDOW_SECONDS - now, 0.0)
                state = RateState(False, rpm, 0, reset)
                return Admission(False, "rate_limit", state, 0, 0)
        spent = reserved = 0
        if budget is not None:
            settled, reserved = _holds(db, key_id, month, now)
            spent = _logged(db, key_id, month) + settled
            held = db.execute(
                "SELECT units FROM shared_holds WHERE call_id = ? AND settled = 0", [call_id]
            ).fetchone()
            mine = held[0] if held else 0  # a repeated call id replaces its own hold
            over = spent >= budget if soft else spent + reserved - mine + reserve > budget
            if over:
                return Admission(False, "budget", None, spent, reserved)
            if not soft:
                db.execute(
                    _PUT_HOLD, [call_id, key_id, month, reserve, 0, now + RESERVATION_TTL_SECONDS]
                )
                reserved += reserve - mine
        if rpm is not None:
            db.execute(
                "INSERT INTO shared_rate (key_id, call_id, at) VALUES (?, ?, ?)",
                [key_id, call_id, now],
            )
            count += 1
            first = now if first is None else first
            rate = RateState(True, rpm, max(rpm - count, 0), first + RATE_WINDOW_SECONDS - now)
        return Admission(True, None, rate, spent, reserved)


def _settle(
    db: Database, now: float, key_id: int, call_id: str, month: str, cost: int
) -> BudgetState:
    with db.write_transaction(lock=COUNTERS_LOCK):
        # Kept, with the actual cost, until its row is written (then the log counts it).
        db.execute(_PUT_HOLD, [call_id, key_id, month, cost, 1, now + RESERVATION_TTL_SECONDS])
        settled, reserved = _holds(db, key_id, month, now)
        return BudgetState(_logged(db, key_id, month) + settled, reserved)


def _release(db: Database, call_id: str) -> None:
    db.execute("DELETE FROM shared_holds WHERE call_id = ? AND settled = 0", [call_id])


def _budget(db: Database, now: float, key_id: int, month: str) -> BudgetState:
    with db.atomic():
        settled, reserved = _holds(db, key_id, month, now)
        return BudgetState(_logged(db, key_id, month) + settled, reserved)


def _window(db: Database, now: float, key_id: int) -> list[tuple[str, float]]:
    rows = db.execute(
        "SELECT call_id, at FROM shared_rate WHERE key_id = ? AND at > ? ORDER BY at",
        [key_id, now - RATE_WINDOW_SECONDS],
    ).fetchall()
    return [(call_id, now - at) for call_id, at in rows]


def _add_window(db: Database, now: float, key_id: int, admissions: Admissions) -> int:
    # Servers adding the same calls at once add each once.
    with db.write_transaction(lock=COUNTERS_LOCK):
        added = 0
        for call_id, age in admissions:
            if age >= RATE_WINDOW_SECONDS:
                continue
            added += db.execute(
                "INSERT INTO shared_rate (key_id, call_id, at) SELECT ?, ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM shared_rate WHERE key_id = ? AND call_id = ?)",
                [key_id, call_id, now - max(age, 0.0), key_id, call_id],
            ).rowcount
        return added


class DatabaseCounters:
    """Admission, settlement and budgets decided in the database all servers share."""

    name = "database"

    def __init__(
        self,
        store: Store,
        *,
        server_id: str = "",
        clock: Callable[[], float] = time.time,
        handover_wait: float = REDIS_SEEN_SECONDS,
    ) -> None:
        self._store = store
        self.server_id = server_id  # this server's name in lcm_servers
        self._handover_wait = handover_wait  # real seconds an admission waits (see admit)
        # True once this server's breaker leaves these counters (Redis is back for it): an
        # admission waiting for others to leave Redis stops waiting and is refused, and the
        # breaker asks Redis instead.
        self.superseded: Callable[[], bool] = lambda: False
        self._clock = clock  # epoch seconds, shared by every server (tests move it)

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
        """See Counters.admit. While another server still counts on Redis, waits for it to
        leave (a whole outage: it will within REDIS_SEEN_SECONDS), then decides."""
        args = (key_id, call_id, rpm, month, budget, reserve, soft)
        admission = await self._store.run(_admit, self.server_id, self._clock(), *args)
        deadline = time.monotonic() + self._handover_wait
        while (
            admission.reason == "unavailable"
            and not self.superseded()
            and time.monotonic() < deadline
        ):
            # Waiting, a cheap read a poll; the decision again once nobody else is on Redis.
            await asyncio.sleep(0.05)
            if not await self._store.run(others_on_redis, self.server_id, self._clock()):
                admission = await self._store.run(_admit, self.server_id, self._clock(), *args)
        return admission

    async def note_redis(self, ok: bool) -> None:
        """Say whether this server counts on Redis now (see the module's docstring)."""
        await self._store.run(note_redis, self.server_id, self._clock() if ok else 0.0)

    async def settle(self, *, key_id: int, call_id: str, month: str, cost: int) -> BudgetState:
        """See Counters.settle."""
        return await self._store.run(_settle, self._clock(), key_id, call_id, month, cost)

    async def release(self, *, key_id: int, call_id: str, month: str) -> None:
        """See Counters.release."""
        await self._store.run(_release, call_id)

    async def budget(self, *, key_id: int, month: str) -> BudgetState:
        """See Counters.budget."""
        return await self._store.run(_budget, self._clock(), key_id, month)

    async def set_spent(
        self, *, key_id: int, month: str, spent: int, drop_reservations: bool = False
    ) -> int:
        """Nothing to set: the log is the spend here. Returns the spend it holds."""
        state = await self.budget(key_id=key_id, month=month)
        return state.spent

    async def recent_settlements(self, *, key_id: int, month: str) -> Settlements:
        """None to report: a settlement here is a hold until its row is written, and the
        spend is always the log plus those holds (nothing a rebuild could erase)."""
        return Settlements()

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
        """Nothing to set (see `set_spent`): (the spend it holds, twice). Its holds of calls
        that are over go as their rows are written."""
        spent = await self.set_spent(key_id=key_id, month=month, spent=base)
        return spent, spent

    async def recent_admissions(self, *, key_id: int) -> list[tuple[str, float]]:
        """See Counters.recent_admissions."""
        return await self._store.run(_window, self._clock(), key_id)

    async def add_admissions(self, *, key_id: int, admissions: Admissions) -> int:
        """See Counters.add_admissions: one transaction, each call id once."""
        if not admissions:
            return 0
        return await self._store.run(_add_window, self._clock(), key_id, list(admissions))

    async def ping(self) -> bool:
        """The database answers whenever the server does."""
        return True

    async def reconnect(self) -> None:
        """Nothing pooled to drop."""

    async def close(self) -> None:
        """The store is closed by its owner."""

    def __repr__(self) -> str:
        return f"DatabaseCounters({self._store.path!r})"
