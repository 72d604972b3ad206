"""The kernels' own credential (server/kernel_auth.py): it opens lcm/api, and nothing else.

In-process tests drive the handlers of a pytest-jupyter server; the end-to-end tests start
real `jupyter server` processes (one with a password and no token, one with a token) and
a real kernel through their API, and run notebook code in it over the kernel websocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from lcm_jupyter import client as lcm_client
from lcm_jupyter.server import kernel_auth
from lcm_jupyter.testing import SimulatedProvider

from .conftest import PROVIDER_KEY
from .servers import _log, free_port, server_env, stop, wait_ready

ENV_NAMES = (
    lcm_client.URL_ENV,
    lcm_client.KERNEL_TOKEN_ENV,
    lcm_client.TOKEN_ENV,
    "JUPYTERHUB_API_TOKEN",
)
# What the credential must never open on a Jupyter server: files, code execution, sessions.
JUPYTER_ROUTES = (
    ("GET", "api/contents"),
    ("GET", "api/kernels"),
    ("POST", "api/kernels"),
    ("GET", "api/sessions"),
    ("GET", "api/terminals"),
)


# -- in process: the handlers ------------------------------------------------------------------


@pytest.fixture
def credential(lcm, jp_serverapp, jp_asyncio_loop, monkeypatch):
    """The extension started as the server starts it: its kernel credential made."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(lcm_client.TOKEN_ENV, "a-token-of-another-server")
    (app,) = jp_serverapp.extension_manager.extension_apps["lcm_jupyter"]
    jp_asyncio_loop.run_until_complete(app._start_jupyter_server_extension(jp_serverapp))
    return jp_serverapp.web_app.settings[kernel_auth.SETTINGS_KEY]


def test_kernels_get_the_url_and_a_credential_not_the_servers_token(credential, jp_serverapp):
    env = os.environ
    assert env[lcm_client.URL_ENV] == jp_serverapp.connection_url
    assert env[lcm_client.KERNEL_TOKEN_ENV] == credential.secret
    assert lcm_client.TOKEN_ENV not in env  # a stale token of another server is dropped
    server_token = jp_serverapp.identity_provider.token
    assert server_token and server_token not in env.values()
    assert credential.secret not in repr(credential)
    assert lcm_client.auth_headers() == {"Authorization": f"lcm-kernel {credential.secret}"}


async def test_the_credential_opens_lcm_api_without_xsrf(credential, base_url):
    auth = {"Authorization": f"lcm-kernel {credential.secret}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        assert (await http.get("lcm/api/status", headers=auth)).status_code == 200
        # A POST with no cookie and no XSRF token, as from a kernel.
        created = await http.post("lcm/api/keys", headers=auth, json={"name": "from a kernel"})
        assert created.status_code == 201, created.text
        keys = (await http.get("lcm/api/keys", headers=auth)).json()["keys"]
        assert [k["name"] for k in keys] == ["from a kernel"]
        series = await http.get("lcm/api/analytics/timeseries?period=7d", headers=auth)
        assert series.status_code == 200 and len(series.json()["points"]) == 7
        # Also taken as a token (LCMClient(url, token=<credential>)).
        token_auth = {"Authorization": f"token {credential.secret}"}
        assert (await http.get("lcm/api/budgets", headers=token_auth)).status_code == 200


async def test_a_wrong_credential_is_refused(credential, base_url):
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        for header in ("lcm-kernel wrong", "lcm-kernel", "LCM-KERNEL " + credential.secret[:-1]):
            resp = await http.get("lcm/api/keys", headers={"Authorization": header})
            assert resp.status_code == 403, header
        resp = await http.post(
            "lcm/api/keys", headers={"Authorization": "token wrong"}, json={"name": "x"}
        )
        assert resp.status_code == 403
        assert (await http.get("lcm/api/status")).status_code == 403


async def test_the_credential_opens_nothing_else(credential, base_url, jp_serverapp):
    secret = credential.secret
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        for method, path in JUPYTER_ROUTES:
            for headers, params in (
                ({"Authorization": f"lcm-kernel {secret}"}, None),
                ({"Authorization": f"token {secret}"}, None),
                ({"Authorization": f"bearer {secret}"}, None),
                ({}, {"token": secret}),
            ):
                resp = await http.request(
                    method, path, headers=headers, params=params, follow_redirects=False
                )
                assert resp.status_code == 403, (method, path, headers, params)
        # The server's own token still opens them: the refusals above are the credential's.
        own = {"Authorization": f"token {jp_serverapp.identity_provider.token}"}
        assert (await http.get("api/contents", headers=own)).status_code == 200
    assert jp_serverapp.kernel_manager.list_kernel_ids() == []


def test_the_client_sends_the_kernel_credential_only_to_its_server(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    here = "http://127.0.0.1:8888/user/a/"
    monkeypatch.setenv(lcm_client.URL_ENV, here)
    monkeypatch.setenv(lcm_client.KERNEL_TOKEN_ENV, "k")
    assert lcm_client.auth_headers() == {"Authorization": "lcm-kernel k"}
    assert lcm_client.auth_headers(here.rstrip("/")) == {"Authorization": "lcm-kernel k"}
    assert lcm_client.auth_headers("http://elsewhere:8888/") == {}
    assert lcm_client.auth_headers(token="t") == {"Authorization": "token t"}
    # JupyterHub: its token is used as before when nothing of ours applies.
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub")
    assert lcm_client.auth_headers() == {"Authorization": "lcm-kernel k"}
    assert lcm_client.auth_headers("http://elsewhere:8888/") == {"Authorization": "token hub"}
    monkeypatch.delenv(lcm_client.KERNEL_TOKEN_ENV)
    assert lcm_client.auth_headers() == {"Authorization": "token hub"}
    # A Jupyter token the user set wins over both.
    monkeypatch.setenv(lcm_client.TOKEN_ENV, "mine")
    assert lcm_client.auth_headers() == {"Authorization": "token mine"}


def test_the_server_side_does_not_import_the_client():
    code = (
        "import sys\nimport lcm_jupyter.server.app\n"
        "assert 'lcm_jupyter.client' not in sys.modules, 'client imported'\n"
        "assert 'httpx' not in sys.modules, 'httpx imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- end to end: real servers, a real kernel ---------------------------------------------------


class JupyterServer:
    """`jupyter server` with the extension in a process of its own, and an HTTP session."""

    def __init__(
        self, tmp_path: Path, sim_url: str, *auth_args: str, env_extra: dict | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        root = tmp_path / "root"
        root.mkdir()
        (root / "notes.txt").write_text("private")
        env = server_env(tmp_path, LCM_OPENAI_BASE_URL=sim_url, **(env_extra or {}))
        for name in ENV_NAMES:
            env.pop(name, None)
        # As if started from another server's terminal: its token must not reach our kernels.
        env[lcm_client.TOKEN_ENV] = "a-token-of-another-server"
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server", f"--ServerApp.port={self.port}",
                "--ServerApp.ip=127.0.0.1", *auth_args,
                "--ServerApp.jpserver_extensions={'lcm_jupyter': True}",
                f"--ServerApp.root_dir={root}", "--allow-root", "--no-browser",
                "--ServerApp.log_level=WARN",
            ],
            env=env, stdout=_log(tmp_path, self.port), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.ws_headers: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()
        stop([self.proc])

    def start_kernel(self) -> str:
        resp = self.http.post("api/kernels", json={"name": "python3"})
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]

    def shutdown_kernel(self, kernel_id: str) -> None:
        assert self.http.delete(f"api/kernels/{kernel_id}").status_code == 204


@pytest.fixture
def thread_provider():
    with SimulatedProvider.run_in_thread(api_keys=[PROVIDER_KEY]) as provider:
        yield provider


@pytest.fixture
def password_server(tmp_path, thread_provider, jp_asyncio_loop):
    """A server with a password and no token, the test logged in as a browser would."""
    from jupyter_server.auth import passwd

    server = JupyterServer(
        tmp_path,
        thread_provider.url,
        f"--PasswordIdentityProvider.hashed_password={passwd('pass-word')}",
        "--IdentityProvider.token=",
    )
    try:
        jp_asyncio_loop.run_until_complete(wait_ready(server.url, server.proc))
        assert server.http.get("api/contents").status_code == 403  # no token opens it
        server.http.get("login")
        xsrf = server.http.cookies["_xsrf"]
        resp = server.http.post("login", data={"password": "pass-word", "_xsrf": xsrf})
        assert resp.status_code in (200, 302), resp.text
        server.http.headers["X-XSRFToken"] = xsrf
        assert server.http.get("api/contents").status_code == 200
        cookies = "; ".join(f"{k}={v}" for k, v in server.http.cookies.items())
        server.ws_headers = {"Cookie": cookies}
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def serving_with_token(tmp_path, sim_url: str, loop, env_extra: dict | None = None):
    """A server with a (long, random) token, ready; closed on leaving."""
    token = secrets.token_hex(24)
    server = JupyterServer(
        tmp_path, sim_url, f"--IdentityProvider.token={token}", env_extra=env_extra
    )
    server.token = token  # type: ignore[attr-defined]
    server.http.headers["Authorization"] = f"token {token}"
    server.ws_headers = {"Authorization": f"token {token}"}
    try:
        loop.run_until_complete(wait_ready(server.url, server.proc))
        yield server
    finally:
        server.close()


@pytest.fixture
def token_server(tmp_path, thread_provider, jp_asyncio_loop):
    """A server with a (long, random) token."""
    with serving_with_token(tmp_path, thread_provider.url, jp_asyncio_loop) as server:
        yield server


class Ran:
    """What a cell showed: its streams, displays, error and reply."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.displays: list[dict] = []
        """display_data contents, in order."""
        self.shown: list[str] = []
        """The text/plain of every result and display, in order."""
        self.error: dict | None = None
        self.reply: dict | None = None

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def cost_lines(self) -> list[str]:
        """The cell cost lines shown (text/plain; lcm_jupyter.kernel_ext's)."""
        return [d["data"]["text/plain"] for d in self.displays if "lcm_jupyter" in d["metadata"]]


async def execute(
    server: JupyterServer,
    kernel_id: str,
    code: str,
    *,
    cell_id: str | None = None,
    store_history: bool = False,
) -> Ran:
    """Execute `code` in the kernel over its websocket, as a notebook cell (`cell_id` in its
    metadata, as JupyterLab sends it); what it showed once the kernel is idle again."""
    url = f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(HTTPRequest(url, headers=server.ws_headers))
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "test",
            "session": uuid.uuid4().hex,
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {} if cell_id is None else {"cellId": cell_id},
        "content": {"code": code, "silent": False, "store_history": store_history},
        "channel": "shell",
        "buffers": [],
    }
    await conn.write_message(json.dumps(request))
    ran, idle = Ran(), False
    try:
        while not (idle and ran.reply is not None):
            raw = await asyncio.wait_for(conn.read_message(), 120)
            assert raw is not None, "the kernel's websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                (ran.out if content["name"] == "stdout" else ran.err).append(content["text"])
            elif kind in ("execute_result", "display_data"):
                ran.shown.append(content["data"].get("text/plain", ""))
                if kind == "display_data":
                    ran.displays.append(content)
            elif kind == "error":
                ran.error = content
            elif kind == "execute_reply":
                ran.reply = content
            elif kind == "status":
                idle = content["execution_state"] == "idle"
    finally:
        conn.close()
    return ran


async def run_cell(server: JupyterServer, kernel_id: str, code: str) -> tuple[str, str]:
    """Execute `code` in the kernel; its stdout (with results shown) and stderr. A traceback
    fails the test."""
    ran = await execute(server, kernel_id, code)
    if ran.error is not None:
        pytest.fail("the cell raised:\n" + "\n".join(ran.error["traceback"]))
    return ran.stdout + "".join(ran.shown), "".join(ran.err)


KERNEL_CODE = """
import json, os
from lcm_jupyter import LCMClient, openai_client
with LCMClient() as lcm:
    key = lcm.create_key(name="from the kernel", routing_mode="off",
                         provider_api_keys={"openai": %r})
    reply = openai_client(key["key"], max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content
    print(json.dumps({"keys": [k["name"] for k in lcm.list_keys()],
                      "logged": [r["model"] for r in lcm.logs()],
                      "env": dict(os.environ)}))
""" % (PROVIDER_KEY,)  # noqa: UP031


async def test_password_server_kernels_reach_the_api(password_server):
    server = password_server
    kernel_id = server.start_kernel()
    try:
        out, _ = await run_cell(server, kernel_id, KERNEL_CODE)
        seen = json.loads(out)
        assert seen["keys"] == ["from the kernel"]
        assert seen["logged"] == ["gpt-4o-mini"]
        env = seen["env"]
        assert env[lcm_client.URL_ENV] == server.url
        assert lcm_client.TOKEN_ENV not in env
        secret = env[lcm_client.KERNEL_TOKEN_ENV]

        out, _ = await run_cell(server, kernel_id, "%load_ext lcm_jupyter\n%lcm status")
        assert f"extension reachable at {server.url}" in out
        assert "keys: 1 (1 active, 0 revoked)" in out
        out, _ = await run_cell(server, kernel_id, "%lcm keys")
        assert "from the kernel" in out
    finally:
        server.shutdown_kernel(kernel_id)

    # What the kernel holds opens lcm/api and nothing else of this server.
    with httpx.Client(base_url=server.url, timeout=30) as http:
        auth = {"Authorization": f"lcm-kernel {secret}"}
        assert http.get("lcm/api/status", headers=auth).status_code == 200
        for method, path in JUPYTER_ROUTES:
            resp = http.request(method, path, headers=auth, follow_redirects=False)
            assert resp.status_code == 403, (method, path)
        assert http.get("api/contents/notes.txt", headers=auth).status_code == 403
        resp = http.get("files/notes.txt", headers=auth, follow_redirects=False)
        assert resp.status_code in (302, 403) and b"private" not in resp.content
    assert server.http.get("api/kernels").json() == []  # none started by the credential


async def test_token_server_kernels_do_not_get_its_token(token_server):
    server = token_server
    kernel_id = server.start_kernel()
    try:
        out, _ = await run_cell(server, kernel_id, KERNEL_CODE)
    finally:
        server.shutdown_kernel(kernel_id)
    seen = json.loads(out)
    assert seen["keys"] == ["from the kernel"]
    env = seen["env"]
    assert lcm_client.TOKEN_ENV not in env
    assert not [name for name, value in env.items() if server.token in value]
    assert env[lcm_client.KERNEL_TOKEN_ENV] != server.token
