"""Pure budget rules: months, money units, worst-case reservations and alert texts.

Money moves through the counters as integer units of 1e-10 USD (`MONEY_SCALE`),
so every conversion from a Decimal cost or a configured float budget happens
here, once, with explicit rounding. A call is admitted against its worst case
(estimated prompt at the input price plus its output cap at the output price)
and settled later at its real cost.

Nothing here does I/O: the server layer owns the counters, the clock it passes
in, and the webhook POST.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from .media import (
    LOWEST_AUDIO_BYTES_PER_SECOND,
    LOWEST_VIDEO_BYTES_PER_SECOND,
    MAX_PDF_PAGES,
    Blob,
    PdfInfo,
    anthropic_image_tokens,
    audio_seconds,
    audio_tokens,
    gemini_image_tokens,
    image_size,
    openai_image_tokens,
    pdf_info,
    pdf_page_tokens,
    video_seconds,
    video_tokens,
)
from .money import format_money
from .pricing import RateCard
from .prompt import MEDIA_KEYS, MEDIA_TYPES
from .providers.google import generation_config

MONEY_SCALE = 10**10
"""Money counter units per US dollar (1e-10 USD each): see store/counters.py for why."""

__all__ = [
    "MEDIA_TOKENS",
    "Threshold",
    "alert_message",
    "budget_exceeded_message",
    "crossed_thresholds",
    "current_month",
    "estimate_input_tokens",
    "input_token_bound",
    "max_output_tokens",
    "month_bounds",
    "month_of",
    "reservation_units",
    "severity_for",
    "to_units",
    "to_usd",
    "webhook_payload",
    "worst_case_usd",
]

# --- months -------------------------------------------------------------------------------

_MONTH_RE = re.compile(r"(\d{4})-(\d{2})")


def month_of(moment: datetime) -> str:
    """The UTC calendar month of `moment` as "YYYY-MM" (naive datetimes are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return f"{moment.year:04d}-{moment.month:02d}"


def current_month() -> str:
    """The current UTC calendar month as "YYYY-MM"."""
    return month_of(datetime.now(timezone.utc))


def month_bounds(month: str) -> tuple[str, str]:
    """[start, next month's start) of "YYYY-MM" as stored UTC timestamps (they sort as text)."""
    match = _MONTH_RE.fullmatch(month) if isinstance(month, str) else None
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"month must look like 'YYYY-MM', got {month!r}")
    year, mon = int(match.group(1)), int(match.group(2))
    nyear, nmon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    # Same shape as timeutil.to_iso, so `start <= created_at < end` works on the text column.
    return f"{year:04d}-{mon:02d}-01T00:00:00.000Z", f"{nyear:04d}-{nmon:02d}-01T00:00:00.000Z"


# --- money --------------------------------------------------------------------------------

_ONE = Decimal(1)
_CENT = Decimal("0.01")
_SCALE_EXP = 10  # MONEY_SCALE == 10**10; scaleb shifts the exponent without rounding noise
assert 10**_SCALE_EXP == MONEY_SCALE


def to_units(usd: Decimal | float | int | str | None) -> int:
    """USD -> counter units (1e-10 USD), rounded half-up; None -> 0."""
    if usd is None:
        return 0
    if isinstance(usd, bool):
        raise TypeError("a USD amount must be a number, not a bool")
    if isinstance(usd, int):
        return usd * MONEY_SCALE
    if isinstance(usd, Decimal):
        value = usd
    elif isinstance(usd, (float, str)):
        # str(float) is the shortest repr: 0.1 -> Decimal("0.1"), not 0.1000000000000000055...
        try:
            value = Decimal(str(usd).strip())
        except InvalidOperation:
            raise ValueError(f"not a USD amount: {usd!r}") from None
    else:
        raise TypeError(f"a USD amount must be a number, got {type(usd).__name__}")
    if not value.is_finite():
        raise ValueError(f"a USD amount must be finite, got {usd!r}")
    return int(value.scaleb(_SCALE_EXP).to_integral_value(rounding=ROUND_HALF_UP))


def to_usd(units: int) -> float:
    """Counter units -> USD as a float (for JSON and messages)."""
    # int / int true division is correctly rounded, unlike units * 1e-10.
    return units / MONEY_SCALE


# --- prompt estimate ----------------------------------------------------------------------

MEDIA_TOKENS = 1600
"""Tokens the estimate counts for each image, audio clip or file part (a typical size, for
logs; reservations cost media from its bytes, see `input_token_bound`)."""

CHARS_PER_TOKEN = 3
"""Conservative: English averages ~4 characters per token, code and CJK fewer."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Role and delimiter tokens each message adds."""

# Request keys holding prompt content, per provider: OpenAI chat/completions/Responses/
# embeddings, Anthropic messages, Gemini generate/embed/batchEmbed.
# Lists of messages (4 tokens of overhead per object in them), single messages (4 tokens),
# and definitions the provider serializes into the prompt (keys count too).
_MESSAGES, _SINGLE, _SCHEMA = 1, 2, 3
_PROMPT_KEYS = {
    **dict.fromkeys(("messages", "input", "prompt", "contents", "requests"), _MESSAGES),
    **dict.fromkeys(
        ("system", "instructions", "systemInstruction", "system_instruction", "content"), _SINGLE
    ),
    **dict.fromkeys(("tools", "functions", "response_format", "text"), _SCHEMA),
}

# Parts whose payload is binary (base64) or a reference: a fixed count, never its length.
_MEDIA_TYPES = MEDIA_TYPES | {"document"}
_MEDIA_KEYS = frozenset(MEDIA_KEYS)
# Metadata strings that are not prompt text (or are covered by the per-message overhead);
# Anthropic's thinking signature is a long opaque blob that is not billed as text.
_SKIP_KEYS = frozenset(
    {"role", "type", "signature", "cache_control", "mimeType", "mime_type", "media_type"}
)
# Far above any real request (a 10,000-message chat with parts is ~30,000 containers); a
# cyclic structure gives up after ~0.1 s.
_MAX_CONTAINERS = 200_000


def _is_media(node: Mapping[str, Any]) -> bool:
    """Whether a content part is an image/audio/file rather than text."""
    kind = node.get("type")
    if not isinstance(kind, str) or kind not in _MEDIA_TYPES:
        return False
    if kind == "document":
        # Anthropic plain-text documents carry their text inline: count it as text.
        source = node.get("source")
        if isinstance(source, Mapping) and source.get("type") in ("text", "content"):
            return False
    return True


def _text(value: str) -> tuple[int, int]:
    """(characters, tokens) of one string: a base64 data URL is media, not text."""
    if value.startswith("data:") and ";base64," in value[:256]:
        return 0, MEDIA_TOKENS
    return len(value), 0


def _measure(root: Any, schema: bool) -> tuple[int, int]:
    """(characters of text, tokens counted directly) under `root`; never raises."""
    if isinstance(root, str):
        return _text(root)
    if not isinstance(root, (dict, list, tuple, Mapping)):
        return 0, 0
    chars = tokens = 0
    # Iterative walk: deep nesting cannot hit the recursion limit, and the visit cap makes
    # a (non-JSON) self-referencing structure finite. No seen-set: a body built in Python
    # may legitimately repeat one object, and each repetition is sent and billed.
    stack: list[Any] = [root]
    visits = 0
    try:
        while stack:
            node = stack.pop()
            visits += 1
            if visits > _MAX_CONTAINERS:
                break
            # Concrete type checks first: isinstance against the Mapping ABC is slower.
            if type(node) is dict or isinstance(node, Mapping):
                if schema:
                    # Tool/schema definitions are serialized into the prompt, keys included.
                    for key, value in node.items():
                        if type(key) is str:
                            chars += len(key)
                        if type(value) is str:
                            chars += len(value)
                        elif isinstance(value, (dict, list, tuple, Mapping)):
                            stack.append(value)
                    continue
                if _is_media(node):
                    tokens += MEDIA_TOKENS
                    continue
                for key, value in node.items():
                    if key in _SKIP_KEYS:
                        continue
                    if key in _MEDIA_KEYS:
                        tokens += MEDIA_TOKENS
                    elif type(value) is str or isinstance(value, str):
                        c, t = _text(value)
                        chars += c
                        tokens += t
                    elif isinstance(value, (dict, list, tuple, Mapping)):
                        stack.append(value)
            else:
                for item in node:
                    if type(item) is str or isinstance(item, str):
                        c, t = _text(item)
                        chars += c
                        tokens += t
                    elif type(item) is int:
                        # Token-id arrays (embeddings/completions `input`/`prompt`).
                        tokens += 1
                    elif isinstance(item, (dict, list, tuple, Mapping)):
                        stack.append(item)
    except Exception:
        # An exotic Mapping that fails on access: keep what was counted, never fail a call.
        pass
    return chars, tokens


def estimate_input_tokens(body: Mapping | None) -> int:
    """Cheap, deliberately high estimate of a request's prompt tokens (any provider), for logs.

    Not an upper bound: reservations use `input_token_bound`."""
    if isinstance(body, (list, tuple)):
        chars, tokens = _measure(body, schema=False)
        return -(-chars // CHARS_PER_TOKEN) + tokens
    if not isinstance(body, Mapping):
        return 0
    chars = tokens = 0
    try:
        # One pass over the body's own keys: cheaper than probing every known name.
        for name, value in body.items():
            kind = _PROMPT_KEYS.get(name)
            if kind is None or value is None:
                continue
            if kind == _SCHEMA:
                if not isinstance(value, (dict, list, tuple, Mapping)):
                    continue
            elif kind == _MESSAGES and isinstance(value, (list, tuple)):
                for item in value:
                    if type(item) is dict or isinstance(item, Mapping):
                        tokens += MESSAGE_OVERHEAD_TOKENS
            elif isinstance(value, (str, dict, list, tuple, Mapping)):
                tokens += MESSAGE_OVERHEAD_TOKENS
            c, t = _measure(value, schema=kind == _SCHEMA)
            chars += c
            tokens += t
    except Exception:
        pass  # a Mapping whose iteration fails: what was counted so far stands
    return -(-chars // CHARS_PER_TOKEN) + tokens


# --- prompt bound --------------------------------------------------------------------------
#
# `estimate_input_tokens` above is a cheap estimate (it is logged when a stream is cut);
# a reservation needs a bound: what the provider can bill at most for the prompt. The
# differences: text is counted so that dense content (digits, punctuation, CSV, JSON,
# non-Latin scripts) cannot beat it, each provider's hidden prompt is added, and media is
# costed from what the request carries (see core/media.py), not at a flat rate.

# ASCII letters, space and tab: at most one token per 3 characters in the worst realistic
# case (prose, code identifiers). Every other byte (digit, punctuation, newline, each byte
# of a non-ASCII character) may be a token of its own: Gemini splits digits one per token,
# "0.1,0.2" is one token per character everywhere, and a byte-level BPE tokenizer (OpenAI,
# Anthropic) or SentencePiece with byte fallback (Gemini) never makes a token of less than
# one byte, so these count one token each. The bound is the larger of characters/3 (the
# estimate's rule, which covers prose) and that byte rule with letters at 2 per 7 chars.
_SOFT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz \t")
_NOT_SOFT = bytes(b for b in range(256) if b not in _SOFT)

# Hidden prompt each request carries beyond its messages (4 tokens each, as above): chat
# formatting and reply priming; OpenAI's Responses API bills more ("say hi" to gpt-4o-mini:
# 27 tokens; its /responses/compact prompt: about 110 more); thinking on Claude adds a
# system prompt (+17 to +60 tokens in the recordings); tools add each provider's tool-use
# prompt (Anthropic documents at most 530 tokens), and each built-in tool its definition
# (Anthropic's computer tool: 735 tokens plus a 466-499 token system prompt).
RESPONSES_OVERHEAD_TOKENS = 160
THINKING_OVERHEAD_TOKENS = 128
BUILTIN_TOOL_TOKENS = 1000
SERVER_TOOL_RESULT_TOKENS = 10_000
"""Input a server-side tool call (web search or fetch, code execution, file search, URL
context) may feed back to the model, and one more sampling step re-reads the prompt. The
largest single call in the recordings added about 7,700 tokens: a typical ceiling, not a
proven one."""
# Largest prompt each provider's models accept, for parts whose size cannot be known when
# the catalog gives no context window.
_LARGEST_CONTEXT = {"openai": 1_050_000, "anthropic": 1_000_000, "google": 2_097_152}

_IMAGE_PARTS = frozenset({"image", "image_url", "input_image", "image_file"})
_AUDIO_PARTS = frozenset({"audio", "input_audio"})
_GEMINI_BLOBS = ("inlineData", "inline_data")
_GEMINI_FILES = ("fileData", "file_data")
# A Gemini part's own settings, read with its media (not prompt text).
_PART_SETTINGS = frozenset(
    {"videoMetadata", "video_metadata", "mediaResolution", "media_resolution"}
)
_UPSTREAM_KEYS = ("previous_response_id", "conversation", "cachedContent", "cached_content")
# Tools the provider runs itself, whose results come back into the prompt (the advisor
# tool's sub-inference is billed at the advisor model's own prices, not bounded here).
_RESULT_TOOLS = (
    "advisor",
    "web_search",
    "web_fetch",
    "code_execution",
    "code_interpreter",
    "file_search",
    "tool_search",
    "google_search",
    "googleSearch",
    "url_context",
    "urlContext",
    "codeExecution",
    "fileSearch",
    "googleMaps",
    "google_maps",
)
_GEMINI_BUILTINS = frozenset(_RESULT_TOOLS) | {
    "googleSearchRetrieval",
    "google_search_retrieval",
    "computerUse",
    "computer_use",
}


def _mime_kind(mime: str) -> str:
    """image / audio / video / pdf / text / other, from a MIME type."""
    mime = mime.lower()
    if mime.startswith("image/"):
        return "image"
    if mime.startswith("audio/"):
        return "audio"
    if mime.startswith("video/"):
        return "video"
    if mime == "application/pdf":
        return "pdf"
    if mime.startswith("text/") or mime in (
        "application/json",
        "application/xml",
        "application/x-javascript",
        "application/x-python",
    ):
        return "text"
    return "other"


def _sniff(blob: Blob) -> str:
    """The kind of an untyped payload, from its first bytes."""
    head = blob.read(0, 12)
    if head.startswith(b"%PDF"):
        return "pdf"
    if image_size(blob) is not None:
        return "image"
    if (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or head[:3] == b"ID3":
        return "audio"
    if head[4:8] in (b"ftyp", b"moov"):
        return "video"
    return "other"


def _resolution(value: Any) -> str | None:
    """A Gemini media resolution: "MEDIA_RESOLUTION_HIGH" or {"level": ...}."""
    if isinstance(value, Mapping):
        value = value.get("level")
    return value if isinstance(value, str) else None


def _offset_seconds(value: Any) -> float | None:
    """Seconds from a proto Duration ("12.5s") or a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    if isinstance(value, Mapping):
        seconds = value.get("seconds", 0)
        nanos = value.get("nanos", 0)
        if isinstance(seconds, (int, float, str)) and isinstance(nanos, (int, float)):
            try:
                return float(seconds) + nanos / 1e9
            except ValueError:
                return None
    return None


class _Bound:
    """One walk over a request body: text, media and unknown parts."""

    __slots__ = ("chars", "hard", "model", "provider", "resolution", "soft", "tokens", "unknown")

    def __init__(self, provider: str, model: str, resolution: str | None) -> None:
        self.provider = provider
        self.model = model
        self.resolution = resolution
        self.chars = self.soft = self.hard = self.tokens = 0
        self.unknown = 0  # parts whose size the request does not carry

    def text(self, value: str) -> None:
        if value.startswith("data:") and ";base64," in value[:256]:
            comma = value.index(",")
            self.payload(value, comma + 1, value[5 : value.index(";")])
            return
        data = value.encode("utf-8", "surrogatepass")
        soft = len(data.translate(None, _NOT_SOFT))
        self.chars += len(value)
        self.soft += soft
        self.hard += len(data) - soft

    def text_tokens(self) -> int:
        return max(-(-self.chars // 3), self.hard + -(-self.soft * 2 // 7))

    # -- media --

    def payload(
        self,
        text: str,
        start: int,
        mime: str | None,
        *,
        detail: str | None = None,
        resolution: str | None = None,
        meta: Mapping | None = None,
    ) -> None:
        """An inline base64 payload (text[start:]) of the given MIME type."""
        blob = Blob(text, start)
        kind = _mime_kind(mime) if mime else _sniff(blob)
        if kind == "other":
            kind = _sniff(blob)
        resolution = resolution or self.resolution
        if kind == "image":
            self.tokens += self.image(image_size(blob), detail, resolution)
        elif kind == "pdf":
            self.tokens += self.pdf(pdf_info(blob), blob.size, resolution)
        elif kind == "audio":
            seconds = audio_seconds(blob)
            if seconds is None:
                seconds = blob.size / LOWEST_AUDIO_BYTES_PER_SECOND
            self.tokens += audio_tokens(self.provider, seconds)
        elif kind == "video":
            seconds = video_seconds(blob)
            if seconds is None:
                seconds = blob.size / LOWEST_VIDEO_BYTES_PER_SECOND
            self.tokens += self.video(seconds, meta, resolution)
        else:
            # Text sent as a file (Gemini reads it as text) or bytes we cannot read: a
            # token never covers less than a byte.
            self.tokens += blob.size

    def image(
        self, size: tuple[int, int] | None, detail: str | None, resolution: str | None
    ) -> int:
        if self.provider == "openai":
            return openai_image_tokens(self.model, size, detail)
        if self.provider == "anthropic":
            return anthropic_image_tokens(self.model, size)
        return gemini_image_tokens(self.model, size, resolution)

    def pdf(self, info: PdfInfo | None, size: int, resolution: str | None) -> int:
        most = MAX_PDF_PAGES.get(self.provider, 1000)
        # Unreadable (encrypted, object streams too large): as many pages as could fit.
        pages = min(info.pages if info else size // 30 + 1, most)
        aspect = info.aspect if info else 4.0
        per_page = pdf_page_tokens(self.provider, self.model, aspect, resolution)
        return pages * per_page

    def video(self, seconds: float, meta: Mapping | None, resolution: str | None) -> int:
        fps = 1.0
        if meta:
            start = _offset_seconds(meta.get("startOffset", meta.get("start_offset"))) or 0.0
            end = _offset_seconds(meta.get("endOffset", meta.get("end_offset")))
            if end is not None and end > start:
                seconds = min(seconds, end - start)
            rate = meta.get("fps")
            if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
                fps = float(rate)
        return video_tokens(self.model, seconds, fps, resolution)

    def reference(
        self,
        kind: str,
        *,
        detail: str | None = None,
        resolution: str | None = None,
        meta: Any = None,
    ) -> None:
        """A part given by URL or file id: its bytes are not in the request."""
        if kind == "image":
            self.tokens += self.image(None, detail, resolution or self.resolution)
            return
        if kind == "video" and isinstance(meta, Mapping):
            start = _offset_seconds(meta.get("startOffset", meta.get("start_offset"))) or 0.0
            end = _offset_seconds(meta.get("endOffset", meta.get("end_offset")))
            if end is not None and end > start:
                self.tokens += self.video(end - start, meta, resolution or self.resolution)
                return
        self.unknown += 1

    def part(self, node: Mapping, kind: str) -> None:
        """A typed content part (OpenAI, Anthropic): image, audio or file."""
        if kind in _IMAGE_PARTS:
            detail = node.get("detail")
            url: Any = node.get("image_url")
            if isinstance(url, Mapping):
                detail = url.get("detail", detail)
                url = url.get("url")
            source = node.get("source")
            if isinstance(source, Mapping):  # Anthropic
                if source.get("type") == "base64" and isinstance(source.get("data"), str):
                    self.payload(source["data"], 0, source.get("media_type") or "image/*")
                else:
                    self.reference("image")
                return
            if isinstance(url, str) and url.startswith("data:") and ";base64," in url[:256]:
                comma = url.index(",")
                self.payload(url, comma + 1, url[5 : url.index(";")] or "image/*", detail=detail)
            else:
                self.reference("image", detail=detail if isinstance(detail, str) else None)
            return
        if kind in _AUDIO_PARTS:
            audio = node.get("input_audio", node.get("audio"))
            data = audio.get("data") if isinstance(audio, Mapping) else None
            if isinstance(data, str):
                fmt = audio.get("format") if isinstance(audio, Mapping) else None
                self.payload(data, 0, f"audio/{fmt}" if isinstance(fmt, str) else "audio/*")
            else:
                self.reference("audio")
            return
        # Files and documents.
        source = node.get("source")
        if isinstance(source, Mapping):  # Anthropic document
            stype = source.get("type")
            if stype == "base64" and isinstance(source.get("data"), str):
                self.payload(source["data"], 0, source.get("media_type") or "application/pdf")
            elif stype in ("text", "content"):
                self.walk(source, schema=False)
            else:
                self.reference("pdf")
            # Titles and context are prompt text too.
            for key in ("title", "context"):
                if isinstance(node.get(key), str):
                    self.text(node[key])
            return
        file: Mapping = node["file"] if isinstance(node.get("file"), Mapping) else node
        data = file.get("file_data")
        if isinstance(data, str):
            if data.startswith("data:") and ";base64," in data[:256]:
                comma = data.index(",")
                self.payload(data, comma + 1, data[5 : data.index(";")])
            else:
                name = file.get("filename")
                pdf = isinstance(name, str) and name.lower().endswith(".pdf")
                self.payload(data, 0, "application/pdf" if pdf else None)
        else:
            self.reference("pdf")
        if isinstance(file.get("filename"), str):
            self.text(file["filename"])

    def gemini(self, node: Mapping, key: str) -> None:
        """A Gemini part's inlineData / fileData, with the part's own settings."""
        value = node.get(key)
        if not isinstance(value, Mapping):
            return
        mime = value.get("mimeType", value.get("mime_type"))
        mime = mime if isinstance(mime, str) else None
        resolution = _resolution(node.get("mediaResolution", node.get("media_resolution")))
        meta = node.get("videoMetadata", node.get("video_metadata"))
        meta = meta if isinstance(meta, Mapping) else None
        if key in _GEMINI_BLOBS:
            data = value.get("data")
            if isinstance(data, str):
                self.payload(data, 0, mime, resolution=resolution, meta=meta)
            return
        kind = _mime_kind(mime) if mime else "other"
        uri = value.get("fileUri", value.get("file_uri"))
        if isinstance(uri, str) and ("youtube.com" in uri or "youtu.be" in uri):
            kind = "video"
        self.reference(kind, resolution=resolution, meta=meta)

    # -- the walk --

    def walk(self, root: Any, schema: bool) -> None:
        """Count everything under `root`; never raises on odd bodies."""
        if isinstance(root, str):
            self.text(root)
            return
        stack: list[Any] = [root]
        visits = 0
        try:
            while stack:
                node = stack.pop()
                visits += 1
                if visits > _MAX_CONTAINERS:
                    break
                if type(node) is dict or isinstance(node, Mapping):
                    if schema:
                        for key, value in node.items():
                            if type(key) is str:
                                self.text(key)
                            if type(value) is str:
                                self.text(value)
                            elif isinstance(value, (dict, list, tuple, Mapping)):
                                stack.append(value)
                        continue
                    kind = node.get("type")
                    if isinstance(kind, str) and kind in _MEDIA_TYPES and _is_media(node):
                        self.part(node, kind)
                        continue
                    for key, value in node.items():
                        if key in _SKIP_KEYS:
                            continue
                        if key in _GEMINI_BLOBS or key in _GEMINI_FILES:
                            self.gemini(node, key)
                        elif key in _PART_SETTINGS:
                            continue
                        elif type(value) is str or isinstance(value, str):
                            self.text(value)
                        elif isinstance(value, (dict, list, tuple, Mapping)):
                            stack.append(value)
                else:
                    for item in node:
                        if type(item) is str or isinstance(item, str):
                            self.text(item)
                        elif type(item) is int:
                            self.tokens += 1  # token-id arrays
                        elif isinstance(item, (dict, list, tuple, Mapping)):
                            stack.append(item)
        except Exception:
            pass  # an exotic Mapping that fails on access: what was counted stands


def _provider_of(provider: str | None, wire: str | None) -> str:
    """The billing provider ("openai", "anthropic", "google"): the card's, else the wire's."""
    for name in (provider, (wire or "").split(".", 1)[0]):
        if name in ("openai", "anthropic", "google"):
            return name
        if name in ("gemini", "vertex", "vertexai"):
            return "google"
    return "openai"


def _tools_tokens(provider: str, body: Mapping, bound: _Bound) -> int:
    """The tool-use prompt and built-in tool definitions; MCP tool lists are unknown."""
    tools = body.get("tools")
    if body.get("mcp_servers"):
        bound.unknown += 1  # tools listed by a remote server: their size is unknown
    if not tools and not body.get("functions"):
        return 0
    tokens = TOOL_OVERHEAD_TOKENS
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, Mapping):
            continue
        kind = tool.get("type")
        if kind == "mcp" or "mcp_servers" in tool or "mcpServers" in tool:
            bound.unknown += 1
            continue
        if provider == "anthropic":
            builtin = isinstance(kind, str) and kind != "custom" and "input_schema" not in tool
        elif provider == "openai":
            builtin = isinstance(kind, str) and kind not in ("function", "custom")
        else:
            builtin = any(k in _GEMINI_BUILTINS for k in tool)
        if builtin:
            tokens += BUILTIN_TOOL_TOKENS
    return tokens


def _result_tool_calls(body: Mapping) -> int:
    """How many server-side tool calls may feed results back into the prompt."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return 0
    calls = 0
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        names = [str(tool.get("type") or ""), *(k for k in tool if isinstance(k, str))]
        if any(n.startswith(_RESULT_TOOLS) for n in names):
            calls += _positive_int(tool.get("max_uses")) or _ASSUMED_TOOL_CALLS
    most = _positive_int(body.get("max_tool_calls"))  # OpenAI Responses
    return min(calls, most) if most else calls


def input_token_bound(
    body: Mapping | None,
    *,
    provider: str | None = None,
    model: str | None = None,
    wire: str | None = None,
    context_window: int | None = None,
    reference_tokens: int | None = None,
) -> int:
    """The most prompt tokens a provider can bill for `body` on `model`.

    Text, per-message and per-request overhead, tool prompts, media costed from the
    request's own bytes (core/media.py), and for parts whose size the request does not
    carry (files by id or URL, YouTube videos, prompts held upstream) one context window
    of `model` (or `reference_tokens`, when the operator sets a smaller hold).
    """
    if isinstance(body, (list, tuple)):
        body = {"input": body}
    if not isinstance(body, Mapping):
        return 0
    name = _provider_of(provider, wire)
    config = generation_config(body)
    bound = _Bound(
        name,
        model or str(body.get("model") or ""),
        _resolution(config.get("mediaResolution", config.get("media_resolution"))),
    )
    overhead = RESPONSES_OVERHEAD_TOKENS if wire == "openai.responses" else REQUEST_OVERHEAD_TOKENS
    try:
        for key, value in body.items():
            if key in _UPSTREAM_KEYS and value:
                bound.unknown += 1  # the conversation or cache the prompt continues
                continue
            kind = _PROMPT_KEYS.get(key)
            if kind is None or value is None:
                continue
            if key == "prompt" and isinstance(value, Mapping) and value.get("id"):
                bound.unknown += 1  # a stored prompt template (Responses API)
                bound.walk(value.get("variables"), schema=False)
                continue
            if kind == _SCHEMA:
                if not isinstance(value, (dict, list, tuple, Mapping)):
                    continue
            elif kind == _MESSAGES and isinstance(value, (list, tuple)):
                for item in value:
                    if type(item) is dict or isinstance(item, Mapping):
                        overhead += MESSAGE_OVERHEAD_TOKENS
            elif isinstance(value, (str, dict, list, tuple, Mapping)):
                overhead += MESSAGE_OVERHEAD_TOKENS
            bound.walk(value, schema=kind == _SCHEMA)
        overhead += _tools_tokens(name, body, bound)
        thinking = body.get("thinking")
        if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
            overhead += THINKING_OVERHEAD_TOKENS
    except Exception:
        pass  # a Mapping whose iteration fails: what was counted so far stands
    prompt = bound.text_tokens() + bound.tokens + overhead
    if bound.unknown:
        # All parts of unknown size together fit in one context window (a longer prompt is
        # refused, not billed).
        window = context_window or _LARGEST_CONTEXT.get(name, 2_097_152)
        prompt += window if reference_tokens is None else reference_tokens
    # Server-side tools: each call adds its results and one more pass over the prompt;
    # compaction (Anthropic context management) adds one pass over the whole prompt.
    calls = _result_tool_calls(body)
    extra = calls * (SERVER_TOOL_RESULT_TOKENS + prompt)
    management = body.get("context_management")
    edits = management.get("edits") if isinstance(management, Mapping) else None
    if isinstance(edits, list) and any(
        isinstance(e, Mapping) and str(e.get("type", "")).startswith("compact") for e in edits
    ):
        extra += prompt
    return prompt + extra


# --- output cap and reservation -----------------------------------------------------------

_OUTPUT_KEYS = (
    "max_completion_tokens",  # OpenAI chat (current)
    "max_tokens",  # OpenAI chat (legacy), completions, Anthropic
    "max_output_tokens",  # OpenAI Responses
    "maxOutputTokens",
)
_GENERATION_OUTPUT_KEYS = ("maxOutputTokens", "max_output_tokens")
_MAX_CHOICES = 128  # OpenAI caps n at 128


def _positive_int(value: Any) -> int | None:
    """A positive integer from an int, an integral float or a digit string (proto3 JSON)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value >= 1 and value.is_integer() else None
    if isinstance(value, str) and value.strip().isdigit():
        parsed = int(value.strip())
        return parsed if parsed > 0 else None
    return None


def max_output_tokens(body: Mapping | None, default: int) -> int:
    """The request's output cap (the largest one it names), else `default`."""
    if not isinstance(body, Mapping):
        return default
    try:
        found = [_positive_int(body.get(k)) for k in _OUTPUT_KEYS]
        config = generation_config(body)
        found += [_positive_int(config.get(k)) for k in _GENERATION_OUTPUT_KEYS]
    except Exception:
        return default
    caps = [v for v in found if v is not None]
    # Worst case: if a client sends two spellings, the larger one may be the one honoured.
    return max(caps) if caps else default


def _choices(body: Mapping | None) -> int:
    """How many completions one call generates (OpenAI n/best_of, Gemini candidateCount)."""
    if not isinstance(body, Mapping):
        return 1
    try:
        config = generation_config(body)
        found = (
            _positive_int(body.get("n")),
            _positive_int(body.get("best_of")),
            _positive_int(config.get("candidateCount")),
            _positive_int(config.get("candidate_count")),
        )
    except Exception:
        return 1
    return min(max([v for v in found if v is not None] or [1]), _MAX_CHOICES)


# Server-side tools a request may run, and how many calls of each a request is assumed
# to make at most when it sets no limit (Anthropic's max_uses is honoured).
_SERVER_TOOLS = (
    ("web_search", "web_searches"),
    ("google_search", "web_searches"),
    ("googleSearch", "web_searches"),
    ("file_search", "storage_searches"),
)
_ASSUMED_TOOL_CALLS = 10
# Output tokens one generated image may take (gpt-image, high quality, largest size).
_IMAGE_TOKENS = 6_300
# Transcription input: audio tokens a second (gpt-4o-transcribe's list prices put a minute at
# about 1,000 tokens, 17 a second; 25 leaves room). The upload's duration is bounded by its
# size at the lowest bitrate a clip plausibly has (media.LOWEST_AUDIO_BYTES_PER_SECOND).
_TRANSCRIPTION_TOKENS_PER_SECOND = 25
REQUEST_OVERHEAD_TOKENS = 16
"""Tokens a provider bills beyond the text of a request: chat formatting and reply priming
(a two-word chat is billed 8 to 12 tokens; the text estimate says 7)."""
TOOL_OVERHEAD_TOKENS = 800
"""Tokens the provider adds when tools are offered (Anthropic's tool-use system prompt is up
to ~550 tokens, its computer-use and text-editor tools more)."""


def _tool_calls(body: Mapping) -> dict[str, int]:
    """The server-tool calls a request may make, by catalog unit."""
    tools = body.get("tools")
    out: dict[str, int] = {}
    if not isinstance(tools, list):
        return out
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        kind = str(tool.get("type") or "")
        names = [kind, *(k for k in tool if isinstance(k, str))]
        for name, unit in _SERVER_TOOLS:
            if any(n.startswith(name) for n in names):
                limit = _positive_int(tool.get("max_uses")) or _ASSUMED_TOOL_CALLS
                out[unit] = out.get(unit, 0) + limit
                break
    return out


def worst_case_usd(
    card: RateCard,
    body: Mapping | None,
    *,
    wire: str | None = None,
    default_output_tokens: int,
    raw_size: int = 0,
    reference_tokens: int | None = None,
) -> Decimal:
    """The most a call can cost at `card`: the prompt's bound (`input_token_bound`) and the
    output cap at the dearest rates that may apply, plus the server-tool calls it may make.
    `reference_tokens`: the hold for parts of unknown size (default: a context window)."""
    body = body if isinstance(body, Mapping) else {}
    prompt = input_token_bound(
        body,
        provider=card.provider,
        model=card.model,
        wire=wire,
        context_window=card.context_window,
        reference_tokens=reference_tokens,
    )
    output = max_output_tokens(body, default_output_tokens) * _choices(body)
    extra = Decimal(0)
    if wire == "openai.images":
        output = _IMAGE_TOKENS * _choices(body)
    elif wire == "openai.speech":
        text = body.get("input")
        chars = len(text) if isinstance(text, str) else 0
        extra += card.tool_fee("input_characters") * chars
        # Output: speech audio, at most 2 tokens a character (a typical ceiling).
        output = 2 * chars
    elif wire == "openai.transcription":
        # `body` holds the form fields; the upload's size bounds the clip's duration.
        seconds = raw_size // LOWEST_AUDIO_BYTES_PER_SECOND + 1
        for unit in ("audio_seconds", "input_audio_seconds"):
            if card.rate(unit) is not None:
                extra += card.tool_fee(unit) * seconds
                break
        prompt += seconds * _TRANSCRIPTION_TOKENS_PER_SECOND
    # Input at the dearest token rate (cache writes, audio) and output likewise: the
    # request may write its whole prompt to the cache or ask for audio.
    in_p = card.worst_rate("input", prompt)
    out_p = card.worst_rate("output", prompt)
    total = (prompt * in_p + max(output, 0) * out_p) / 1_000_000 + extra
    for unit, calls in _tool_calls(body).items():
        total += card.tool_fee(unit) * calls
    return total


def reservation_units(
    card: RateCard | None,
    body: Mapping | None,
    *,
    default_output_tokens: int,
    unpriced_units: int,
    wire: str | None = None,
    raw_size: int = 0,
    reference_tokens: int | None = None,
) -> int:
    """Worst-case cost of a call in counter units; `unpriced_units` when it has no price."""
    if card is None:
        return unpriced_units
    worst = worst_case_usd(
        card,
        body,
        wire=wire,
        default_output_tokens=default_output_tokens,
        raw_size=raw_size,
        reference_tokens=reference_tokens,
    )
    # Rounded up: a reservation must never fall short of the call's cost.
    return int(worst.scaleb(_SCALE_EXP).to_integral_value(rounding=ROUND_CEILING))


# --- thresholds and alert texts -----------------------------------------------------------


def severity_for(percent: int) -> str:
    """Alert severity: "info" below 90%, "warning" from 90% to 99%, "critical" from 100%."""
    if percent >= 100:
        return "critical"
    if percent >= 90:
        return "warning"
    return "info"


@dataclass(frozen=True, slots=True)
class Threshold:
    """A budget threshold (percent of the monthly budget) and its alert severity."""

    percent: int
    severity: str


def crossed_thresholds(
    before_units: int, after_units: int, budget_units: int, thresholds: Iterable[int]
) -> list[Threshold]:
    """Thresholds spend crossed going from `before` to `after` (reaching one counts), ascending."""
    if budget_units <= 0 or after_units <= before_units:
        return []
    crossed = []
    for percent in sorted({t for t in thresholds if type(t) is int and t > 0}):
        # Integer arithmetic: "spend reaches percent% of budget" is spend*100 >= percent*budget.
        line = percent * budget_units
        if before_units * 100 < line <= after_units * 100:
            crossed.append(Threshold(percent, severity_for(percent)))
    return crossed


def alert_message(
    *,
    key_name: str,
    percent: int,
    spent_usd: float,
    budget_usd: float,
    month: str,
    locale: str = "en",
) -> str:
    """A one-line budget alert in English, or Korean when `locale` starts with "ko"."""
    figures = f"{format_money(spent_usd)} / {format_money(budget_usd)}"
    korean = isinstance(locale, str) and locale.strip().lower().startswith("ko")
    if percent >= 100:
        if korean:
            return (
                f"예산 소진: '{key_name}' 키가 {month} 월 예산을 모두 사용했습니다 "
                f"({percent}%, {figures})."
            )
        return (
            f"Budget exhausted for key '{key_name}': {percent}% of the monthly budget used "
            f"({figures}) in {month}."
        )
    if korean:
        return (
            f"예산 알림: '{key_name}' 키가 {month} 월 예산의 {percent}%를 사용했습니다 ({figures})."
        )
    return (
        f"Budget alert for key '{key_name}': {percent}% of the monthly budget used "
        f"({figures}) in {month}."
    )


def unpriced_model_message(model: str | None) -> str:
    """Why a budgeted key's call to a model without a price is refused, and the two ways out."""
    name = f"'{model}'" if model else "This model"
    return (
        f"{name} has no price in lcm-jupyter's price table, so its cost cannot be held "
        "against this key's monthly budget. Set its price (PUT lcm/api/pricing, or "
        "lcm_jupyter.ui.PricingTable()), or set LCMExtension.unpriced_reserve_usd to hold "
        "a flat amount for calls to unpriced models."
    )


def budget_exceeded_message(
    *,
    spent_usd: float,
    reserved_usd: float,
    budget_usd: float,
    month: str,
    whose: str = "",
    advice: str = "Raise monthly_budget_usd or wait for next month.",
) -> str:
    """The 429 budget_exceeded error text: spend, holds of calls in flight, and the limit.
    `whose`: the budget's owner when it is not the key's ("user alice's ")."""
    in_flight = (
        f" (+{format_money(reserved_usd)} reserved by calls in flight)" if reserved_usd > 0 else ""
    )
    figures = f"{format_money(spent_usd)} spent{in_flight} of {format_money(budget_usd)}"
    budget = f"{whose}monthly budget" if whose else "Monthly budget"
    if spent_usd >= budget_usd:
        head = f"{budget} exhausted for {month}: {figures}."
    else:
        # Under budget but this call's worst case does not fit in what is left.
        head = f"{budget} for {month} has too little left for this call: {figures}."
    return f"{head} {advice}"


def cell_budget_message(*, spent_usd: float, reserved_usd: float, budget_usd: float) -> str:
    """The 429 budget_exceeded error text of a cell's own budget (`%%lcm budget`)."""
    in_flight = (
        f" (+{format_money(reserved_usd)} reserved by calls in flight)" if reserved_usd > 0 else ""
    )
    return (
        f"This cell's budget (%%lcm budget) has too little left for this call: "
        f"{format_money(spent_usd)} spent{in_flight} of {format_money(budget_usd)}."
    )


_SLACK_COLORS = {"info": "#439FE0", "warning": "warning", "critical": "danger"}


def _slack_escape(text: str) -> str:
    """Escape Slack's control characters so a key name cannot @-mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(
    *,
    key_name: str,
    key_id: int,
    percent: int,
    severity: str,
    message: str,
    spent_usd: float,
    budget_usd: float,
    month: str,
) -> dict:
    """A Slack-compatible incoming-webhook body with the alert's fields under "lcm"."""
    text = _slack_escape(message)
    return {
        "text": text,
        "attachments": [
            {
                "fallback": text,
                "color": _SLACK_COLORS.get(severity, "#439FE0"),
                "fields": [
                    {"title": "Key", "value": _slack_escape(key_name), "short": True},
                    {"title": "Month", "value": month, "short": True},
                    {"title": "Spent", "value": format_money(spent_usd), "short": True},
                    {"title": "Budget", "value": format_money(budget_usd), "short": True},
                    {"title": "Threshold", "value": f"{percent}%", "short": True},
                    {"title": "Severity", "value": severity, "short": True},
                ],
            }
        ],
        # Raw values for non-Slack consumers (Slack ignores unknown top-level fields).
        "lcm": {
            "event": "budget_alert",
            "key_id": key_id,
            "key_name": key_name,
            "month": month,
            "percent": percent,
            "severity": severity,
            "spent_usd": spent_usd,
            "budget_usd": budget_usd,
            "message": message,
        },
    }
