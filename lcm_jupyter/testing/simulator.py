"""A simulated OpenAI / Anthropic / Gemini upstream for tests, benchmarks and the offline demo.

It answers on the providers' real paths with their real wire formats (JSON bodies, SSE and
Gemini's streamed JSON array), so the official SDKs parse it unchanged. Usage is deterministic:

* a text costs ``count_tokens(text) == ceil(len(text) / 4)`` tokens, each text piece (a string
  content, a text part or block, tool-call arguments, a tool output) counted on its own;
* every message, plus a system prompt / ``instructions`` / ``systemInstruction``, adds
  ``MESSAGE_OVERHEAD`` (4) tokens; embedding inputs and legacy completion prompts add none;
  tool definitions and images are not counted;
* the reply is ``simulated_reply(model, last_user_text)``, cut to the request's output cap
  (``max_tokens`` and friends, which reasoning tokens count against first).

The wire formats and the provider-specific rules (reasoning, prompt caching) live in
``_sim_openai``, ``_sim_anthropic`` and ``_sim_google``; this module holds the server, the
request log, error injection and the shared text model.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from http import HTTPStatus
from types import ModuleType
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.iostream
import tornado.netutil
import tornado.web

log = logging.getLogger(__name__)

PROVIDERS = ("openai", "anthropic", "google")
MESSAGE_OVERHEAD = 4
SNIPPET_CHARS = 200
# Keys whose string values are prompt text; everything else (ids, roles, images, tool
# schemas) is free, which keeps the counting rule short enough to predict by hand.
_TEXT_KEYS = ("text", "content", "parts", "output", "arguments", "tool_calls", "function")


# --- the shared text model ------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """Tokens the simulator charges for one text: ceil(chars / 4)."""
    return -(-len(text) // 4)


def texts_in(value: Any) -> list[str]:
    """Every prompt text inside a message, content list, block or part."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in texts_in(item)]
    if isinstance(value, dict):
        return [text for key in _TEXT_KEYS if key in value for text in texts_in(value[key])]
    return []


def message_tokens(message: Any) -> int:
    """Tokens of one message: the fixed overhead plus each of its texts."""
    return MESSAGE_OVERHEAD + sum(count_tokens(text) for text in texts_in(message))


def snippet(prompt: str) -> str:
    """The prompt with whitespace collapsed, cut to SNIPPET_CHARS characters."""
    text = " ".join(prompt.split())
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "..."


def simulated_reply(model: str, prompt: str) -> str:
    """The full (uncapped) reply the simulator gives `model` for the last user text `prompt`."""
    return f"Simulated reply from {model}: {snippet(prompt) or '(empty prompt)'}"


@dataclass(frozen=True, slots=True)
class Generation:
    """A reply after applying the output cap."""

    text: str
    tokens: int
    """Visible output tokens."""
    reasoning_tokens: int
    truncated: bool


def fit(text: str, cap: int | None, reasoning: int = 0) -> Generation:
    """Cut `text` so that reasoning + visible tokens fit `cap` (reasoning is spent first)."""
    tokens = count_tokens(text)
    if cap is None or reasoning + tokens <= cap:
        return Generation(text, tokens, reasoning, False)
    reasoning = min(reasoning, cap)
    text = text[: (cap - reasoning) * 4]
    return Generation(text, count_tokens(text), reasoning, True)


def split_text(text: str, parts: int) -> list[str]:
    """Split `text` into at most `parts` non-empty consecutive pieces (one empty piece if empty)."""
    if not text:
        return [""]
    parts = max(1, min(parts, len(text)))
    bounds = [len(text) * i // parts for i in range(parts + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(parts)]


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text`."""
    raw = array.array("h", hashlib.shake_256(text.encode()).digest(dimensions * 2))
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def new_id(prefix: str, length: int = 24) -> str:
    """A random id such as chatcmpl-..., msg_..., req_..."""
    return prefix + uuid.uuid4().hex[:length]


def positive_int(value: Any) -> bool:
    """Whether `value` is a usable token cap."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# --- what provider modules hand back --------------------------------------------------------


@dataclass(slots=True)
class Reply:
    """One HTTP answer: a whole body, or `frames` written and flushed one at a time."""

    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes = b""
    frames: list[bytes] | None = None


def json_reply(
    status: int,
    obj: Any,
    headers: dict[str, str],
    *,
    pretty: bool = False,
    content_type: str = "application/json",
) -> Reply:
    """A JSON reply; `pretty` mirrors APIs that indent their bodies (OpenAI, Google)."""
    text = json.dumps(obj, indent=2) if pretty else json.dumps(obj, separators=(",", ":"))
    return Reply(status, content_type, headers, text.encode())


def stream_reply(frames: list[str], headers: dict[str, str], content_type: str) -> Reply:
    """A streamed 200 reply made of pre-rendered frames."""
    return Reply(200, content_type, headers, frames=[frame.encode() for frame in frames])


# --- the public API -------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request the simulator received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Header names lower-cased; repeated headers joined with ", "."""
    body: dict | None
    """The parsed JSON object, or None (no body, not JSON, or not an object).

    A multipart/form-data body becomes its fields instead: a text field as a string (a list
    when repeated), an uploaded file as {"filename", "content_type", "size"}.
    """
    provider: str | None = None
    """openai, anthropic or google, as routed; None for an unknown path."""


@dataclass
class _InjectedError:
    status: int
    times: int
    provider: str | None
    message: str


class _ClassOrInstanceMethod:
    """Bind a function to the instance when there is one, else to the class."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self._func = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        return functools.partial(self._func, owner, obj)


class SimulatedProvider:
    """An in-process HTTP server that behaves like the OpenAI, Anthropic and Gemini APIs."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        stream_chunks: int = 4,
        api_keys: Iterable[str] | None = None,
    ) -> None:
        self.host = host
        self.latency = latency
        """Seconds to wait before sending response headers (provider routes only)."""
        self.chunk_delay = chunk_delay
        """Seconds to wait between two frames (SSE events / JSON-array chunks) of a stream."""
        self.stream_chunks = stream_chunks
        """How many text deltas a streamed reply is split into."""
        self.api_keys = frozenset(api_keys) if api_keys is not None else None
        self.requests: list[RecordedRequest] = []
        self._requested_port = port
        self._defaults = (latency, chunk_delay, stream_chunks)
        self._errors: list[_InjectedError] = []
        self._lock = threading.Lock()
        self._state: dict[str, dict[str, Any]] = {name: {} for name in PROVIDERS}
        self._modules = _provider_modules()
        self._server: tornado.httpserver.HTTPServer | None = None
        self._port: int | None = None

    # lifecycle

    async def start(self) -> None:
        """Bind and serve on the running asyncio loop."""
        if self._server is not None:
            raise RuntimeError("SimulatedProvider already started")
        app = tornado.web.Application(
            [(r".*", _Handler, {"sim": self})],
            log_function=_log_request,
        )
        sockets = tornado.netutil.bind_sockets(self._requested_port, self.host)
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)
        self._port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop open connections."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            await server.close_all_connections()

    @property
    def port(self) -> int:
        """The bound TCP port (valid after start)."""
        if self._port is None:
            raise RuntimeError("SimulatedProvider is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:PORT."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @_ClassOrInstanceMethod
    @contextlib.contextmanager
    def run_in_thread(
        cls: type[SimulatedProvider],
        self: SimulatedProvider | None,
        **kwargs: Any,
    ) -> Iterator[SimulatedProvider]:
        """Serve from a daemon thread with its own loop: `with SimulatedProvider.run_in_thread()`.

        Called on the class it builds an instance from `kwargs`; called on an instance it
        serves that one.
        """
        if self is None:
            self = cls(**kwargs)
        elif kwargs:
            raise TypeError("run_in_thread() on an instance takes no arguments")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller's thread below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=serve, name="lcm-simulated-provider", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    # test controls

    def inject_error(
        self,
        status: int,
        *,
        times: int = 1,
        provider: str | None = None,
        message: str = "Simulated upstream error",
    ) -> None:
        """Answer the next `times` requests (for `provider`, or any) with `status`."""
        if provider is not None and provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}, not {provider!r}")
        if not 400 <= int(status) <= 599:
            raise ValueError(f"status must be an HTTP error code, not {status!r}")
        with self._lock:
            self._errors.append(_InjectedError(int(status), int(times), provider, message))

    def reset(self) -> None:
        """Forget requests, injected errors and caches; restore the constructor's timings."""
        with self._lock:
            self.requests.clear()
            self._errors.clear()
            for state in self._state.values():
                state.clear()
        self.latency, self.chunk_delay, self.stream_chunks = self._defaults

    def _take_error(self, provider: str) -> _InjectedError | None:
        with self._lock:
            for injected in self._errors:
                if injected.provider in (None, provider):
                    injected.times -= 1
                    if injected.times <= 0:
                        self._errors.remove(injected)
                    return injected
        return None

    # serving

    async def _serve(self, handler: tornado.web.RequestHandler) -> None:
        request = handler.request
        path = request.path
        if path.startswith("/_sim/"):
            _send_now(handler, self._control(request.method or "GET", path, request.body))
            return
        headers: dict[str, str] = {}
        for name, value in request.headers.get_all():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        parsed: Any = None
        bad_json = False
        if _is_form(headers):
            parsed = _form_fields(request)
        elif request.body:
            try:
                parsed = json.loads(request.body)
            except ValueError:
                bad_json = True
        record = RecordedRequest(
            method=request.method or "GET",
            path=path,
            query=request.query,
            headers=headers,
            body=parsed if isinstance(parsed, dict) else None,
        )
        module, endpoint = self._route(record)
        record.provider = module.NAME if module is not None else None
        with self._lock:
            self.requests.append(record)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        reply = self._answer(module, endpoint, record, bad_json)
        if reply.frames is None:
            _send_now(handler, reply)
        else:
            await self._stream(handler, reply)

    def _route(self, record: RecordedRequest) -> tuple[ModuleType | None, str | None]:
        # Google first: its colon-method paths are unambiguous, while /v1/models is claimed
        # by each provider according to the auth headers it carries.
        for module in self._modules:
            endpoint = module.match(record)
            if endpoint is not None:
                return module, endpoint
        for module in self._modules:
            if module.owns(record):
                return module, None
        return None, None

    def _answer(
        self, module: ModuleType | None, endpoint: str | None, record: RecordedRequest, bad: bool
    ) -> Reply:
        if module is None:
            return json_reply(
                404,
                {"error": {"message": f"Unknown simulator route: {record.method} {record.path}"}},
                {},
            )
        injected = self._take_error(module.NAME)
        if injected is not None:
            return module.error(injected.status, injected.message, endpoint)
        if self.api_keys is not None:
            denied = module.authorize(record, self.api_keys, endpoint)
            if denied is not None:
                return denied
        if endpoint is None:
            return module.error(404, f"Invalid URL ({record.method} {record.path})", endpoint)
        # Upload endpoints check their own multipart bodies; every other POST must be JSON.
        if endpoint not in getattr(module, "FORM_ENDPOINTS", ()) and (
            bad or _is_form(record.headers) or (record.method == "POST" and record.body is None)
        ):
            return module.error(400, "The request body is not valid JSON.", endpoint)
        try:
            return module.handle(endpoint, record, self._state[module.NAME], self.stream_chunks)
        except Exception:
            log.exception("simulator failed on %s %s", record.method, record.path)
            return module.error(500, "The simulator failed on this request.", endpoint)

    async def _stream(self, handler: tornado.web.RequestHandler, reply: Reply) -> None:
        _start(handler, reply)
        for index, frame in enumerate(reply.frames or ()):
            if index and self.chunk_delay > 0:
                await asyncio.sleep(self.chunk_delay)
            handler.write(frame)
            try:
                await handler.flush()
            except tornado.iostream.StreamClosedError:
                return  # the client went away mid-stream, as clients do
        handler.finish()

    def _control(self, method: str, path: str, raw: bytes) -> Reply:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return json_reply(400, {"error": "body is not JSON"}, {})
        try:
            if method == "GET" and path == "/_sim/requests":
                return json_reply(200, [asdict(r) for r in list(self.requests)], {})
            if method == "POST" and path == "/_sim/errors":
                self.inject_error(
                    int(body.get("status", 500)),
                    times=int(body.get("times", 1)),
                    provider=body.get("provider"),
                    message=body.get("message", "Simulated upstream error"),
                )
                return json_reply(200, {"ok": True}, {})
            if method == "POST" and path == "/_sim/reset":
                self.reset()
                return json_reply(200, {"ok": True}, {})
            if path == "/_sim/config" and method in ("GET", "POST"):
                if method == "POST":
                    self._configure(body)
                return json_reply(200, self._config(), {})
        except (TypeError, ValueError, AttributeError) as exc:
            return json_reply(400, {"error": str(exc)}, {})
        return json_reply(404, {"error": f"unknown control endpoint {method} {path}"}, {})

    def _configure(self, body: dict[str, Any]) -> None:
        if "latency" in body:
            self.latency = float(body["latency"])
        if "chunk_delay" in body:
            self.chunk_delay = float(body["chunk_delay"])
        if "stream_chunks" in body:
            self.stream_chunks = max(1, int(body["stream_chunks"]))

    def _config(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "chunk_delay": self.chunk_delay,
            "stream_chunks": self.stream_chunks,
        }


def _is_form(headers: dict[str, str]) -> bool:
    return headers.get("content-type", "").lower().startswith("multipart/form-data")


def _form_fields(request: tornado.httputil.HTTPServerRequest) -> dict[str, Any]:
    # Tornado has already parsed the multipart body (a malformed one never gets here).
    fields: dict[str, Any] = {}
    for name, values in request.body_arguments.items():
        texts = [value.decode("utf-8", "replace") for value in values]
        fields[name] = texts[0] if len(texts) == 1 else texts
    for name, uploads in request.files.items():
        upload = uploads[0]
        fields[name] = {
            "filename": upload.filename,
            "content_type": upload.content_type,
            "size": len(upload.body),
        }
    return fields


def _provider_modules() -> tuple[ModuleType, ...]:
    # Imported here, not at the top: the provider modules build on this module's helpers.
    from . import _sim_anthropic, _sim_google, _sim_openai

    return (_sim_google, _sim_anthropic, _sim_openai)


class _Handler(tornado.web.RequestHandler):
    """Hands every request, whatever its method, to the simulator."""

    def initialize(self, sim: SimulatedProvider) -> None:
        """Keep the simulator this handler serves."""
        self.sim = sim

    def compute_etag(self) -> str | None:
        """No ETags: real APIs send none and hashing bodies costs time."""
        return None

    async def get(self, *args: str) -> None:
        """Serve any method."""
        await self.sim._serve(self)

    post = put = patch = delete = get


def _start(handler: tornado.web.RequestHandler, reply: Reply) -> None:
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = "Overloaded" if reply.status == 529 else "Error"
    handler.set_status(reply.status, reason)
    handler.clear_header("Server")
    handler.set_header("Content-Type", reply.content_type)
    for name, value in reply.headers.items():
        handler.set_header(name, value)


def _send_now(handler: tornado.web.RequestHandler, reply: Reply) -> None:
    _start(handler, reply)
    handler.finish(reply.body)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Tornado logs 4xx/5xx at warning/error level; injected errors are expected, so keep quiet.
    log.debug("%s %s -> %s", handler.request.method, handler.request.uri, handler.get_status())


__all__ = [
    "MESSAGE_OVERHEAD",
    "PROVIDERS",
    "Generation",
    "RecordedRequest",
    "Reply",
    "SimulatedProvider",
    "count_tokens",
    "embedding_vector",
    "fit",
    "json_reply",
    "message_tokens",
    "new_id",
    "positive_int",
    "simulated_reply",
    "snippet",
    "split_text",
    "stream_reply",
    "texts_in",
]
