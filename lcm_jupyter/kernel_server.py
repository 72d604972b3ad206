"""`lcm_jupyter.serve()`: the proxy and REST API hosted inside the kernel process.

For frontends where the server extension is not installed (another Jupyter frontend, a
hosted notebook). It runs the very same extension (`LCMExtension`: same handlers, same
pipeline, same store) in an in-process Jupyter `ServerApp` that loads only this extension,
listens on 127.0.0.1 with a random token, and points `LCM_SERVER_URL` / `LCM_SERVER_TOKEN`
of this process at itself, so `LCMClient()` and `lcm_jupyter.openai_client(key)` find it.

    import lcm_jupyter
    handle = lcm_jupyter.serve()          # or: %lcm serve [--port N]
    lcm = lcm_jupyter.LCMClient()
    ...
    handle.stop()

Configuration: keyword arguments named like the extension's traits (`db_path`,
`openai_base_url`, `redis_url`, `secret_key_file`, ...), else the same `LCM_*` environment
variables the extension reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

URL_ENV = "LCM_SERVER_URL"  # as in lcm_jupyter.client (not imported: it imports httpx)
TOKEN_ENV = "LCM_SERVER_TOKEN"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 45.0  # the drain's grace (shutdown_grace_seconds, 30 s) and the closing after it

_lock = threading.Lock()
_running: KernelServer | None = None


class KernelServer:
    """A running kernel-hosted server: `.url`, `.token`, `.port`, `.stop()`."""

    def __init__(self) -> None:
        self.url = ""
        self.token = ""
        self.port = 0
        self._app: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tmp = ""
        self._saved_env: dict[str, str | None] = {}
        self._stopped = False

    @property
    def running(self) -> bool:
        return not self._stopped and self._thread is not None and self._thread.is_alive()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<lcm_jupyter kernel server {self.url} ({state})>"

    def stop(self) -> None:
        """Stop serving: the extension's services stop, the port closes, the thread ends."""
        global _running
        with _lock:
            if self._stopped:
                return
            self._stopped = True
            if _running is self:
                _running = None
        loop, app = self._loop, self._app
        try:
            if loop is not None and self._thread is not None and self._thread.is_alive():
                future = asyncio.run_coroutine_threadsafe(_shutdown(app), loop)
                try:
                    future.result(STOP_TIMEOUT)
                finally:
                    loop.call_soon_threadsafe(loop.stop)
                    self._thread.join(STOP_TIMEOUT)
        finally:
            _forget_instance(app)
            self._restore_env()
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _restore_env(self) -> None:
        # Only undo what is still ours: another serve() or the user may have changed it since.
        ours = {URL_ENV: self.url, TOKEN_ENV: self.token}
        for name, old in self._saved_env.items():
            if os.environ.get(name) != ours[name]:
                continue
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def serve(port: int = 0, **config: Any) -> KernelServer:
    """Run the proxy and REST API in this (kernel) process; the running server's handle.

    The server runs on an asyncio loop of its own in a daemon thread, not on the kernel's
    loop: notebook code calls the *sync* SDKs (`openai.OpenAI(...)`) and the sync
    `LCMClient`, which block the thread they run on, and a server sharing that loop would
    never answer them (deadlock).

    `port` 0 picks a free port. Other keyword arguments are `LCMExtension` traits
    (`db_path`, `redis_url`, `openai_base_url`, `anthropic_base_url`, `google_base_url`,
    `secret_key`, `secret_key_file`, `budget_mode`, ...); what is not given comes from the
    same `LCM_*` environment variables the extension reads. `gc_freeze` defaults to off
    here (the kernel's objects are the user's data, not server start-up state).

    Sets `LCM_SERVER_URL` / `LCM_SERVER_TOKEN` in this process (restored by `.stop()`).
    Calling it again while one runs returns the running one.
    """
    global _running
    with _lock:
        if _running is not None and _running.running:
            return _running
        from .server.app import LCMExtension

        allowed = set(LCMExtension.class_trait_names(config=True))
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise TypeError(f"serve() got unknown settings: {', '.join(unknown)}")
        traits = {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()}
        traits.setdefault("gc_freeze", False)
        traits.setdefault("log_level", "WARN")
        LCMExtension(**traits)  # a bad value raises its TraitError here, in the caller's thread
        handle = KernelServer()
        _start(handle, int(port), traits)
        _running = handle
        return handle


def _start(handle: KernelServer, port: int, traits: dict[str, Any]) -> None:
    handle._tmp = tempfile.mkdtemp(prefix="lcm-serve-")
    handle.token = secrets.token_hex(24)
    handle._saved_env = {name: os.environ.get(name) for name in (URL_ENV, TOKEN_ENV)}
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            handle._app = loop.run_until_complete(_boot(handle, port, traits))
        except BaseException as exc:  # reported to the caller's thread below
            failure.append(exc)
            app = handle._app
            if app is not None:
                with contextlib.suppress(Exception):  # the start failure is what matters
                    loop.run_until_complete(_shutdown(app))
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
        handle._thread.join(STOP_TIMEOUT)
        _forget_instance(handle._app)
        handle._restore_env()
        shutil.rmtree(handle._tmp, ignore_errors=True)
        handle._stopped = True
        raise failure[0]


async def _boot(handle: KernelServer, port: int, traits: dict[str, Any]) -> Any:
    from jupyter_server.serverapp import ServerApp
    from traitlets.config import Config

    class KernelServerApp(ServerApp):
        """A ServerApp that reads no config files: only what serve() gives it."""

        @property
        def config_file_paths(self) -> list[str]:
            return []

        def init_signal(self) -> None:  # signal handlers belong to the main thread
            pass

    # In a kernel, a web server's access log (every request at DEBUG) is noise in the
    # notebook's output: keep it at warnings at least (a quieter setting is left alone).
    access = logging.getLogger("tornado.access")
    if access.getEffectiveLevel() < logging.WARNING:
        access.setLevel(logging.WARNING)
    c = Config()
    c.ServerApp.jpserver_extensions = {"lcm_jupyter": True}
    c.IdentityProvider.token = handle.token
    c.LCMExtension = Config(traits)
    root = Path(handle._tmp)
    for sub in ("root", "runtime", "config", "data"):
        (root / sub).mkdir()
    app = KernelServerApp(
        config=c,
        ip="127.0.0.1",
        port=port,
        port_retries=0,
        open_browser=False,
        no_browser_open_file=True,
        allow_root=True,
        root_dir=str(root / "root"),
        runtime_dir=str(root / "runtime"),
        config_dir=str(root / "config"),
        log_level="WARN",
        reraise_server_extension_failures=True,
    )
    handle._app = app
    # Extensions from config files (terminals, jupyterlab, ...) are not loaded.
    try:
        app.initialize(argv=[], find_extensions=False)
    except SystemExit as exc:  # traitlets exits on bad config; a kernel must not
        raise RuntimeError("lcm: the kernel server could not start (see its log)") from exc
    for _ in range(10):  # initialize() schedules the socket binding on this loop
        await asyncio.sleep(0)
        if app.http_server._sockets:
            break
    if not app.http_server._sockets:
        raise RuntimeError(f"lcm: the kernel server could not listen on 127.0.0.1:{app.port}")
    app.start_app()
    # Starts LCMServices; LCMExtension then sets LCM_SERVER_URL/TOKEN in os.environ.
    await app.extension_manager.start_all_extensions()
    handle.port = app.port
    handle.url = app.connection_url
    os.environ[URL_ENV] = handle.url
    os.environ[TOKEN_ENV] = handle.token
    return app


async def _shutdown(app: Any) -> None:
    if app is None:
        return
    server = getattr(app, "_http_server", None)
    if server is not None:
        server.stop()
    await app._cleanup()  # extensions (LCMServices.stop), kernels, sessions, server files
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


def _forget_instance(app: Any) -> None:
    # Not created through .instance(), but never leave it as the singleton either.
    if app is None:
        return
    for cls in type(app).mro():
        if getattr(cls, "_instance", None) is app:
            cls.clear_instance()
