"""No answered call without a row: the call journal (a kill) and the drain (a stop).

- The journal on its own: its files are 0600; replay writes the rows the database lacks
  (once, rollups exact), gives each call cut short a row that says so and releases its
  reservation; a torn last line is skipped; rotation keeps the begin records of calls
  still open and deletes segments once their rows are committed; a live server's journal
  is left alone.
- A real server killed (SIGKILL) under ~20 concurrent clients, streamed and not: restarted
  on the same database, every call whose client got a status line has exactly one row,
  the calls cut short say so, and their budget reservations are released at once.
- A real server stopped (SIGTERM) under the same load: streams in flight finish whole, new
  calls get 503 in the provider's shape, and no answered call lacks a row.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from lcm_jupyter.cli import _create_key
from lcm_jupyter.core.budget import current_month
from lcm_jupyter.core.catalog import default_table
from lcm_jupyter.core.settings import Settings
from lcm_jupyter.store.db import open_database
from lcm_jupyter.store.journal import (
    CUT_SHORT_ERROR,
    Journal,
    begin_record,
    logged_ids,
    read_records,
)
from lcm_jupyter.store.logwriter import LogWriter

from .conftest import PROVIDER_KEY
from .servers import TOKEN, free_port, server_env, start_server, wait_ready

RECOVERED = "recovered from the journal"
CREATED = "2025-06-01T12:00:00.000Z"


# --- the journal on its own ----------------------------------------------------------------


def _begin(call_id: str, *, holds: bool = True, key_id: int = 1) -> dict:
    return begin_record(
        call_id=call_id, key_id=key_id, month="2025-06", holds=holds, provider="openai",
        requested_model="gpt-4o-mini", created_at=CREATED, endpoint="v1/chat/completions",
        method="POST", stream=True, charge="metered", input_estimate=1000,
    )  # fmt: skip


def _row(call_id: str, **fields) -> dict:
    return {
        "id": call_id, "key_id": 1, "provider": "openai", "requested_model": "gpt-4o-mini",
        "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.001,
        "latency_ms": 2.0, "status": 200, "created_at": CREATED, **fields,
    }  # fmt: skip


def _die(journal: Journal) -> None:
    """What SIGKILL does to a journal: its descriptors close (the flock goes), files stay."""
    os.close(journal._fd)
    os.close(journal._lock_fd)
    journal._fd = journal._lock_fd = None


class _Database:
    """A database with a running log writer, and what `Journal.recover` is given."""

    def __init__(self, path: Path) -> None:
        self.db = open_database(path)
        self.writer = LogWriter(path, interval=0.01)
        self.writer.start()
        self.released: list[tuple[int, str, str]] = []

    async def recover(self, journal: Journal):
        async def logged(ids):
            return logged_ids(self.db, ids)

        async def flush():
            return await asyncio.to_thread(self.writer.flush)

        async def release(key_id, call_id, month):
            self.released.append((key_id, call_id, month))

        return await journal.recover(
            logged=logged, submit=self.writer.submit, flush=flush, release=release,
            prices=default_table,
        )  # fmt: skip

    def rows(self) -> dict[str, dict]:
        cur = self.db.conn.execute("SELECT * FROM proxy_logs")
        names = [d[0] for d in cur.description]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}

    def rollup_requests(self) -> int:
        sql = "SELECT COALESCE(SUM(requests), 0) FROM usage_rollup_dim WHERE dim = 'total'"
        return self.db.conn.execute(sql).fetchone()[0]

    def close(self) -> None:
        self.writer.close()
        self.db.conn.close()


@pytest.fixture
def database(tmp_path):
    db = _Database(tmp_path / "lcm.sqlite3")
    yield db
    db.close()


def test_journal_files_are_private(tmp_path):
    journal = Journal(tmp_path / "lcm.sqlite3.journal")
    journal.begin(_begin("a"))
    journal.row(_row("a"))
    assert stat.S_IMODE(os.stat(journal.directory).st_mode) & 0o077 == 0
    files = list(journal.directory.iterdir())
    assert len(files) == 2  # the lock and the segment
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    journal.committed([_row("a")])
    assert journal.close() and not list(journal.directory.iterdir())


async def test_replay_writes_what_the_database_lacks_once_and_cuts_short_the_rest(
    tmp_path, database
):
    where = tmp_path / "lcm.sqlite3.journal"
    dead = Journal(where)
    dead.begin(_begin("done"))
    dead.row(_row("done"))  # answered, its row still queued when the process died
    dead.begin(_begin("cut"))  # streaming when the process died
    dead.begin(_begin("cut-free", holds=False, key_id=2))
    dead.row(_row("refused", status=429, cost_usd=0.0))  # refused before it began
    dead.begin(_begin("written"))
    dead.row(_row("written"))
    database.writer.submit(_row("written"))  # this one had been committed
    assert await asyncio.to_thread(database.writer.flush)
    _die(dead)

    alive = Journal(where)
    done = await database.recover(alive)
    assert (done.instances, done.rows, done.cut_short, done.released) == (1, 2, 2, 2)
    rows = database.rows()
    assert set(rows) == {"done", "cut", "cut-free", "refused", "written"}
    assert rows["done"]["status"] == 200 and rows["refused"]["status"] == 429
    cut = rows["cut"]
    assert cut["status"] == 503 and cut["error"].startswith(CUT_SHORT_ERROR)
    assert RECOVERED in cut["error"]
    # Booked at its input, estimated (the provider may have billed it), and flagged so.
    assert cut["usage_estimated"] == 1 and cut["input_tokens"] == 1000
    assert cut["output_tokens"] == 0 and cut["cost_usd"] > 0 and cut["unpriced"] == 0
    assert cut["created_at"] == CREATED and cut["key_id"] == 1 and cut["stream"] == 1
    # What may still hold a reservation: the call cut short, and the one whose row was
    # journaled before its cost was booked (released again if it was: a no-op).
    assert database.released == [(1, "done", "2025-06"), (1, "cut", "2025-06")]
    assert database.rollup_requests() == len(rows)  # each row counted once
    # The dead instance's files are gone; the live one's are untouched.
    assert {p.name.split(".")[0] for p in where.iterdir()} == {alive.instance}

    # A second replay (a start after a crash in the middle of the first) changes nothing.
    again = Journal(where)
    assert (await database.recover(again)).instances == 0
    assert database.rows() == rows


async def test_a_torn_last_line_is_skipped(tmp_path, database):
    where = tmp_path / "lcm.sqlite3.journal"
    dead = Journal(where)
    dead.begin(_begin("a"))
    dead.row(_row("a"))
    line = json.dumps(_begin("b")).encode()
    os.write(dead._fd, line[: len(line) // 2])  # killed in the middle of a write
    _die(dead)
    done = await database.recover(Journal(where))
    assert (done.rows, done.cut_short, done.torn) == (1, 0, 1)
    assert set(database.rows()) == {"a"}


async def test_rotation_keeps_open_calls_and_deletes_committed_segments(tmp_path, database):
    where = tmp_path / "lcm.sqlite3.journal"
    journal = Journal(where, segment_bytes=2000)
    journal.begin(_begin("long"))  # a stream that outlives every rotation below
    rows = []
    for i in range(40):
        journal.begin(_begin(f"c{i:02d}"))
        rows.append(_row(f"c{i:02d}"))
        journal.row(rows[-1])
    assert journal.rotations >= 5
    segments = sorted(where.glob("*.jsonl"))
    assert len(segments) == journal.rotations + 1  # nothing committed: every segment kept
    journal.committed(rows[:20])
    kept = sorted(where.glob("*.jsonl"))
    assert segments[0] not in kept and segments[-1] in kept
    # What is left still holds the open call and every uncommitted row.
    records = read_records(kept)
    assert "long" in records.begins
    assert {r["id"] for r in rows[20:]} <= set(records.rows)
    journal.committed(rows[20:])
    assert len(list(where.glob("*.jsonl"))) == 1  # only the current segment

    # Killed now: the open call is cut short; the committed rows are not written again.
    for row in rows:
        database.writer.submit(row)
    assert await asyncio.to_thread(database.writer.flush)
    _die(journal)
    done = await database.recover(Journal(where))
    assert (done.rows, done.cut_short) == (0, 1)
    assert database.rows()["long"]["status"] == 503
    assert database.rollup_requests() == 41


async def test_a_live_servers_journal_is_left_alone_and_a_clean_stop_leaves_nothing(
    tmp_path, database
):
    where = tmp_path / "lcm.sqlite3.journal"
    other = Journal(where)  # another server on this database, alive
    other.begin(_begin("theirs"))
    mine = Journal(where)
    assert (await database.recover(mine)).instances == 0
    assert database.rows() == {}
    assert "theirs" in read_records(where.glob(f"{other.instance}.*.jsonl")).begins
    other.row(_row("theirs"))
    assert not other.close()  # its row is not committed: kept for the next start
    mine.begin(_begin("mine"))
    mine.row(_row("mine"))
    mine.committed([_row("mine")])
    assert mine.close()
    assert not list(where.glob(f"{mine.instance}.*"))
    assert list(where.glob(f"{other.instance}.*"))


# --- real servers under load ---------------------------------------------------------------


def _chat(i: int, stream: bool) -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"question {i}: tell me something"}],
        "max_tokens": 20,
        "stream": stream,
    }


class _Load:
    """~20 clients calling one server over keep-alive connections until it goes away."""

    def __init__(self, url: str, key: str, streams: int = 10, plain: int = 10) -> None:
        self.url = url + "lcm/proxy/openai/v1/chat/completions"
        self.key = key
        self.calls: list[dict] = []
        self.stop = asyncio.Event()
        self.tasks = [
            asyncio.ensure_future(self._client(i, stream=i < streams))
            for i in range(streams + plain)
        ]

    async def _client(self, n: int, *, stream: bool) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        limits = httpx.Limits(max_connections=1)  # one keep-alive connection per client
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            i = 0
            while not self.stop.is_set():
                call = {"stream": stream, "status": None, "id": None, "done": False}
                self.calls.append(call)
                i += 1
                try:
                    async with http.stream(
                        "POST", self.url, json=_chat(n * 1000 + i, stream), headers=headers
                    ) as resp:
                        call["status"] = resp.status_code
                        call["id"] = resp.headers.get("x-lcm-request-id")
                        call["headers"] = resp.headers
                        body = b""
                        async for chunk in resp.aiter_bytes():
                            body += chunk
                        call["body"] = body
                        call["done"] = not stream or b"data: [DONE]" in body
                except httpx.HTTPError:
                    return  # the server is gone (killed, or stopped listening)
                if call["status"] != 200:
                    return

    def answered(self) -> list[dict]:
        """Calls whose client got a status line."""
        return [c for c in self.calls if c["status"] is not None]

    def mid_stream(self) -> int:
        return sum(1 for c in self.answered() if c["stream"] and not c["done"])

    def finished(self) -> int:
        return sum(1 for c in self.calls if c["done"])

    async def end(self, timeout: float = 40.0) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout)


def _logged(db_path: Path) -> dict[str, tuple]:
    with sqlite3.connect(db_path) as db:
        sql = "SELECT id, status, error, usage_estimated, cost_usd, key_id FROM proxy_logs"
        return {r[0]: r[1:] for r in db.execute(sql)}


async def _until(predicate, timeout: float = 20.0):
    """Poll `predicate` (sync or async) until it is truthy; its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
def cluster(sim, tmp_path):
    """Start servers on one database; every one still running is killed at the end."""
    procs: list[subprocess.Popen] = []

    async def start(**lcm: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        env = server_env(tmp_path, LCM_OPENAI_BASE_URL=sim.url, **lcm)
        proc = start_server(port, env, tmp_path)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}/"
        await wait_ready(url, proc)
        return url, proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "shared.sqlite3", secret_key_file=tmp_path / "secret.key")


async def test_a_killed_server_loses_no_answered_call_and_holds_no_reservation(
    sim, cluster, redis_url, tmp_path
):
    from lcm_jupyter.store.counters_redis import RedisCounters

    settings = _settings(tmp_path)
    record, key = _create_key(
        settings, name="budgeted", monthly_budget_usd=100.0,
        provider_api_keys={"openai": PROVIDER_KEY},
    )  # fmt: skip
    sim.chunk_delay, sim.stream_chunks = 0.1, 10  # each stream lasts about a second
    url, proc = await cluster(LCM_REDIS_URL=redis_url)
    load = _Load(url, key)
    await _until(lambda: load.finished() >= 40 and load.mid_stream() >= 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    await load.end()
    answered = load.answered()
    seen = {c["id"] for c in answered}
    assert len(seen) == len(answered) and None not in seen

    # Without the journal, these calls would have no row: streams cut short, and rows that
    # were queued for the batched writer.
    missing = seen - set(_logged(settings.db_path))
    assert missing
    month = current_month()
    redis = RedisCounters(redis_url)
    try:
        assert (await redis.budget(key_id=record.id, month=month)).reserved > 0
    finally:
        await redis.close()

    url, proc = await cluster(LCM_REDIS_URL=redis_url)

    def replayed() -> dict | None:
        rows = _logged(settings.db_path)
        return rows if seen <= set(rows) else None

    rows = await _until(replayed)
    cut = late = 0
    for call in answered:
        status, error, estimated, cost, _ = rows[call["id"]]
        if status != 200:  # cut short by the kill: said so, and booked at an estimate
            assert status == 503 and RECOVERED in error and estimated == 1 and cost > 0
            cut += 1
            # A call killed after its last byte left but before its row was journaled (a
            # few hundred microseconds) is cut short though its client got everything.
            late += call["done"]
        else:
            assert error is None
    assert cut > late and late <= 1
    # The cut calls' reservations are released now, not in 15 minutes, and the counter's
    # spend becomes the log's, recovered rows included (the start's reconcile, just after).
    async with httpx.AsyncClient() as http:

        async def settled() -> bool:
            resp = await http.get(f"{url}lcm/api/budgets/{record.id}", params={"token": TOKEN})
            body = resp.json()
            rows = _logged(settings.db_path).values()
            spend = sum(r[3] or 0 for r in rows if r[4] == record.id)
            return body["reserved_usd"] == 0 and abs(body["spent_usd"] - spend) < 1e-9

        await _until(settled, timeout=10)
    # The dead server's journal is gone: only the new server's own files are left.
    journal = tmp_path / "shared.sqlite3.journal"
    assert len({p.name.split(".")[0] for p in journal.iterdir()}) == 1


async def test_a_stopped_server_finishes_its_streams_and_refuses_new_calls(sim, cluster, tmp_path):
    settings = _settings(tmp_path)
    record, key = _create_key(settings, name="plain", provider_api_keys={"openai": PROVIDER_KEY})
    sim.chunk_delay, sim.stream_chunks = 0.1, 10
    url, proc = await cluster()
    load = _Load(url, key)
    # A client with a keep-alive connection that is idle when the stop comes: its next call
    # reaches the draining server (the listening socket is closed by then).
    prober = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1))

    async def probe() -> dict | None:
        """One call on the idle connection: the call's record if it was refused."""
        resp = await prober.post(
            load.url, json=_chat(0, False), headers={"authorization": f"Bearer {key}"}
        )
        assert resp.status_code in (200, 503), resp.text
        call = {"stream": False, "status": resp.status_code, "done": True, "body": resp.content,
                "id": resp.headers["x-lcm-request-id"], "headers": resp.headers}  # fmt: skip
        load.calls.append(call)
        return call if resp.status_code == 503 else None

    try:
        assert await probe() is None
        await _until(lambda: load.finished() >= 20 and load.mid_stream() >= 5)
        streaming = [c for c in load.answered() if c["stream"] and not c["done"]]
        proc.send_signal(signal.SIGTERM)
        # Answered as usual until the extension starts stopping (a few ms), then refused.
        probed = await _until(probe)
        await _until(lambda: proc.poll() is not None, timeout=40)
        await load.end()
    finally:
        await prober.aclose()

    answered = load.answered()
    # Every stream in flight when the server was told to stop reached its end.
    assert streaming and all(c["done"] for c in streaming)
    assert all(c["done"] for c in answered if c["status"] == 200)
    # Calls that came in while it drained: 503 in OpenAI's shape, with Retry-After, and
    # the connection closed so that the client's next call goes elsewhere.
    refused = [c for c in answered if c["status"] == 503]
    assert probed in refused
    for answer in refused:
        error = json.loads(answer["body"])["error"]
        assert error["code"] == "server_stopping" and "stopping" in error["message"]
        assert answer["headers"]["retry-after"] == "5"
        assert answer["headers"]["connection"] == "close"
    assert {c["status"] for c in answered} <= {200, 503}  # no 502 from a closed upstream
    # Every answered call has its row, as the client saw it; nothing left to recover.
    rows = _logged(settings.db_path)
    for call in answered:
        assert rows[call["id"]][0] == call["status"], call
        assert rows[call["id"]][4] == record.id
    assert not list((tmp_path / "shared.sqlite3.journal").iterdir())


async def test_a_stream_longer_than_the_grace_is_cut_and_logged(sim, cluster, tmp_path):
    settings = _settings(tmp_path)
    record, key = _create_key(settings, name="plain", provider_api_keys={"openai": PROVIDER_KEY})
    sim.chunk_delay, sim.stream_chunks = 2.0, 20  # about 40 s: far past the grace
    url, proc = await cluster(LCM_SHUTDOWN_GRACE_SECONDS="0.5")
    got = asyncio.Event()
    seen: dict = {}

    async def stream() -> None:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream(
                "POST",
                url + "lcm/proxy/openai/v1/chat/completions",
                json=_chat(1, True),
                headers={"authorization": f"Bearer {key}"},
            ) as resp,
        ):
            seen["id"] = resp.headers["x-lcm-request-id"]
            body = b""
            try:
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    got.set()
            except httpx.HTTPError:
                pass
            seen["body"] = body

    client = asyncio.ensure_future(stream())
    await asyncio.wait_for(got.wait(), 20)
    proc.send_signal(signal.SIGTERM)
    await _until(lambda: proc.poll() is not None, timeout=20)  # not the stream's 40 s
    await asyncio.wait_for(client, 20)
    assert b"data: [DONE]" not in seen["body"]
    status, error, estimated, cost, key_id = _logged(settings.db_path)[seen["id"]]
    # Logged as cut short (as a crash's journal would have it), its input estimated.
    assert status == 503 and key_id == record.id and "stopped" in error
    assert estimated and cost > 0
    assert not list((tmp_path / "shared.sqlite3.journal").iterdir())
