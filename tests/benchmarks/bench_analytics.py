"""Benchmark: the analytics REST queries over 90 days of many calls, and the log writer's cost.

    python tests/benchmarks/bench_analytics.py [--rows 1000000,10000000] [--keys 20] [--runs 30]
        [--engine sqlite|postgresql|both] [--db-url postgresql://user@host:port/postgres]

For each row count, fills a temporary database's proxy_logs with that many calls spread
evenly over the last 90 days (`--keys` keys x 8 models of 3 providers) in one SQL
statement, then applies the migrations, whose backfills build the rollups from them
(0004 the 15-minute table from proxy_logs, 0005 the per-day and per-dimension tables
from it): the product's own code, as an existing database upgrades.

On PostgreSQL (`--engine postgresql`, or `both`: SQLite first) the database is a fresh one
on a throwaway server started as the tests start theirs (tests/pg_fixtures.py: the
system's initdb and postgres, default settings but no durability), or on the server
`--db-url` names (a database is created there per row count and dropped after).
`open_database` creates its schema (every table empty, rollups included); proxy_logs is
filled the same way (generate_series instead of a recursive CTE), then `rollup.rebuild`
builds the rollups with the backfills' own statements, then ANALYZE. Then, on either
engine, measures:

- the log writer (store/logwriter.py, the proxy's path) per 500-row batch of calls made
  in a quarter second: insert, rollups and commit, wall time; and the rollups' part;
- each 90-day query of the dashboard through the REST API of a server running on the
  database (`lcm_jupyter.serve`, `LCMClient`), p50 and p99 over `--runs`, per timezone
  of `--timezones` (Asia/Kolkata's days cut UTC days at 18:30, the worst case for
  breakdowns), next to the in-process time of what the handler runs.

Target: each query under 100 ms p50 over 10M rows, printed PASS or FAIL; the exit code
is 1 if one fails. A timeseries with two filters reads the full 15-minute table: it has
no target and is shown for information. Figures go to stdout and to
tests/benchmarks/results/analytics.json (SQLite) and analytics-postgresql.json. Timings on
a shared machine are indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import lcm_jupyter  # noqa: E402
from lcm_jupyter.client import LCMClient  # noqa: E402
from lcm_jupyter.core import analytics  # noqa: E402
from lcm_jupyter.server.analytics_handlers import breakdown_items, timeseries_points  # noqa: E402
from lcm_jupyter.store import rollup  # noqa: E402
from lcm_jupyter.store.db import connect, describe, is_postgres, open_database  # noqa: E402
from lcm_jupyter.store.logwriter import LogWriter  # noqa: E402
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
TARGET_MS = 100.0
BATCH = 500
RESULTS = {
    "sqlite": HERE / "results" / "analytics.json",
    "postgresql": HERE / "results" / "analytics-postgresql.json",
}
ENGINES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

# (path, params, has the target): what the dashboard asks, then one combined filter.
CASES = [
    ("timeseries", {}, True),
    ("timeseries", {"key_id": 3}, True),
    ("timeseries", {"model": "gpt-4o"}, True),
    ("timeseries", {"provider": "anthropic"}, True),
    ("breakdown", {"by": "model"}, True),
    ("breakdown", {"by": "provider"}, True),
    ("breakdown", {"by": "key"}, True),
    ("timeseries", {"key_id": 3, "model": "gpt-4o"}, False),
]

_CASE_WHEN = " ".join(f"WHEN {i} THEN '{{}}'" for i in range(len(MODELS)))
# The random draws are made once per row in `r`: OFFSET 0 keeps SQLite from folding
# that subquery into the outer one, which would draw the model and provider apart.
FILL_SQL = f"""
INSERT INTO proxy_logs ({", ".join(COLUMNS)})
WITH RECURSIVE n (i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :rows),
r AS (
    SELECT i, abs(random()) % {len(MODELS)} AS m, abs(random()) % :keys + 1 AS key_id,
           CASE WHEN abs(random()) % 100 = 0 THEN NULL
                ELSE (abs(random()) % 1000000) / 1e8 END AS cost
    FROM n LIMIT -1 OFFSET 0
)
SELECT printf('log-%010d', i), key_id,
       CASE m {_CASE_WHEN.format(*(p for p, _ in MODELS))} END,
       CASE m {_CASE_WHEN.format(*(m for _, m in MODELS))} END,
       CASE m {_CASE_WHEN.format(*(m for _, m in MODELS))} END,
       10 + abs(random()) % 4990, 1 + abs(random()) % 800, cost, cost IS NULL,
       (abs(random()) % 100000) / 1e8, (abs(random()) % 2000000) / 1e3,
       CASE WHEN abs(random()) % 100 < 97 THEN 200 ELSE 500 END,
       strftime('%Y-%m-%dT%H:%M:%fZ', :start + :span * i / CAST(:rows AS REAL), 'unixepoch')
FROM r
"""

# The same draws on PostgreSQL: floor(random() * n) for abs(random()) % n, the row's
# instant formatted as SQLite's strftime('%Y-%m-%dT%H:%M:%fZ') writes it. OFFSET 0 keeps
# the subquery `r` apart here too.
FILL_SQL_PG = f"""
INSERT INTO proxy_logs ({", ".join(COLUMNS)})
SELECT 'log-' || lpad(i::text, 10, '0'), key_id,
       CASE m {_CASE_WHEN.format(*(p for p, _ in MODELS))} END,
       CASE m {_CASE_WHEN.format(*(m for _, m in MODELS))} END,
       CASE m {_CASE_WHEN.format(*(m for _, m in MODELS))} END,
       10 + floor(random() * 4990)::int, 1 + floor(random() * 800)::int, cost,
       (cost IS NULL)::int,
       floor(random() * 100000) / 1e8::float8, floor(random() * 2000000) / 1e3::float8,
       CASE WHEN floor(random() * 100) < 97 THEN 200 ELSE 500 END,
       to_char(to_timestamp(%(start)s::float8 + %(span)s::float8 * i / %(rows)s::float8)
               AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
FROM (
    SELECT i, floor(random() * {len(MODELS)})::int AS m,
           floor(random() * %(keys)s::int)::int + 1 AS key_id,
           CASE WHEN floor(random() * 100) = 0 THEN NULL
                ELSE floor(random() * 1000000) / 1e8::float8 END AS cost
    FROM generate_series(0, %(rows)s::bigint - 1) AS i OFFSET 0
) AS r
"""
ROLLUP_TABLES = ("usage_rollup", "usage_rollup_day", "usage_rollup_dim")


def _batch(n: int, keys: int) -> list[dict]:
    """500 calls made in the last quarter second, as the pipeline submits them."""
    rnd = random.Random(n)
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(BATCH):
        provider, model = MODELS[rnd.randrange(len(MODELS))]
        cost = None if rnd.random() < 0.01 else rnd.random() * 0.01
        moment = now - timedelta(seconds=0.25 * i / BATCH)
        rows.append(
            dict(
                zip(COLUMNS, (
                    f"batch-{n}-{i}", rnd.randrange(1, keys + 1), provider, model, model,
                    rnd.randrange(10, 5000), rnd.randrange(1, 800), cost, int(cost is None),
                    rnd.random() * 0.001, rnd.random() * 2000, 200,
                    moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                ), strict=True)
            )
        )  # fmt: skip
    return rows


def _pct(samples: list[float]) -> dict:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return {"p50_ms": round(statistics.median(samples), 2), "p99_ms": round(p99, 2)}


def _timed(fn, runs: int) -> dict:
    fn()  # warm: the first call prepares statements and reads pages in
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return _pct(samples)


def _span() -> tuple[float, float]:
    """The first instant of the 90-day period (UTC) and the seconds from it to now."""
    first = analytics.resolve_period(f"{DAYS}d", None, None, timezone.utc).first
    start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp()
    return start, time.time() - start


def _check_tables(db) -> dict:
    tables = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ROLLUP_TABLES}
    groups = db.execute("SELECT COUNT(DISTINCT provider || model) FROM usage_rollup_day")
    assert groups.fetchone()[0] == len(MODELS), "model and provider drawn apart"
    return tables


def _rounded(times: dict) -> dict:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in times.items()}


def fill(path: Path, rows: int, keys: int) -> dict:
    """The calls in proxy_logs, then the migrations' backfills; their times in seconds."""
    db = connect(path)
    migrations.apply(db, stop_before="0004_usage_rollup")
    start, span = _span()
    t0 = time.perf_counter()
    with db.atomic():
        params = {"rows": rows, "keys": keys, "start": start, "span": span}
        db.execute(FILL_SQL, params)
    times = {"fill_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    migrations.apply(db, stop_before="0005_usage_summaries")
    times["migration_0004_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    migrations.apply(db)
    times["migration_0005_s"] = time.perf_counter() - t0
    times["tables"] = _check_tables(db)
    db.conn.close()
    return _rounded(times)


def fill_postgres(url: str, rows: int, keys: int) -> dict:
    """PostgreSQL: the schema (open_database), the calls in proxy_logs, the rollups rebuilt
    from them by rollup.rebuild (the backfills' statements), then ANALYZE; times in seconds."""
    db = open_database(url)
    start, span = _span()
    t0 = time.perf_counter()
    with db.atomic():
        params = {"rows": rows, "keys": keys, "start": start, "span": span}
        db.conn.execute(FILL_SQL_PG, params)  # psycopg's own placeholders: named
    times = {"fill_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    with db.atomic():
        rollup.rebuild(db)
    times["rollups_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    db.execute("ANALYZE")
    times["analyze_s"] = time.perf_counter() - t0
    times["tables"] = _check_tables(db)
    db.close()
    return _rounded(times)


def writer_cost(path: Path | str, keys: int, batches: int = 40) -> dict:
    """Wall ms per 500-row batch through the LogWriter, and of the rollups alone in it
    (`path`: a SQLite file or a PostgreSQL URL, where the writer COPYs and rolls up by id)."""
    writer = LogWriter(path, batch_size=BATCH, interval=3600)
    writer.start()
    per_batch = []
    for n in range(batches):
        rows = _batch(n, keys)
        t0 = time.perf_counter()
        for row in rows:
            writer.submit(row)
        assert writer.flush(timeout=60)
        per_batch.append((time.perf_counter() - t0) * 1000)
    writer.close()
    assert writer.written == batches * BATCH and not writer.failed
    # The same again by hand, to time the writer's rollup call apart from the insert.
    db = connect(path)
    insert = f"INSERT INTO proxy_logs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 13)})"
    rollups = []
    for n in range(batches, 2 * batches):
        batch = _batch(n, keys)
        rows = [tuple(r.values()) for r in batch]
        with db.atomic():
            if db.dialect == "postgresql":  # as the writer: COPY, then the rows by id
                db.copy_rows("proxy_logs", COLUMNS, rows)
                mark = [r["id"] for r in batch]
            else:
                mark = rollup.last_rowid(db)
                db.conn.executemany(insert, rows)
            t0 = time.perf_counter()
            rollup.add_rows(db, mark)
            rollups.append((time.perf_counter() - t0) * 1000)
    db.close()
    return {"batch": _pct(per_batch), "rollups": _pct(rollups)}


def _name(path: str, params: dict, tz: str) -> str:
    words = [f"{k}={v}" for k, v in params.items()]
    return " ".join([path, f"{DAYS}d", *words, f"[{tz}]"])


def query_times(target: Path | str, tz_name: str, runs: int, tmp: Path) -> list[dict]:
    """Each case through the REST API of a server on `target` (a SQLite file or a
    PostgreSQL URL), and in-process; the server's other files go to `tmp`."""
    tz = analytics.load_timezone(tz_name)
    db = connect(target)
    where = (
        {"db_url": str(target), "db_path": tmp / "unused.sqlite3"}
        if is_postgres(target)
        else {"db_url": "", "db_path": target}  # not an LCM_DB_URL of the environment
    )
    server = lcm_jupyter.serve(
        **where, analytics_timezone=tz_name, secret_key_file=tmp / "secret.key"
    )
    out = []
    try:
        client = LCMClient(server.url, server.token, timeout=120)
        for path_, params, has_target in CASES:
            filters = {k: v for k, v in params.items() if k in rollup.FILTERS}
            by = params.get("by", "")

            def rest(path_=path_, params=params):
                getattr(client, path_)(period=f"{DAYS}d", **params)

            def local(path_=path_, filters=filters, by=by):
                period = analytics.resolve_period(f"{DAYS}d", None, None, tz)
                filters = {**dict.fromkeys(rollup.FILTERS), **filters}
                if path_ == "timeseries":
                    return timeseries_points(db, period, filters)
                return breakdown_items(db, by, 10, period, filters)

            rest_t, local_t = _timed(rest, runs), _timed(local, runs)
            ok = rest_t["p50_ms"] < TARGET_MS
            out.append(
                {
                    "case": _name(path_, params, tz_name),
                    "rest": rest_t,
                    "in_process": local_t,
                    "target_ms": TARGET_MS if has_target else None,
                    "verdict": ("PASS" if ok else "FAIL") if has_target else None,
                }
            )
        client.close()
    finally:
        server.stop()
        db.close()
    return out


def _print_rows(rows: int, keys: int, result: dict, engine: str = "sqlite") -> None:
    f, w = result["fill"], result["writer"]
    on = "" if engine == "sqlite" else f", {ENGINES[engine]}"
    print(f"\n{rows:,} rows over {DAYS} days, {keys} keys x {len(MODELS)} models{on}")
    if "rollups_s" in f:
        print(
            f"  fill {f['fill_s']} s; rollups rebuilt (rollup.rebuild) {f['rollups_s']} s; "
            f"ANALYZE {f['analyze_s']} s"
        )
    else:
        print(
            f"  fill {f['fill_s']} s; migration 0004 backfill {f['migration_0004_s']} s, "
            f"0005 backfill {f['migration_0005_s']} s"
        )
    print("  tables: " + ", ".join(f"{t} {n:,} rows" for t, n in f["tables"].items()))
    print(
        f"  log writer per {BATCH}-row batch: {w['batch']['p50_ms']} ms p50, "
        f"{w['batch']['p99_ms']} ms p99 (insert, rollups, commit); "
        f"rollups alone {w['rollups']['p50_ms']} ms p50"
    )
    print(f"  {'REST query (in-process time of the same work)':56s} target < {TARGET_MS:g} ms")
    for case in result["queries"]:
        r, q = case["rest"], case["in_process"]
        if case["verdict"] is None:
            print(
                f"  {case['case']}: {r['p50_ms']:.2f} ms p50, {r['p99_ms']:.2f} ms p99 "
                f"(in-process {q['p50_ms']:.2f} ms; no target: two filters read the "
                "15-minute table)"
            )
        else:
            print(
                f"  {case['case']:46s} p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms"
                f"   (in-process {q['p50_ms']:6.2f} ms)   {case['verdict']}"
            )


def _git_rev() -> str:
    run = lambda *a: subprocess.run(  # noqa: E731
        ["git", "-C", str(HERE), *a], capture_output=True, text=True
    ).stdout.strip()
    return run("rev-parse", "--short", "HEAD") + ("-dirty" if run("status", "--porcelain") else "")


def _measure(target: Path | str, tmp: Path, fill_result: dict, args) -> dict:
    result = {"fill": fill_result, "writer": writer_cost(target, args.keys)}
    result["queries"] = [
        case for tz in args.timezones.split(",") for case in query_times(target, tz, args.runs, tmp)
    ]
    return result


def run_sqlite(args, row_counts: list[int], results: dict) -> bool:
    """Each row count on a temporary SQLite file; True if a query failed its target."""
    failed = False
    for rows in row_counts:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.sqlite3"
            result = _measure(path, Path(tmp), fill(path, rows, args.keys), args)
        _print_rows(rows, args.keys, result)
        failed |= any(c["verdict"] == "FAIL" for c in result["queries"])
        results["by_rows"][str(rows)] = result
    return failed


def _postgres_server(db_url: str | None):
    """The server to make the databases on: --db-url's, else a throwaway one started here
    (tests/pg_fixtures.py; `.remove()` stops and deletes it)."""
    from tests.pg_fixtures import ExternalPostgres, PostgresServer, find_bindir

    if db_url:
        return ExternalPostgres(db_url)
    bindir = find_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL server binaries (initdb, postgres) found; give --db-url")
    server = PostgresServer(bindir)
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


def run_postgres(args, row_counts: list[int], results: dict) -> bool:
    """Each row count on a fresh PostgreSQL database; True if a query failed its target."""
    from tests.pg_fixtures import drop_database, new_database

    server = _postgres_server(args.db_url)
    failed = False
    try:
        db = connect(server.url)  # the server's settings that bear on the figures
        names = ("server_version", "shared_buffers", "work_mem", "effective_cache_size")
        results["machine"]["postgresql"] = {n: db.execute(f"SHOW {n}").fetchone()[0] for n in names}
        db.close()
        results["server"] = describe(server.url)
        for rows in row_counts:
            url = new_database(server)
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    fill_result = fill_postgres(url, rows, args.keys)
                    result = _measure(url, Path(tmp), fill_result, args)
            finally:
                drop_database(server, url)
            _print_rows(rows, args.keys, result, "postgresql")
            failed |= any(c["verdict"] == "FAIL" for c in result["queries"])
            results["by_rows"][str(rows)] = result
    finally:
        if hasattr(server, "remove"):
            server.remove()
    return failed


def main() -> int:
    """Fill, backfill, then time the writer and the queries; prints and saves the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000", help="row counts, comma-separated")
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--timezones", default="UTC,Asia/Kolkata")
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument(
        "--db-url",
        help="PostgreSQL server to use (a database is made on it per row count, then "
        "dropped); default: a throwaway server started from the system's binaries",
    )
    args = parser.parse_args()
    row_counts = [int(r) for r in args.rows.split(",") if r]
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]

    failed = False
    for engine in engines:
        results = {
            "engine": engine,
            "git": _git_rev(),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
            },
            "target_ms": TARGET_MS,
            "runs": args.runs,
            "by_rows": {},
        }
        run = run_sqlite if engine == "sqlite" else run_postgres
        failed |= run(args, row_counts, results)
        out = RESULTS[engine]
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nfigures written to {out.relative_to(HERE.parents[1])}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
