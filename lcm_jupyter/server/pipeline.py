"""The request pipeline: every proxied call goes through `ProxyPipeline.handle`, in this order.

authenticate proxy key -> parse body -> classify endpoint -> detect provider ->
check key's provider -> rate limit + budget reserve (one round trip) -> route model
-> response cache -> forward upstream (stream or not) -> extract usage -> price ->
log (with the routing decision) -> settle the budget (alerts follow, off the path).

The pipeline knows nothing of tornado: it reads a `ProxyRequest` and answers
through a `ResponseSink`, so the server extension and the kernel-hosted proxy
share it. Whatever happens, exactly one log row is written per call.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

from ..core.budget import estimate_input_tokens
from ..core.detect import detect_provider
from ..core.errors import (
    AuthenticationFailed,
    BadRequest,
    EndpointNotMetered,
    InvalidJSON,
    LCMError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProviderNotDetected,
    UpstreamUnavailable,
    render_error,
    render_stream_error,
)
from ..core.ids import new_log_id
from ..core.keys import key_from_request
from ..core.pricing import Priced
from ..core.providers import (
    COSTLY,
    METERED,
    Endpoint,
    Request,
    adapter,
    classify,
    for_wire,
    is_stream,
    request_model,
    stream_format,
)
from ..core.routing import GENERATION_WIRES, RoutingDecision, apply_route
from ..core.settings import Settings
from ..core.streams import StreamMeter, ensure_stream_usage
from ..core.usage import Usage
from ..store import billed
from ..store.journal import Journal, begin_record
from ..store.keys import KeyRecord
from ..store.logrow import LogRow
from ..store.logwriter import LogWriter
from ..store.store import Store
from ..store.team import TeamBudget, charged_ids
from ..store.timeutil import to_iso
from .budgets import Guard, Hold
from .cache import ResponseCache, cache_digest, wants_no_cache
from .kernels import CellTally, KernelBook, admit_in_cell, settle_in_cell, split_key
from .keyring import KeyRing
from .pricing import PricingService
from .routing import Router
from .team import TeamBudgets
from .upstream import Upstream, UpstreamResponse, origin

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-lcm-request-id"
STATUS_CLIENT_CLOSED = 499  # nginx's code for "client closed the request"
STATUS_SERVER_STOPPED = 503
RETRY_AFTER_STOPPING_SECONDS = 5
"""Retry-After of the 503 a stopping server answers new calls with (a restart takes a few)."""
_CANCEL_WAIT_SECONDS = 5.0

# Never forwarded upstream: hop-by-hop headers, what the HTTP client sets itself,
# every place a proxy key may sit, and the notebook server's cookies.
_DROP_REQUEST_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "authorization",
        "x-api-key",
        "x-goog-api-key",
        "cookie",
        "x-xsrftoken",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
# Never sent back: hop-by-hop headers, framing the server redoes (the body was
# decompressed on the way in), and the provider's cookies.
_DROP_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "date",
        "server",
        "set-cookie",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    }
)
_OUR_RATE_HEADERS = frozenset(
    {
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "retry-after",
        "retry-after-ms",
    }
)
_DROP_WHEN_RATE_LIMITED = _DROP_RESPONSE_HEADERS | _OUR_RATE_HEADERS
_RETRY_HEADERS = frozenset({"retry-after", "retry-after-ms"})
_JSON_HEADERS = (("content-type", "application/json"),)
# The decision logged for calls refused before routing ran (bad key, bad body, limits).
_NOT_ROUTED = {
    "mode": None,
    "intent": None,
    "complexity": None,
    "confidence": None,
    "reason": "refused before routing",
    "was_routed": False,
    "rule": None,
    "from_model": None,
    "to_model": None,
}
_ERROR_TEXT_LIMIT = 2000
_WARN_EVERY_SECONDS = 60.0
SHADOW_JOB = "_shadow"
"""A row's key for its pending shadow-routing judgement (taken off before it is written)."""
# Retrievals of work billed once, whenever it is first fetched (not when it was asked for).
_RETRIEVALS = frozenset({"openai.response_get", "openai.batch_output", "anthropic.batch_results"})
_BATCH_RESULTS = frozenset({"openai.batch_output", "anthropic.batch_results"})
_NO_OUTPUT = frozenset({"openai.embeddings", "google.embed", "openai.transcription"})


class ClientGone(Exception):
    """The client went away before the answer was complete."""


class ServerStopping(LCMError):
    """The server is stopping: it finishes the calls it has and takes no new ones."""

    status = 503
    code = "server_stopping"

    def __init__(self) -> None:
        super().__init__(
            "This server is stopping: it is finishing the calls in flight and takes no new "
            f"ones. Retry in {RETRY_AFTER_STOPPING_SECONDS} seconds.",
            headers={"retry-after": str(RETRY_AFTER_STOPPING_SECONDS)},
        )


class UpstreamError(LCMError):
    """The provider's own error, put in its JSON shape (its body was not JSON)."""

    code = "upstream_error"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ResponseSink(Protocol):
    """Where the pipeline writes its answer (a tornado handler, in practice)."""

    started: bool
    client_gone: bool
    stream: bool
    """Set once the call is known to be streamed: a client leaving then cancels it."""

    def start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        """Set the status and headers; nothing is sent yet."""

    async def send(self, data: bytes) -> None:
        """Send `data` now (a stream chunk); ClientGone if the client left."""

    async def finish(self, data: bytes = b"") -> None:
        """Send `data` and end the response."""


@dataclass(slots=True)
class ProxyRequest:
    """One proxied request, as the pipeline sees it."""

    route: str
    """"openai", "anthropic", "google" or "v2" (detect)."""
    method: str
    path: str
    """The path after the route, as the client sent it, without a leading slash."""
    query: str
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes
    body_too_large: bool = False


@dataclass(slots=True)
class Call:
    """What is learned about one call on its way through; becomes its log row."""

    id: str
    at: datetime
    created_at: str
    method: str
    started: float = field(default_factory=time.perf_counter)
    key_id: int | None = None
    key: KeyRecord | None = None
    path: str = ""
    provider: str | None = None
    endpoint: Endpoint | None = None
    endpoint_name: str | None = None
    requested_model: str | None = None
    model: str | None = None
    stream: bool = False
    usage: Usage | None = None
    status: int | None = None
    error: str | None = None
    ttfb_ms: float | None = None
    upstream_status: int | None = None
    body: dict | None = None
    stream_events: int = 0
    hold: Hold | None = None
    cache_hit: bool = False
    decision: RoutingDecision | None = None
    estimated: bool = False
    """The usage is our estimate, not the provider's count."""
    deferred: bool = False
    """Billed later, by whichever call first retrieves the result (a background response)."""
    answered: bool = False
    """The whole answer is out (cut short after this, the call still counts as answered)."""
    kernel_id: str | None = None
    """The kernel its key names (kernels.py), if any."""
    user: str | None = None
    notebook: str | None = None
    cell: str | None = None
    tally: CellTally | None = None
    """The tally of the cell the call was made in (its kernel's, at the call's start)."""
    cell_hold: int | None = None
    """What the call holds of its cell's budget; None until the cell admitted it."""
    scopes: list[TeamBudget] = field(default_factory=list)
    """The team budgets its user's calls are charged to (team mode)."""


class ProxyPipeline:
    """Authenticates, forwards, meters, prices and logs proxied calls."""

    def __init__(
        self,
        *,
        settings: Settings,
        keys: KeyRing,
        pricing: PricingService,
        upstream: Upstream,
        log_writer: LogWriter,
        store: Store | None = None,
        guard: Guard | None = None,
        cache: ResponseCache | None = None,
        router: Router | None = None,
        journal: Journal | None = None,
        kernels: KernelBook | None = None,
        team: TeamBudgets | None = None,
    ) -> None:
        self.settings = settings
        self.kernels = kernels or KernelBook()
        self.team = team
        """Team mode's budgets per user and group (None: not a team)."""
        self.keys = keys
        self.pricing = pricing
        self.upstream = upstream
        self.log_writer = log_writer
        self.store = store
        self.guard = guard
        self.cache = cache
        self.router = router
        self.journal = journal
        self.draining = False
        """Set when the server starts stopping: new calls are refused with 503."""
        self.closed = False
        """Set once the log is closed: the handlers refuse calls without the pipeline."""
        self._inflight: set[asyncio.Task] = set()
        # Requests without a valid proxy key: counted, not logged (a flood must not fill
        # the database), and reported in a warning at most once a minute.
        self.unauthenticated = 0
        # Told after each call made with a valid key (the server's activity: see app.py).
        self.on_activity: Callable[[], None] | None = None
        self._unauthenticated_reported = 0
        self._unauthenticated_warned_at = 0.0
        self._base_urls = {p: u.rstrip("/") for p, u in settings.base_urls.items()}

    async def handle(
        self, req: ProxyRequest, sink: ResponseSink, call_id: str | None = None
    ) -> None:
        """Answer one request through `sink`, and log it."""
        now = _now()
        call = Call(id=call_id or new_log_id(), at=now, created_at=to_iso(now), method=req.method)
        if req.route != "v2":
            call.provider = req.route
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self._forward(req, sink, call)
        except LCMError as err:
            call.status, call.error = err.status, err.message
            await self._answer_error(sink, call, err)
        except ClientGone:
            self._client_left(call)
        except asyncio.CancelledError:
            if not sink.client_gone:  # the server is stopping: not ours to swallow
                self._server_stopped(call)
                raise
            self._client_left(call)
        except (KeyboardInterrupt, SystemExit):
            # A signal's exception surfaces in whatever step runs (SIGINT off a terminal,
            # where Jupyter installs no handler): the call's row still says what happened.
            self._server_stopped(call)
            raise
        except Exception as exc:  # a bug: still answer in the provider's shape, and log
            log.exception("lcm proxy failed on %s %s", req.method, req.path)
            bug = LCMError(f"Internal error in the lcm proxy: {exc.__class__.__name__}: {exc}")
            call.status, call.error = bug.status, bug.message
            await self._answer_error(sink, call, bug)
        finally:
            try:
                if call.key_id is None and call.status == 401:
                    self._count_unauthenticated(req)  # no valid key: counted, not logged
                else:
                    if call.key_id is not None and self.on_activity is not None:
                        self.on_activity()
                    row = self._row_or_none(call)
                    # A cache hit or an unknown cost spends nothing: its holds are released.
                    cost = None if row is None or call.cache_hit else row["cost_usd"]
                    if call.tally is not None and call.cell_hold is not None:
                        settle_in_cell(call.tally, call.cell_hold, row, cost)
                    if row is not None and self.journal is not None:
                        # Durable now, before the booking's round trip: the answer is out.
                        self._journal_row(row)
                    if call.hold is not None and self.guard is not None:
                        await self.guard.settle(call.hold, cost, lambda: self._submit(row))
                    else:
                        self._submit(row)
            finally:
                self._inflight.discard(task)

    def _count_unauthenticated(self, req: ProxyRequest) -> None:
        self.unauthenticated += 1
        now = time.monotonic()
        if now - self._unauthenticated_warned_at >= _WARN_EVERY_SECONDS:
            new = self.unauthenticated - self._unauthenticated_reported
            self._unauthenticated_warned_at, self._unauthenticated_reported = (
                now,
                self.unauthenticated,
            )
            log.warning(
                "lcm: %d proxy request(s) without a valid proxy key refused since the last "
                "report (latest: %s /%s); they are counted, not logged",
                new,
                req.method,
                req.route,
            )

    async def idle(self, timeout: float) -> bool:
        """Wait (at most `timeout`) until no call is in flight; True if none is left."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout)
        return not self._inflight

    async def drain(self, timeout: float) -> None:
        """At shutdown: refuse new calls (503), let those in flight finish, streams included,
        for up to `timeout` seconds (then cancel them), so each logs its row."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Again while any is left: calls refused meanwhile are in the set for a moment too.
        while self._inflight and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._inflight), timeout=left)
        pending = set(self._inflight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=min(timeout, _CANCEL_WAIT_SECONDS))

    # -- the steps ---------------------------------------------------------------------------

    async def _forward(self, req: ProxyRequest, sink: ResponseSink, call: Call) -> None:
        if req.body_too_large:
            raise PayloadTooLarge(
                f"The request body is larger than this proxy's limit of "
                f"{self.settings.max_body_bytes} bytes (LCMExtension.max_request_body_bytes)."
            )
        call.path = req.path
        key = await self._authenticate(req, call)
        if self.draining:
            raise ServerStopping  # after the key check: a flood of bad keys is still not logged
        if call.kernel_id is not None:
            origin = await self.kernels.origin(call.kernel_id, key.id)
            call.notebook, call.cell, call.tally = origin.notebook, origin.cell, origin.tally
        if self.team is not None:
            call.scopes = await self.team.for_user(call.user)
        endpoint = classify(req.path, req.method)
        call.endpoint, call.endpoint_name = endpoint, endpoint.name
        body = _parse_body(req)
        if endpoint.wire is not None and body is not None and not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        jbody = body if isinstance(body, dict) else None
        call.requested_model = call.model = request_model(endpoint, jbody)
        call.body = jbody
        provider = call.provider or self._detect(req, key, call.requested_model, jbody)
        call.provider = provider
        team_key = None
        if self.team is not None and not key.provider_api_keys.get(provider):
            team_key = await self.team.provider_key(provider)
        provider_key = _provider_key(key, provider, team_key)
        call.stream = sink.stream = stream = is_stream(endpoint, jbody, req.query)
        self._check_charge(key, endpoint, jbody)

        if self.journal is not None:
            # On disk before the reservation exists: if this process dies, the next start
            # logs the call as cut short and releases what it holds (store/journal.py).
            self.journal.begin(self._begin_record(call, key, endpoint, jbody))
        # Routed first, so that the reservation prices the model the call will go to (a
        # manual rule may name a dearer one), at the service tier the request asks for.
        decision = None
        if self.router is not None:
            decision = self.router.decide(key, call.requested_model, endpoint.wire, jbody, req.path)
        routed_to = decision.to_model if decision is not None and decision.was_routed else None
        if self.guard is not None:
            # Retrievals reserve nothing: what they bill was asked for (and allowed) before.
            metered = endpoint.charge == METERED and endpoint.wire not in _RETRIEVALS
            tier = _requested_tier(jbody)
            card = (
                self.pricing.table.resolve(
                    routed_to or call.requested_model,
                    provider,
                    at=call.at,
                    context={"service_tier": tier} if tier else None,
                )
                if metered
                else None
            )
            if call.tally is not None:
                # The cell's own budget first (%%lcm budget): refused there, nothing is held.
                worst = 0
                if call.tally.budget is not None and metered:
                    worst = self.guard.worst_case(
                        card,
                        jbody,
                        generates=endpoint.wire not in _NO_OUTPUT,
                        wire=endpoint.wire,
                        raw_size=len(req.body),
                    )
                call.cell_hold = admit_in_cell(call.tally, worst)
            call.hold = await self.guard.admit(
                key,
                call.id,
                card,
                jbody,
                generates=endpoint.wire not in _NO_OUTPUT,
                metered=metered,
                model=routed_to or call.requested_model,
                month=call.created_at[:7],
                wire=endpoint.wire,
                raw_size=len(req.body),
                scopes=call.scopes,
            )
        extra = call.hold.headers() if call.hold is not None else []

        path = req.path
        call.decision = decision
        if routed_to:
            path, jbody = apply_route(endpoint.wire, path, jbody, routed_to)
            call.model = routed_to
            extra.append(("x-lcm-routed-model", routed_to))

        digest = None
        if (
            self.cache is not None
            and key.cache_ttl_seconds
            and not stream
            and endpoint.wire is not None
            and jbody is not None
            and not wants_no_cache(req.headers)
        ):
            query = _strip_key(req.query)
            digest = cache_digest(key.id, provider, path, query, jbody)
            hit = await self.cache.get(digest)
            if hit is not None:
                call.cache_hit, call.usage, call.model = True, hit.usage, hit.model
                call.status = hit.status
                sink.start(hit.status, [*hit.headers, *extra, ("x-lcm-cache", "hit")])
                await sink.finish(hit.body)
                call.answered = True
                return

        payload: bytes | None = req.body or None
        strip_usage = False
        if stream and endpoint.wire is not None and jbody is not None:
            strip_usage = ensure_stream_usage(endpoint.wire, jbody)
        if strip_usage or (call.decision is not None and call.decision.was_routed):
            payload = json.dumps(jbody, ensure_ascii=False).encode()

        url = self._upstream_url(provider, path, req.query)
        headers = _upstream_headers(req.headers, provider, provider_key)
        sent = time.perf_counter()
        resp = await self.upstream.send(req.method, url, headers, payload)
        call.ttfb_ms = (time.perf_counter() - sent) * 1000
        call.status = call.upstream_status = resp.status
        ok = 200 <= resp.status < 300
        # An error keeps the provider's retry-after: an admitted call's own headers carry none.
        out_headers = _response_headers(resp.headers, ours=bool(extra), error=resp.status >= 400)
        out_headers.extend(extra)
        if ok and (stream or _is_event_stream(resp.headers)):
            await self._relay_stream(
                resp, sink, call, endpoint, req.query, strip_usage, out_headers
            )
            return
        data = await resp.read()
        status = resp.status
        if ok and endpoint.wire is not None:
            unreadable = await self._meter_body(call, endpoint, data, req, jbody)
            if unreadable is not None and _has_body(req.method, status, resp.headers):
                # A JSON answer cut short: no SDK can read it, so a 502 in the provider's
                # shape says what came. The provider may have billed it: with no usage,
                # the row books the estimate a stream cut short gets (`_row`).
                call.status = status = UpstreamUnavailable.status
                call.error = (
                    f"The provider at {self._origin(provider)} answered {resp.status}, but its "
                    f"answer was cut short or is not valid JSON ({len(data)} bytes; "
                    f"{unreadable})."
                )
                data = render_error(
                    provider, UpstreamUnavailable(call.error, code="upstream_invalid_json"), call.id
                )
                out_headers = _as_json(out_headers)
            elif digest is not None and self.cache is not None and call.usage is not None:
                await self.cache.put(
                    digest,
                    status=resp.status,
                    headers=out_headers,
                    body=data,
                    model=call.model,
                    usage=call.usage,
                    ttl=key.cache_ttl_seconds,
                )
        elif not ok:
            call.error = _error_text(data)
            # The provider's JSON error goes back byte for byte; an error that is not JSON
            # (a gateway's HTML page, an empty body) is put in the provider's shape.
            what = None
            if status >= 400 and _has_body(req.method, status, resp.headers):
                what = _not_json_error(data, resp.headers)
            if what is not None:
                call.error = f"The provider at {self._origin(provider)} answered {status} {what}"
            hint = _unknown_path_hint(req, provider) if status == 404 else None
            if hint is not None:
                # The provider's own 404, in its shape, saying which base URL looks wrong.
                call.error = f"{call.error} ({hint})"
            if what is not None or hint is not None:
                err = NotFound(call.error) if status == 404 else UpstreamError(status, call.error)
                data = render_error(provider, err, call.id)
                out_headers = _as_json(out_headers)
        sink.start(status, out_headers)
        await sink.finish(data)
        call.answered = True

    async def _authenticate(self, req: ProxyRequest, call: Call) -> KeyRecord:
        sent = key_from_request(req.headers, req.query)
        plain, call.kernel_id = split_key(sent) if sent else (sent, None)
        if not plain:
            raise AuthenticationFailed(
                "No proxy key was sent. Use your lcm-... key as the SDK's api_key "
                "(it is read from Authorization: Bearer, x-api-key, x-goog-api-key or ?key=)."
            )
        key = await self.keys.lookup(plain)
        if key is None:
            raise AuthenticationFailed(
                "Invalid proxy key. Create one with the lcm keys API, `jupyter lcm keys create`"
                " or the key form."
            )
        call.key_id, call.key, call.user = key.id, key, key.owner
        if key.revoked:
            raise AuthenticationFailed(
                f"The proxy key {key.key_prefix}... ({key.name!r}) was revoked at {key.revoked_at}."
            )
        return key

    def _detect(
        self, req: ProxyRequest, key: KeyRecord, model: str | None, body: dict | None
    ) -> str:
        detection = detect_provider(path=req.path, model=model, body=body, headers=req.headers)
        if detection.provider is not None:
            return detection.provider
        if key.provider != "auto":
            return key.provider
        looked = "; ".join(detection.looked_at)
        raise ProviderNotDetected(
            f"Could not tell which provider this request is for. Looked at: {looked}. "
            "Name a model with a known prefix (gpt-, o1, o3, o4, chatgpt-, text-embedding-, "
            "claude-, gemini-, gemma), or use the provider's own route "
            "lcm/proxy/openai/, lcm/proxy/anthropic/ or lcm/proxy/google/.",
            param="model",
        )

    def _upstream_url(self, provider: str, path: str, query: str) -> str:
        base = self._base_urls[provider]
        # A base URL configured with the version segment (".../v1", as OPENAI_BASE_URL
        # is usually written) must not double it: ".../v1" + "v1/chat" -> ".../v1/chat".
        head, _, rest = path.partition("/")
        if head and base.endswith("/" + head) and head[:1] == "v" and head[1:2].isdigit():
            path = rest
        url = f"{base}/{path}"
        query = _strip_key(query)
        return f"{url}?{query}" if query else url

    async def _relay_stream(
        self,
        resp: UpstreamResponse,
        sink: ResponseSink,
        call: Call,
        endpoint: Endpoint,
        query: str,
        strip_usage: bool,
        headers: list[tuple[str, str]],
    ) -> None:
        meter = (
            StreamMeter(
                endpoint.wire, stream_format(endpoint, query), strip_usage_chunk=strip_usage
            )
            if endpoint.wire is not None
            else None
        )
        sink.start(resp.status, headers)
        complete = False
        try:
            async for chunk in resp.iter_chunks():
                out = meter.feed(chunk) if meter is not None else chunk
                if out:
                    await sink.send(out)
            if meter is not None:
                tail = meter.close()
                if tail:
                    await sink.send(tail)
            complete = True
        finally:
            if not complete:
                resp.abort()  # stop the provider generating what nobody will read
            if meter is not None:
                call.usage = meter.usage
                call.stream_events = meter.chunks
                call.model = meter.model or call.model
                if meter.error is not None:
                    call.error = _error_text(json.dumps(meter.error).encode())
        if endpoint.wire == "openai.response_get" and meter is not None:
            await self._bill_once(call, f"{call.provider}:response:{meter.response_id}")
        await sink.finish()
        call.answered = True

    def _origin(self, provider: str) -> str:
        """The provider as error messages name it: its base URL's origin, else its name."""
        return origin(self._base_urls.get(provider, "")) or provider

    async def _meter_body(
        self, call: Call, endpoint: Endpoint, data: bytes, req: ProxyRequest, body: dict | None
    ) -> str | None:
        """Take the usage from a whole (non-streamed) answer; why the answer could not be read
        as JSON, if it could not (None when it was, or is not read as one JSON document)."""
        wire = endpoint.wire
        reader = for_wire(wire)
        if reader is None or wire is None:
            return None
        request = Request(method=req.method, body=body, raw_size=len(req.body))
        if wire in _BATCH_RESULTS:
            call.usage = reader.usage_from_lines(wire, data)
            await self._bill_once(call, f"{call.provider}:{_normalize_path(req.path)}")
            return None
        unreadable = None
        try:
            answer = json.loads(data)
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            answer, unreadable = None, str(exc) or exc.__class__.__name__
        except RecursionError:
            answer, unreadable = None, "nested too deeply to be read"
        if isinstance(answer, dict):
            call.usage = reader.usage_from_body(wire, answer, request)
            call.model = reader.response_model(wire, answer) or call.model
            if wire == "openai.responses" and call.usage is None and answer.get("background"):
                call.deferred = True
                call.error = "Background response: billed when its result is retrieved."
            elif wire == "openai.response_get" and call.usage is not None:
                await self._bill_once(call, f"{call.provider}:response:{answer.get('id')}")
        if call.usage is None:
            # Billed by what the request carries (tts-1: its characters), exactly.
            call.usage = reader.usage_from_request(wire, request)
            if call.usage is None and answer is None and wire != "openai.response_get":
                call.error = "The provider's answer was not JSON; usage unknown."
        return unreadable

    async def _bill_once(self, call: Call, ref: str) -> None:
        """Bill this call's usage only if no call before it billed the same result."""
        if call.usage is None:
            return
        if self.store is None:
            return
        first = await self.store.run(billed.claim, ref, call.id, call.key_id)
        if first is not None:
            call.usage = None
            call.error = f"Already billed by call {first}."

    def _check_charge(self, key: KeyRecord, endpoint: Endpoint, body: dict | None) -> None:
        """Refuse, for a key with a budget, a call whose cost the budget could not hold."""
        if key.monthly_budget_usd is None:
            return
        if endpoint.charge == COSTLY:
            why = f"{endpoint.name} costs money, but lcm-jupyter does not meter it"
        elif endpoint.wire == "openai.responses" and body and body.get("background") is True:
            why = "a background response is billed when its result is retrieved, after the call"
        else:
            return
        name = "responses.background" if endpoint.charge != COSTLY else endpoint.name
        if any(fnmatchcase(name, p) for p in self.settings.unmetered_endpoints):
            return
        raise EndpointNotMetered(
            f"{why[0].upper()}{why[1:]}, so this key's monthly budget could not hold its "
            "cost. Use a key without a budget for it, or let budgeted keys make such calls "
            f"unmetered with LCMExtension.unmetered_endpoints = [{name!r}].",
        )

    def _server_stopped(self, call: Call) -> None:
        # Cut before its answer was whole (a stream's status line long sent): 503, as a
        # server that stops answering is seen by the client, and as the journal logs a
        # call cut short by a crash.
        if not call.answered:
            call.status = STATUS_SERVER_STOPPED
            call.error = call.error or "The server stopped before the call completed."

    def _client_left(self, call: Call) -> None:
        call.status = STATUS_CLIENT_CLOSED
        call.error = "The client disconnected before the answer was complete."

    async def _answer_error(self, sink: ResponseSink, call: Call, err: LCMError) -> None:
        if sink.client_gone:
            return
        try:
            if not sink.started:
                headers = [*_JSON_HEADERS, *err.headers.items()]
                if call.hold is not None and not err.headers:
                    headers.extend(call.hold.headers())
                sink.start(err.status, headers)
                await sink.finish(render_error(call.provider, err, call.id))
            else:  # mid-stream: tell the SDK in-band, so it raises instead of stopping quietly
                await sink.send(render_stream_error(call.provider, err, call.id))
                await sink.finish()
        except ClientGone:
            pass

    # -- the log row ---------------------------------------------------------------------------

    def _row_or_none(self, call: Call) -> dict[str, Any] | None:
        try:
            return self._row(call)
        except Exception:  # the row must not take the server down; say so loudly
            log.exception("lcm could not build the log row of call %s", call.id)
            if self.journal is not None:
                self.journal.discard(call.id)
            return None

    def _submit(self, row: dict[str, Any] | None) -> None:
        if row is not None:
            self.log_writer.submit(row)

    def _journal_row(self, row: dict[str, Any]) -> None:
        assert self.journal is not None
        # The shadow job's objects (the request body among them) are not for the journal.
        job = row.pop(SHADOW_JOB, None)
        self.journal.row(row)
        if job is not None:
            row[SHADOW_JOB] = job

    def _begin_record(
        self, call: Call, key: KeyRecord, endpoint: Endpoint, body: dict | None
    ) -> dict[str, Any]:
        return begin_record(
            call_id=call.id,
            key_id=key.id,
            month=call.created_at[:7],
            holds=key.monthly_budget_usd is not None and self.settings.budget_mode != "soft",
            provider=call.provider,
            requested_model=call.requested_model,
            created_at=call.created_at,
            endpoint=call.endpoint_name,
            method=call.method,
            stream=call.stream,
            charge=endpoint.charge,
            user=call.user,
            notebook=call.notebook,
            cell=call.cell,
            team_budget_ids=charged_ids(call.scopes),
            # What a cut-short call is booked at: its input, estimated as a failed stream's is.
            input_estimate=estimate_input_tokens(body) if endpoint.charge == METERED else 0,
        )

    def _shadow_job(
        self,
        call: Call,
        usage: Usage | None,
        priced: Priced | None,
        decision: RoutingDecision | None,
    ) -> dict[str, Any]:
        """For a call made with routing off, what the log writer needs to judge later what
        auto routing would have done (see `judge_shadow`): never on the request path."""
        endpoint = call.endpoint
        if (
            decision is None
            or decision.mode != "off"
            or usage is None
            or priced is None
            or call.key is None
            or call.cache_hit
            or call.status != 200
            or endpoint is None
            or endpoint.wire not in GENERATION_WIRES
        ):
            return {}
        job = (call.key, call.requested_model, endpoint.wire, call.body, call.path, usage,
               priced.cost, call.provider, call.at)  # fmt: skip
        return {SHADOW_JOB: job}

    def judge_shadow(self, row: dict[str, Any]) -> None:
        """On the log writer's thread: what auto routing would have done with this call made
        with routing off, and the saving for the same usage, into its row."""
        job = row.pop(SHADOW_JOB, None)
        if job is None or self.router is None:
            return
        key, model, wire, body, path, usage, cost, provider, at = job
        decision = self.router.shadow(key, model, wire, body, path)
        if not decision.was_routed or not decision.to_model:
            return
        cheaper = self.pricing.table.price(usage, decision.to_model, provider, at=at)
        if cheaper is None or cheaper.cost >= cost:
            return
        logged = json.loads(row["routing_decision"])
        logged["shadow"] = _shadow_json(decision, cost - cheaper.cost)
        row["routing_decision"] = json.dumps(logged)
        row["shadow_savings_usd"] = float(cost - cheaper.cost)

    def _row(self, call: Call) -> dict[str, Any]:
        usage = call.usage
        cost: float | None = 0.0
        tool_fees = 0.0
        unpriced = False
        estimated = call.estimated
        version = None
        endpoint = call.endpoint
        wire = endpoint.wire if endpoint is not None else None
        if (
            usage is None
            and wire is not None
            and wire not in _RETRIEVALS
            and not call.deferred
            and call.upstream_status is not None
            and 200 <= call.upstream_status < 300
        ):
            # The provider answered, so it billed, but its count never came (a stream cut
            # short, an answer without usage): estimate rather than log a silent $0 that
            # the budget would not see. Input errs high (chars/3); output counts one token
            # per streamed event.
            usage = Usage(
                input_tokens=estimate_input_tokens(call.body), output_tokens=call.stream_events
            )
            estimated = True
            note = "usage estimated: the provider's token count did not arrive"
            call.error = f"{call.error} ({note})" if call.error else note.capitalize() + "."
        elif (
            usage is None
            and endpoint is not None
            and endpoint.charge == COSTLY
            and call.upstream_status is not None
            and 200 <= call.upstream_status < 300
        ):
            # The provider took on paid work nothing here can price: unknown, not $0.
            cost, unpriced = None, True
        savings = 0.0
        decision = call.decision
        priced = None
        if usage is not None:
            table = self.pricing.table
            version = table.version
            booked = table.price_call(
                usage,
                model=call.model,
                requested_model=call.requested_model,
                provider=call.provider,
                at=call.at,
                routed=decision is not None and decision.was_routed,
                cache_hit=call.cache_hit,
                batch=wire in _BATCH_RESULTS,
            )
            cost, tool_fees, savings = booked.cost, booked.tool_fees, booked.savings
            unpriced, priced = booked.unpriced, booked.priced
        elif call.cache_hit:
            # Nothing was spent; what the call would have cost was saved.
            cost, tool_fees = 0.0, 0.0
        logged = decision.to_json() if decision is not None else _NOT_ROUTED
        row: LogRow = {
            "id": call.id,
            "key_id": call.key_id,
            "provider": call.provider,
            "endpoint": call.endpoint_name,
            "method": call.method,
            "requested_model": call.requested_model,
            "model": call.model,
            "stream": int(call.stream),
            "input_tokens": usage.input_tokens if usage else 0,
            "output_tokens": usage.output_tokens if usage else 0,
            "cached_tokens": usage.cached_tokens if usage else 0,
            "cache_write_tokens": usage.cache_write_tokens if usage else 0,
            "reasoning_tokens": usage.reasoning_tokens if usage else 0,
            "usage_json": json.dumps(usage.raw) if usage and usage.raw is not None else None,
            "cost_usd": cost,
            "tool_fees_usd": tool_fees,
            "unpriced": int(unpriced),
            "usage_estimated": int(estimated),
            "pricing_version": version,
            "savings_usd": savings,
            "latency_ms": round((time.perf_counter() - call.started) * 1000, 3),
            "ttfb_ms": round(call.ttfb_ms, 3) if call.ttfb_ms is not None else None,
            "status": call.status,
            "error": call.error,
            "cache_hit": int(call.cache_hit),
            "routing_decision": json.dumps(logged),
            "shadow_savings_usd": 0.0,
            "created_at": call.created_at,
            "user": call.user,
            "notebook": call.notebook,
            "cell": call.cell,
            "team_budget_ids": charged_ids(call.hold.scopes) if call.hold is not None else None,
        }
        # The shadow job rides with the row to the log writer's thread, which takes it off.
        return {**row, **self._shadow_job(call, usage, priced, decision)}


_FORM_FIELD = re.compile(
    rb'Content-Disposition:[^\r\n]*\bname="([A-Za-z_]{1,40})"(?:;[^\r\n]*)?\r?\n'
    rb"(?:[^\r\n]+\r?\n)*\r?\n([^\r\n]{0,1000})\r?\n--",
    re.IGNORECASE,
)


def _now() -> datetime:
    """The time a call starts (its log time and the date it is priced at)."""
    return datetime.now(timezone.utc)


def _shadow_json(decision: RoutingDecision, saving: Decimal) -> dict[str, Any]:
    return {
        "to_model": decision.to_model,
        "confidence": decision.confidence,
        "reason": decision.reason,
        "saving_usd": float(saving),
    }


def _parse_body(req: ProxyRequest) -> Any:
    """The JSON body; for a multipart upload, its short text fields; else None."""
    raw = req.body
    if not raw.strip():
        return None
    kind = req.headers.get("content-type", "").lower()
    if kind.startswith("multipart/form-data"):
        # Uploads (transcriptions): the model and options are form fields beside the file.
        fields: dict[str, Any] = {}
        for name, value in _FORM_FIELD.findall(raw[:65536] + raw[-4096:]):
            fields.setdefault(name.decode(), value.decode("utf-8", "replace"))
        return fields
    if kind and "json" not in kind and raw.lstrip()[:1] not in (b"{", b"["):
        return None  # a file upload or another binary body: nothing to read
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"The request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidJSON("The request body is nested too deeply to be read.") from None


def _normalize_path(path: str) -> str:
    return path.split("?", 1)[0].strip("/")


def _provider_key(key: KeyRecord, provider: str, team_key: str | None = None) -> str:
    """The provider key a call goes out with: its proxy key's own, else the team's."""
    if key.provider not in ("auto", provider):
        raise PermissionDenied(
            f"The proxy key {key.key_prefix}... ({key.name!r}) is for {key.provider}, "
            f"not {provider}. Use a key whose provider is {provider} or auto."
        )
    secret = key.provider_api_keys.get(provider) or team_key
    if not secret:
        raise PermissionDenied(
            f"The proxy key {key.key_prefix}... ({key.name!r}) has no {provider} API key. "
            f"Add one with PATCH lcm/api/keys/{key.id} "
            f'{{"provider_api_keys": {{"{provider}": "..."}}}}.'
        )
    return secret


def _upstream_headers(
    headers: Mapping[str, str], provider: str, secret: str
) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in headers.items() if k not in _DROP_REQUEST_HEADERS]
    a = adapter(provider)
    out.append((a.auth_header, a.auth_value(secret)))
    return out


def _response_headers(
    headers: Iterable[tuple[str, str]], *, ours: bool, error: bool = False
) -> list[tuple[str, str]]:
    """The provider's headers that go back; with `ours`, the key's rate-limit headers replace
    the provider's request-count ones (an `error` keeps the provider's retry-after)."""
    drop = _DROP_WHEN_RATE_LIMITED if ours else _DROP_RESPONSE_HEADERS
    if error:
        drop = drop - _RETRY_HEADERS
    return [(k, v) for k, v in headers if k.lower() not in drop]


def _as_json(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` for a body the proxy wrote in the provider's JSON shape."""
    return [h for h in headers if h[0].lower() != "content-type"] + list(_JSON_HEADERS)


def _content_type(headers: Iterable[tuple[str, str]]) -> str:
    for k, v in headers:
        if k.lower() == "content-type":
            return v.split(";", 1)[0].strip().lower()
    return ""


def _has_body(method: str, status: int, headers: Iterable[tuple[str, str]]) -> bool:
    """Whether an answer with this status to this method carries a body to read (never HEAD,
    204, 205 or 304), and, for a 2xx, one that says it is JSON."""
    if method.upper() == "HEAD" or status in (204, 205, 304):
        return False
    if status >= 300:
        return True
    kind = _content_type(headers)
    return kind == "application/json" or kind.endswith("+json")


_HTML_START = re.compile(rb"\s*<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HTML_DROP = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")
_GIST_CHARS = 200


def _not_json_error(data: bytes, headers: Iterable[tuple[str, str]]) -> str | None:
    """What an error body is, worded to follow "the provider answered 502 ...", when it is not
    a JSON error (an object or a list); None when it is one."""
    if not data.strip():
        return "with an empty body"
    try:
        if isinstance(json.loads(data), (dict, list)):
            return None
    except (ValueError, RecursionError):
        pass
    kind = _content_type(headers)
    text = data[:65536].decode("utf-8", "replace")
    if "html" in kind or _HTML_START.match(data[:1024]):
        title = _HTML_TITLE.search(text)
        page = title.group(1) if title else _HTML_TAG.sub(" ", _HTML_DROP.sub(" ", text))
        return f"with an HTML page: {_gist(html.unescape(_HTML_TAG.sub(' ', page)))}"
    return f"with a body that is not JSON ({kind or 'no content type'}): {_gist(text)}"


def _gist(text: str) -> str:
    """The first words of `text`, on one line."""
    words = " ".join(text.split())
    return words if len(words) <= _GIST_CHARS else words[: _GIST_CHARS - 3].rstrip() + "..."


# Query parameters that may carry a key (Gemini REST clients put theirs in `key`): never sent
# on, whatever their case, though only `key` is read.
_KEY_PARAMS = frozenset({"key", "api_key", "apikey", "api-key", "access_token", "token"})


def _strip_key(query: str) -> str:
    """The query string without any parameter that may carry a key."""
    lowered = query.lower()
    if "key" not in lowered and "token" not in lowered:
        return query
    kept = [(k, v) for k, v in parse_qsl(query, True) if k.lower() not in _KEY_PARAMS]
    return urlencode(kept)


def _is_event_stream(headers: Iterable[tuple[str, str]]) -> bool:
    return any(
        k.lower() == "content-type" and v.startswith("text/event-stream") for k, v in headers
    )


# The version segment every provider path starts with (v1/, v1beta/, v1alpha/...).
_VERSIONED_PATH = re.compile(r"v\d+(?:alpha|beta)?\d*(?:/|$)")
# Where each SDK's base URL points, and the version it then adds or needs.
_SDK_BASE = {
    "openai": ("an OpenAI SDK's base_url ends in /v1: {base}lcm/proxy/{route}/v1", "v1"),
    "anthropic": ("the Anthropic SDK's base_url is {base}lcm/proxy/{route} (it adds /v1/)", "v1"),
    "google": ("google-genai's base_url is {base}lcm/proxy/{route} (it adds /v1beta/)", "v1beta"),
}


def _unknown_path_hint(req: ProxyRequest, provider: str) -> str | None:
    """Why the provider may not know this path: one without a version segment is what an
    SDK sends when its base URL lacks /v1. None when the path has one (a 404 then means
    something else, e.g. an unknown model or response id)."""
    if _VERSIONED_PATH.match(req.path) or provider not in _SDK_BASE:
        return None
    how, version = _SDK_BASE[provider]
    sdk = how.format(base=".../", route=req.route)
    return (
        f"lcm-jupyter: {provider} has no {req.method} /{req.path}: its paths start with "
        f"/{version}/, so the client's base URL looks wrong; {sdk}"
    )


def _requested_tier(body: dict | None) -> str | None:
    """The service tier a request asks for (OpenAI and Anthropic `service_tier`, Gemini
    `serviceTier`), which prices the call (priority costs more)."""
    if not isinstance(body, dict):
        return None
    tier = body.get("service_tier", body.get("serviceTier"))
    return tier.lower() if isinstance(tier, str) and tier not in ("auto", "default") else None


def _error_text(data: bytes) -> str:
    """The provider's error message if its body says one, else the body, shortened."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, list) and body:
        body = body[0]  # Gemini's JSON-array streams wrap errors in a list
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:_ERROR_TEXT_LIMIT]
    return data[:_ERROR_TEXT_LIMIT].decode("utf-8", "replace")
