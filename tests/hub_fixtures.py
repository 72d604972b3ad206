"""A real JupyterHub for the team tests: the hub, its configurable-http-proxy, and a
single-user server per user (SimpleLocalProcessSpawner: every user runs as this process's
unix user, with a home of their own under a temp dir), each loading the extension as any
installed server does (jupyter-config/jupyter_server_config.d/lcm_jupyter.json).

The proxy comes from npm (`configurable-http-proxy`, which .ci/run installs): without it on
PATH the tests skip, or fail when `LCM_REQUIRE_HUB=1` (CI sets it), as tests/pg_fixtures.py
does for PostgreSQL.

The users: `alice` and `bob` (group `research`), and `ada`, a JupyterHub admin who is also
granted the custom scope `custom:lcm:admin` through a role (the second way to be an lcm
admin). The test holds the token of a service with the admin scopes it needs to start
servers and make users' tokens. The servers' environment is the test module's
`hub_environment` fixture (module scope): its LCM_* settings and provider keys.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from .servers import free_port

ENV_REQUIRE = "LCM_REQUIRE_HUB"
PROXY_COMMAND = "configurable-http-proxy"
GROUP = "research"
MEMBERS = ("alice", "bob")
ADMIN = "ada"
USERS = (*MEMBERS, ADMIN)
ADMIN_SCOPE = "custom:lcm:admin"
SERVICE = "lcm-test"
# A loaded 2-core machine has taken over 30 s to start one Jupyter server.
START_TIMEOUT = 120.0
# How often the hub is asked whether servers are up: each answer takes CPU from the
# servers starting on the same cores.
POLL = 0.25

# What the test's service may do: start and stop servers (and read their pids, to make sure
# none outlives the hub), read users and groups, make users' tokens, reach their servers.
SERVICE_SCOPES = [
    "admin:users",
    "admin:servers",
    "admin:server_state",
    "admin:groups",
    "tokens",
    "access:servers",
]
# $JUPYTERHUB_API_TOKEN, the server's own token, which the hub cuts to what its user holds:
# JupyterHub's default (the `server` role: activity, access to this server), reading users'
# names and groups and the groups' members (the owner's own for a member; everyone's for an
# admin, for the team view), and the lcm admin scope (on ada's token only). Not `inherit`:
# kernels inherit this token, and it would hand an admin's every power to their code.
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    "read:users:name",
    "read:users:groups",
    "read:groups",
    ADMIN_SCOPE,
]


def config_text(
    workdir: Path,
    *,
    port: int,
    hub_port: int,
    proxy_api_port: int,
    proxy_command: str,
    service_token: str,
    environment: dict[str, str],
) -> str:
    """jupyterhub_config.py for the test hub (exact trait names of JupyterHub 5 and 6)."""
    cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
    # Jupyter Server refuses to run as root unless told (CI runs as root).
    args = ["--allow-root"] if os.geteuid() == 0 else []
    settings: list[tuple[str, Any]] = [
        ("JupyterHub.ip", "127.0.0.1"),
        ("JupyterHub.port", port),
        ("JupyterHub.hub_ip", "127.0.0.1"),
        ("JupyterHub.hub_port", hub_port),
        ("JupyterHub.db_url", f"sqlite:///{workdir / 'jupyterhub.sqlite'}"),
        ("JupyterHub.cookie_secret_file", str(workdir / "cookie_secret")),
        ("JupyterHub.pid_file", str(workdir / "hub.pid")),
        # Starting and stopping a server answer at once (202): the test starts every user's
        # server at the same time, then waits for them (by default each POST waits 10 s).
        ("JupyterHub.tornado_settings", {"slow_spawn_timeout": 0, "slow_stop_timeout": 0}),
        ("ConfigurableHTTPProxy.command", [proxy_command]),
        ("ConfigurableHTTPProxy.api_url", f"http://127.0.0.1:{proxy_api_port}"),
        ("ConfigurableHTTPProxy.auth_token", secrets.token_hex(32)),
        ("ConfigurableHTTPProxy.pid_file", str(workdir / "proxy.pid")),
        ("JupyterHub.authenticator_class", "dummy"),
        ("Authenticator.allowed_users", set(USERS)),
        ("Authenticator.admin_users", {ADMIN}),
        ("JupyterHub.load_groups", {GROUP: {"users": list(MEMBERS)}}),
        ("JupyterHub.custom_scopes", {ADMIN_SCOPE: {"description": "Administer lcm."}}),
        (
            "JupyterHub.load_roles",
            [
                {"name": "lcm-admin", "scopes": [ADMIN_SCOPE], "users": [ADMIN]},
                {"name": "lcm-test", "scopes": SERVICE_SCOPES, "services": [SERVICE]},
            ],
        ),
        ("JupyterHub.services", [{"name": SERVICE, "api_token": service_token}]),
        ("JupyterHub.spawner_class", "simple"),
        ("SimpleLocalProcessSpawner.home_dir_template", str(workdir / "home" / "{username}")),
        ("Spawner.cmd", cmd),
        ("Spawner.args", args),
        ("Spawner.default_url", "/lab"),
        ("Spawner.environment", dict(environment)),
        ("Spawner.server_token_scopes", SERVER_TOKEN_SCOPES),
        # The browser's OAuth tokens for a server may carry the lcm admin scope too.
        ("Spawner.oauth_client_allowed_scopes", [ADMIN_SCOPE]),
        ("Spawner.start_timeout", int(START_TIMEOUT)),
        ("Spawner.http_timeout", int(START_TIMEOUT)),
    ]
    return "".join(f"c.{name} = {value!r}\n" for name, value in settings)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (the proxy and the servers are the hub's children, not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`, and wait until `pid` is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


class Hub:
    """A running JupyterHub: its REST API as the test's service, users' servers, kernels."""

    def __init__(self, workdir: Path, environment: dict[str, str]) -> None:
        self.workdir = workdir
        proxy = shutil.which(PROXY_COMMAND)
        assert proxy is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.hub_port = free_port()
        self._service_token = secrets.token_hex(32)
        self.config = workdir / "jupyterhub_config.py"
        self.config.write_text(
            config_text(
                workdir,
                port=self.port,
                hub_port=self.hub_port,
                proxy_api_port=free_port(),
                proxy_command=proxy,
                service_token=self._service_token,
                environment=environment,
            )
        )
        self.log_path = workdir / "hub.log"
        self.http = httpx.Client(
            base_url=self.url + "hub/api/",
            headers={"Authorization": f"token {self._service_token}"},
            timeout=30,
        )
        self._tokens: dict[str, str] = {}
        self._clients: dict[str, httpx.Client] = {}
        self._server_pids: set[int] = set()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- the hub -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the hub (which starts its proxy) and wait until its API answers through it."""
        with open(self.log_path, "ab") as log:
            # The spawned servers and the proxy write to the hub's output: one log for all.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.config)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        # The hub itself first, then through the proxy once the hub has given it its route
        # (asked before, the proxy logs an error with a stack trace each time).
        for url in (f"http://127.0.0.1:{self.hub_port}/hub/api/", self.url + "hub/api/"):
            while True:
                self._check_running("the hub exited while starting")
                try:
                    if httpx.get(url, timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"the hub did not start\n{self.log_tail()}")
                time.sleep(0.1)

    def _check_running(self, what: str) -> None:
        assert self._proc is not None and self._proc.poll() is None, f"{what}\n{self.log_tail()}"

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the hub's log (the proxy's and the servers' output included)."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return f"--- {self.log_path} (last {chars} characters) ---\n{text[-chars:]}"

    def api(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """The hub's REST API (`users/alice`, ...) with the test's admin token."""
        return self.http.request(method, path.lstrip("/"), json=json)

    def servers(self) -> dict[str, dict]:
        """{user: their default server's model} of the users who have one (starting,
        running or stopping)."""
        resp = self.api("GET", "users")
        assert resp.status_code == 200, resp.text
        return {u["name"]: u["servers"][""] for u in resp.json() if "" in (u.get("servers") or {})}

    def start_server(self, *users: str) -> None:
        """Start each user's server (all at once) and wait until the hub reports them ready."""
        for user in users:
            resp = self.api("POST", f"users/{user}/server")
            # 201 started, 202 starting, 400 already running.
            assert resp.status_code in (201, 202, 400), f"{user}: {resp.status_code} {resp.text}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._check_running("the hub exited while servers started")
            servers = self.servers()
            failed = [user for user in users if user not in servers]
            if failed:
                raise AssertionError(f"servers failed to start: {failed}\n{self.log_tail()}")
            for user in users:
                pid = (servers[user].get("state") or {}).get("pid")
                if pid:
                    self._server_pids.add(pid)
            waiting = [user for user in users if not servers[user].get("ready")]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"servers not ready: {waiting}\n{self.log_tail()}")
            time.sleep(POLL)

    def stop_server(self, *users: str, timeout: float = 60.0) -> None:
        """Stop each user's server and wait until the hub has none for them."""
        for user in users:
            resp = self.api("DELETE", f"users/{user}/server")
            assert resp.status_code in (202, 204, 400), f"{user}: {resp.status_code} {resp.text}"
        deadline = time.monotonic() + timeout
        while set(users) & set(self.servers()):
            if time.monotonic() > deadline:
                raise AssertionError(f"servers not stopped: {users}\n{self.log_tail()}")
            time.sleep(POLL)

    def user_token(self, user: str) -> str:
        """An API token of `user` (made once; the `token` role: what the user may do)."""
        if user not in self._tokens:
            resp = self.api("POST", f"users/{user}/tokens", json={"note": "lcm tests"})
            assert resp.status_code == 201, resp.text
            self._tokens[user] = resp.json()["token"]
        return self._tokens[user]

    def user_http(self, user: str, as_user: str | None = None) -> httpx.Client:
        """An HTTP client for `user`'s server through the hub's proxy, authenticated with
        the token of `as_user` (by default `user` itself)."""
        holder = as_user or user
        key = f"{user}:{holder}"
        if key not in self._clients:
            self._clients[key] = httpx.Client(
                base_url=f"{self.url}user/{user}/",
                headers={"Authorization": f"token {self.user_token(holder)}"},
                timeout=60,
            )
        return self._clients[key]

    # -- kernels -------------------------------------------------------------------------------

    def start_session(self, user: str, path: str) -> str:
        """A kernel for the notebook at `path` on `user`'s server (as JupyterLab opens one);
        its id."""
        body = {"path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}}
        resp = self.user_http(user).post("api/sessions", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()["kernel"]["id"]

    def run_cell(
        self,
        user: str,
        kernel_id: str,
        code: str,
        cell_id: str | None = None,
        *,
        check: bool = True,
        timeout: float = 120.0,
    ) -> tuple[str, dict]:
        """Execute `code` in the kernel over its websocket through the hub's proxy, as
        JupyterLab does (the cell's id in the request's metadata); its stdout (what it
        printed: not its displays, such as the extension's cost line) and the execute_reply's
        content. An error fails the test when `check`."""
        import websocket  # websocket-client, a dependency of jupyter_server

        url = f"ws://127.0.0.1:{self.port}/user/{user}/api/kernels/{kernel_id}/channels"
        # A token in the URL counts only with a browser's `Sec-Fetch-Mode: websocket`: the
        # header is what an API client sends.
        auth = f"Authorization: token {self.user_token(user)}"
        conn = websocket.create_connection(url, header=[auth], timeout=timeout)
        msg_id = uuid.uuid4().hex
        metadata = {"deletedCells": [], "recordTiming": False}
        if cell_id is not None:
            metadata["cellId"] = cell_id
        request = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": user,
                "session": uuid.uuid4().hex,
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": metadata,
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }
        out: list[str] = []
        errors: list[str] = []
        reply: dict | None = None
        idle = False
        deadline = time.monotonic() + timeout
        try:
            conn.send(json.dumps(request))
            while reply is None or not idle:
                assert time.monotonic() < deadline, f"the cell did not finish in {timeout} s"
                msg = json.loads(conn.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "execute_reply":
                    reply = content
                elif kind == "stream" and content["name"] == "stdout":
                    out.append(content["text"])
                elif kind == "error":
                    errors.append("\n".join(content["traceback"]))
                elif kind == "status" and content["execution_state"] == "idle":
                    idle = True
        finally:
            conn.close()
        if check and (errors or reply.get("status") != "ok"):
            pytest.fail(f"the cell raised in {user}'s kernel:\n" + "\n".join(errors))
        return "".join(out), reply

    def shutdown_kernels(self, user: str) -> None:
        """Shut down every kernel of `user`'s server (each DELETE waits for its kernel)."""
        http = self.user_http(user)
        resp = http.get("api/kernels")
        assert resp.status_code == 200, resp.text
        for kernel in resp.json():
            resp = http.delete(f"api/kernels/{kernel['id']}")
            assert resp.status_code in (204, 404), resp.text

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the servers, then the hub, then its proxy; leave no process behind."""
        try:
            if self._proc is not None and self._proc.poll() is None:
                running = sorted(self.servers())
                for user in running:
                    self.shutdown_kernels(user)
                if running:
                    self.stop_server(*running)
        finally:
            for client in self._clients.values():
                client.close()
            self.http.close()
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(30)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            # The hub stops its proxy and servers on its way out; after a crash it could not.
            proxy_pid = self.workdir / "proxy.pid"
            pids = set(self._server_pids)
            if proxy_pid.exists():
                pids.add(int(proxy_pid.read_text().strip()))
            leaked = [pid for pid in pids if _alive(pid)]
            for pid in leaked:
                _kill(pid)
            assert not leaked, f"processes outlived the hub: {leaked}\n{self.log_tail()}"


@contextmanager
def running_hub(workdir: Path, environment: dict[str, str]) -> Iterator[Hub]:
    """A started Hub in `workdir` (no user server yet), stopped on leaving."""
    hub = Hub(workdir, environment)
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()


def _unavailable(reason: str) -> None:
    """Skip, or fail when CI requires the hub: a silent skip there would hide the tests."""
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{reason} ({ENV_REQUIRE}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module", name="hub")
def hub_fixture(tmp_path_factory, request) -> Iterator[Hub]:
    """`hub`: a real JupyterHub for the module, every user's server started. A test module
    imports `hub_fixture`, and may define a module-scoped `hub_environment` fixture: the
    users' servers' extra environment (Spawner.environment)."""
    if importlib.util.find_spec("jupyterhub") is None:
        _unavailable("jupyterhub is not installed (the test extra has it)")
    if shutil.which(PROXY_COMMAND) is None:
        _unavailable(f"{PROXY_COMMAND} is not on PATH (npm install configurable-http-proxy)")
    try:
        environment = request.getfixturevalue("hub_environment")
    except pytest.FixtureLookupError:
        environment = {}
    failed_before = request.session.testsfailed
    with running_hub(tmp_path_factory.mktemp("hub"), environment) as running:
        try:
            running.start_server(*USERS)
            yield running
        finally:
            if request.session.testsfailed > failed_before:
                # What the tests ran against, past pytest's capture: this teardown's output
                # would show only if the test it follows had failed.
                plugins = request.config.pluginmanager
                reporter = plugins.get_plugin("terminalreporter")
                capture = plugins.get_plugin("capturemanager")
                if reporter is not None and capture is not None:
                    with capture.global_and_fixture_disabled():
                        reporter.write_line("")
                        reporter.write_sep("-", "JupyterHub log: tests of this module failed")
                        reporter.write_line(running.log_tail(20000))
