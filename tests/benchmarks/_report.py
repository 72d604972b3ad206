"""Verdicts and tables of the proxy benchmark, from the figures `bench_proxy.Bench` gathered.

The targets are those of tests/benchmarks/README.md. A figure that was not measured
(target not asked for, peer not installed, analytics over fewer rows) is SKIP; a
phase that failed (its script exited non-zero, printed nothing usable) is FAIL.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

MiB = 2**20
LCM = ("lcm-memory", "lcm-redis", "lcm-pg-redis")

ADDED_P50_MS = 1.0
ADDED_P99_MS = 2.0
RPS_C32 = 1500.0
PEER_RATIO = 15.0
P99_OVER_P50 = 2.0
TTFB_ADDED_MS = 1.0
GUARD_P99_US = 1000.0
ANALYTICS_MS = 100.0
ANALYTICS_ROWS = 10_000_000
MEMORY_WARMUP_CALLS = 20_000
MEMORY_WARMUP_SECONDS = 75.0
MEMORY_GROWTH_MIB = 5.0
UPSTREAM_HEADROOM = 10.0
PG_WITHIN = 0.10  # PostgreSQL + Redis against SQLite + Redis: throughput and added latency


# -- figures -----------------------------------------------------------------------------------


def check_rows(counted: dict, keys: dict, out: dict, sanity_calls: int) -> dict:
    """Every call a client got an answer to has its log row: per key, calls vs rows.

    wrk counts completed responses; the calls in flight when it stops (at most one per
    connection) reach the server too and are logged (499 or 200): hence the slack.
    """
    expected: dict[str, tuple[int, int]] = {"sanity": (sanity_calls, 0)}
    for mode, fb in out["first_byte"].items():
        expected[f"ttfb-{mode}"] = (fb["requests"] + fb["warmup"], 0)
    for label, p in out["points"].items():
        run = label.replace(" c=", "-c")
        expected[run] = (p["requests"], p["connections"])
        expected[run + "-warmup"] = (p["warmup_requests"], p["connections"])
    if out.get("profile", {}).get("wrk"):
        expected["profile"] = (out["profile"]["wrk"]["requests"], 32)
    if out.get("memory_run"):
        m = out["memory_run"]
        expected["memory"] = (m["calls"], 32 * len(m["wrk_runs"]))
    per_key = []
    for run, (calls, slack) in expected.items():
        got = counted["by_key"].get(keys[run][0], {"total": 0, "by_status": {}})
        ok = calls <= got["total"] <= calls + slack
        per_key.append(
            {
                "run": run,
                "calls": calls,
                "rows": got["total"],
                "by_status": got["by_status"],
                "ok": ok,
            }
        )
    return {
        "ok": all(k["ok"] for k in per_key),
        "per_key": per_key,
        "missing": sum(max(0, k["calls"] - k["rows"]) for k in per_key),
        # The simulator's answers have other token counts.
        "bad_200_rows": sum(
            counted["bad_200_by_key"].get(keys[run][0], 0)
            for run in expected
            if not run.startswith("sim")
        ),
        "sample_stream_row": counted["sample_stream_row"],
    }


def memory_verdict(samples: list[dict]) -> dict:
    """RSS growth once warm: the largest sample minus the first one past the warm-up.

    Warm means past MEMORY_WARMUP_CALLS calls (the response cache is full by then) and
    past MEMORY_WARMUP_SECONDS: the in-memory counters keep an entry per call for 60 s
    (its place in the rate-limit window, its settle marker), so RSS grows with the rate
    for that long by design. `growth_after_20k_mib` ignores the time, for comparison.
    """

    def growth(after: list[dict]) -> float | None:
        if len(after) < 2:
            return None
        return round((max(s["rss"] for s in after) - after[0]["rss"]) / MiB, 2)

    past_calls = [s for s in samples if s["calls"] >= MEMORY_WARMUP_CALLS]
    warm = [s for s in past_calls if s["seconds"] >= MEMORY_WARMUP_SECONDS]
    out = {"growth_mib": growth(warm), "growth_after_20k_mib": growth(past_calls)}
    if out["growth_mib"] is None:
        return {**out, "flat": False, "note": "too few samples once warm: a longer run is needed"}
    first, last = warm[0], warm[-1]
    per_10k = (last["rss"] - first["rss"]) / MiB / max(last["calls"] - first["calls"], 1) * 1e4
    return {
        **out,
        "mib_per_10k_calls": round(per_10k, 3),
        "flat": out["growth_mib"] < MEMORY_GROWTH_MIB,
    }


# -- verdicts ----------------------------------------------------------------------------------


class Verdicts(list):
    """PASS/FAIL/SKIP lines: SKIP when there is no value, FAIL when there is an error."""

    def add(
        self,
        title: str,
        value: float | None,
        cmp: Callable[[float, float], bool],
        limit: float,
        shown: str,
        *,
        error: str = "",
        note: str = "",
    ) -> None:
        """One verdict: `cmp(value, limit)`; `shown` is the threshold as printed."""
        if error:
            status = "FAIL"
        elif value is None:
            status = "SKIP"
        else:
            status = "PASS" if cmp(value, limit) else "FAIL"
        value = None if value is None else round(value, 3)
        self.append(
            {
                "target": title,
                "value": value,
                "threshold": shown,
                "status": status,
                "note": _last_line(error or note),
            }
        )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _diff(a: dict | None, b: dict | None, field: str) -> float | None:
    if not a or not b or a.get(field) is None or b.get(field) is None:
        return None
    return a[field] - b[field]


def evaluate(res: dict) -> tuple[Verdicts, Verdicts]:
    """The targets and the checks (is the set-up sound?), each PASS, FAIL or SKIP."""
    t = res["targets"]
    lt, le, ge = operator.lt, operator.le, operator.ge

    def point(name: str, label: str) -> dict | None:
        return t.get(name, {}).get("points", {}).get(label)

    def first_byte(name: str, mode: str) -> dict | None:
        return t.get(name, {}).get("first_byte", {}).get(mode)

    targets = Verdicts()
    for name in LCM:
        c1, d1 = point(name, "json c=1"), point("direct", "json c=1")
        targets.add(
            f"added latency p50 at 1 connection, {name}",
            _diff(c1, d1, "p50_ms"),
            lt,
            ADDED_P50_MS,
            f"< {ADDED_P50_MS:g} ms",
        )
        targets.add(
            f"added latency p99 at 1 connection, {name}",
            _diff(c1, d1, "p99_ms"),
            lt,
            ADDED_P99_MS,
            f"< {ADDED_P99_MS:g} ms",
        )
        added = _diff(first_byte(name, "sse"), first_byte("direct", "sse"), "ttfb_p50_ms")
        targets.add(
            f"stream TTFB p50 over direct, {name}",
            added,
            lt,
            TTFB_ADDED_MS,
            f"< {TTFB_ADDED_MS:g} ms",
        )

    r32, peer32 = point("lcm-redis", "json c=32"), point("peer", "json c=32")
    targets.add(
        "req/s at 32 connections, lcm-redis", r32 and r32["rps"], ge, RPS_C32, f">= {RPS_C32:,.0f}"
    )
    ratio = r32["rps"] / peer32["rps"] if r32 and peer32 and peer32["rps"] else None
    targets.add(
        "req/s at 32 connections, lcm-redis / peer", ratio, ge, PEER_RATIO, f">= {PEER_RATIO:g}x"
    )
    # PostgreSQL as the store, same Redis: within 10% of SQLite's rate and added latency.
    pg32 = point("lcm-pg-redis", "json c=32")
    targets.add(
        "req/s at 32 connections, lcm-pg-redis / lcm-redis",
        pg32 and r32 and r32["rps"] and pg32["rps"] / r32["rps"],
        ge,
        1 - PG_WITHIN,
        f">= {1 - PG_WITHIN:g}",
    )
    d1 = point("direct", "json c=1")
    added_sqlite = _diff(point("lcm-redis", "json c=1"), d1, "p50_ms")
    added_pg = _diff(point("lcm-pg-redis", "json c=1"), d1, "p50_ms")
    targets.add(
        "added latency p50 at 1 connection, lcm-pg-redis / lcm-redis",
        added_pg / added_sqlite if added_pg is not None and added_sqlite else None,
        le,
        1 + PG_WITHIN,
        f"<= {1 + PG_WITHIN:g}",
    )
    spread = r32["p99_ms"] / r32["p50_ms"] if r32 and r32["p50_ms"] else None
    targets.add(
        "p99 / p50 at 32 connections, lcm-redis", spread, le, P99_OVER_P50, f"<= {P99_OVER_P50:g}"
    )

    g = res.get("guardrails") or {}
    for step in ("admit", "settle"):
        value = g.get("figures", {}).get("redis", {}).get(f"{step}_p99_us")
        targets.add(
            f"guardrail step alone, {step} p99 on Redis",
            value,
            lt,
            GUARD_P99_US,
            f"< {GUARD_P99_US:g} us",
            error=g.get("error", ""),
        )

    an = res.get("analytics") or {}
    cases = an.get("figures", {}).get("by_rows", {}).get(str(ANALYTICS_ROWS), {}).get("queries")
    worst = max(
        (c for c in cases or [] if c.get("target_ms")),
        default=None,
        key=lambda c: c["rest"]["p50_ms"],
    )
    targets.add(
        f"analytics over {ANALYTICS_ROWS:,} rows, slowest 90-day query p50 (REST)",
        worst and worst["rest"]["p50_ms"],
        lt,
        ANALYTICS_MS,
        f"< {ANALYTICS_MS:g} ms",
        error=an.get("error", ""),
        note=worst["case"] if worst else "",
    )

    for name in LCM:
        m = t.get(name, {}).get("memory_run")
        targets.add(
            f"memory flat over {m['calls']:,} calls, {name}" if m else f"memory flat, {name}",
            m and m["growth_mib"],
            lt,
            MEMORY_GROWTH_MIB,
            f"< {MEMORY_GROWTH_MIB:g} MiB growth after {MEMORY_WARMUP_CALLS // 1000}k calls "
            f"and {MEMORY_WARMUP_SECONDS:g}s",
            error=(m or {}).get("note", ""),
            note=f"after 20k calls alone: {num(m['growth_after_20k_mib'], 2)} MiB" if m else "",
        )

    checks = Verdicts()
    d32 = point("direct", "json c=32")
    for name in (n for n in LCM if n in t):
        p = point(name, "json c=32")
        room = d32["rps"] / p["rps"] if d32 and p and p["rps"] else None
        checks.add(
            f"upstream headroom, direct / {name} at 32 connections",
            room,
            ge,
            UPSTREAM_HEADROOM,
            f">= {UPSTREAM_HEADROOM:g}x",
        )
        rows = t[name]["rows"]
        off = sum(not k["ok"] for k in rows["per_key"])
        missing = f"{rows['missing']} answered calls have no row" if rows["missing"] else ""
        checks.add(
            f"log rows match the calls per key, {name}", off, le, 0, "0 keys off", note=missing
        )
        checks.add(
            f"200 rows priced with 7 output tokens, {name}", rows["bad_200_rows"], le, 0, "0 bad"
        )
        points = [*t[name]["points"].values(), t[name].get("memory_run", {})]
        errors = sum(
            p.get(k, 0) for p in points for k in ("non2xx", "warmup_non2xx", "socket_errors")
        )
        checks.add(f"no non-2xx, no socket errors, {name}", errors, le, 0, "0")
    return targets, checks


# -- tables ------------------------------------------------------------------------------------


def num(value: float | None, digits: int = 3) -> str:
    """A figure for the tables: thousands separated, '-' when missing."""
    return "-" if value is None else f"{value:,.{digits}f}"


def print_report(res: dict, targets: Verdicts, checks: Verdicts) -> None:
    """The side-by-side tables, then one line per target and check."""
    t = res["targets"]
    direct = t.get("direct", {})
    print("\nLoad (wrk). +p50: p50 added over direct at the same point")
    print(
        f"{'target':<12}{'point':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'+p50 ms':>10}"
        f"{'p99/p50':>9}{'calls':>10}{'errors':>8}"
    )
    for name, out in t.items():
        for label, p in out["points"].items():
            added = _diff(p, direct.get("points", {}).get(label), "p50_ms")
            spread = p["p99_ms"] / p["p50_ms"] if p["p50_ms"] else None
            print(
                f"{name:<12}{label:<12}{p['rps']:>10,.0f}{num(p['p50_ms']):>10}"
                f"{num(p['p99_ms']):>10}{num(added):>10}{num(spread, 1):>9}{p['requests']:>10,}"
                f"{p['non2xx'] + p['socket_errors']:>8}"
            )

    print("\nFirst and last byte, 1 connection, sequential calls (ms). +TTFB: over direct")
    print(
        f"{'target':<12}{'mode':<6}{'TTFB p50':>10}{'TTFB p99':>10}{'+TTFB p50':>11}"
        f"{'last p50':>10}{'last p99':>10}{'calls':>8}"
    )
    for name, out in t.items():
        for mode, fb in out["first_byte"].items():
            added = _diff(fb, direct.get("first_byte", {}).get(mode), "ttfb_p50_ms")
            print(
                f"{name:<12}{mode:<6}{fb['ttfb_p50_ms']:>10.3f}{fb['ttfb_p99_ms']:>10.3f}"
                f"{num(added):>11}{fb['total_p50_ms']:>10.3f}{fb['total_p99_ms']:>10.3f}"
                f"{fb['requests']:>8}"
            )

    peer = t.get("peer", {}).get("points", {})
    if peer:
        print(f"\nlcm / peer (LiteLLM {t['peer'].get('version')}) req/s, same run:")
        for name in LCM:
            ratios = [
                f"{label} {p['rps'] / peer[label]['rps']:.1f}x"
                for label, p in t.get(name, {}).get("points", {}).items()
                if peer.get(label, {}).get("rps")
            ]
            if ratios:
                print(f"  {name:<12}" + ", ".join(ratios))

    print("\nServer RSS (MiB)")
    for name, out in t.items():
        if "rss_peak" not in out:
            continue
        idle, peak = out["rss_idle"] / MiB, out["rss_peak"] / MiB
        line = f"  {name:<12} after start {idle:6.1f}, peak {peak:6.1f}"
        m = out.get("memory_run")
        if m:
            line += "; memory run, by calls: " + ", ".join(
                f"{s['calls'] / 1000:.0f}k {s['rss'] / MiB:.1f}" for s in m["samples"]
            )
        print(line)

    for name in (n for n in LCM if n in t):
        stop, rows = t[name]["server_stop"], t[name]["rows"]
        print(f"\n{name}: stopped by {stop['how']} in {stop['seconds']}s; log rows per key:")
        for k in rows["per_key"]:
            print(
                f"  {k['run']:<16} calls {k['calls']:>8,}  rows {k['rows']:>8,}  "
                f"{k['by_status']}  {'OK' if k['ok'] else 'MISMATCH'}"
            )

    print()
    for kind, rows in (("TARGET", targets), ("CHECK", checks)):
        for v in rows:
            note = f"  [{v['note']}]" if v["note"] else ""
            print(
                f"{kind} {v['target']}: {num(v['value'])} ({v['threshold']}) -> {v['status']}{note}"
            )
    for s in res["skipped"]:
        print(f"SKIPPED {s}")
