"""Tornado handlers of the proxy routes: a thin shell that hands each request to the pipeline.

These are plain tornado handlers, not JupyterHandlers: the proxy key is the only
credential (no Jupyter token, cookie or XSRF check), and skipping the notebook
server's per-request auth machinery keeps the hot path short. The body is
streamed in so that an oversized one is discarded as it arrives instead of held.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated
from tornado import web
from tornado.iostream import StreamClosedError

from .._env import KERNEL_CELL_PATH
from ..core.errors import LCMError, render_error
from ..core.ids import new_log_id
from ..core.keys import key_from_request
from ..core.providers import PROVIDERS
from .kernels import split_key
from .pipeline import REQUEST_ID_HEADER, ClientGone, ProxyPipeline, ProxyRequest, ServerStopping

ROUTES = (*PROVIDERS, "v2")
log = logging.getLogger(__name__)


@web.stream_request_body
class ProxyHandler(web.RequestHandler):
    """Forwards `lcm/proxy/{route}/{path}` through the pipeline."""

    def initialize(self, pipeline: ProxyPipeline, route: str) -> None:
        self.pipeline = pipeline
        self.route = route
        self.sink = _Sink(self)
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._task: asyncio.Future | None = None
        self._call_id = new_log_id()

    def check_xsrf_cookie(self) -> None:
        """No XSRF check: these routes take no cookies, only the proxy key."""

    def set_default_headers(self) -> None:
        self._headers.pop("Content-Type", None)  # the provider's content type, or ours on errors

    def compute_etag(self) -> None:
        return None

    def prepare(self) -> None:
        self.set_header(REQUEST_ID_HEADER, self._call_id)
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.pipeline.settings.max_body_bytes:
            self._too_large = True

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return  # read and dropped, so the client still gets a clean 413
        self._size += len(chunk)
        if self._size > self.pipeline.settings.max_body_bytes:
            self._too_large = True
            self._chunks.clear()
            return
        self._chunks.append(chunk)

    async def _proxy(self, path: str) -> None:
        if self.pipeline.closed:
            # Stopped (the log is closed): nothing is looked up, forwarded or held.
            self._refuse_stopped()
            return
        headers = {k.lower(): v for k, v in self.request.headers.get_all()}
        request = ProxyRequest(
            route=self.route,
            method=self.request.method or "GET",
            path=path,
            query=self.request.query,
            headers=headers,
            body=b"".join(self._chunks),
            body_too_large=self._too_large,
        )
        self._chunks = []
        # A task of its own, so that a client leaving can cancel the upstream call.
        self._task = asyncio.ensure_future(self.pipeline.handle(request, self.sink, self._call_id))
        try:
            await self._task
        except asyncio.CancelledError:
            if not self.sink.client_gone:
                raise

    def _refuse_stopped(self) -> None:
        provider = self.route if self.route in PROVIDERS else None
        err = ServerStopping()
        self.set_status(err.status)
        self.set_header("Content-Type", "application/json")
        for name, value in err.headers.items():
            self.set_header(name, value)
        _close_when_done(self)
        self.finish(render_error(provider, err, self._call_id))

    def on_connection_close(self) -> None:
        self.sink.client_gone = True
        # A stream is cut at once (nobody reads what the provider would go on writing); a
        # call answered in one piece runs to its end, so what the provider bills is booked.
        if self._task is not None and not self._task.done() and self.sink.stream:
            self._task.cancel()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors tornado raises itself (405 for an unsupported method, 400 for a path it
        cannot decode), in the provider's shape like every other answer of the proxy."""
        provider = self.route if self.route in PROVIDERS else None
        err = LCMError(
            f"The lcm proxy cannot take this request: {status_code} {self._reason}.",
            code="method_not_allowed" if status_code == 405 else "invalid_request",
        )
        err.status = status_code
        log.warning(
            "lcm proxy refused %s %s: %s %s",
            self.request.method,
            self.request.path,
            status_code,
            self._reason,
        )
        self.set_header("Content-Type", "application/json")
        self.finish(render_error(provider, err, self._call_id))

    # -- methods --------------------------------------------------------------------------------

    @allow_unauthenticated
    async def get(self, path: str) -> None:
        await self._proxy(path)

    @allow_unauthenticated
    async def post(self, path: str) -> None:
        await self._proxy(path)

    @allow_unauthenticated
    async def put(self, path: str) -> None:
        await self._proxy(path)

    @allow_unauthenticated
    async def patch(self, path: str) -> None:
        await self._proxy(path)

    @allow_unauthenticated
    async def delete(self, path: str) -> None:
        await self._proxy(path)


class _Sink:
    """The pipeline's ResponseSink over a tornado handler."""

    __slots__ = ("_handler", "client_gone", "started", "stream")

    def __init__(self, handler: ProxyHandler) -> None:
        self._handler = handler
        self.started = False
        self.client_gone = False
        self.stream = False

    def start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        self.started = True
        self._handler.set_status(status)
        for name, value in headers:
            self._handler.add_header(name, value)

    async def send(self, data: bytes) -> None:
        if self.client_gone:
            raise ClientGone
        self._handler.write(data)
        try:
            await self._handler.flush()
        except StreamClosedError as exc:
            self.client_gone = True
            raise ClientGone from exc

    async def finish(self, data: bytes = b"") -> None:
        if self.client_gone:
            raise ClientGone
        if self._handler.pipeline.draining:
            _close_when_done(self._handler)
        try:
            await self._handler.finish(data or None)
        except StreamClosedError as exc:
            self.client_gone = True
            raise ClientGone from exc


def _close_when_done(handler: web.RequestHandler) -> None:
    """End the connection once this answer is out (with `Connection: close` if its headers are
    not sent yet): while the server stops, a keep-alive connection would bring the client's
    next call back here to be refused, instead of to a server that takes it."""
    connection = handler.request.connection
    # tornado's HTTP/1 connection closes itself after the response when this is set; it
    # is what it does for a client that asked for `Connection: close`.
    if hasattr(connection, "_disconnect_on_finish"):
        connection._disconnect_on_finish = True  # type: ignore[union-attr]


class KernelCellHandler(web.RequestHandler):
    """`lcm/kernel/cell`: a metered kernel says which cell it runs (POST), and asks what the
    cell's calls came to (GET). Its own proxy key is the credential (server/kernels.py)."""

    def initialize(self, pipeline: ProxyPipeline) -> None:
        self.pipeline = pipeline

    def check_xsrf_cookie(self) -> None:
        """No XSRF check: the kernel's proxy key is the only credential."""

    async def _kernel(self) -> tuple[str | None, int] | None:
        headers = {k.lower(): v for k, v in self.request.headers.get_all()}
        sent = key_from_request(headers, "")
        plain, kernel_id = split_key(sent) if sent else ("", None)
        key = await self.pipeline.keys.lookup(plain) if plain else None
        if key is None or key.revoked:
            self._reply(401, {"error": {"message": "A metered kernel's proxy key is needed."}})
            return None
        return kernel_id, key.id

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    @allow_unauthenticated
    async def post(self) -> None:
        found = await self._kernel()
        if found is None:
            return
        try:
            body = json.loads(self.request.body or b"{}")
            cell_id, count = body.get("cell_id"), body.get("execution_count")
            run_id, budget = body.get("run_id"), body.get("budget_usd")
            for name, value in (("cell_id", cell_id), ("run_id", run_id)):
                if value is not None and (not isinstance(value, str) or len(value) > 200):
                    raise ValueError(f"{name} must be a string of at most 200 characters")
            if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
                raise ValueError("execution_count must be an integer")
            if budget is not None and (
                isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0
            ):
                raise ValueError("budget_usd must be a number of dollars, 0 or more")
        except (ValueError, AttributeError) as exc:
            self._reply(400, {"error": {"message": f"Bad cell: {exc}"}})
            return
        tally = self.pipeline.kernels.start_cell(
            *found, cell_id=cell_id, execution_count=count, budget_usd=budget, run_id=run_id
        )
        if tally is None:
            self._reply(404, {"error": {"message": "This key names no kernel of this server."}})
            return
        self._reply(200, {"cell": tally.cell})

    @allow_unauthenticated
    async def get(self) -> None:
        found = await self._kernel()
        if found is None:
            return
        tally = await self.pipeline.kernels.current(*found)
        if tally is None:
            self._reply(404, {"error": {"message": "No cell of this kernel has run yet."}})
            return
        self._reply(200, tally.to_json())


def proxy_handlers(pipeline: ProxyPipeline, prefix: str = "lcm/proxy") -> list[tuple]:
    """The URL rules of the proxy, relative to the server's base_url."""
    return [
        (rf"/{prefix}/{route}/(.*)", ProxyHandler, {"pipeline": pipeline, "route": route})
        for route in ROUTES
    ]


def kernel_handlers(pipeline: ProxyPipeline) -> list[tuple]:
    """The URL rules metered kernels call with their own key."""
    return [(rf"/{KERNEL_CELL_PATH}", KernelCellHandler, {"pipeline": pipeline})]
