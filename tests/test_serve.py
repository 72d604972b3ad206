"""`lcm_jupyter.serve()`: the proxy and API inside the kernel process, used from sync code.

The tests are plain sync functions, as a notebook cell is: the sync SDKs and LCMClient
block this thread while the server answers from its own loop in its own thread.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading

import httpx
import pytest
from jupyter_server.serverapp import ServerApp
from traitlets import TraitError

import lcm_jupyter
from lcm_jupyter import client as lcm_client
from lcm_jupyter import magics
from lcm_jupyter.client import LCMClient

from .conftest import PROVIDER_KEY, expected_cost, wait_until

PROVIDERS = ("openai", "anthropic", "google")
NOT_SERVED = (
    ("POST", "api/kernels"),
    ("GET", "api/kernels"),
    ("GET", "api/contents"),
    ("GET", "api/terminals"),
    ("GET", "api/status"),
    ("GET", "lab"),
)


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "lcm/api/keys", timeout=5)
    except httpx.ConnectError:
        return True
    return False


def test_serve_runs_the_proxy_and_api_in_process(served, tmp_path):
    handle = served
    assert handle.url.startswith("http://127.0.0.1:") and handle.url.endswith("/")
    assert lcm_jupyter.serve() is handle  # a second call returns the running one
    assert ServerApp._instance is None  # no singleton for other tests to trip over
    with LCMClient() as lcm:  # found through LCM_SERVER_URL / LCM_SERVER_TOKEN
        assert lcm.url == handle.url
        created = lcm.create_key(
            name="kernel",
            routing_mode="off",
            provider_api_keys=dict.fromkeys(PROVIDERS, PROVIDER_KEY),
        )
        chat = lcm_jupyter.openai_client(created["key"], max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        assert chat.choices[0].message.content
        rows = lcm.logs()
    assert len(rows) == 1 and rows[0]["model"] == "gpt-4o-mini" and rows[0]["status"] == 200
    usage = chat.usage
    assert rows[0]["cost_usd"] == pytest.approx(
        expected_cost("gpt-4o-mini", uncached=usage.prompt_tokens, out=usage.completion_tokens),
        abs=1e-12,
    )

    wrong = ({}, {"Authorization": "token wrong"}, {"Authorization": "lcm-kernel wrong"})
    for headers in wrong:
        resp = httpx.get(handle.url + "lcm/api/keys", headers=headers, timeout=5)
        assert resp.status_code == 403
    for scheme in ("lcm-kernel", "token"):  # the credential, however it is presented
        auth = {"Authorization": f"{scheme} {handle.token}"}
        assert httpx.get(handle.url + "lcm/api/status", headers=auth, timeout=5).status_code == 200
        # Only this project's handlers are served: no kernels, contents or terminals.
        for method, path in NOT_SERVED:
            resp = httpx.request(method, handle.url + path, headers=auth, timeout=5)
            assert resp.status_code == 404, (method, path)

    handle.stop()
    assert not handle.running and _refused(handle.url)
    assert lcm_client.os.environ[lcm_client.URL_ENV] == "http://before.invalid/"
    assert lcm_client.KERNEL_TOKEN_ENV not in lcm_client.os.environ
    handle.stop()  # idempotent
    with sqlite3.connect(tmp_path / "lcm.sqlite3") as db:
        (count,) = db.execute("SELECT count(*) FROM proxy_logs").fetchone()
        (keys,) = db.execute("SELECT count(*) FROM proxy_keys").fetchone()
    assert (count, keys) == (1, 1)


def test_serve_again_after_stop_starts_a_new_server(thread_sim, kernel_env, tmp_path):
    first = lcm_jupyter.serve(db_path=tmp_path / "a.sqlite3", secret_key_file=tmp_path / "k")
    first.stop()
    second = lcm_jupyter.serve(db_path=tmp_path / "a.sqlite3", secret_key_file=tmp_path / "k")
    try:
        assert second is not first and second.running
        with LCMClient() as lcm:
            assert lcm.list_keys() == []
    finally:
        second.stop()
    assert _refused(second.url)


def test_serve_rejects_unknown_settings(kernel_env):
    with pytest.raises(TypeError, match="nope"):
        lcm_jupyter.serve(nope=1)


def test_a_start_failure_is_raised_and_leaves_nothing_running(kernel_env, tmp_path):
    before = threading.active_count()
    with pytest.raises(TraitError, match="budget_mode"):
        lcm_jupyter.serve(budget_mode="sometimes", db_path=tmp_path / "x.sqlite3")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="could not start"):
            lcm_jupyter.serve(port=port, db_path=tmp_path / "x.sqlite3")
    assert ServerApp._instance is None
    assert lcm_client.os.environ[lcm_client.URL_ENV] == "http://before.invalid/"
    assert threading.active_count() == before


def test_the_magic_starts_it_and_prints_the_url(
    thread_sim, kernel_env, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LCM_DB_PATH", str(tmp_path / "m.sqlite3"))
    monkeypatch.setenv("LCM_SECRET_KEY_FILE", str(tmp_path / "m.key"))
    assert magics.run("serve") is None
    handle = lcm_jupyter.serve()
    try:
        assert f"serving in this kernel at {handle.url}" in capsys.readouterr().out
        assert handle.verbose is False
        with LCMClient() as lcm:
            assert lcm.list_keys() == []
        assert magics.run("serve --verbose") is None  # the running one, now verbose
        assert lcm_jupyter.serve() is handle and handle.verbose is True
        assert "A line per request goes to stderr" in capsys.readouterr().out
    finally:
        handle.stop()
    assert magics.run("serve --port nope") is None
    assert "invalid int value" in capsys.readouterr().err


def test_quiet_in_the_notebook_unless_verbose(served, capfd):
    handle = served
    capfd.readouterr()
    with LCMClient() as lcm:
        key = lcm.create_key(
            name="quiet", routing_mode="off", provider_api_keys={"openai": PROVIDER_KEY}
        )["key"]
        sdk = lcm_jupyter.openai_client(key, max_retries=0)
        chat = [{"role": "user", "content": "hello"}]
        assert sdk.chat.completions.create(model="gpt-4o-mini", messages=chat).choices
        assert lcm.status()["version"]
        assert httpx.get(handle.url + "api/kernels", timeout=5).status_code == 404
        # The server logs a request just after answering it, on its one thread: once it
        # has answered this one, it has logged (or not) every request before it.
        assert lcm.logs()
        assert capfd.readouterr().err == ""

        assert lcm_jupyter.serve(verbose=True) is handle
        assert sdk.chat.completions.create(model="gpt-4o-mini", messages=chat).choices
    line = re.compile(r"lcm: 200 POST /lcm/proxy/openai/v1/chat/completions \d+ ms")
    said: list[str] = []

    def verbose_line_written() -> bool:
        said.append(capfd.readouterr().err)
        return bool(line.search("".join(said)))

    assert wait_until(verbose_line_written), said
    lines = "".join(said).splitlines()
    # The GET of the logs just before may be logged now or not; nothing from before it.
    assert len([x for x in lines if line.fullmatch(x)]) == 1, lines
    assert set(lines) - {x for x in lines if line.fullmatch(x)} <= {
        x for x in lines if x.startswith("lcm: 200 GET /lcm/api/logs ")
    }, lines


def test_stop_lets_calls_in_flight_finish_and_logs_them(served, thread_sim, tmp_path):
    with LCMClient() as lcm:
        key = lcm.create_key(
            name="drain", routing_mode="off", provider_api_keys={"openai": PROVIDER_KEY}
        )["key"]
    thread_sim.latency = 1.0  # the upstream holds the call: it is in flight when stop() comes
    sdk = lcm_jupyter.openai_client(key, max_retries=0)
    outcome: dict = {}

    def call() -> None:
        try:
            outcome["reply"] = sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
            )
        except Exception as exc:  # reported below
            outcome["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    assert wait_until(lambda: len(thread_sim.requests) == 1)
    served.stop()
    caller.join(30)
    assert "error" not in outcome, outcome
    assert outcome["reply"].choices
    with sqlite3.connect(tmp_path / "lcm.sqlite3") as db:
        rows = db.execute("SELECT model, status FROM proxy_logs").fetchall()
    assert rows == [("gpt-4o-mini", 200)]


def test_a_jupyter_token_in_the_environment_is_set_aside_meanwhile(
    thread_sim, kernel_env, tmp_path, monkeypatch
):
    # LCM_SERVER_TOKEN wins over the kernel credential in LCMClient(): left in place, it
    # would be sent to this server instead of the credential.
    monkeypatch.setenv(lcm_client.TOKEN_ENV, "another-servers-token")
    handle = lcm_jupyter.serve(db_path=tmp_path / "t.sqlite3", secret_key_file=tmp_path / "k")
    try:
        assert lcm_client.TOKEN_ENV not in os.environ
        assert os.environ[lcm_client.KERNEL_TOKEN_ENV] == handle.token
        with LCMClient() as lcm:
            assert lcm.list_keys() == []
    finally:
        handle.stop()
    assert os.environ[lcm_client.TOKEN_ENV] == "another-servers-token"
    assert lcm_client.KERNEL_TOKEN_ENV not in os.environ


def test_serve_is_exported_lazily():
    code = "import sys, lcm_jupyter\nassert 'jupyter_server' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)
    from lcm_jupyter import serve
    from lcm_jupyter.kernel_server import serve as the_function

    assert serve is the_function and lcm_jupyter.serve is the_function
    assert "daemon thread" in serve.__doc__
