"""Fixtures: a simulated provider, a real Jupyter server with the extension, SDK clients.

Async tests run on pytest-jupyter's event loop, the same one the server and the
simulated provider use; fixtures are sync and drive that loop themselves.
"""

from __future__ import annotations

import asyncio
import json
import math
import os

import pytest

from lcm_jupyter.testing import SimulatedProvider

pytest_plugins = ["pytest_jupyter.jupyter_server", "tests.redis_fixtures", "tests.pg_fixtures"]

PROVIDER_KEY = "sk-upstream-secret-0123456789abcdef"


@pytest.fixture
def sim(jp_asyncio_loop):
    """A simulated OpenAI/Anthropic/Gemini upstream that accepts only PROVIDER_KEY."""
    provider = SimulatedProvider(api_keys=[PROVIDER_KEY])
    jp_asyncio_loop.run_until_complete(provider.start())
    yield provider
    jp_asyncio_loop.run_until_complete(provider.stop())


# The modules whose every test also runs with PostgreSQL as the store: the proxy, the
# management API, analytics and metering, end to end. LCM_TEST_ENGINE=postgresql runs
# every test on PostgreSQL instead.
BOTH_ENGINES = {
    "test_api",
    "test_api_logs",
    "test_analytics",
    "test_metering",
    "test_proxy_anthropic",
    "test_proxy_google",
    "test_proxy_openai",
    "test_guardrails",
    "test_routing_proxy",
    "test_team",
}


def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "engine" in metafunc.fixturenames and module in BOTH_ENGINES:
        metafunc.parametrize("engine", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def engine(request):
    """The store's engine for the server under test: "sqlite" or "postgresql"."""
    return getattr(request, "param", os.environ.get("LCM_TEST_ENGINE", "sqlite"))


def _stop_services_before_the_database_goes(request) -> str:
    """A fresh PostgreSQL database for the server under test. pg_url drops it (disconnecting
    everyone) at its teardown, which comes before the server's own (pytest-jupyter's, an
    autouse fixture set up first): the extension is stopped here first, so that it writes
    its last rows and lets go of its pool while the database is still there."""
    url = request.getfixturevalue("pg_url")
    loop = request.getfixturevalue("jp_asyncio_loop")

    def stop() -> None:
        from jupyter_server.serverapp import ServerApp

        if not ServerApp.initialized():
            return
        for ext in ServerApp.instance().extension_manager.extension_apps.get("lcm_jupyter", ()):
            if getattr(ext, "lcm", None) is not None:
                loop.run_until_complete(ext.lcm.stop())

    request.addfinalizer(stop)
    return url


@pytest.fixture
def lcm_config(sim, tmp_path, engine, request):
    """The extension's config: a fresh database and secret, upstreams at the simulator."""
    pg = engine == "postgresql"
    return {
        "db_path": str(tmp_path / "lcm.sqlite3"),
        "db_url": _stop_services_before_the_database_goes(request) if pg else "",
        "secret_key_file": str(tmp_path / "secret.key"),
        "openai_base_url": sim.url,
        "anthropic_base_url": sim.url,
        "google_base_url": sim.url,
        "upstream_read_timeout": 2.0,
        "max_request_body_bytes": 1024 * 1024,
    }


def stored_rows(config, sql: str, params=()) -> list[dict]:
    """Rows straight from the server's database, on either engine (`config`: the
    extension's config dict or its Settings)."""
    from lcm_jupyter.store.db import connect

    if isinstance(config, dict):
        target = config.get("db_url") or config["db_path"]
    else:
        target = config.store_target
    db = connect(target)
    try:
        return list(db.query(sql, list(params)))
    finally:
        db.close()


@pytest.fixture
def jp_server_config(lcm_config):
    return {
        "ServerApp": {
            "jpserver_extensions": {"lcm_jupyter": True},
            "allow_unauthenticated_access": False,
        },
        "LCMExtension": lcm_config,
    }


@pytest.fixture
def lcm(jp_serverapp, http_server, jp_asyncio_loop):
    """The running extension's services (the server listens on a real port)."""
    (app,) = jp_serverapp.extension_manager.extension_apps["lcm_jupyter"]
    # start() normally runs once the server's loop spins; run it now, deterministically.
    jp_asyncio_loop.run_until_complete(app.lcm.start())
    return app.lcm


@pytest.fixture
def base_url(lcm, jp_http_port, jp_base_url):
    """The server's URL, e.g. http://127.0.0.1:PORT/a%40b/."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


@pytest.fixture
def api(jp_fetch):
    """Call the REST API as the logged-in Jupyter user; returns (status, json)."""

    async def call(method: str, path: str, body=None, **params):
        resp = await jp_fetch(
            "lcm",
            "api",
            *path.split("/"),
            method=method,
            body=None if body is None else json.dumps(body),
            params=params or None,
            raise_error=False,
            allow_nonstandard_methods=True,
        )
        data = json.loads(resp.body) if resp.body else None
        return resp.code, data

    return call


@pytest.fixture
def make_key(api, jp_asyncio_loop):
    """Create a proxy key through the REST API; returns the created record with `key`."""

    async def make(**fields):
        fields.setdefault("name", "test key")
        # Metering tests price the model they ask for; routing tests ask for "auto" themselves.
        fields.setdefault("routing_mode", "off")
        fields.setdefault(
            "provider_api_keys",
            {p: PROVIDER_KEY for p in ("openai", "anthropic", "google")},
        )
        status, record = await api("POST", "keys", fields)
        assert status == 201, record
        return record

    return make


async def until(predicate, timeout: float = 10.0):
    """Poll `predicate` on the event loop until it is truthy; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
def write(lcm):
    """Submit log rows through the log writer (the pipeline's path into the log, rollups
    included) and wait until they are written."""

    async def submit(*rows):
        for row in rows:
            lcm.log_writer.submit(row)
        assert await lcm.flush_logs()
        return rows

    return submit


@pytest.fixture
def logs(lcm, api):
    """Flush the log writer, then return the newest log rows (newest first)."""

    async def fetch(**params):
        # A call's row is queued once its cost is booked, just after its answer went out.
        assert await lcm.pipeline.idle(timeout=10)
        assert await lcm.flush_logs()
        status, body = await api("GET", "logs", **params)
        assert status == 200, body
        return body["logs"]

    return fetch


async def settle():
    """Let callbacks scheduled by a finished request run."""
    await asyncio.sleep(0.05)


def rounded_units(value: float | None, scale: int) -> int | None:
    """value * scale rounded half away from zero, the half added in double arithmetic: how
    the log's money and latency are counted (SQLite's ROUND; store/rollup.py's sql_units on
    PostgreSQL). None stays None."""
    if value is None:
        return None
    scaled = value * scale
    return int(math.copysign(math.floor(abs(scaled) + 0.5), scaled))


def expected_cost(
    model: str,
    *,
    uncached: int,
    cached: int = 0,
    cache_write: int = 0,
    out: int,
    provider: str | None = None,
    **units: int,
):
    """The cost a call must be logged with, from genai-prices' own calculator (not ours)."""
    import warnings

    import genai_prices

    from lcm_jupyter.core.detect import provider_for_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=uncached + cached + cache_write,
                cache_read_tokens=cached,
                cache_write_tokens=cache_write,
                output_tokens=out,
                **units,
            ),
            model,
            provider_id=provider or provider_for_model(model),
        )
    return float(calc.total_price)


def openai_via(base_url: str, key: str, route: str = "openai"):
    """An async OpenAI SDK client through the proxy (no SDK retries: one call, one row)."""
    import openai

    prefix = "lcm/proxy/openai/v1" if route == "openai" else f"lcm/proxy/{route}/v1"
    return openai.AsyncOpenAI(base_url=base_url + prefix, api_key=key, max_retries=0)


def anthropic_via(base_url: str, key: str, route: str = "anthropic"):
    """An async Anthropic SDK client through the proxy (no SDK retries)."""
    import anthropic

    return anthropic.AsyncAnthropic(
        base_url=f"{base_url}lcm/proxy/{route}", api_key=key, max_retries=0
    )


def wait_until(predicate, timeout: float = 10.0):
    """Poll `predicate` from sync code until it is truthy or `timeout` passes; its last value."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def kernel_env(monkeypatch):
    """serve() sets LCM_SERVER_URL / LCM_KERNEL_TOKEN in os.environ; monkeypatch puts them
    back after."""
    monkeypatch.setenv("LCM_SERVER_URL", "http://before.invalid/")
    monkeypatch.delenv("LCM_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("LCM_KERNEL_TOKEN", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)


@pytest.fixture
def thread_sim():
    """A simulated provider on a thread of its own, for sync code (accepts PROVIDER_KEY)."""
    with SimulatedProvider.run_in_thread(api_keys=[PROVIDER_KEY]) as provider:
        yield provider


@pytest.fixture
def served(thread_sim, kernel_env, tmp_path):
    """The extension served in this process, as `%lcm serve` does in a kernel: sync code
    (LCMClient, the sync SDKs, the widgets) reaches it from this thread."""
    import lcm_jupyter

    handle = lcm_jupyter.serve(
        db_path=tmp_path / "lcm.sqlite3",
        openai_base_url=thread_sim.url,
        anthropic_base_url=thread_sim.url,
        google_base_url=thread_sim.url,
        secret_key_file=tmp_path / "secret.key",
    )
    try:
        yield handle
    finally:
        handle.stop()
