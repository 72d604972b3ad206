"""Load for the proxy benchmark: wrk for rates and latencies, a one-connection client for TTFB.

wrk (C, epoll) is the load generator: at the rates measured here it uses a small
part of its core, so it is not the bottleneck (the direct-to-nginx points show its
ceiling). It cannot time the first byte of an answer, so `first_byte_series` does:
one keep-alive connection, requests one after the other, `perf_counter` from the
request's first byte sent to the first body byte read, then to the last.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Request:
    """One benchmark request: where it goes and what it carries."""

    port: int
    path: str
    headers: Mapping[str, str]
    body: str

    def url(self) -> str:
        """The URL wrk is given."""
        return f"http://127.0.0.1:{self.port}{self.path}"


# -- wrk ---------------------------------------------------------------------------------------

# The done() hook prints exact figures (µs) next to wrk's rounded text output.
_WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format(
    "WRK_JSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d,\\"non2xx\\":%d," ..
    "\\"connect_errors\\":%d,\\"read_errors\\":%d,\\"write_errors\\":%d,\\"timeouts\\":%d," ..
    "\\"p50_us\\":%.0f,\\"p90_us\\":%.0f,\\"p99_us\\":%.0f,\\"mean_us\\":%.1f,\\"max_us\\":%.0f}\\n",
    summary.requests, summary.duration, summary.bytes, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""

# Every request a different body (and so a different response-cache entry): a tag made
# of the run, the wrk thread and a counter replaces UNIQUE in the body.
_WRK_UNIQUE = """
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, {prefix} .. "{run}-" .. tid .. "-" .. n .. {suffix})
end
"""
UNIQUE = "@UNIQUE@"


def _lua_str(text: str) -> str:
    if "'" in text or "\\" in text or "\n" in text:
        raise ValueError(f"cannot quote {text[:40]!r}... as a Lua string")
    return f"'{text}'"


def wrk_script(path: Path, req: Request, unique_run: str | None = None) -> Path:
    """Write the Lua script that makes wrk send `req` (with a unique body per call if asked)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_str(req.body)}"]
    lines += [f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}" for k, v in req.headers.items()]
    if unique_run is not None:
        prefix, suffix = req.body.split(UNIQUE)
        lines.append(
            _WRK_UNIQUE.replace("{prefix}", _lua_str(prefix))
            .replace("{suffix}", _lua_str(suffix))
            .replace("{run}", unique_run)
        )
    path.write_text("\n".join(lines) + "\n" + _WRK_DONE)
    return path


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
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if not m:
        raise ValueError("no request count in wrk output:\n" + out)
    res["requests"] = int(m.group(1))
    res["duration_s"] = _ms(m.group(2) + m.group(3)) / 1000
    res["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for q in ("50", "75", "90", "99"):  # meaningless when nothing completed
        res[f"p{q}_ms"] = _ms(pct[q]) if q in pct and res["requests"] else None
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m and res["requests"]:
        res["mean_ms"], res["stdev_ms"], res["max_ms"] = (_ms(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    m = re.search(r"^WRK_JSON (.*)$", out, re.M)
    if m:
        res["exact"] = json.loads(m.group(1))
    return res


def run_wrk(
    wrk: str,
    url: str,
    lua: Path,
    conns: int,
    duration: float,
    pin: Callable[[], None] | None,
    timeout_s: float = 10.0,
) -> dict:
    """One wrk run of `duration` (rounded up to whole seconds); 1 thread at 1 connection, else 2."""
    threads = 1 if conns == 1 else 2
    seconds = max(1, math.ceil(duration))  # wrk takes whole seconds
    cmd = [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", f"{timeout_s:g}s"]
    cmd += ["--latency", "-s", str(lua), url]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 60, preexec_fn=pin
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr}\n{proc.stdout}")
    res = parse_wrk(proc.stdout)
    res.update(connections=conns, threads=threads)
    return res


# -- one connection ----------------------------------------------------------------------------


def call_once(req: Request) -> tuple[int, dict[str, str], bytes]:
    """One call: status, headers (lower-case names) and the whole body."""
    conn = http.client.HTTPConnection("127.0.0.1", req.port, timeout=30)
    try:
        conn.request("POST", req.path, req.body.encode(), dict(req.headers))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def first_byte_series(req: Request, *, requests: int, warmup: int, max_seconds: float) -> dict:
    """Sequential calls on one connection: time to the first body byte and to the last (ms).

    Stops after `requests` measured calls or `max_seconds`, whichever comes first. Every
    answer must be a 200 whose body is read to its end (a stream to its last event).
    """
    conn = http.client.HTTPConnection("127.0.0.1", req.port, timeout=30)
    body = req.body.encode()
    first, total, sizes = [], [], set()
    deadline = None
    try:
        for i in range(warmup + requests):
            if i == warmup:
                deadline = time.perf_counter() + max_seconds
            t0 = time.perf_counter()
            conn.request("POST", req.path, body, dict(req.headers))
            resp = conn.getresponse()
            head = resp.read(1)
            t1 = time.perf_counter()
            rest = resp.read()
            t2 = time.perf_counter()
            if resp.status != 200 or not head:
                raise RuntimeError(f"{req.url()} answered {resp.status}: {(head + rest)[:300]!r}")
            if i >= warmup:
                first.append((t1 - t0) * 1e3)
                total.append((t2 - t0) * 1e3)
                sizes.add(len(head) + len(rest))
                if time.perf_counter() > deadline:
                    break
    finally:
        conn.close()
    return {
        "requests": len(first),
        "warmup": warmup,
        "ttfb_p50_ms": round(statistics.median(first), 4),
        "ttfb_p99_ms": round(_pct(first, 0.99), 4),
        "total_p50_ms": round(statistics.median(total), 4),
        "total_p99_ms": round(_pct(total, 0.99), 4),
        "body_bytes": sorted(sizes),
    }
