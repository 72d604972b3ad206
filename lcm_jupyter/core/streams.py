"""Incremental parsing of streamed LLM responses, and metering them on the side.

The proxy forwards upstream bytes as they arrive; `StreamMeter` watches them go by
and keeps the usage, model and any in-stream error. Chunks may split anywhere (mid
line, mid UTF-8 character), so both parsers buffer only the incomplete tail, and
events are decoded only when they can carry something the meter needs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .providers import for_wire, response_model, usage_from_event
from .usage import Usage

__all__ = [
    "JSONArrayParser",
    "SSEEvent",
    "SSEParser",
    "StreamMeter",
    "ensure_stream_usage",
]

_BOM = b"\xef\xbb\xbf"
_LF = 10
_LINE_END_BYTES = (10, 13)

# Outside strings, what matters to the JSON object scanner: braces, and strings. A short
# string without escapes is skipped whole; other strings are entered at their quote.
_JSON_STRUCTURE = re.compile(rb'"[^"\\]{0,200}"|[{}"]')
_QUOTE, _BACKSLASH, _OPEN = 0x22, 0x5C, 0x7B


def _line_end(data: bytes | bytearray, i: int) -> int:
    """Index just past the line ending (CR, LF or CRLF) at `i`; -1 if it is still unknown."""
    if data[i] == _LF:
        return i + 1
    if i + 1 == len(data):
        return -1  # a final CR may be the first half of a CRLF: wait for the next byte
    return i + 2 if data[i + 1] == _LF else i + 1


def _blank_line_end(data: bytes | bytearray, start: int) -> int:
    """Index just past the first complete blank line in `data` from `start`, or -1."""
    # Walk line endings with bytes.find (memchr): a regex would step through every byte.
    size = len(data)
    lf = data.find(b"\n", start)
    cr = data.find(b"\r", start)
    while True:
        at = cr if lf == -1 or (cr != -1 and cr < lf) else lf
        if at == -1:
            return -1
        end = _line_end(data, at)
        if end == -1 or end == size:
            return -1
        if data[end] in _LINE_END_BYTES:  # the next line is empty: a blank line
            return _line_end(data, end)
        if lf != -1 and lf < end:
            lf = data.find(b"\n", end)
        if cr != -1 and cr < end:
            cr = data.find(b"\r", end)


@dataclass(slots=True)
class SSEEvent:
    """One server-sent event: its type, its (joined) data, and its exact bytes."""

    event: str | None
    data: str
    raw: bytes


def _parse_block(raw: bytes) -> SSEEvent | None:
    """Fields of one blank-line-terminated block; None if it holds no event or data line."""
    event: str | None = None
    data: list[bytes] = []
    seen = False
    for line in (raw[3:] if raw.startswith(_BOM) else raw).splitlines():
        if not line or line[0] == 0x3A:  # blank, or a ":" comment such as ": ping"
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
            seen = True
        elif name == b"event":
            event = value.decode("utf-8", "replace") or None
            seen = True
    if not seen:
        return None
    # Decoding whole events only: a multi-byte character split across chunks is intact here.
    return SSEEvent(event, b"\n".join(data).decode("utf-8", "replace"), raw)


class SSEParser:
    """Incremental ``text/event-stream`` parser tolerant of any chunking and line ending."""

    __slots__ = ("_buf", "_scan")

    def __init__(self) -> None:
        self._buf = bytearray()
        # Where to resume looking for a blank line in _buf (before a trailing line ending).
        self._scan = 0

    def blocks(self, chunk: bytes) -> list[bytes]:
        """Raw bytes of every block `chunk` completes; together they are the input, in order."""
        if self._buf:
            self._buf += chunk
            data: bytes | bytearray = self._buf
        else:
            data = chunk
        out = []
        pos = 0
        scan = self._scan
        while (end := _blank_line_end(data, scan)) != -1:
            if data is chunk and not pos and end == len(chunk):
                out.append(chunk)  # the common case, one whole event per chunk: no copy
            else:
                out.append(bytes(memoryview(data)[pos:end]))
            pos = scan = end
        if data is chunk:
            self._buf = bytearray(chunk[pos:]) if pos < len(chunk) else bytearray()
        elif pos:
            del self._buf[:pos]
        # Resume before a trailing line ending: its partner may come in the next chunk.
        scan = len(self._buf)
        while scan and self._buf[scan - 1] in _LINE_END_BYTES:
            scan -= 1
        self._scan = scan
        return out

    def rest(self) -> bytes:
        """Take the bytes of the unterminated final block (end of stream)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        return rest

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Events completed by `chunk` (comment-only and empty blocks are skipped)."""
        return [ev for raw in self.blocks(chunk) if (ev := _parse_block(raw)) is not None]

    def flush(self) -> list[SSEEvent]:
        """At end of stream: the unterminated final event, if any."""
        ev = _parse_block(self.rest())
        return [] if ev is None else [ev]


class JSONArrayParser:
    """Incremental parser for a JSON array of objects (Gemini streaming without ``alt=sse``)."""

    __slots__ = ("_buf", "_depth", "_in_str", "_pos", "_start", "malformed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._depth = 0
        self._in_str = False
        self._pos = 0  # where scanning resumes in _buf
        self._start = 0  # index in _buf of the current top-level object's "{"
        self.malformed = 0
        """Complete objects that were not valid JSON."""

    def spans(self, chunk: bytes) -> list[bytes]:
        """Raw bytes of every top-level object `chunk` completes (array syntax is skipped)."""
        buf = self._buf
        buf += chunk
        size = len(buf)
        depth, in_str, i, start = self._depth, self._in_str, self._pos, self._start
        out = []
        find, structure = buf.find, _JSON_STRUCTURE.search
        while i < size:
            if in_str:
                # Jump to the closing quote with memchr: strings can be megabytes of base64.
                q = find(b'"', i)
                if q == -1:
                    i = size
                    break
                i = q + 1
                b = q - 1
                while b >= 0 and buf[b] == _BACKSLASH:
                    b -= 1
                in_str = (q - 1 - b) % 2 == 1  # an odd run of backslashes escapes the quote
                continue
            m = structure(buf, i)
            if m is None:
                i = size
                break
            i = m.end()
            c = buf[i - 1]
            if c == _QUOTE:
                in_str = i - m.start() == 1  # an opening quote, unless a whole string matched
            elif c == _OPEN:
                if depth == 0:
                    start = i - 1
                depth += 1
            elif depth:  # "}"; a stray one at top level is ignored
                depth -= 1
                if depth == 0:
                    out.append(bytes(memoryview(buf)[start:i]))  # one copy, not two
        # Keep only the unfinished object; between objects keep just a trailing backslash
        # run, which a string outside any object would need to tell if its quote is escaped.
        cut = start if depth else size
        while not depth and cut and buf[cut - 1] == _BACKSLASH:
            cut -= 1
        del buf[:cut]
        self._depth, self._in_str, self._pos, self._start = depth, in_str, i - cut, 0
        return out

    def feed(self, chunk: bytes) -> list[dict]:
        """Objects completed by `chunk`; malformed ones are counted and skipped."""
        objs = []
        for raw in self.spans(chunk):
            obj = _loads(raw)
            if isinstance(obj, dict):
                objs.append(obj)
            else:
                self.malformed += 1
        return objs


_NOT_JSON = object()


def _loads_tail(raw: bytes, keys: tuple[bytes, ...]) -> Any:
    """The members of a JSON object from the first of top-level `keys` on, or `_NOT_JSON`."""
    starts = [i for i in map(raw.rfind, keys) if i > 0]
    if not starts:
        return _NOT_JSON
    # Had the key been nested, the tail's extra closing brackets would make this invalid.
    obj = _loads(b"{" + raw[min(starts) :].rstrip())
    return obj if isinstance(obj, dict) else _NOT_JSON


def _loads(raw: bytes | str) -> Any:
    """json.loads that returns `_NOT_JSON` instead of raising on a bad upstream."""
    try:
        return json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return _NOT_JSON


_USAGE_ON = ("openai.chat", "openai.completions")


def ensure_stream_usage(wire: str, body: dict) -> bool:
    """Turn on a streamed OpenAI chat/completions usage chunk; True if the client didn't ask."""
    if wire not in _USAGE_ON or not isinstance(body, dict) or body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    # Keep the client's other stream options (e.g. include_obfuscation).
    kept = options if isinstance(options, dict) else {}
    body["stream_options"] = {**kept, "include_usage": True}
    return True


# Usage as a JSON object (OpenAI sends "usage": null in every chunk once usage is on).
_USAGE_OBJECT = {
    "openai.chat": re.compile(rb'"usage"\s*:\s*\{'),
    "openai.completions": re.compile(rb'"usage"\s*:\s*\{'),
}
_SCAN_ALL = 16384
_SCAN_ENDS = 1024
# Gemini sends usage and model after the candidates (which may hold megabytes of inline
# image data): decode a chunk from the first of these top-level keys on.
_TAIL_KEYS = (b'"usageMetadata"', b'"modelVersion"')
# Wires that name the model in every chunk: decode chunks until it is known.
_MODEL_KEY = {
    "openai.chat": b'"model"',
    "openai.completions": b'"model"',
    "google.stream": b'"model',  # modelVersion / model_version
    "google.generate": b'"model',
}


class StreamMeter:
    """Watches a streamed response go by and extracts its usage, model and in-stream error."""

    __slots__ = (
        "_markers",
        "_model_key",
        "_split",
        "_sse",
        "_strip",
        "_tail_keys",
        "_usage_object",
        "chunks",
        "error",
        "malformed",
        "model",
        "response_id",
        "usage",
        "wire",
    )

    def __init__(self, wire: str, fmt: str = "sse", *, strip_usage_chunk: bool = False) -> None:
        self.wire = wire
        self.usage: Usage | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        """The id of the Responses object the stream is about, once an event names it."""
        self.error: dict | None = None
        self.chunks = 0
        """Events (SSE) or objects (JSON array) seen so far."""
        self.malformed = 0
        """Events/objects selected for decoding that were not a JSON object."""
        if fmt == "json-array":
            self._sse: SSEParser | None = None
            self._split = JSONArrayParser().spans
        else:
            self._sse = SSEParser()
            self._split = self._sse.blocks
        # Stripping needs whole events, so it is only for the SSE wires that have the chunk.
        self._strip = strip_usage_chunk and self._sse is not None and wire in _USAGE_ON
        reader = for_wire(wire)
        # Byte strings whose presence means an event may carry usage, a final status or
        # an error, so it is worth decoding. Everything else (text deltas) is only counted.
        self._markers = reader.stream_markers(wire) if reader else (b'"error"', b'"usage"')
        self._usage_object = _USAGE_OBJECT.get(wire)
        self._model_key = _MODEL_KEY.get(wire)
        # Gemini only: decode chunks from their usage on; accept bare JSON errors.
        self._tail_keys = _TAIL_KEYS if wire.startswith("google.") else ()

    def feed(self, chunk: bytes) -> bytes:
        """Observe `chunk`; return the bytes to send to the client now."""
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        blocks = self._split(chunk)
        if not self._strip:
            for raw in blocks:
                self._observe(raw)
            return chunk
        return b"".join(raw for raw in blocks if not _is_usage_chunk(self._observe(raw)))

    def close(self) -> bytes:
        """At end of stream: observe the unterminated tail; return any bytes still held back."""
        rest = self._sse.rest() if self._sse is not None else b""
        if not rest:
            return b""
        obj = self._observe(rest)
        return rest if self._strip and not _is_usage_chunk(obj) else b""

    def _wanted(self, head: bytes) -> bool:
        """Whether an event/object may carry usage, model or an error (else skip decoding)."""
        for marker in self._markers:
            if marker in head:
                return True
        if self._usage_object is not None and self._usage_object.search(head):
            return True
        return self.model is None and self._model_key is not None and self._model_key in head

    def _observe(self, raw: bytes) -> Any:
        """Count one event/object, decode it if wanted, record what it says; return the object."""
        if self._sse is not None and b"data" not in raw:
            return self._bare_json(raw)
        self.chunks += 1
        # Event types, usage and errors sit at the ends of an event; the middle of a big one
        # is content (Gemini's inline images run to megabytes): search only the ends.
        head = raw if len(raw) <= _SCAN_ALL else raw[:_SCAN_ENDS] + raw[-_SCAN_ENDS:]
        if not self._wanted(head):
            return None
        obj = _NOT_JSON
        if self._tail_keys and b'"error"' not in head and b"groundingMetadata" not in raw:
            obj = _loads_tail(raw, self._tail_keys)
        if obj is _NOT_JSON:
            if self._sse is None:
                obj = _loads(raw)
            else:
                ev = _parse_block(raw)
                if ev is None or not ev.data:
                    return self._bare_json(raw)
                obj = _loads(ev.data)
        return self._record(obj)

    def _bare_json(self, raw: bytes) -> Any:
        """Record a block of bare JSON lines: how Gemini writes an error mid-stream."""
        if not self._tail_keys or raw.lstrip()[:1] not in (b"{", b"["):
            return None  # a comment, keep-alive or stray blank line
        obj = _loads(raw)
        return self._record(obj[0] if isinstance(obj, list) and obj else obj)

    def _record(self, obj: Any) -> Any:
        """Take usage, model and error from one decoded event/object."""
        if not isinstance(obj, dict):
            self.malformed += 1
            return obj
        wire = self.wire
        if self.model is None:
            self.model = response_model(wire, obj)
        self.usage = usage_from_event(wire, obj, self.usage)
        response = obj.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = response["id"]
        if (
            obj.get("type") == "error"
            or obj.get("error")
            or (isinstance(response, dict) and response.get("error"))
        ):
            self.error = obj
        return obj


def _is_usage_chunk(obj: Any) -> bool:
    """The chunk that only reports usage: no choices, a usage object."""
    return isinstance(obj, dict) and not obj.get("choices") and isinstance(obj.get("usage"), dict)
