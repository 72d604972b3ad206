"""Scenarios 2 and 3: Redis killed (SIGKILL, then restarted empty) or paused (SIGSTOP, then
SIGCONT) under load, with two servers on one database and one Redis.

Five keys are called at once through both servers (each client keeps to one server):

- `load`: a $100 budget never reached, hammered in every phase: every call reserves and
  settles, so it carries the admission work through the fault (its latency is reported);
- `budget-span`: a budget of K_SPAN worst cases, paced so that it runs out about halfway
  through the outage: spend made on Redis before the fault must count after it, and back;
- `budget-down`: a budget of K_DOWN worst cases first called when Redis is gone, hammered
  from both servers: two servers that each counted alone would admit it twice;
- `rate-span`: `rpm` R_SPAN, paced to offer about 2 x R_SPAN over the run;
- `rate-down`: `rpm` R_DOWN first called when Redis is gone, hammered from both servers.

Phases: `before` (Redis up, T s), `down` (from the fault for T s, then until both servers
are back on Redis after it is restarted or resumed), `after` (T s). Each call's answer is
cut at 20 tokens, so a call costs close to its worst case and a budget of K worst cases
holds about K / 0.8 calls. The run is shorter than a minute, so a key's admissions in any
60 s window are all its admissions.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lcm_jupyter.core.budget import to_units, to_usd

from .harness import (
    Call,
    Cluster,
    Result,
    Simulator,
    chat,
    fmt_statuses,
    http_client,
    log_problems,
    max_in_window,
    ms,
    parse_time,
    percentile,
    rows_for,
    send,
    start_redis,
    statuses,
    until,
    worst_case_units,
)

PHASES = ("before", "down", "after")
K_SPAN, K_DOWN = 24, 10
R_SPAN, R_DOWN = 30, 20
RATE_MARGIN = 0.10  # issue 12: a rate limit exceeded by at most 10% in any minute
SERVERS = 2  # `local`: each server counts alone, so up to SERVERS x a limit (documented)


@dataclass
class Plan:
    """One key's part of the load."""

    name: str
    clients: int
    budget_units: int | None = None
    rpm: int | None = None
    phases: tuple[str, ...] = PHASES
    rate: float | None = None
    """Calls per second over all its clients (paced); None: as fast as answers come."""
    key_id: int = 0
    key: str = ""


class Load:
    """The plans' clients, each on one server over one keep-alive connection."""

    def __init__(self, urls: list[str], plans: list[Plan]) -> None:
        self.urls = urls
        self.phase = PHASES[0]
        self.calls: list[Call] = []
        self.stop = asyncio.Event()
        self._seq = itertools.count()
        self.tasks = [
            asyncio.ensure_future(self._client(plan, n))
            for plan in plans
            for n in range(plan.clients)
        ]

    async def _client(self, plan: Plan, n: int) -> None:
        server = n % len(self.urls)
        interval = plan.clients / plan.rate if plan.rate else 0.0
        next_at = time.monotonic() + interval * n / max(plan.clients, 1)
        async with http_client() as http:
            while not self.stop.is_set():
                if self.phase not in plan.phases:
                    await asyncio.sleep(0.05)
                    continue
                if interval:
                    now = time.monotonic()
                    next_at = max(next_at, now - interval)  # no burst after a slow call
                    await asyncio.sleep(max(0.0, next_at - now))
                    next_at += interval
                call = Call(key=plan.name, server=server, phase=self.phase)
                self.calls.append(call)
                await send(http, self.urls[server], plan.key, chat(next(self._seq)), call)
                if call.failed:
                    await asyncio.sleep(0.1)
                elif call.status != 200 and not interval:
                    await asyncio.sleep(0.05)  # refused: try again soon, without spinning

    async def end(self) -> None:
        """Stop every client after its call in flight."""
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 60)


def _plans(seconds: float) -> list[Plan]:
    span = 3 * seconds
    return [
        Plan("load", clients=4, budget_units=to_units(100)),
        # Its K_SPAN worst cases offered over `before` and half of `down`.
        Plan("budget-span", clients=2, budget_units=0, rate=K_SPAN / (0.5 * span)),
        Plan("budget-down", clients=4, budget_units=0, phases=("down",)),
        Plan("rate-span", clients=2, rpm=R_SPAN, rate=2 * R_SPAN / span),
        Plan("rate-down", clients=4, rpm=R_DOWN, phases=("down",)),
    ]


async def redis_outage(
    root: Path, sim: Simulator, *, fault: str, policy: str, seconds: float
) -> Result:
    """Kill (or pause) Redis under load through two servers; the figures of every key."""
    title = {
        "kill": f"Redis killed under load, 2 servers, on_redis_outage={policy}",
        "pause": f"Redis paused (SIGSTOP) under load, 2 servers, on_redis_outage={policy}",
    }[fault]
    result = Result(f"redis-{fault}" + ("" if fault == "pause" else f":{policy}"), title)
    await sim.configure(latency=0.0, chunk_delay=0.0, stream_chunks=4)
    redis = start_redis(root / "redis")
    cluster = Cluster(
        root / "servers",
        LCM_REDIS_URL=redis.url,
        LCM_OPENAI_BASE_URL=sim.url,
        LCM_ON_REDIS_OUTAGE=policy,
    )
    worst = worst_case_units()
    plans = _plans(seconds)
    for plan in plans:
        if plan.budget_units == 0:
            plan.budget_units = worst * (K_SPAN if plan.name == "budget-span" else K_DOWN)
        budget = to_usd(plan.budget_units) if plan.budget_units is not None else None
        plan.key_id, plan.key = cluster.create_key(
            plan.name, monthly_budget_usd=budget, rate_limit_rpm=plan.rpm
        )
    try:
        servers = await cluster.start(SERVERS)
        await until(_all(cluster, "redis"), 20)
        load = Load([s.chat_url for s in servers], plans)
        await asyncio.sleep(seconds)  # the load for T seconds, Redis up

        trips_before = _breaker_lines(cluster.logs())
        load.phase = "down"
        fault_at = time.monotonic()
        fault_pc = time.perf_counter()  # the clock of Call.t0 / t1
        events = [f"{_clock()} Redis {'killed' if fault == 'kill' else 'paused'}"]
        if fault == "kill":
            redis.kill()
        else:
            redis.pause()
        tripped = await until(_all(cluster, "down"), max(10.0, seconds))
        trip_s = time.monotonic() - fault_at
        events.append(f"{_clock()} both servers on the fallback")
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - fault_at)))
        back_at = time.monotonic()
        events.append(f"{_clock()} Redis {'restarted (empty)' if fault == 'kill' else 'resumed'}")
        if fault == "kill":
            redis.start()
        else:
            redis.resume()
        closed = await until(_all(cluster, "redis"), 30)
        recovery_s = time.monotonic() - back_at
        events.append(f"{_clock()} both servers back on Redis")

        load.phase = "after"
        await asyncio.sleep(seconds)
        await load.end()
        outage_s = back_at - fault_at + recovery_s

        answered = [c for c in load.calls if c.answered]
        ids = {c.id for c in answered if c.id}
        rows = await rows_for(cluster.db_path, ids)
        # Every call is over: what each key still holds, and what the counters say it spent.
        held = {}
        for plan in plans:
            if plan.budget_units is not None:
                held[plan.name] = await until(
                    lambda p=plan: redis.reserved_units(p.key_id) == 0, 10
                )
        books = {p.name: await cluster.budget(servers[0], p.key_id) for p in plans}
    finally:
        cluster.stop()
        redis.stop()
    logs = cluster.logs()

    result.add("calls (all keys)", len(load.calls))
    result.add(
        "fault: tripped both / back on Redis (s, busy machine)",
        f"{'yes' if tripped else 'NO'} in {trip_s:.2f} / "
        f"{'yes' if closed else 'NO'} {recovery_s:.2f} after restart; outage {outage_s:.1f}",
    )
    result.add("breaker trips / returns before the fault (Redis up)", trips_before)
    result.add("breaker trips / returns in all (log lines)", _breaker_lines(logs))
    if fault == "pause":
        timeouts = logs.count("Redis unavailable (TimeoutError")
        result.check("trips on a timeout (redis_timeout)", timeouts, timeouts > 0, ">= 1")
    failed = [c for c in load.calls if c.failed]
    result.check("calls with no answer (transport error)", len(failed), not failed, "= 0")
    fives = [c for c in answered if c.status >= 500]
    if policy == "refuse":
        bad = [c for c in fives if c.status != 503 or c.code != "limits_unavailable"]
        early = [c for c in fives if c.t1 < fault_pc]  # answered while Redis was up
        result.check("5xx (503 limits_unavailable while down)", len(fives), not bad, "503 only")
        result.check("503 before the fault (Redis up)", len(early), not early, "= 0")
    else:
        result.check("5xx", len(fives), not fives, "= 0")
    no_id = [c for c in answered if not c.id]
    lost = ids - rows.keys()
    result.check("answered calls without a row", len(lost) + len(no_id), not lost and not no_id,
                 "= 0")  # fmt: skip

    for plan in plans:
        calls = [c for c in load.calls if c.key == plan.name]
        by_phase = " | ".join(
            f"{p} {fmt_statuses(statuses(c for c in calls if c.phase == p))}"
            for p in PHASES
            if p in plan.phases
        )
        result.add(f"{plan.name}: statuses", by_phase)
        mine = [r for r in rows.values() if r["key_id"] == plan.key_id]
        if plan.name == "load":
            for phase in PHASES:
                lat = [c.latency_ms for c in calls if c.phase == phase and c.status == 200]
                result.add(
                    f"load: p50/p99 ms {phase} (busy machine)",
                    f"{ms(percentile(lat, 50))} / {ms(percentile(lat, 99))}",
                )
        if plan.budget_units is not None:
            _budget_figures(result, plan, mine, books[plan.name], held[plan.name], policy)
        if plan.rpm is not None:
            _rate_figures(result, plan, mine, policy)
    result.notes.append("events (UTC): " + "; ".join(events))
    result.notes.extend(log_problems(logs))
    return result


def _clock() -> str:
    return datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def _all(cluster: Cluster, word: str):
    async def check() -> bool:
        names = await cluster.counters()
        return bool(names) and all(word in name for name in names)

    return check


def _breaker_lines(logs: str) -> str:
    return f"{logs.count('lcm: Redis unavailable')} / {logs.count('lcm: Redis is back')}"


def _budget_figures(
    result: Result, plan: Plan, rows: list[dict], book: dict, released: bool, policy: str
) -> None:
    assert plan.budget_units is not None
    spent = sum(to_units(r["cost_usd"]) for r in rows)
    over = max(0, spent - plan.budget_units)
    pct = 100 * spent / plan.budget_units
    text = (
        f"${to_usd(spent):.6f} of ${to_usd(plan.budget_units):.6f} ({pct:.1f}%), "
        f"over ${to_usd(over):.6f}"
    )
    if plan.name == "load":
        result.add(f"{plan.name}: spend (log)", text)
    elif policy == "local":
        result.check(f"{plan.name}: spend vs budget", text,
                     spent <= SERVERS * plan.budget_units,
                     f"<= {100 * SERVERS}% (each server counts alone)")  # fmt: skip
    else:
        result.check(f"{plan.name}: spend vs budget", text, over == 0, "<= 100%")
    drift = to_units(book["spent_usd"]) - spent
    result.check(
        f"{plan.name}: counter - log spend; held after",
        f"${to_usd(drift):.6f}; ${book['reserved_usd']:.6f}",
        drift == 0 and released and book["reserved_usd"] == 0,
        "0; 0",
    )


def _rate_figures(result: Result, plan: Plan, rows: list[dict], policy: str) -> None:
    assert plan.rpm is not None
    admitted = [parse_time(r["created_at"]) for r in rows if r["status"] == 200]
    most = max_in_window(admitted)
    margin = 100 * (most - plan.rpm) / plan.rpm
    text = f"{most} in 60 s vs rpm {plan.rpm} ({margin:+.0f}%)"
    if policy == "local":
        limit = SERVERS * plan.rpm
        result.check(f"{plan.name}: admitted per 60 s window", text, most <= limit,
                     f"<= {SERVERS} x rpm (each server counts alone)")  # fmt: skip
    else:
        limit = plan.rpm * (1 + RATE_MARGIN)
        result.check(f"{plan.name}: admitted per 60 s window", text, most <= limit, "<= +10%")
