"""Benchmark: the analytics queries over the usage rollup, 90 days of many calls.

    python tests/benchmarks/bench_analytics.py [--rows 1000000] [--keys 20] [--runs 20]

Fills a temporary database's proxy_logs with `--rows` calls spread evenly over
the last 90 days (`--keys` keys x 8 models of 3 providers) by plain executemany,
then applies migration 0004, whose backfill builds the rollup from them (the
same figures the log writer's `rollup.add_batch` keeps up call by call; that
path is timed separately on 500-row batches). Then times, p50 and p99 over
`--runs` runs, the 90-day timeseries (UTC and Asia/Kolkata) and the breakdowns
by model and by key, exactly as the handlers run them minus HTTP.
Target: each under 100 ms for 90 days over 10M rows.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lcm_jupyter.core import analytics  # noqa: E402
from lcm_jupyter.store import rollup  # noqa: E402
from lcm_jupyter.store.db import connect  # noqa: E402
from lcm_jupyter.store.migrations import migrations  # noqa: E402

MODELS = [
    ("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("openai", "o3-mini"),
    ("anthropic", "claude-3-5-haiku"), ("anthropic", "claude-sonnet-4"),
    ("anthropic", "claude-opus-4"), ("google", "gemini-2.0-flash"), ("google", "gemini-2.5-pro"),
]  # fmt: skip
COLUMNS = (
    "id", "key_id", "provider", "model", "requested_model", "input_tokens", "output_tokens",
    "cost_usd", "unpriced", "savings_usd", "latency_ms", "status", "created_at",
)  # fmt: skip
DAYS = 90


def _rows(n: int, keys: int, start: datetime, seed: int = 7, span: float = DAYS * 86400):
    rnd = random.Random(seed)
    base = start.timestamp()
    for i in range(n):
        provider, model = MODELS[rnd.randrange(len(MODELS))]
        moment = datetime.fromtimestamp(base + span * i / n, timezone.utc)
        cost = None if rnd.random() < 0.01 else rnd.random() * 0.01
        yield (
            f"log-{i}", rnd.randrange(1, keys + 1), provider, model, model,
            rnd.randrange(10, 5000), rnd.randrange(1, 800), cost, int(cost is None),
            rnd.random() * 0.001, rnd.random() * 2000, 200 if rnd.random() < 0.97 else 500,
            moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        )  # fmt: skip


def _timed(fn, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    """Fill, backfill, then time the queries; prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = connect(Path(tmp) / "bench.sqlite3")
        migrations.apply(db, stop_before="0004_usage_rollup")
        now = datetime.now(timezone.utc)
        first = analytics.resolve_period("90d", None, None, timezone.utc).first
        start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
        span = (now - start).total_seconds()
        sql = f"INSERT INTO proxy_logs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 13)})"
        t0 = time.perf_counter()
        with db.atomic():
            db.conn.executemany(sql, _rows(args.rows, args.keys, start, span=span))
        fill = time.perf_counter() - t0
        t0 = time.perf_counter()
        migrations.apply(db)  # 0004: create the rollup and backfill it from the rows above
        backfill = time.perf_counter() - t0
        rollup_rows = db.execute("SELECT COUNT(*) FROM usage_rollup").fetchone()[0]
        print(f"rows: {args.rows:,} over {DAYS} days, {args.keys} keys x {len(MODELS)} models")
        print(f"fill (executemany): {fill:.1f} s; migration 0004 backfill: {backfill:.1f} s")
        print(f"rollup rows: {rollup_rows:,}")

        # The writer's path: aggregate a 500-row batch and upsert it, in one transaction.
        # Its batches hold the calls of a quarter second: one bucket, the groups in use.
        recent = _rows(500, args.keys, now - timedelta(seconds=1), seed=9, span=0.25)
        batch = [dict(zip(COLUMNS, r, strict=True)) for r in recent]
        t0 = time.perf_counter()
        for _ in range(20):
            with db.atomic():
                upserts = rollup.add_batch(db.conn, batch)
        per_batch = (time.perf_counter() - t0) / 20 * 1000
        print(f"writer rollup: {per_batch:.2f} ms per 500-row batch ({upserts} upserts)")

        def timeseries(tz_name: str):
            tz = analytics.load_timezone(tz_name)
            period = analytics.resolve_period("90d", None, None, tz)
            bounds = period.bounds()
            days = analytics.fill_days(bounds, rollup.by_bucket(db, bounds[0], bounds[-1]))
            return [t.point(d) for d, t in zip(period.days, days, strict=True)]

        def breakdown(by: str, **filters):
            period = analytics.resolve_period("90d", None, None, timezone.utc)
            bounds = period.bounds()
            groups = rollup.by_group(db, by, bounds[0], bounds[-1], **filters)
            return [t.item(str(n)) for n, t in analytics.top_with_other(groups, 10)]

        total = sum(p["requests"] for p in timeseries("UTC"))
        assert total == args.rows + 20 * 500, total  # + the writer's batches (rollup only)
        cases = [
            ("timeseries 90d UTC", lambda: timeseries("UTC")),
            ("timeseries 90d Asia/Kolkata", lambda: timeseries("Asia/Kolkata")),
            ("timeseries 90d key_id=3", lambda: _filtered_timeseries(db, 3)),
            ("breakdown 90d by=model", lambda: breakdown("model")),
            ("breakdown 90d by=key", lambda: breakdown("key")),
            (
                "breakdown 90d by=provider model=gpt-4o",
                lambda: breakdown("provider", model="gpt-4o"),
            ),
        ]
        for name, fn in cases:
            p50, p99 = _timed(fn, args.runs)
            print(f"{name:42s} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
        db.conn.close()


def _filtered_timeseries(db, key_id: int):
    period = analytics.resolve_period("90d", None, None, timezone.utc)
    bounds = period.bounds()
    return analytics.fill_days(bounds, rollup.by_bucket(db, bounds[0], bounds[-1], key_id=key_id))


if __name__ == "__main__":
    main()
