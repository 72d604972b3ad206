"""`lcm_jupyter.serve()`: the proxy and REST API hosted inside the kernel process.

For frontends where the server extension is not installed (another Jupyter frontend, a
hosted notebook). It serves this project's handlers only, the proxy, `lcm/api` and its
analytics, over the very same pipeline and store (`LCMServices`), from a plain tornado
application: no Jupyter server, so no kernels, contents or terminals API. It listens on
127.0.0.1; its API takes the kernel credential (server/kernel_auth.py), a random secret
made for it, and it points `LCM_SERVER_URL` / `LCM_KERNEL_TOKEN` of this process at
itself, so `LCMClient()` and `lcm_jupyter.openai_client(key)` find it.

    import lcm_jupyter
    handle = lcm_jupyter.serve()          # or: %lcm serve [--port N] [--verbose]
    lcm = lcm_jupyter.LCMClient()
    ...
    handle.stop()

Quiet in the notebook: it writes nothing per call unless `verbose=True`, then one line per
request on stderr (status, method, path without its query string, time).

Configuration: keyword arguments named like the extension's traits (`db_path`,
`openai_base_url`, `redis_url`, `secret_key_file`, ...), else the same `LCM_*` environment
variables the extension reads. Jupyter config files are not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from ._env import KERNEL_TOKEN_ENV, TOKEN_ENV, URL_ENV

START_TIMEOUT = 60.0
STOP_TIMEOUT = 45.0  # the drain's grace (shutdown_grace_seconds, 30 s) and the closing after it
MAX_BODY_SIZE = 512 * 1024 * 1024  # tornado's cap, as Jupyter's; the proxy answers 413 below it
HOST = "127.0.0.1"

_lock = threading.Lock()
_running: KernelServer | None = None


class KernelServer:
    """A running kernel-hosted server: `.url`, `.port`, `.token` (its kernel credential),
    `.verbose` (one stderr line per request when True), `.stop()`."""

    def __init__(self) -> None:
        self.url = ""
        self.token = ""
        self.port = 0
        self.verbose = False
        self.stop_timeout = STOP_TIMEOUT
        self._services: Any = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._saved_env: dict[str, str | None] = {}
        self._stopped = False

    @property
    def running(self) -> bool:
        return not self._stopped and self._thread is not None and self._thread.is_alive()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<lcm_jupyter kernel server {self.url} ({state})>"

    def stop(self) -> None:
        """Stop serving: no new connections, calls in flight finish (up to the configured
        shutdown_grace_seconds) and are logged, the store closes, the thread ends."""
        global _running
        with _lock:
            if self._stopped:
                return
            self._stopped = True
            if _running is self:
                _running = None
        loop = self._loop
        try:
            if loop is not None and self._thread is not None and self._thread.is_alive():
                future = asyncio.run_coroutine_threadsafe(_shutdown(self), loop)
                try:
                    future.result(self.stop_timeout)
                finally:
                    loop.call_soon_threadsafe(loop.stop)
                    self._thread.join(self.stop_timeout)
        finally:
            self._restore_env()

    def _point_env_here(self) -> None:
        self._saved_env = {name: os.environ.get(name) for name in (URL_ENV, KERNEL_TOKEN_ENV)}
        self._saved_env[TOKEN_ENV] = os.environ.pop(TOKEN_ENV, None)  # it would win over ours
        os.environ[URL_ENV] = self.url
        os.environ[KERNEL_TOKEN_ENV] = self.token

    def _restore_env(self) -> None:
        # Only undo what is still ours: another serve() or the user may have changed it since.
        ours = {URL_ENV: self.url, KERNEL_TOKEN_ENV: self.token, TOKEN_ENV: None}
        for name, old in self._saved_env.items():
            if os.environ.get(name) != ours[name]:
                continue
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def serve(port: int = 0, *, verbose: bool | None = None, **config: Any) -> KernelServer:
    """Run the proxy and REST API in this (kernel) process; the running server's handle.

    The server runs on an asyncio loop of its own in a daemon thread, not on the kernel's
    loop: notebook code calls the *sync* SDKs (`openai.OpenAI(...)`) and the sync
    `LCMClient`, which block the thread they run on, and a server sharing that loop would
    never answer them (deadlock).

    `port` 0 picks a free port. `verbose` writes one line per request to stderr (default
    off; given for a running server, it turns that server's lines on or off). Other keyword
    arguments are `LCMExtension` traits (`db_path`, `redis_url`, `openai_base_url`,
    `anthropic_base_url`, `google_base_url`, `secret_key`, `secret_key_file`,
    `budget_mode`, ...); what is not given comes from the same `LCM_*` environment
    variables the extension reads. (`gc_freeze` is accepted and has no effect here.)

    Sets `LCM_SERVER_URL` / `LCM_KERNEL_TOKEN` in this process and hides a
    `LCM_SERVER_TOKEN` meanwhile (all restored by `.stop()`). Calling it again while one
    runs returns the running one.
    """
    global _running
    with _lock:
        if _running is not None and _running.running:
            if verbose is not None:
                _running.verbose = verbose
            return _running
        settings = _settings(config)  # a bad value raises here, in the caller's thread
        handle = KernelServer()
        handle.verbose = bool(verbose)
        handle.stop_timeout = max(STOP_TIMEOUT, settings.shutdown_grace_seconds + 15.0)
        _start(handle, int(port), settings)
        _running = handle
        return handle


def _settings(config: dict[str, Any]) -> Any:
    """The pipeline's Settings from serve()'s keyword arguments and the LCM_* variables,
    made as the extension makes them (the same option traits, checked the same way)."""
    from .core.settings import OPTIONS
    from .server.config import ExtensionOptions, build_settings

    unknown = sorted(set(config) - {option.name for option in OPTIONS})
    if unknown:
        raise TypeError(f"serve() got unknown settings: {', '.join(unknown)}")
    traits = {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()}
    return build_settings(ExtensionOptions(**traits))


def _start(handle: KernelServer, port: int, settings: Any) -> None:
    from tornado.netutil import bind_sockets

    from .server.kernel_auth import KernelCredential

    try:  # here, so that a taken port fails before anything else exists
        sockets = bind_sockets(port, HOST)
    except OSError as exc:
        raise RuntimeError(
            f"lcm: the kernel server could not start on {HOST}:{port}: {exc.strerror or exc}"
        ) from exc
    handle.port = sockets[0].getsockname()[1]
    handle.url = f"http://{HOST}:{handle.port}/"
    credential = KernelCredential()
    handle.token = credential.secret
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_boot(handle, sockets, settings, credential))
        except BaseException as exc:  # reported to the caller's thread below
            failure.append(exc)
            with contextlib.suppress(Exception):  # the start failure is what matters
                loop.run_until_complete(_shutdown(handle))
            for sock in sockets:
                sock.close()
            _close(loop)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            _close(loop)

    handle._loop = loop
    handle._thread = threading.Thread(target=run, name="lcm-kernel-server", daemon=True)
    handle._thread.start()
    if not ready.wait(START_TIMEOUT):
        handle.stop()
        raise RuntimeError(f"lcm: the kernel server did not start in {START_TIMEOUT:.0f}s")
    if failure:
        handle._thread.join(handle.stop_timeout)
        handle._stopped = True
        raise failure[0]
    handle._point_env_here()


async def _boot(handle: KernelServer, sockets: list, settings: Any, credential: Any) -> None:
    from tornado.httpserver import HTTPServer

    from .server.services import LCMServices

    handle._services = LCMServices(settings)
    await handle._services.start()
    app = application(handle._services, credential, log_request=_request_line(handle))
    handle._server = HTTPServer(app, max_body_size=MAX_BODY_SIZE)
    handle._server.add_sockets(sockets)


def application(services: Any, credential: Any, *, log_request: Any = None) -> Any:
    """A tornado application with this project's handlers only (proxy, lcm/api, analytics)
    over `services`; its API accepts `credential` (a KernelCredential) and nothing else."""
    from tornado import web

    from .server.analytics_handlers import analytics_handlers
    from .server.api_handlers import api_handlers
    from .server.kernel_auth import LCM_ONLY, SETTINGS_KEY, NoLogin
    from .server.proxy_handlers import proxy_handlers
    from .server.team_handlers import team_handlers

    rules = [
        *proxy_handlers(services.pipeline),
        *team_handlers(services),  # before budgets/{key_id}
        *api_handlers(services),
        *analytics_handlers(services),
    ]
    return web.Application(
        rules,
        base_url="/",
        # The API handlers are Jupyter's APIHandlers: they ask these for a login, which
        # nobody has here: the kernel credential (checked by the handlers) is the only way.
        identity_provider=NoLogin(token=""),
        authorizer=LCM_ONLY,
        serverapp=None,
        log_function=log_request or _quiet,
        **{SETTINGS_KEY: credential},
    )


def _quiet(handler: Any) -> None:
    """No access log: in a notebook, a line per call would land in the cell's output."""


def _request_line(handle: KernelServer):
    def log_request(handler: Any) -> None:
        if not handle.verbose:
            return
        request = handler.request  # its path only: a query may hold a key (?key=)
        took = 1000.0 * request.request_time()
        line = f"lcm: {handler.get_status()} {request.method} {request.path} {took:.0f} ms"
        print(line, file=sys.stderr)

    return log_request


async def _shutdown(handle: KernelServer) -> None:
    server, services = handle._server, handle._services
    if server is not None:
        server.stop()  # no new connections; those open get 503 from the draining pipeline
    if services is not None:
        await services.stop()  # calls in flight finish (shutdown_grace_seconds), then logged
    if server is not None:
        await server.close_all_connections()


def _close(loop: asyncio.AbstractEventLoop) -> None:
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
