#!/usr/bin/env python
"""Throughput and added latency of the lcm proxy, against a fast static upstream.

    /work/venv/bin/python tests/benchmarks/bench_proxy.py

One run, all on 127.0.0.1, a couple of minutes:

1. nginx (one worker) answers every POST /v1/chat/completions with a fixed OpenAI
   chat.completion JSON, usage included: an upstream far faster than the proxy.
2. A Jupyter server with the lcm_jupyter extension, LCM_OPENAI_BASE_URL pointing at
   nginx, its database and secret key in a temporary directory. The proxy keys are
   created in that database before the server starts, one per wrk run, so that the
   log rows of every run can be counted on their own afterwards.
3. wrk (POST, small chat body, Authorization: Bearer) at 1 connection (1 thread) and
   32 connections (2 threads), direct to nginx and through the proxy; a warm-up
   before each measured run; p50/p99 and req/s from wrk's --latency output.
4. The server is stopped with SIGINT and the rows in proxy_logs are counted per key
   against what wrk reported.
5. Targets: added latency (proxy p50 - direct p50) < 1 ms at 1 connection, and
   >= 1,500 req/s through the proxy at 32 connections.

With two or more CPUs the Jupyter server is pinned to CPU 0 and nginx, wrk (and
py-spy) to CPU 1 (--no-pin to let the scheduler place them). --profile runs py-spy
during one extra 32-connection run and prints the hot functions. Figures go to
tests/benchmarks/results/proxy.json. Exit code: 0 if every target and check passed,
1 if one was missed, 2 if a tool is missing.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = HERE / "results" / "proxy.json"
PROXY_PATH = "lcm/proxy/openai/v1/chat/completions"
PROVIDER_KEY = "sk-bench-upstream-key"
TARGET_ADDED_P50_MS = 1.0
TARGET_RPS_C32 = 1500.0
UPSTREAM_HEADROOM = 10.0

REQUEST_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in five words."},
        ],
        "max_tokens": 32,
        "temperature": 0,
    },
    separators=(",", ":"),
)

# What api.openai.com answers to the request above (fixed id and timestamp). No single
# quote, backslash or "$" in it: it is written verbatim into nginx's `return 200 '...'`.
RESPONSE_BODY = json.dumps(
    {
        "id": "chatcmpl-BENCH0000000000000000000001",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello there, how are you?",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 26,
            "completion_tokens": 7,
            "total_tokens": 33,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_bench00000",
    },
    separators=(",", ":"),
)

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-client-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server_tokens off;

    server {{
        listen 127.0.0.1:{port};
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{body}';
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""

WRK_LUA = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

done = function(summary, latency, requests)
  io.write(string.format(
    "WRK_JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d,\\"non2xx\\":%d," ..
    "\\"connect_errors\\":%d,\\"read_errors\\":%d,\\"write_errors\\":%d,\\"timeouts\\":%d," ..
    "\\"p50_us\\":%.0f,\\"p90_us\\":%.0f,\\"p99_us\\":%.0f,\\"mean_us\\":%.1f,\\"max_us\\":%.0f}}\\n",
    summary.requests, summary.duration, summary.bytes, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""

APT_HINT = "apt-get update && apt-get install -y nginx wrk"


# -- small helpers -----------------------------------------------------------------------------


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0, **req) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the process for {url} exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(urllib.request.Request(url, **req), timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:g}s")


def _pinner(cpus: set[int] | None):
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except Exception as exc:
        return f"unknown ({exc})"


def _git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


# -- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return round(float(m.group(1)) * _UNITS[m.group(2)], 6)


def parse_wrk(out: str) -> dict:
    """The figures of wrk's --latency text output (and of our Lua done() line)."""
    res: dict = {}
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    if "50" not in pct or "99" not in pct:
        raise ValueError("no latency distribution in wrk output:\n" + out)
    res["p50_ms"] = _ms(pct["50"])
    res["p75_ms"] = _ms(pct["75"])
    res["p90_ms"] = _ms(pct["90"])
    res["p99_ms"] = _ms(pct["99"])
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m:
        res["mean_ms"], res["stdev_ms"], res["max_ms"] = (_ms(g) for g in m.groups())
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if not m:
        raise ValueError("no request count in wrk output:\n" + out)
    res["requests"] = int(m.group(1))
    res["duration_s"] = _ms(m.group(2) + m.group(3)) / 1000
    res["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    m = re.search(r"^WRK_JSON (.*)$", out, re.M)
    if m:
        res["exact"] = json.loads(m.group(1))
    return res


def run_wrk(
    url: str, lua: Path, conns: int, duration: float, cpus: set[int] | None, label: str
) -> dict:
    threads = 1 if conns == 1 else 2
    cmd = [
        _which("wrk") or "wrk",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 60, preexec_fn=_pinner(cpus)
    )
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({label}): {proc.stderr}\n{proc.stdout}")
    res = parse_wrk(proc.stdout)
    res.update(connections=conns, threads=threads, label=label)
    return res


# -- the pieces --------------------------------------------------------------------------------


def start_nginx(tmp: Path, port: int, cpus: set[int] | None) -> subprocess.Popen:
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, body=RESPONSE_BODY))
    cmd = [
        _which("nginx") or "nginx",
        "-p",
        str(tmp),
        "-e",
        str(tmp / "nginx-error.log"),
        "-c",
        str(conf),
    ]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"nginx rejected its config:\n{check.stderr}")
    with open(tmp / "nginx-stderr.log", "wb") as err:  # the child keeps its own copy
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_pinner(cpus),
        )
    _wait_http(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        proc,
        data=REQUEST_BODY.encode(),
        method="POST",
    )
    return proc


_CREATE_KEYS = """
import json, sys
from lcm_jupyter.cli import _create_key
from lcm_jupyter.core.settings import Settings
db, secret, provider_key, *names = sys.argv[1:]
settings = Settings(db_path=db, secret_key_file=secret)
out = {}
for name in names:
    record, plain = _create_key(settings, name="bench " + name, provider="auto",
                                provider_api_keys={"openai": provider_key})
    out[name] = [record.id, plain]
print(json.dumps(out))
"""


def create_keys(
    db_path: Path, secret_file: Path, names: list[str], env: dict[str, str]
) -> dict[str, tuple[int, str]]:
    """One proxy key per name, straight into the database (the server is not running yet).

    In a subprocess with the server's environment, so that the code under test (the
    working tree, or --ref) creates its own schema.
    """
    out = subprocess.run(
        [sys.executable, "-c", _CREATE_KEYS, str(db_path), str(secret_file), PROVIDER_KEY, *names],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise SystemExit(f"could not create the proxy keys:\n{out.stderr}")
    return {name: (kid, plain) for name, (kid, plain) in json.loads(out.stdout).items()}


def server_env(tmp: Path, upstream: str, src: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LCM_DB_PATH=str(tmp / "lcm.sqlite3"),
        LCM_SECRET_KEY_FILE=str(tmp / "secret.key"),
        LCM_OPENAI_BASE_URL=upstream,
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),  # no user config leaks in
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        PYTHONUNBUFFERED="1",
    )
    for name in ("LCM_SECRET_KEY", "LCM_REDIS_URL"):
        env.pop(name, None)
    if src is not None:  # --ref: that commit's lcm_jupyter shadows the editable install
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def export_ref(ref: str, dest: Path) -> str:
    """`git archive` of lcm_jupyter/ at `ref` into `dest`; returns the commit."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if commit.returncode != 0:
        raise SystemExit(f"unknown git ref {ref!r}: {commit.stderr.strip()}")
    dest.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", commit.stdout.strip(), "lcm_jupyter"],
        stdout=subprocess.PIPE,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    archive.wait()
    return commit.stdout.strip()


def start_server(
    tmp: Path, port: int, token: str, env: dict[str, str], cpus: set[int] | None
) -> subprocess.Popen:
    (tmp / "root").mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--ServerApp.port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        "--ServerApp.jpserver_extensions={'lcm_jupyter': True}",
        f"--ServerApp.root_dir={tmp / 'root'}",
        "--allow-root",
        "--no-browser",
        "--ServerApp.log_level=WARN",
    ]
    # stdin is not a terminal, as under a process manager: that decides what SIGINT does.
    with (
        open(tmp / "server-stdout.log", "wb") as out,
        open(tmp / "server-stderr.log", "wb") as err,
    ):
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=str(tmp),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=_pinner(cpus),
        )
    _wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
    return proc


def proxy_once(url: str, key: str) -> dict:
    req = urllib.request.Request(
        url,
        data=REQUEST_BODY.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.load(resp)
        return {
            "status": resp.status,
            "request_id": resp.headers.get("x-lcm-request-id"),
            "body": body,
        }


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS") and value.strip().endswith("kB"):
                out[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


class RSSWatch:
    """Peak RSS of a process: the kernel's high-water mark, else psutil samples."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampled_max = 0
        try:
            import psutil

            self._ps = psutil.Process(pid)
        except Exception:
            self._ps = None

    def sample(self) -> int:
        rss = 0
        if self._ps is not None:
            try:
                rss = self._ps.memory_info().rss
            except Exception:
                rss = 0
        if not rss:
            rss = _proc_status(self.pid).get("VmRSS", 0)
        self.sampled_max = max(self.sampled_max, rss)
        return rss

    def peak(self) -> tuple[int, str]:
        hwm = _proc_status(self.pid).get("VmHWM")
        if hwm:
            return hwm, "/proc/PID/status VmHWM"
        return self.sampled_max, "psutil rss, sampled between runs"


def stop_server(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 30.0) -> dict:
    """SIGINT (as Ctrl-C would) or SIGTERM; escalate only if it does not stop."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    how = signal.Signals(sig).name
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        how += f", then SIGTERM after {timeout:g}s"
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            how += ", then SIGKILL"
            proc.kill()
            proc.wait()
    return {"how": how, "seconds": round(time.monotonic() - t0, 2), "returncode": proc.returncode}


def count_rows(db_path: Path) -> dict[int, dict]:
    conn = sqlite3.connect(str(db_path))
    try:
        out: dict[int, dict] = collections.defaultdict(lambda: {"total": 0, "by_status": {}})
        for key_id, status, n in conn.execute(
            "SELECT key_id, status, COUNT(*) FROM proxy_logs GROUP BY key_id, status"
        ):
            out[key_id]["total"] += n
            out[key_id]["by_status"][str(status)] = n
        sample = conn.execute(
            "SELECT model, input_tokens, output_tokens, cost_usd, unpriced, error "
            "FROM proxy_logs WHERE status = 200 LIMIT 1"
        ).fetchone()
        unpriced = conn.execute(
            "SELECT COUNT(*) FROM proxy_logs WHERE status = 200 AND cost_usd IS NULL"
        ).fetchone()[0]
    finally:
        conn.close()
    rows = dict(out)
    rows[-1] = {"sample_200_row": sample, "status200_without_cost": unpriced}
    return rows


# -- profiling ---------------------------------------------------------------------------------


def summarize_speedscope(path: Path, top: int = 25) -> dict:
    """Self and inclusive shares of samples per function, per thread, from py-spy's output."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]

    def fname(i: int) -> str:
        f = frames[i]
        file = f.get("file") or ""
        short = re.sub(r"^.*/site-packages/", "", file)
        short = re.sub(r"^.*/(lcm_jupyter/)", r"\1", short)
        short = re.sub(r"^.*/lib/python3\.\d+/", "stdlib/", short)
        return f"{f['name']} ({short}:{f.get('line', '?')})"

    threads = []
    for prof in data["profiles"]:
        total = sum(prof["weights"]) or 1  # py-spy weighs samples in seconds
        self_w: collections.Counter = collections.Counter()
        incl_w: collections.Counter = collections.Counter()
        by_file: collections.Counter = collections.Counter()
        for stack, w in zip(prof["samples"], prof["weights"], strict=True):
            if not stack:
                continue
            self_w[fname(stack[-1])] += w
            leaf_file = frames[stack[-1]].get("file") or ""
            by_file[_bucket(leaf_file)] += w
            for name in {fname(i) for i in stack}:
                incl_w[name] += w
        threads.append(
            {
                "thread": prof.get("name"),
                "samples": len(prof["samples"]),
                "sampled_seconds": round(total, 2),
                "self": [(n, round(100 * w / total, 1)) for n, w in self_w.most_common(top)],
                "inclusive": [(n, round(100 * w / total, 1)) for n, w in incl_w.most_common(top)],
                "self_by_package": [
                    (n, round(100 * w / total, 1)) for n, w in by_file.most_common(15)
                ],
            }
        )
    threads.sort(key=lambda t: -t["samples"])
    return {"file": str(path), "threads": threads}


def _bucket(file: str) -> str:
    m = re.search(r"/site-packages/([^/]+)", file)
    if m:
        return m.group(1).removesuffix(".py")
    m = re.search(r"/(lcm_jupyter/[^/]+(?:/[^/]+)?)", file)
    if m:
        return m.group(1)
    m = re.search(r"/lib/python3\.\d+/([^/]+)", file)
    if m:
        return "stdlib/" + m.group(1).removesuffix(".py")
    return file or "?"


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured point")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per point")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument(
        "--profile",
        nargs="?",
        const="/tmp/lcm-proxy-profile.speedscope.json",
        help="run py-spy during an extra 32-connection run, write speedscope JSON "
        "here and print the hot functions",
    )
    ap.add_argument(
        "--stop-signal",
        choices=("INT", "TERM"),
        default="INT",
        help="how the server is stopped before the log rows are counted",
    )
    ap.add_argument(
        "--ref",
        help="benchmark lcm_jupyter as of this git commit (exported to "
        "the temp dir and put first on the server's PYTHONPATH) instead of the "
        "working tree",
    )
    ap.add_argument("--keep-temp", action="store_true", help="keep the temporary directory")
    ap.add_argument("--output", default=str(RESULTS), help="where the JSON figures go")
    args = ap.parse_args()

    missing = [t for t in ("nginx", "wrk") if _which(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)}. Install with:\n  {APT_HINT}", file=sys.stderr)
        return 2
    pyspy = None
    if args.profile:
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not os.access(pyspy, os.X_OK):
            print(
                f"--profile needs py-spy: {sys.executable} -m pip install py-spy", file=sys.stderr
            )
            return 2

    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    server_cpus = {cpus[0]} if pin else None
    load_cpus = {cpus[1]} if pin else None
    placement = (
        f"server on CPU {cpus[0]}; nginx, wrk and py-spy on CPU {cpus[1]}"
        if pin
        else f"not pinned ({len(cpus)} CPUs shared)"
    )

    tmp = Path(tempfile.mkdtemp(prefix="lcm-bench-"))
    nginx = server = None
    results: dict = {}
    try:
        nginx_port, server_port = _free_port(), _free_port()
        token = os.urandom(16).hex()
        direct_url = f"http://127.0.0.1:{nginx_port}/v1/chat/completions"
        proxy_url = f"http://127.0.0.1:{server_port}/{PROXY_PATH}"

        print(f"temp dir {tmp}; {placement}", flush=True)
        nginx = start_nginx(tmp, nginx_port, load_cpus)

        runs = [("direct", 1), ("direct", 32), ("proxy", 1), ("proxy", 32)]
        key_names = ["sanity"]
        for target, conns in runs:
            if target == "proxy":
                key_names += [f"c{conns}-warmup", f"c{conns}"]
        if args.profile:
            key_names.append("c32-profile")
        db_path = tmp / "lcm.sqlite3"
        src = None
        code = f"working tree at {_git_rev()}"
        if args.ref:
            src = tmp / "src"
            code = f"{args.ref} = {export_ref(args.ref, src)}"
        print(f"code under test: {code}", flush=True)
        env = server_env(tmp, f"http://127.0.0.1:{nginx_port}", src)
        keys = create_keys(db_path, tmp / "secret.key", key_names, env)

        server = start_server(tmp, server_port, token, env, server_cpus)
        rss = RSSWatch(server.pid)
        rss_idle = rss.sample()

        try:
            sanity = proxy_once(proxy_url, keys["sanity"][1])
        except (OSError, ValueError) as exc:
            sanity = {"error": repr(exc)}
        if sanity.get("status") != 200 or sanity["body"].get("usage", {}).get("total_tokens") != 33:
            tail = (tmp / "server-stderr.log").read_text(errors="replace")[-3000:]
            raise SystemExit(
                f"the proxy did not relay the upstream's answer: {sanity}\n"
                f"(did the extension load?) server log tail:\n{tail}"
            )
        print(f"sanity call through the proxy: 200, request id {sanity['request_id']}", flush=True)

        def lua_for(name: str, key: str) -> Path:
            path = tmp / f"wrk-{name}.lua"
            path.write_text(WRK_LUA.format(body=REQUEST_BODY, key=key))
            return path

        direct_lua = lua_for("direct", PROVIDER_KEY)
        points: dict[str, dict] = {}
        for target, conns in runs:
            label = f"{target} c={conns}"
            if target == "direct":
                url, warm_lua, lua = direct_url, direct_lua, direct_lua
            else:
                url = proxy_url
                warm_lua = lua_for(f"c{conns}-warmup", keys[f"c{conns}-warmup"][1])
                lua = lua_for(f"c{conns}", keys[f"c{conns}"][1])
            print(f"{label}: warm-up {args.warmup:g}s, then {args.duration:g}s ...", flush=True)
            warm = run_wrk(url, warm_lua, conns, args.warmup, load_cpus, label + " warm-up")
            time.sleep(0.5)
            res = run_wrk(url, lua, conns, args.duration, load_cpus, label)
            rss.sample()
            res["warmup_requests"] = warm["requests"]
            res["warmup_non2xx"] = warm["non2xx"]
            points[label] = res
            print(
                f"  {res['rps']:>10,.0f} req/s  p50 {res['p50_ms']:.3f} ms  "
                f"p99 {res['p99_ms']:.3f} ms  ({res['requests']} requests, "
                f"non-2xx {res['non2xx']}, socket errors {res['socket_errors']})",
                flush=True,
            )
            if (target, conns) != runs[-1] or args.profile:
                time.sleep(0.5)  # not after the last run: the shutdown must flush the tail

        profile = None
        if args.profile:
            profile = run_profile(
                pyspy,
                server.pid,
                proxy_url,
                lua_for("c32-profile", keys["c32-profile"][1]),
                args.duration,
                load_cpus,
                Path(args.profile),
            )
            if profile.get("wrk"):
                points["proxy c=32 (under py-spy)"] = profile["wrk"]

        peak, peak_how = rss.peak()
        # Stop at once: rows still queued in the writer must be flushed by the shutdown.
        stopped = stop_server(server, getattr(signal, "SIG" + args.stop_signal))
        server = None
        rows = count_rows(db_path)
        checks_extra = rows.pop(-1)

        # -- the report ----------------------------------------------------------------------
        d1, d32 = points["direct c=1"], points["direct c=32"]
        p1, p32 = points["proxy c=1"], points["proxy c=32"]
        added_p50 = round(p1["p50_ms"] - d1["p50_ms"], 6)
        added_p99 = round(p1["p99_ms"] - d1["p99_ms"], 6)
        headroom = d32["rps"] / p32["rps"] if p32["rps"] else float("inf")

        print()
        print(
            f"{'point':<28}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'requests':>11}{'non-2xx':>9}"
        )
        for label, r in points.items():
            print(
                f"{label:<28}{r['rps']:>12,.0f}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
                f"{r['requests']:>11,}{r['non2xx']:>9}"
            )
        print()
        print(
            f"added latency at 1 connection (proxy - direct): p50 {added_p50:.3f} ms, "
            f"p99 {added_p99:.3f} ms"
        )
        print(f"upstream headroom at 32 connections: direct/proxy = {headroom:.1f}x")
        print(
            f"Jupyter server RSS: {rss_idle / 2**20:.1f} MiB after start, peak "
            f"{peak / 2**20:.1f} MiB ({peak_how})"
        )
        print(
            f"server stopped by {stopped['how']} in {stopped['seconds']}s "
            f"(exit code {stopped['returncode']})"
        )

        print()
        print("log rows in proxy_logs vs requests reported by wrk (per key):")
        row_checks = []
        expected_keys = [("sanity", 1, 1)]
        for target, conns in runs:
            if target != "proxy":
                continue
            r = points[f"proxy c={conns}"]
            expected_keys.append((f"c{conns}-warmup", r["warmup_requests"], conns))
            expected_keys.append((f"c{conns}", r["requests"], conns))
        if profile and profile.get("wrk"):
            expected_keys.append(("c32-profile", profile["wrk"]["requests"], 32))
        all_landed = True
        for name, wrk_count, conns in expected_keys:
            got = rows.get(keys[name][0], {"total": 0, "by_status": {}})
            # wrk counts completed responses; the calls in flight when it stops (at most one
            # per connection) reach the server too and are logged (499 or 200).
            ok = wrk_count <= got["total"] <= wrk_count + (conns if name != "sanity" else 0)
            all_landed &= ok
            row_checks.append(
                {
                    "key": name,
                    "wrk_requests": wrk_count,
                    "rows": got["total"],
                    "rows_by_status": got["by_status"],
                    "ok": ok,
                }
            )
            print(
                f"  {name:<14} wrk {wrk_count:>8,}  rows {got['total']:>8,}  "
                f"by status {got['by_status']}  {'OK' if ok else 'MISMATCH'}"
            )
        short = sum(max(0, c["wrk_requests"] - c["rows"]) for c in row_checks)
        if short:
            print(
                f"  -> {short} answered calls have no log row: rows still queued in the log "
                f"writer when the server stopped ({stopped['how']}) were not written"
            )
        non2xx = sum(r["non2xx"] + r.get("warmup_non2xx", 0) for r in points.values())
        sock_err = sum(r["socket_errors"] for r in points.values())
        print(f"  non-2xx responses over all wrk runs: {non2xx}; socket errors: {sock_err}")
        print(
            f"  sample logged 200 row (model, in, out, cost, unpriced, error): "
            f"{checks_extra['sample_200_row']}; 200 rows without a cost: "
            f"{checks_extra['status200_without_cost']}"
        )

        targets = {
            "added_latency_p50_c1_ms": {
                "value": round(added_p50, 3),
                "target": f"< {TARGET_ADDED_P50_MS}",
                "pass": added_p50 < TARGET_ADDED_P50_MS,
            },
            "proxy_rps_c32": {
                "value": round(p32["rps"], 1),
                "target": f">= {TARGET_RPS_C32:g}",
                "pass": p32["rps"] >= TARGET_RPS_C32,
            },
        }
        checks = {
            "upstream_headroom_c32": {
                "value": round(headroom, 1),
                "target": f">= {UPSTREAM_HEADROOM:g}x",
                "pass": headroom >= UPSTREAM_HEADROOM,
            },
            "log_rows_all_landed": {"value": row_checks, "pass": all_landed},
            "non2xx_zero": {"value": non2xx, "pass": non2xx == 0},
            "socket_errors_zero": {"value": sock_err, "pass": sock_err == 0},
            "rows_priced": {
                "value": checks_extra["status200_without_cost"],
                "pass": checks_extra["status200_without_cost"] == 0,
            },
        }
        print()
        verdict = {True: "PASS", False: "MISS"}
        print(
            f"TARGET added latency p50 at 1 connection < {TARGET_ADDED_P50_MS:g} ms: "
            f"{added_p50:.3f} ms -> {verdict[targets['added_latency_p50_c1_ms']['pass']]}"
        )
        print(
            f"TARGET proxy rate at 32 connections >= {TARGET_RPS_C32:,.0f} req/s: "
            f"{p32['rps']:,.0f} req/s -> {'PASS' if targets['proxy_rps_c32']['pass'] else 'MISS'}"
        )
        for name, c in checks.items():
            if name == "log_rows_all_landed":
                print(f"CHECK {name}: {'PASS' if c['pass'] else 'MISS'}")
            else:
                print(f"CHECK {name}: {c['value']} -> {'PASS' if c['pass'] else 'MISS'}")

        results = {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "code_under_test": code,
            "machine": {
                "cpus": len(cpus),
                "platform": platform.platform(),
                "cpu_model": _cpu_model(),
                "placement": placement,
            },
            "versions": {
                "python": platform.python_version(),
                "nginx": _version([_which("nginx"), "-v"]),
                "wrk": _version([_which("wrk"), "--version"]),
                **_py_versions(),
            },
            "method": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "request_bytes": len(REQUEST_BODY),
                "response_bytes": len(RESPONSE_BODY),
                "threads": {"c=1": 1, "c=32": 2},
            },
            "points": points,
            "added_latency_c1_ms": {"p50": round(added_p50, 3), "p99": round(added_p99, 3)},
            "server_rss_bytes": {"after_start": rss_idle, "peak": peak, "peak_source": peak_how},
            "server_stop": stopped,
            "targets": targets,
            "checks": checks,
            "profile": profile,
        }
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nfigures written to {out}")
        ok = all(t["pass"] for t in targets.values()) and all(c["pass"] for c in checks.values())
        return 0 if ok else 1
    finally:
        if server is not None and server.poll() is None:
            stop_server(server)
        if nginx is not None and nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)  # graceful; daemon off keeps it our child
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        if args.keep_temp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_profile(
    pyspy: str,
    pid: int,
    url: str,
    lua: Path,
    duration: float,
    cpus: set[int] | None,
    out: Path,
) -> dict:
    """py-spy over a 32-connection run (blocking sampling: whole stacks, a little slower)."""
    print(f"profile: py-spy on the server during {duration:g}s at 32 connections ...", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            pyspy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(duration) + 1),
            "--rate",
            "250",
            "--format",
            "speedscope",
            "--threads",
            "--output",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_pinner(cpus),
    )
    time.sleep(0.5)
    res = run_wrk(url, lua, 32, duration, cpus, "proxy c=32 under py-spy")
    res["warmup_requests"] = 0
    res["warmup_non2xx"] = 0
    log, _ = spy.communicate(timeout=60)
    if spy.returncode != 0 or not out.exists():
        print(f"py-spy failed:\n{log}")
        return {"wrk": res, "error": log}
    summary = summarize_speedscope(out)
    for t in summary["threads"][:2]:
        print(
            f"\n  thread {t['thread']}: {t['samples']} non-idle samples "
            f"({t['sampled_seconds']}s of the {duration:g}s run)"
        )
        print("  self time by package/module:")
        for n, pct in t["self_by_package"][:12]:
            print(f"    {pct:5.1f}%  {n}")
        print("  self time by function:")
        for n, pct in t["self"][:20]:
            print(f"    {pct:5.1f}%  {n}")
        print("  inclusive time by function:")
        for n, pct in t["inclusive"][:25]:
            print(f"    {pct:5.1f}%  {n}")
    summary["wrk"] = res
    return summary


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _py_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("aiohttp", "tornado", "jupyter_server", "sqlite-utils"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    out["sqlite"] = sqlite3.sqlite_version
    return out


if __name__ == "__main__":
    sys.exit(main())
