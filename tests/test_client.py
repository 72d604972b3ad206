"""The kernel-side client and SDK helpers, against a server in a process of its own.

Sync code (as in a notebook) would deadlock a server running on the test's own loop,
so the server and the simulated provider run elsewhere here.
"""

from __future__ import annotations

import asyncio

import pytest

from lcm_jupyter import client as lcm_client
from lcm_jupyter.client import LCMClient, LCMClientError
from lcm_jupyter.testing import SimulatedProvider

from .conftest import PROVIDER_KEY
from .servers import TOKEN, free_port, server_env, start_server, stop, wait_ready


@pytest.fixture
def server(tmp_path, jp_asyncio_loop):
    with SimulatedProvider(api_keys=[PROVIDER_KEY]).run_in_thread() as sim:
        env = server_env(
            tmp_path,
            LCM_OPENAI_BASE_URL=sim.url,
            LCM_ANTHROPIC_BASE_URL=sim.url,
            LCM_GOOGLE_BASE_URL=sim.url,
        )
        port = free_port()
        proc = start_server(port, env, tmp_path)
        url = f"http://127.0.0.1:{port}/"
        try:
            jp_asyncio_loop.run_until_complete(wait_ready(url, proc))
            yield url
        finally:
            stop([proc])


def test_the_client_drives_the_whole_api(server, monkeypatch):
    monkeypatch.setenv(lcm_client.URL_ENV, server)  # as the extension sets it for kernels
    monkeypatch.setenv(lcm_client.TOKEN_ENV, TOKEN)
    with LCMClient() as lcm:
        created = lcm.create_key(
            name="notebook",
            routing_mode="off",
            monthly_budget_usd=5.0,
            provider_api_keys={p: PROVIDER_KEY for p in ("openai", "anthropic", "google")},
        )
        key = created["key"]
        assert [k["name"] for k in lcm.list_keys()] == ["notebook"]

        chat = lcm_client.openai_client(key, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        msg = lcm_client.anthropic_client(key, max_retries=0).messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=50,
            messages=[{"role": "user", "content": "hello"}],
        )
        gemini = lcm_client.genai_client(key)  # kept: google-genai closes it when collected
        gem = gemini.models.generate_content(model="gemini-2.0-flash", contents="hello")
        assert chat.choices and msg.content and gem.text

        rows = lcm.logs()
        assert [r["provider"] for r in rows] == ["google", "anthropic", "openai"]
        assert lcm.feedback(rows[0]["id"], 1)["feedback"] == 1
        budget = lcm.budget(created["id"])
        assert budget["spent_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows), abs=1e-12)
        assert lcm.reconcile()["month"] == budget["month"]
        assert lcm.pricing()["models"]
        assert lcm.alerts() == []
        assert "scores" in lcm.routing_quality()
        assert lcm.revoke_key(created["id"])["revoked"] is True
        with pytest.raises(LCMClientError) as exc:
            lcm.update_key(created["id"], provider="mistral")
        assert exc.value.status == 400 and "provider" in exc.value.message


def test_the_client_says_what_is_missing(server, monkeypatch):
    monkeypatch.delenv(lcm_client.URL_ENV, raising=False)
    with pytest.raises(LCMClientError, match="LCM_SERVER_URL"):
        LCMClient()
    with LCMClient(server, token="wrong") as lcm, pytest.raises(LCMClientError) as exc:
        lcm.list_keys()
    assert exc.value.status == 403
    assert lcm_client.proxy_url("anthropic", server) == server + "lcm/proxy/anthropic"
    with pytest.raises(ValueError):
        lcm_client.proxy_url("mistral", server)


async def test_nothing_blocks_the_loop_meanwhile():
    await asyncio.sleep(0)  # keeps pytest-jupyter's loop fixture in use across this module
