"""Guardrails on a real Redis shared by several server processes, and Redis going away."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from lcm_jupyter.cli import _create_key
from lcm_jupyter.core.budget import current_month, to_units
from lcm_jupyter.core.settings import Settings

from .conftest import PROVIDER_KEY


@pytest.fixture
def lcm_config(lcm_config, redis_server, redis_url):
    lcm_config["redis_url"] = redis_server.url
    return lcm_config


def _chat(i: int) -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"call {i}"}],
        "max_tokens": 30,
    }


async def test_redis_outage_keeps_calls_flowing_and_counters_are_rebuilt(
    base_url, make_key, lcm, logs, redis_server
):
    record = await make_key(monthly_budget_usd=10.0, rate_limit_rpm=100)
    client = openai.AsyncOpenAI(
        base_url=base_url + "lcm/proxy/openai/v1", api_key=record["key"], max_retries=0
    )
    for i in range(3):
        await client.chat.completions.create(**_chat(i))
    assert lcm.counters.name == "redis"

    redis_server.stop()
    started = time.monotonic()
    for i in range(3, 6):
        await client.chat.completions.create(**_chat(i))  # still served
    assert time.monotonic() - started < 3  # and not stalled waiting on Redis
    assert lcm.counters.degraded
    memory = await lcm.counters.fallback.budget(key_id=record["id"], month=current_month())

    redis_server.start()
    for _ in range(100):
        if not lcm.counters.degraded:
            break
        await asyncio.sleep(0.1)
    assert not lcm.counters.degraded, "the breaker did not close after Redis came back"
    for i in range(6, 8):
        await client.chat.completions.create(**_chat(i))

    rows = await logs()
    assert len(rows) == 8 and all(r["status"] == 200 for r in rows)
    logged = sum(to_units(r["cost_usd"]) for r in rows)
    redis_state = await lcm.counters.primary.budget(key_id=record["id"], month=current_month())
    assert redis_state.spent == logged  # rebuilt from the logs, then counted on
    assert memory.spent == sum(to_units(r["cost_usd"]) for r in rows[2:])  # the first six


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, env: dict, root) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            "--IdentityProvider.token=t",
            "--ServerApp.jpserver_extensions={'lcm_jupyter': True}",
            f"--ServerApp.root_dir={root}",
            "--allow-root",
            "--no-browser",
            "--ServerApp.log_level=WARN",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_ready(url: str, proc: subprocess.Popen) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            assert proc.poll() is None, "server exited"
            try:
                await http.get(url + "api/status?token=t")
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not start")


async def test_sliding_window_holds_across_server_processes(sim, redis_url, tmp_path):
    env = {
        **os.environ,
        "LCM_DB_PATH": str(tmp_path / "shared.sqlite3"),
        "LCM_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
        "LCM_REDIS_URL": redis_url,
        "LCM_OPENAI_BASE_URL": sim.url,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
    }
    settings = Settings(
        db_path=tmp_path / "shared.sqlite3", secret_key_file=tmp_path / "secret.key"
    )
    _, key = _create_key(
        settings, name="shared", rate_limit_rpm=7, provider_api_keys={"openai": PROVIDER_KEY}
    )
    ports = [_free_port() for _ in range(3)]
    procs = [_start_server(p, env, tmp_path) for p in ports]
    try:
        urls = [f"http://127.0.0.1:{p}/" for p in ports]
        await asyncio.gather(*(_wait_ready(u, p) for u, p in zip(urls, procs, strict=True)))

        async def call(i: int) -> int:
            async with httpx.AsyncClient(timeout=10) as http:
                resp = await http.post(
                    urls[i % 3] + "lcm/proxy/openai/v1/chat/completions",
                    json=_chat(i),
                    headers={"authorization": f"Bearer {key}"},
                )
                return resp.status_code

        statuses = await asyncio.gather(*(call(i) for i in range(20)))
        assert statuses.count(200) == 7  # one window for all three processes
        assert statuses.count(429) == 13
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(15)
