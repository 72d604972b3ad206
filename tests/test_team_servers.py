"""Three Jupyter servers as one team: one PostgreSQL, one Redis, one secret key file.

Real processes end to end: the simulated provider (`python -m lcm_jupyter.testing`) in a
process of its own, three `jupyter server`s with the extension (tests/servers.py), each with
directories of its own as on three hosts, all on one fresh PostgreSQL database (`db_url`)
and one Redis; the official openai SDK (AsyncOpenAI, no retries) against each server's
`lcm/proxy/openai/v1`. What the servers say is checked against PostgreSQL and Redis directly:

- a key created through server A's REST API works on B and C;
- a monthly budget under concurrent load across the three (a third of the calls streamed):
  every call has exactly one row under the id its answer carried, the Redis month counter
  equals the sum of the logged costs, which never exceeds the budget, refusals are 429
  `budget_exceeded` in OpenAI's error shape, and the budget is usable to within one hold;
- an rpm limit holds exactly across the three;
- a budget alert fires once per threshold for the team, the same row on every server;
- a key revoked on A is refused on B and C within about a second (the key cache's TTL);
- reconciles on A while B and C settle calls lose no spend;
- a budget while Redis is cut off from C only: C's breaker moves it to the shared database
  counters while A and B stay on Redis; C refuses calls with limits (503) rather than
  decide alone, and the budget holds.

Every server gets `LCM_REDIS_TIMEOUT=2` (REDIS_TIMEOUT below) and each test but the last
checks that no breaker tripped: the team tests are about a Redis that answers.

The servers take long to start on a loaded machine (30-50 s for three in parallel on two
busy cores), so they are started once for the module: on a database made as `pg_url` makes
one (`new_database` on the session's PostgreSQL) and the session's Redis as `redis_url`
gives it (emptied first). Each test uses keys of its own. Without PostgreSQL or Redis the
session fixtures skip (or fail where CI requires them).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from lcm_jupyter.core.budget import current_month, reservation_units, to_units, to_usd
from lcm_jupyter.core.catalog import default_table

from .pg_fixtures import drop_database, new_database
from .redis_fixtures import emptied
from .servers import TOKEN, free_port, server_env, start_server, stop, wait_ready

PROVIDER_KEY = "sk-team-upstream-0123456789abcdef"
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "How many moons does Mars have?"}]
MAX_TOKENS = 16
REQUEST_ID = "x-lcm-request-id"
STARTED = "lcm: proxy at "  # the extension's last start-up line (server/app.py)
NAMES = "ABC"
# Seconds a Redis call may take before a server's breaker trips to the shared database. The
# default (0.1 s) trips under CPU starvation alone: on two busy cores both runs of the
# budget test tripped B or C for ~2 s, and then the budget overspent (see the partition
# test below). The team tests are about Redis that answers, so they give it time; the
# partition test cuts one server off on purpose.
REDIS_TIMEOUT = "2"


# --- the team ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one client saw of one call."""

    server: int
    stream: bool
    status: int
    request_id: str | None
    headers: httpx.Headers
    error: dict | None = None  # the error body, for a refusal
    ended_at: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def code(self) -> str | None:
        return None if self.error is None else self.error.get("error", {}).get("code")


class RedisLink:
    """A TCP relay between one server and Redis that can be cut: while cut, its connections
    are reset and new ones closed at once, so that this server alone finds Redis away (a
    partition), while the others keep using it. Serves from a thread of its own."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._parts = parts
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        assert self._server is not None, "the Redis relay did not start"
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        auth = self._parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return self._parts._replace(netloc=netloc).geturl()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0)
        )
        ready.set()
        self._loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= pair

    def _run(self, fn) -> None:
        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def cut(self) -> None:
        """Reset every connection through the relay and refuse new ones."""

        def now() -> None:
            self._cut = True
            for writer in list(self._writers):
                writer.transport.abort()

        self._run(now)

    def mend(self) -> None:
        """Relay again."""
        self._run(lambda: setattr(self, "_cut", False))

    def close(self) -> None:
        def now() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        self._run(now)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class Team:
    urls: list[str]
    db_url: str
    redis_url: str
    sim_url: str
    logs: list[Path]
    link: RedisLink  # server C's way to Redis
    clients: dict[tuple[int, str], Any] = field(default_factory=dict)

    # REST, as a Jupyter user of each server (token auth: no XSRF)

    async def api(self, server: int, method: str, path: str, body: Any = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.request(
                method,
                f"{self.urls[server]}lcm/api/{path}",
                headers={"authorization": f"token {TOKEN}"},
                content=None if body is None else json.dumps(body),
            )

    async def create_key(self, server: int, **fields: Any) -> dict:
        fields.setdefault("routing_mode", "off")
        fields.setdefault("provider_api_keys", {"openai": PROVIDER_KEY})
        resp = await self.api(server, "POST", "keys", fields)
        assert resp.status_code == 201, resp.text
        return resp.json()

    async def simulate(self, **settings: float) -> None:
        """Set the simulator's latency / chunk_delay / stream_chunks."""
        async with httpx.AsyncClient() as http:
            (await http.post(f"{self.sim_url}/_sim/config", json=settings)).raise_for_status()

    async def stores(self) -> list[str]:
        """Which counters answer on each server: "redis", or e.g. "database (redis down)"."""
        return [(await self.api(i, "GET", "status")).json()["counters"] for i in range(3)]

    def breaker_trips(self) -> list[int]:
        """How often each server's breaker has left Redis so far (its log says so once each)."""
        return [
            log.read_text(errors="replace").count("lcm: Redis unavailable") for log in self.logs
        ]

    # the proxy, through the official SDK

    def client(self, server: int, key: str):
        import openai

        if (server, key) not in self.clients:
            self.clients[(server, key)] = openai.AsyncOpenAI(
                base_url=f"{self.urls[server]}lcm/proxy/openai/v1",
                api_key=key,
                max_retries=0,
                timeout=60,
            )
        return self.clients[(server, key)]

    async def chat(self, server: int, key: str, *, stream: bool = False) -> Outcome:
        import openai

        create = self.client(server, key).chat.completions.with_raw_response.create
        try:
            raw = await create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=stream)
            parsed = raw.parse()
            if stream:
                async for _ in parsed:
                    pass
            else:
                assert parsed.usage is not None
            return Outcome(
                server, stream, raw.status_code, raw.headers.get(REQUEST_ID), raw.headers,
                ended_at=time.monotonic(),
            )  # fmt: skip
        except openai.APIStatusError as err:
            return Outcome(
                server, stream, err.status_code, err.response.headers.get(REQUEST_ID),
                err.response.headers, error=err.response.json(), ended_at=time.monotonic(),
            )  # fmt: skip

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.clients.clear()

    # the truth, read directly

    def rows(self, where: str, params: Any) -> list[dict]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.db_url, row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT id, key_id, status, cost_usd, stream, created_at FROM proxy_logs "
                f"WHERE {where}",
                params,
            ).fetchall()

    def key_rows(self, key_id: int) -> list[dict]:
        return self.rows("key_id = %s", [key_id])

    def redis_int(self, name: str) -> int:
        import redis

        with redis.Redis.from_url(self.redis_url) as client:
            return int(client.get(name) or 0)

    def spent_units(self, key_id: int, month: str) -> int:
        """The month's settled spend in Redis (`lcm:budget:{key}:{month}`, 1e-10 USD)."""
        return self.redis_int(f"lcm:budget:{key_id}:{month}")

    def reserved_units(self, key_id: int, month: str) -> int:
        return self.redis_int(f"lcm:resv-total:{key_id}:{month}")


def _started(log: Path) -> bool:
    return log.exists() and STARTED in log.read_text(errors="replace")


def _start_simulator() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lcm_jupyter.testing", "--port", "0", "--api-key", PROVIDER_KEY],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        proc.wait()
        raise RuntimeError("the simulated provider did not start")
    return proc, url


@pytest.fixture(scope="module")
def team(pg_server, _redis_session, tmp_path_factory):
    """Three servers (A, B, C) on one fresh PostgreSQL database and one emptied Redis."""
    redis_url = emptied(_redis_session)
    db_url = new_database(pg_server)
    root = tmp_path_factory.mktemp("team")
    sim, sim_url = _start_simulator()
    link = RedisLink(redis_url)
    procs: list[subprocess.Popen] = []
    try:
        ports = [free_port() for _ in NAMES]
        roots = [root / name for name in NAMES]
        with pytest.MonkeyPatch.context() as mp:
            # tests/servers.py writes each server's output to root/server-{port}.log then:
            # the extension's last start-up line there says its services are up.
            mp.setenv("LCM_TEST_SERVER_LOGS", "1")
            for port, where, name in zip(ports, roots, NAMES, strict=True):
                where.mkdir()
                env = server_env(
                    where,
                    LCM_DB_URL=db_url,
                    # C reaches Redis through a relay that the partition test cuts.
                    LCM_REDIS_URL=link.url if name == "C" else redis_url,
                    LCM_REDIS_TIMEOUT=REDIS_TIMEOUT,
                    LCM_SECRET_KEY_FILE=str(root / "secret.key"),  # one secret for the team
                    LCM_OPENAI_BASE_URL=sim_url,
                )
                procs.append(start_server(port, env, where))
        urls = [f"http://127.0.0.1:{port}/" for port in ports]
        logs = [where / f"server-{port}.log" for port, where in zip(ports, roots, strict=True)]

        async def ready() -> None:
            await asyncio.gather(*(wait_ready(u, p) for u, p in zip(urls, procs, strict=True)))
            deadline = time.monotonic() + 90
            while not all(_started(log) for log in logs):
                assert all(p.poll() is None for p in procs), "a server exited"
                assert time.monotonic() < deadline, "the extension did not start"
                await asyncio.sleep(0.1)

        loop = asyncio.new_event_loop()  # not asyncio.run: it would unset the tests' loop
        try:
            loop.run_until_complete(ready())
        finally:
            loop.close()
        yield Team(
            urls=urls, db_url=db_url, redis_url=redis_url, sim_url=sim_url, logs=logs, link=link
        )
    finally:
        stop(procs)
        link.close()
        sim.terminate()
        sim.wait(10)
        drop_database(pg_server, db_url)


async def _until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` (sync) until truthy; its value. Fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(interval)


def _openai_error_shape(body: dict | None, code: str) -> None:
    assert body is not None and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]


async def _redis_throughout(team: Team, trips: list[int]) -> None:
    """The premise of the team tests: every server used Redis all along (no breaker trip
    since `trips`, the count taken at the test's start)."""
    assert team.breaker_trips() == trips, f"a breaker tripped: {trips} -> {team.breaker_trips()}"
    assert await team.stores() == ["redis"] * 3


def _logged_units(rows: list[dict]) -> int:
    """The rows' costs in counter units, each rounded as the counters round it."""
    return sum(to_units(r["cost_usd"]) for r in rows if r["cost_usd"] is not None)


async def _rows_for(team: Team, key_id: int, outcomes: list[Outcome]) -> list[dict]:
    """The key's rows, once every call with an id has one (log writers flush every 0.25 s)."""
    ids = {o.request_id for o in outcomes}

    def all_there():
        rows = team.key_rows(key_id)
        return rows if ids <= {r["id"] for r in rows} else None

    return await _until(all_there, 15, f"rows of key {key_id}")


def _check_rows(rows: list[dict], outcomes: list[Outcome]) -> None:
    """One row per call, under the id the call's answer carried, with the status it got."""
    assert all(o.request_id for o in outcomes), "an answer without x-lcm-request-id"
    ids = [o.request_id for o in outcomes]
    assert len(set(ids)) == len(ids), "two answers carried one id"
    counts = Counter(r["id"] for r in rows)
    assert not [i for i, n in counts.items() if n > 1], "duplicate rows"
    assert set(counts) == set(ids), (
        f"rows without a call: {len(set(counts) - set(ids))}, "
        f"calls without a row: {len(set(ids) - set(counts))}"
    )
    by_id = {r["id"]: r for r in rows}
    for o in outcomes:
        assert by_id[o.request_id]["status"] == o.status, (o, by_id[o.request_id])
        assert bool(by_id[o.request_id]["stream"]) == o.stream or not o.ok


async def _measure(team: Team) -> tuple[int, int]:
    """One call's cost in counter units, measured, and its hold (worst case) as computed.

    One call of each kind on a key of its own without a budget: identical prompts give
    identical usage, so every call of the load costs the same."""
    probe = await team.create_key(0, name="probe")
    measured = [await team.chat(1, probe["key"]), await team.chat(2, probe["key"], stream=True)]
    assert [o.status for o in measured] == [200, 200]
    costs = {to_units(r["cost_usd"]) for r in await _rows_for(team, probe["id"], measured)}
    assert len(costs) == 1, f"a streamed call is priced differently: {costs}"
    (per_call,) = costs
    assert per_call > 0
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    hold = reservation_units(
        default_table().resolve(MODEL), body, default_output_tokens=4096, unpriced_units=0,
        wire="openai.chat",
    )  # fmt: skip
    assert hold >= per_call
    return per_call, hold


# --- the tests --------------------------------------------------------------------------------


async def test_a_key_created_on_one_server_works_on_the_others(team):
    record = await team.create_key(0, name="everywhere")
    try:
        outcomes = [await team.chat(i, record["key"], stream=i == 2) for i in range(3)]
        assert [o.status for o in outcomes] == [200, 200, 200]
        rows = await _rows_for(team, record["id"], outcomes)
        _check_rows(rows, outcomes)
        # Every server lists it, from the shared database.
        for server in range(3):
            resp = await team.api(server, "GET", f"keys/{record['id']}")
            assert resp.status_code == 200 and resp.json()["name"] == "everywhere"
    finally:
        await team.close()


async def test_a_monthly_budget_holds_exactly_under_load_across_three_servers(team):
    trips = team.breaker_trips()
    month = current_month()
    per_call, hold = await _measure(team)
    budget_units = per_call * 40 + per_call // 2  # 40 calls' cost, and a half
    record = await team.create_key(0, name="budgeted", monthly_budget_usd=to_usd(budget_units))
    assert to_units(record["monthly_budget_usd"]) == budget_units
    key, key_id = record["key"], record["id"]

    await team.simulate(latency=0.05, chunk_delay=0.01)
    try:
        # 99 calls at once, 33 per server, every third streamed.
        load = await asyncio.gather(
            *(team.chat(i % 3, key, stream=i % 3 == (i // 3) % 3) for i in range(99))
        )
        # Then one at a time until the budget refuses, no call in flight: what is left
        # must then be less than one call's hold (nothing held forever, no spend lost).
        tail: list[Outcome] = []
        while not tail or tail[-1].ok:
            tail.append(await team.chat(len(tail) % 3, key))
            assert len(tail) <= 45
    finally:
        await team.simulate(latency=0.0, chunk_delay=0.0)
        await team.close()
    outcomes = [*load, *tail]
    admitted = [o for o in outcomes if o.ok]
    refused = [o for o in outcomes if not o.ok]
    assert 0 < len([o for o in load if o.ok]) < len(load), "the budget must admit only part"
    assert {o.status for o in refused} == {429}
    for o in refused:
        assert o.code == "budget_exceeded", o.error
        _openai_error_shape(o.error, "budget_exceeded")
    assert any(o.stream for o in admitted) and any(o.stream for o in refused)

    rows = await _rows_for(team, key_id, outcomes)
    _check_rows(rows, outcomes)
    ok_rows = [r for r in rows if 200 <= r["status"] < 300]
    assert all(to_units(r["cost_usd"]) == per_call for r in ok_rows)
    assert all(not r["cost_usd"] for r in rows if r["status"] == 429)
    logged = _logged_units(rows)
    assert logged == per_call * len(admitted)
    stores = await team.stores()
    print(
        f"\nbudget: {len(outcomes)} calls ({len(load)} concurrent + {len(tail)} one by one, "
        f"{sum(o.stream for o in outcomes)} streamed), {len(admitted)} admitted, "
        f"{len(refused)} refused 429 budget_exceeded; {len(rows)} rows, "
        f"{Counter(r['id'] for r in rows).most_common(1)[0][1]} per id; per call {per_call} "
        f"units (hold {hold}); counter {team.spent_units(key_id, month)}, log {logged}, "
        f"budget {budget_units} (left {budget_units - logged}); admitted per server "
        f"{dict(Counter(NAMES[o.server] for o in admitted))}, in the tail "
        f"{sum(o.ok for o in tail)}; counters {stores}"
    )
    await _redis_throughout(team, trips)
    # Every answer is out and logged: the counter is final.
    assert team.spent_units(key_id, month) == logged
    assert team.reserved_units(key_id, month) == 0
    assert logged <= budget_units, f"overspent by {logged - budget_units} units"
    assert budget_units - logged < hold, "refused while a call's hold still fit"
    # Every server reports the same month.
    for server in range(3):
        resp = await team.api(server, "GET", f"budgets/{key_id}")
        assert resp.status_code == 200, resp.text
        state = resp.json()
        assert state["month"] == month
        assert to_units(state["spent_usd"]) == logged and state["reserved_usd"] == 0


async def test_an_rpm_limit_holds_across_three_servers(team):
    trips = team.breaker_trips()
    rpm = 8
    record = await team.create_key(1, name="rated", rate_limit_rpm=rpm)
    key = record["key"]
    started = time.monotonic()
    try:
        burst = await asyncio.gather(
            *(team.chat(i % 3, key, stream=i % 4 == 0) for i in range(rpm + 7))
        )
        # The next call, on each server in turn, is refused too: the window is one.
        after = [await team.chat(i, key) for i in range(3)]
    finally:
        await team.close()
    elapsed = time.monotonic() - started
    assert elapsed < 50, "the window must still be the same minute"
    await _redis_throughout(team, trips)
    admitted = [o for o in burst if o.ok]
    assert len(admitted) == rpm, Counter(o.status for o in burst)
    refused = [o for o in (*burst, *after) if not o.ok]
    assert len(refused) == 7 + 3 and {o.status for o in refused} == {429}
    for o in refused:
        _openai_error_shape(o.error, "rate_limit_exceeded")
        assert 1 <= int(o.headers["retry-after"]) <= 60
        assert o.headers["x-ratelimit-limit-requests"] == str(rpm)
        assert o.headers["x-ratelimit-remaining-requests"] == "0"
    assert all(o.headers["x-ratelimit-limit-requests"] == str(rpm) for o in admitted)
    assert sorted(int(o.headers["x-ratelimit-remaining-requests"]) for o in admitted) == list(
        range(rpm)
    )
    # Which server admits is a race; that none admits past the shared window is the point.
    rows = await _rows_for(team, record["id"], [*burst, *after])
    _check_rows(rows, [*burst, *after])
    print(
        f"\nrpm {rpm}: {len(burst)} calls at once over 3 servers + 3 after: "
        f"{len(admitted)} admitted, {len(refused)} refused 429 in {elapsed:.2f} s"
    )


async def test_a_budget_alert_fires_once_for_the_team(team):
    """Calls on all three servers at once cross 50% then 80% of a budget: each threshold is
    one alert for the whole team (one row, the same on every server), none twice."""
    per_call, _ = await _measure(team)
    budget_units = per_call * 10
    record = await team.create_key(
        0,
        name="alerting",
        monthly_budget_usd=to_usd(budget_units),
        budget_alert_thresholds=[50, 80],
    )
    key, key_id = record["key"], record["id"]
    load = []
    try:
        for _ in range(3):  # three rounds of one call per server at once: 90% of the budget
            load += await asyncio.gather(*(team.chat(i, key) for i in range(3)))
    finally:
        await team.close()
    admitted = [o for o in load if o.ok]
    assert len(admitted) == 9, [o.status for o in load]
    await _rows_for(team, key_id, admitted)
    seen = []
    for server in range(3):
        deadline = time.monotonic() + 10
        while True:
            resp = await team.api(server, "GET", f"alerts?key_id={key_id}")
            alerts = resp.json()["alerts"]
            if {a["threshold"] for a in alerts} >= {50, 80} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        seen.append(sorted((a["id"], a["threshold"]) for a in alerts))
    assert seen[0] == seen[1] == seen[2], seen
    # One alert per threshold; which server inserts first (so which id) is a race.
    assert sorted(t for _, t in seen[0]) == [50, 80], seen[0]


async def test_a_key_revoked_on_one_server_is_refused_on_the_others_within_a_second(team):
    record = await team.create_key(0, name="to revoke")
    key = record["key"]
    try:
        # Every server has the key in its cache (the worst case for a revocation).
        warm = [await team.chat(i, key) for i in range(3)]
        assert [o.status for o in warm] == [200, 200, 200]
        resp = await team.api(0, "DELETE", f"keys/{record['id']}")
        assert resp.status_code == 200 and resp.json()["revoked"]
        revoked_at = time.monotonic()

        async def refused_after(server: int) -> tuple[float, int, Outcome]:
            admitted = 0
            while True:
                out = await team.chat(server, key)
                if out.status == 401:
                    return out.ended_at - revoked_at, admitted, out
                assert out.ok, out
                admitted += 1
                assert time.monotonic() - revoked_at < 3, f"still admitted on {NAMES[server]}"
                await asyncio.sleep(0.02)

        results = await asyncio.gather(*(refused_after(s) for s in range(3)))
    finally:
        await team.close()
    delays = {NAMES[s]: round(delay, 3) for s, (delay, _, _) in enumerate(results)}
    admitted_after = {NAMES[s]: n for s, (_, n, _) in enumerate(results)}
    for _, _, out in results:
        _openai_error_shape(out.error, "invalid_api_key")
    assert admitted_after["A"] == 0, "the revoking server admitted the key after revoking it"
    # The key cache lives key_cache_seconds (1 s): about a second, with room for a busy box
    # (the 3 s poll deadline above is the hard limit).
    assert max(delays.values()) < 2.0, delays
    print(f"\nrevocation: refused after {delays} s; calls admitted meanwhile {admitted_after}")


async def test_reconcile_on_one_server_mid_load_loses_no_spend(team):
    trips = team.breaker_trips()
    month = current_month()
    record = await team.create_key(2, name="reconciled", monthly_budget_usd=5.0)
    key, key_id = record["key"], record["id"]
    in_flight = 0
    outcomes: list[Outcome] = []
    reconciles: list[dict] = []

    async def worker(server: int, n: int) -> None:
        # 4 clients a server, 8 calls each one after the other: a steady load of ~12 calls
        # in flight for a few seconds, every third call streamed.
        nonlocal in_flight
        for i in range(8):
            in_flight += 1
            try:
                outcomes.append(await team.chat(server, key, stream=(n + i) % 3 == 0))
            finally:
                in_flight -= 1

    async def reconcile_when(after: int) -> None:
        await _until(lambda: len(outcomes) >= after, 60, f"{after} calls done", interval=0.01)
        before, started = in_flight, time.monotonic()
        resp = await team.api(0, "POST", "reconcile", {"key_id": key_id})
        assert resp.status_code == 200, resp.text
        mine = [r for r in resp.json()["keys"] if r["key_id"] == key_id]
        reconciles.append(
            {
                "in_flight": (before, in_flight),
                "done": (after, len(outcomes)),
                "seconds": round(time.monotonic() - started, 3),
                "report": mine,
            }
        )

    await team.simulate(latency=0.2, chunk_delay=0.03)
    try:
        await asyncio.gather(
            *(worker(s, n) for s in range(3) for n in range(4)),
            reconcile_when(12),
            reconcile_when(40),
            reconcile_when(70),
        )
    finally:
        await team.simulate(latency=0.0, chunk_delay=0.0)
        await team.close()
    assert len(outcomes) == 96
    assert all(o.ok for o in outcomes), Counter(o.status for o in outcomes)
    print(
        f"\nreconciles on A: {[{k: v for k, v in r.items() if k != 'report'} for r in reconciles]}"
    )
    # Each reconcile ran, start to end, while B and C had calls in flight.
    assert all(r["in_flight"][0] > 0 and r["in_flight"][1] > 0 for r in reconciles), reconciles
    rows = await _rows_for(team, key_id, outcomes)
    _check_rows(rows, outcomes)
    logged = _logged_units(rows)
    counter = team.spent_units(key_id, month)
    reserved = team.reserved_units(key_id, month)
    drifts = [r["report"][0]["drift_usd"] if r["report"] else None for r in reconciles]
    print(
        f"\nreconcile mid-load: {len(outcomes)} calls, {len(rows)} rows, counter {counter} vs "
        f"log {logged} (diff {counter - logged}), reserved {reserved}; drifts {drifts}"
    )
    await _redis_throughout(team, trips)
    assert counter == logged, f"counter {counter} != log {logged}"
    assert reserved == 0
    assert all(not d for d in drifts), f"a reconcile mid-load moved the counter: {drifts}"
    # A last reconcile finds nothing to correct.
    resp = await team.api(1, "POST", "reconcile", {"key_id": key_id})
    (final,) = [r for r in resp.json()["keys"] if r["key_id"] == key_id]
    assert final["drift_usd"] == 0 and to_units(final["logged_usd"]) == logged


async def test_a_budget_holds_while_redis_is_cut_off_from_one_server_only(team):
    """A partition between C and Redis (A and B still reach it): the limits the team shares
    must still hold, as they do when Redis is away for every server (test_outage.py). C,
    on the database counters while A and B say they count on Redis, refuses calls with
    limits (503, limits unavailable) instead of admitting a budget of its own."""
    month = current_month()
    per_call, _ = await _measure(team)
    budget_units = per_call * 40 + per_call // 2
    record = await team.create_key(0, name="partitioned", monthly_budget_usd=to_usd(budget_units))
    key, key_id = record["key"], record["id"]
    trip = await team.create_key(2, name="trip", rate_limit_rpm=1000)
    team.link.cut()
    try:
        # C's next Redis operation fails: its breaker opens onto the shared database.
        tripped = await team.chat(2, trip["key"])
        assert tripped.status == 503, tripped  # A and B count on Redis: C does not decide
        stores = await _until_async(
            lambda s: s[2] != "redis", team.stores, 10, "C's breaker to open"
        )
        assert stores[:2] == ["redis", "redis"], stores
        await team.simulate(latency=0.3, chunk_delay=0.05)
        load = await asyncio.gather(
            *(team.chat(i % 3, key, stream=i % 3 == (i // 3) % 3) for i in range(99))
        )
    finally:
        await team.simulate(latency=0.0, chunk_delay=0.0)
        team.link.mend()
        await team.close()
    # C's probe finds Redis again (every second), rebuilds it from the log and returns.
    await _until_async(lambda s: s == ["redis"] * 3, team.stores, 15, "C back on Redis")
    admitted = [o for o in load if o.ok]
    assert {o.status for o in load} <= {200, 429, 503}
    assert all(o.status != 503 or NAMES[o.server] == "C" for o in load)
    assert all(o.status == 503 for o in load if NAMES[o.server] == "C")
    rows = await _rows_for(team, key_id, load)
    _check_rows(rows, load)
    logged = _logged_units(rows)
    by_server = Counter(NAMES[o.server] for o in admitted)
    print(
        f"\npartition (C cut off from Redis): {len(load)} calls, {len(admitted)} admitted "
        f"{dict(by_server)}, log {logged} vs budget {budget_units} "
        f"({(logged - budget_units) / budget_units:+.0%}), counter "
        f"{team.spent_units(key_id, month)} once C is back"
    )
    assert logged <= budget_units, f"overspent by {logged - budget_units} units"


async def _until_async(predicate, fetch, timeout: float, what: str):
    """Poll `await fetch()` until `predicate(value)`; the value. Fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s ({value})"
        await asyncio.sleep(0.1)
