"""Scenario 6: a broken upstream. A raw asyncio HTTP server stands in for OpenAI and breaks
each answer the way the request's `x-chaos` header asks (the proxy forwards that header like
any other): connection reset before the headers or mid-stream, a chunked stream cut without
its last chunk, a stream that ends without `[DONE]` or usage, garbage instead of JSON, an
HTML error page, an empty 502, no answer at all, a stream that stalls. The proxy runs with
`LCM_UPSTREAM_READ_TIMEOUT=1`. Every call is made with httpx (to read status, headers and
body as sent), and once more with the official openai SDK (to see what it raises).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import Counter
from pathlib import Path

from .harness import (
    MODEL,
    Call,
    Cluster,
    Result,
    chat,
    fmt_statuses,
    http_client,
    log_problems,
    rows_for,
    send,
    until,
)

READ_TIMEOUT = 1.0
_FRAME = {
    "id": "chatcmpl-chaos",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": MODEL,
    "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
}
_USAGE_FRAME = {**_FRAME, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2,
                                                   "total_tokens": 14}}  # fmt: skip
_COMPLETION = {
    "id": "chatcmpl-chaos",
    "object": "chat.completion",
    "created": 1,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}  # fmt: skip

# mode -> (streamed call?, the proxy must add an in-band error event?, what it shows)
MODES = {
    "ok": (False, False, "control: a whole JSON answer"),
    "ok-stream": (True, False, "control: a whole stream"),
    "reset-before-headers": (False, False, "RST right after the request"),
    "reset-mid-stream": (True, True, "RST after two chunks"),
    "truncated-chunked": (True, True, "FIN after two chunks, no last chunk"),
    "sse-no-done": (True, False, "FIN after two events, no usage, no [DONE]"),
    "garbage-json": (False, False, "200 with JSON cut short"),
    "html-500": (False, False, "500 with an HTML page"),
    "empty-502": (False, False, "502 with an empty body"),
    "hang": (False, False, "never answers (read timeout)"),
    "stall-mid-stream": (True, True, "one chunk, then silence"),
}


def _event(data: dict | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _head(status: str, content_type: str, *extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-type: {content_type}", *extra, "", ""]
    return "\r\n".join(lines).encode()


_SSE_CHUNKED = _head("200 OK", "text/event-stream", "transfer-encoding: chunked")


async def _reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a RST (SO_LINGER 0), after what was written has left."""
    await writer.drain()
    await asyncio.sleep(0.2)  # let the proxy read and relay what came before the reset
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _answer(mode: str, writer: asyncio.StreamWriter) -> None:
    two = _event(_FRAME) + _event(_FRAME)
    if mode == "ok":
        body = json.dumps(_COMPLETION).encode()
        writer.write(_head("200 OK", "application/json", f"content-length: {len(body)}") + body)
    elif mode == "ok-stream":
        writer.write(_SSE_CHUNKED + _chunk(two + _event(_USAGE_FRAME) + _event("[DONE]")))
        writer.write(b"0\r\n\r\n")
    elif mode == "reset-before-headers":
        await _reset(writer)
        return
    elif mode == "reset-mid-stream":
        writer.write(_SSE_CHUNKED + _chunk(two))
        await _reset(writer)
        return
    elif mode == "truncated-chunked":
        writer.write(_SSE_CHUNKED + _chunk(two))
    elif mode == "sse-no-done":
        writer.write(_head("200 OK", "text/event-stream", "connection: close") + two)
    elif mode == "garbage-json":
        body = b'{"id": "chatcmpl-chaos", "choices": [{"message": {"role": "assi'
        writer.write(_head("200 OK", "application/json", f"content-length: {len(body)}") + body)
    elif mode == "html-500":
        body = b"<html><body><h1>500 Internal Server Error</h1><p>nginx</p></body></html>"
        writer.write(_head("500 Internal Server Error", "text/html",
                           f"content-length: {len(body)}") + body)  # fmt: skip
    elif mode == "empty-502":
        writer.write(_head("502 Bad Gateway", "text/plain", "content-length: 0"))
    elif mode in ("hang", "stall-mid-stream"):
        if mode == "stall-mid-stream":
            writer.write(_SSE_CHUNKED + _chunk(_event(_FRAME)))
            await writer.drain()
        await asyncio.sleep(3600)  # until the proxy gives up and closes the connection
    await writer.drain()
    writer.close()


class BrokenUpstream:
    """The raw server: one answer per connection, broken as `x-chaos` says."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.seen: Counter = Counter()
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        """Its base URL."""
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        """Listen on a free port."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:])
                if name
            }
            await reader.readexactly(int(headers.get("content-length", 0)))
            mode = headers.get("x-chaos", "ok")
            self.seen[mode] += 1
            await _answer(mode, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def stop(self) -> None:
        """Stop listening and drop the connections still open."""
        if self.server is not None:
            self.server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _judge(call: Call, row: dict | None) -> dict:
    body = call.body
    html = b"<html" in body.lower() or "text/html" in call.content_type
    # A 200 whose body an SDK can read (a stream, or JSON), or a JSON {"error": {...}} body.
    shaped = (call.status == 200 and (call.stream or _is_json(body))) or call.code is not None
    last = body.rstrip().rsplit(b"\n\n", 1)[-1]
    return {
        "status": call.status if call.status is not None else f"conn:{call.failed}",
        "row": row["status"] if row else None,
        "html": html,
        "shaped": shaped and not html,
        "traceback": b"Traceback" in body,
        "in_band_error": call.stream and call.status == 200 and b'"error"' in last,
        "cut": call.stream and call.status == 200 and not call.done,
    }


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


async def _sdk_outcome(url: str, key: str, mode: str, stream: bool) -> str:
    """What the official openai SDK does with the mode's answer: "ok" or its exception."""
    import openai

    client = openai.AsyncOpenAI(
        base_url=url + "lcm/proxy/openai/v1", api_key=key, max_retries=0, timeout=30,
        default_headers={"x-chaos": mode},
    )  # fmt: skip
    try:
        body = chat(0, stream=stream)
        answer = await client.chat.completions.create(**body)
        if stream:
            async for _ in answer:
                pass
        return "ok"
    except Exception as exc:  # what the SDK raises is the figure
        status = getattr(exc, "status_code", None)
        return exc.__class__.__name__ + (f"({status})" if status else "")
    finally:
        await client.close()


async def broken_upstream(root: Path, *, calls: int) -> Result:
    """Call through the proxy against each broken answer; statuses, shapes and rows."""
    result = Result("upstream", f"broken upstream: {len(MODES)} faults x {calls} calls + SDK")
    upstream = BrokenUpstream()
    await upstream.start()
    cluster = Cluster(
        root, LCM_OPENAI_BASE_URL=upstream.url, LCM_UPSTREAM_READ_TIMEOUT=str(READ_TIMEOUT)
    )
    key_id, key = cluster.create_key("budgeted", monthly_budget_usd=10.0)
    judged: dict[str, list[dict]] = {}
    sdk: dict[str, str] = {}
    try:
        (server,) = await cluster.start(1)
        async with http_client(connections=100) as http:

            async def one(mode: str, i: int) -> Call:
                stream = MODES[mode][0]
                call = Call(key=mode)
                return await send(
                    http, server.chat_url, key, chat(i, stream=stream), call, **{"x-chaos": mode}
                )

            made = await asyncio.gather(*(one(mode, i) for mode in MODES for i in range(calls)))
        outcomes = await asyncio.gather(
            *(_sdk_outcome(server.url, key, mode, MODES[mode][0]) for mode in MODES)
        )
        sdk = dict(zip(MODES, outcomes, strict=True))
        ids = {c.id for c in made if c.id}
        rows = await rows_for(cluster.db_path, ids)
        for call in made:
            judged.setdefault(call.key, []).append(_judge(call, rows.get(call.id or "")))
        reserved = await until(lambda: _reserved(cluster, server, key_id), 10)
    finally:
        cluster.stop()
        await upstream.stop()
    logs = cluster.logs()

    all_judged = [j for js in judged.values() for j in js]
    for mode, (_, in_band, what) in MODES.items():
        js = judged[mode]
        got = fmt_statuses(Counter(j["status"] for j in js))
        logged = fmt_statuses(Counter(j["row"] if j["row"] is not None else "none" for j in js))
        extra = []
        if any(j["cut"] for j in js):
            in_band = sum(j["in_band_error"] for j in js)
            extra.append(f"cut {sum(j['cut'] for j in js)}, in-band error {in_band}")
        if any(j["html"] for j in js):
            extra.append("HTML")
        ok = all(j["row"] is not None and j["shaped"] and not j["traceback"] for j in js)
        if in_band:  # the proxy saw the transport fail: the SDK must be told in-band
            ok = ok and all(j["in_band_error"] for j in js)
        text = f"client {got}; rows {logged}; SDK {sdk[mode]}" + "".join(f"; {e}" for e in extra)
        result.check(f"{mode} ({what})", text, ok, "a readable 200 or a JSON error; a row each")
    rowless = sum(1 for j in all_judged if j["row"] is None)
    result.check("answered calls without a row", rowless, rowless == 0, "= 0")
    unshaped = sum(1 for j in all_judged if not j["shaped"])
    result.check("answers not in the provider's shape", unshaped, unshaped == 0, "= 0")
    html = sum(1 for j in all_judged if j["html"])
    result.check("answers with HTML", html, html == 0, "= 0")
    tracebacks = sum(1 for j in all_judged if j["traceback"])
    result.check("answers with a traceback", tracebacks, tracebacks == 0, "= 0")
    result.check("reservations held after", "0" if reserved else "not 0", reserved, "0")
    result.notes.extend(log_problems(logs))
    return result


async def _reserved(cluster: Cluster, server, key_id: int) -> bool:
    return (await cluster.budget(server, key_id))["reserved_usd"] == 0
