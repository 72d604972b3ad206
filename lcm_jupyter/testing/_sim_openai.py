"""OpenAI wire formats for the simulator: Chat Completions, Completions, Responses, Embeddings,
Images and Audio (speech, transcriptions).

Provider rules on top of the shared text model:

* reasoning models (o1*, o3*, o4*, gpt-5* except *-chat*) spend 2 reasoning tokens per reply
  token, reported in ``completion_tokens_details.reasoning_tokens`` / ``output_tokens_details``
  and included in ``completion_tokens`` / ``output_tokens``; ``reasoning_effort`` (or
  ``reasoning.effort``) "none" turns that off;
* prompt caching: a prompt of at least 1024 tokens that shares a prefix of P characters with an
  earlier prompt to the same model reports ``cached_tokens`` = the largest multiple of 128 not
  above min(P // 4, prompt_tokens), or 0 when that is under 1024. The prefix is taken over the
  messages rendered as ``"{role}: {texts joined by space}\\n"``;
* cache writes: models from gpt-5.6 on (gpt-5.6*, gpt-6*, ...) report ``cache_write_tokens`` =
  the cacheable prefix (min(len(rendered) // 4, prompt_tokens) cut to 128-token blocks, 0 under
  1024) minus the ``cached_tokens`` read, so a prompt seen first writes and its repeat reads.
  As recorded, chat sends the field on those models only and Responses from gpt-5.5 on (0 on
  gpt-5.5); older models do not send it;
* Responses server tools: a ``web_search*`` tool makes one ``web_search_call`` item and a
  ``file_search`` tool one ``file_search_call`` item, each feeding ``TOOL_RESULT_TOKENS`` result
  tokens back into ``input_tokens``. A top-level ``tool_usage`` ({image_gen: zeros, web_search:
  {num_requests}}) is sent from gpt-5.5 on and with any web search;
* background Responses (``background: true``) answer ``queued`` (usage null, service_tier
  "auto"); the first ``GET /v1/responses/{id}`` after that answers ``in_progress``, every later
  one the finished response (usage, service_tier "default"). ``GET ...?stream=true`` replays the
  events after ``starting_after``. The last ``STORED_RESPONSES`` responses (background, or
  ``store`` not false) are kept; an unknown id is a 404;
* images: gpt-image models report ``input_tokens`` = the prompt's text tokens and
  ``output_tokens`` = ``IMAGE_OUTPUT_TOKENS[quality][size]`` per image (OpenAI's table; "auto"
  is high quality at 1024x1024); dall-e models report no usage;
* speech: ``SPEECH_TOKENS_PER_TOKEN`` audio tokens per token of ``input``, reported by the
  ``stream_format: "sse"`` stream's ``speech.audio.done`` event only;
* transcriptions: an upload of B bytes lasts B / ``AUDIO_BYTES_PER_SECOND`` seconds, billed as
  S = max(1, ceil(that)) seconds. whisper-1 reports ``{type: duration, seconds: S}``; the
  *-transcribe models report tokens: ``TRANSCRIBE_TOKENS_PER_SECOND`` * S audio tokens plus the
  ``prompt``'s text tokens in, the transcript's tokens out;
* legacy completions default ``max_tokens`` to 16, as the real endpoint does.
"""

from __future__ import annotations

import array
import base64
import hashlib
import json
import math
import re
import struct
import sys
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from .simulator import (
    Generation,
    RecordedRequest,
    Reply,
    count_tokens,
    embedding_vector,
    fit,
    json_reply,
    message_tokens,
    new_id,
    positive_int,
    simulated_reply,
    split_text,
    stream_reply,
    texts_in,
)

NAME = "openai"
CACHE_MIN_TOKENS = 1024
CACHE_BLOCK = 128
TOOL_RESULT_TOKENS = 300
STORED_RESPONSES = 256
IMAGE_OUTPUT_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
SPEECH_TOKENS_PER_TOKEN = 5
AUDIO_BYTES_PER_SECOND = 16000
TRANSCRIBE_TOKENS_PER_SECOND = 10
FORM_ENDPOINTS = frozenset({"transcriptions"})
"""Endpoints that take multipart/form-data: the simulator skips its JSON check for them."""
_REMEMBERED_PROMPTS = 64
_FINGERPRINT = "fp_sim0000001"
_SSE = "text/event-stream; charset=utf-8"
_ROUTES = (
    ("POST", "/v1/chat/completions", "chat"),
    ("POST", "/v1/completions", "completions"),
    ("POST", "/v1/responses", "responses"),
    ("POST", "/v1/embeddings", "embeddings"),
    ("POST", "/v1/images/generations", "images"),
    ("POST", "/v1/audio/speech", "speech"),
    ("POST", "/v1/audio/transcriptions", "transcriptions"),
    ("GET", "/v1/models", "models"),
)
_STORED_PATH = re.compile(r"/v1/responses/([^/]+)$")
_GPT_VERSION = re.compile(r"gpt-(\d+)(?:\.(\d+))?")
_AUDIO_FORMATS = {
    "mp3": ("audio/mpeg", b"ID3\x04\x00\x00\x00\x00\x00\x00"),
    "opus": ("audio/opus", b"OggS"),
    "aac": ("audio/aac", b"\xff\xf1"),
    "flac": ("audio/flac", b"fLaC"),
    "wav": ("audio/wav", b"RIFF"),
    "pcm": ("audio/pcm", b""),
}
_AUDIO_BYTES_PER_TOKEN = 32
_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3", "o4-mini", "text-embedding-3-small")
_EMBEDDING_DIMENSIONS = {"text-embedding-3-large": 3072}
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


# --- routing and errors ---------------------------------------------------------------------


def match(record: RecordedRequest) -> str | None:
    """The endpoint `record` asks for, if it is an OpenAI one."""
    for method, suffix, endpoint in _ROUTES:
        if record.method == method and record.path.endswith(suffix):
            return endpoint
    if record.method == "GET" and _STORED_PATH.search(record.path):
        return "retrieve"
    return None


def owns(record: RecordedRequest) -> bool:
    """Whether an unknown path should get an OpenAI-shaped 404 (any other /v1/ path)."""
    return "/v1/" in record.path


def _headers() -> dict[str, str]:
    return {
        "x-request-id": new_id("req_", 32),
        "openai-version": "2020-10-01",
        "openai-processing-ms": "1",
        "openai-organization": "user-simulated",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": "30000000",
        "x-ratelimit-remaining-tokens": "29999000",
        "x-ratelimit-reset-tokens": "2ms",
    }


def error(
    status: int,
    message: str,
    endpoint: str | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> Reply:
    """OpenAI's error body {"error": {message, type, param, code}} with an x-request-id."""
    etype, default_code = _ERROR_TYPES.get(status, ("server_error", None))
    if status < 500 and status not in _ERROR_TYPES:
        etype = "invalid_request_error"
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    if code is None:
        body["error"]["code"] = default_code
    return json_reply(status, body, _headers(), pretty=True)


def authorize(record: RecordedRequest, keys: frozenset[str], endpoint: str | None) -> Reply | None:
    """401 unless `Authorization: Bearer <key>` names one of `keys`."""
    auth = record.headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return error(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="missing_api_key",
        )
    key = auth[7:].strip()
    if key in keys:
        return None
    shown = f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"
    return error(
        401,
        f"Incorrect API key provided: {shown}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def handle(endpoint: str, record: RecordedRequest, state: dict[str, Any], chunks: int) -> Reply:
    """Answer one OpenAI request."""
    body = record.body or {}
    if endpoint == "models":
        return _models()
    if endpoint == "retrieve":
        return _retrieve(record, state)
    if endpoint == "transcriptions":
        return _transcriptions(record, chunks)
    if endpoint == "images":
        return _images(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "you must provide a model parameter", param="model")
    if endpoint == "chat":
        return _chat(body, model, state, chunks)
    if endpoint == "completions":
        return _completions(body, model, chunks)
    if endpoint == "responses":
        return _responses(body, model, state, chunks)
    if endpoint == "speech":
        return _speech(body, model, chunks)
    return _embeddings(body, model)


# --- shared rules ---------------------------------------------------------------------------


def is_reasoning_model(model: str) -> bool:
    """Whether `model` bills hidden reasoning tokens."""
    name = model.rsplit(":", 1)[-1] if model.startswith("ft:") else model
    return name.startswith(("o1", "o3", "o4", "gpt-5")) and "-chat" not in name


def _gpt_version(model: str) -> tuple[int, int]:
    """(major, minor) of a gpt-N[.M]* name, (0, 0) for anything else (o3, gpt-image-1, ...)."""
    name = model.split(":")[1] if model.startswith("ft:") and model.count(":") > 1 else model
    version = _GPT_VERSION.match(name)
    return (int(version.group(1)), int(version.group(2) or 0)) if version else (0, 0)


def writes_cache(model: str) -> bool:
    """Whether `model` reports non-zero cache_write_tokens (gpt-5.6 and later)."""
    return _gpt_version(model) >= (5, 6)


def _newer_responses(model: str) -> bool:
    # gpt-5.5 and later send tool_usage and input_tokens_details.cache_write_tokens (recorded).
    return _gpt_version(model) >= (5, 5)


def _reasoning(model: str, effort: Any, reply: str) -> int:
    if not is_reasoning_model(model) or effort == "none":
        return 0
    return 2 * count_tokens(reply)


def _blocks(tokens: int) -> int:
    blocks = tokens // CACHE_BLOCK * CACHE_BLOCK
    return blocks if blocks >= CACHE_MIN_TOKENS else 0


def _prompt_cache(
    state: dict[str, Any], model: str, rendered: str, prompt_tokens: int
) -> tuple[int, int]:
    """(cached, written) prompt tokens, remembering this prompt for the next requests."""
    prompts: dict[str, deque[str]] = state.setdefault("prompts", {})
    seen = prompts.setdefault(model, deque(maxlen=_REMEMBERED_PROMPTS))
    cached = written = 0
    if prompt_tokens >= CACHE_MIN_TOKENS:
        shared = max((_common_prefix(rendered, old) for old in seen), default=0)
        cached = _blocks(min(shared // 4, prompt_tokens))
        if writes_cache(model):
            # The same measure as the read, so an exact repeat writes nothing.
            written = max(_blocks(min(len(rendered) // 4, prompt_tokens)) - cached, 0)
        seen.append(rendered)
    return cached, written


def _common_prefix(a: str, b: str) -> int:
    # Binary search over slice comparisons: C-speed even for long prompts.
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _render(items: list[Any]) -> str:
    return "".join(
        f"{item.get('role', '') if isinstance(item, dict) else ''}: {' '.join(texts_in(item))}\n"
        for item in items
    )


def _last_user_text(items: list[Any]) -> str:
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return " ".join(texts_in(item))
    return ""


def _chat_usage(prompt: int, cached: int, written: int | None, gen: Generation) -> dict[str, Any]:
    completion = gen.tokens + gen.reasoning_tokens
    details: dict[str, int] = {"cached_tokens": cached, "audio_tokens": 0}
    if written is not None:
        details = {"cached_tokens": cached, "cache_write_tokens": written, "audio_tokens": 0}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": {
            "reasoning_tokens": gen.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _cap(body: dict[str, Any], *names: str, default: int | None = None) -> int | None:
    for name in names:
        if body.get(name) is not None:
            return body[name]
    return default


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    options = body.get("stream_options") or {}
    return bool(options.get("include_usage")), options.get("include_obfuscation", True) is not False


# --- Chat Completions -----------------------------------------------------------------------


def _chat(body: dict[str, Any], model: str, state: dict[str, Any], chunks: int) -> Reply:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error(400, "Missing required parameter: 'messages'.", param="messages")
    cap = _cap(body, "max_completion_tokens", "max_tokens")
    if cap is not None and not positive_int(cap):
        return error(400, "Invalid 'max_completion_tokens': must be a positive integer.")
    prompt = sum(message_tokens(m) for m in messages)
    cached, written = _prompt_cache(state, model, _render(messages), prompt)
    reply = simulated_reply(model, _last_user_text(messages))
    gen = fit(reply, cap, _reasoning(model, body.get("reasoning_effort"), reply))
    usage = _chat_usage(prompt, cached, written if writes_cache(model) else None, gen)
    finish = "length" if gen.truncated else "stop"
    cid, created = new_id("chatcmpl-", 29), int(time.time())
    if not body.get("stream"):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": gen.text,
            "refusal": None,
            "annotations": [],
        }
        completion = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        return json_reply(200, completion, _headers(), pretty=True)

    include_usage, obfuscate = _stream_flags(body)

    def chunk(delta: dict[str, Any], reason: str | None, n: int) -> str:
        out: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
        }
        if include_usage:
            out["usage"] = None
        if obfuscate:
            out["obfuscation"] = "sim" + "x" * (n % 7)
        return _sse(out)

    frames = [chunk({"role": "assistant", "content": "", "refusal": None}, None, 0)]
    if gen.text:
        pieces = split_text(gen.text, chunks)
        frames += [chunk({"content": p}, None, i) for i, p in enumerate(pieces)]
    frames.append(chunk({}, finish, len(frames)))
    if include_usage:
        last = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": [],
            "usage": usage,
        }
        if obfuscate:
            last["obfuscation"] = "sim"
        frames.append(_sse(last))
    frames.append("data: [DONE]\n\n")
    return stream_reply(frames, _headers(), _SSE)


# --- legacy Completions ---------------------------------------------------------------------


def _prompt_texts(prompt: Any) -> tuple[str, int]:
    """The text and token count of a legacy prompt / embedding input (str, [str], tokens)."""
    if isinstance(prompt, str):
        return prompt, count_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return "", len(prompt)
    if isinstance(prompt, list):
        pairs = [_prompt_texts(item) for item in prompt]
        return " ".join(text for text, _ in pairs), sum(tokens for _, tokens in pairs)
    return "", 0


def _completions(body: dict[str, Any], model: str, chunks: int) -> Reply:
    if "prompt" not in body:
        return error(400, "Missing required parameter: 'prompt'.", param="prompt")
    cap = _cap(body, "max_tokens", default=16)
    if not positive_int(cap):
        return error(400, "Invalid 'max_tokens': must be a positive integer.", param="max_tokens")
    text, prompt = _prompt_texts(body["prompt"])
    gen = fit(simulated_reply(model, text), cap)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": gen.tokens,
        "total_tokens": prompt + gen.tokens,
    }
    finish = "length" if gen.truncated else "stop"
    cid, created = new_id("cmpl-", 29), int(time.time())

    def completion(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
        }

    def choice(piece: str, reason: str | None) -> dict[str, Any]:
        return {"text": piece, "index": 0, "logprobs": None, "finish_reason": reason}

    if not body.get("stream"):
        return json_reply(
            200, {**completion([choice(gen.text, finish)]), "usage": usage}, _headers(), pretty=True
        )
    include_usage, _ = _stream_flags(body)
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    pieces = split_text(gen.text, chunks) if gen.text else []
    frames = [_sse({**completion([choice(p, None)]), **extra}) for p in pieces]
    frames.append(_sse({**completion([choice("", finish)]), **extra}))
    if include_usage:
        frames.append(_sse({**completion([]), "usage": usage}))
    frames.append("data: [DONE]\n\n")
    return stream_reply(frames, _headers(), _SSE)


# --- Responses ------------------------------------------------------------------------------


def _server_tools(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The hosted tools the simulated model calls once each: web search and file search."""
    calls = []
    for tool in body.get("tools") or []:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind.startswith("web_search"):
            calls.append(("web_search", tool))
        elif kind == "file_search":
            calls.append(("file_search", tool))
    return calls


def _search_query(prompt: str) -> str:
    return " ".join(prompt.split())[:100] or "latest news"


def _tool_call(kind: str, tool: dict[str, Any], query: str, include: Any) -> dict[str, Any]:
    if kind == "web_search":
        return {
            "id": new_id("ws_", 48),
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": "search", "query": query},
        }
    stores = tool.get("vector_store_ids") or ["vs_simulated"]
    results = None
    # As with the real API, results are only sent back when asked for.
    if isinstance(include, list) and "file_search_call.results" in include:
        results = [
            {
                "attributes": {},
                "file_id": _file_id(str(stores[0])),
                "filename": "document.txt",
                "score": 0.9,
                "text": f"Simulated passage about: {query}",
            }
        ]
    return {
        "id": new_id("fs_", 48),
        "type": "file_search_call",
        "status": "completed",
        "queries": [query],
        "results": results,
    }


def _file_id(store: str) -> str:
    return "file-" + hashlib.sha256(store.encode()).hexdigest()[:22]


def _citation(call: dict[str, Any], text: str) -> dict[str, Any]:
    if call["type"] == "web_search_call":
        query = call["action"]["query"]
        return {
            "type": "url_citation",
            "start_index": 0,
            "end_index": len(text),
            "title": f"Search results for {query}",
            "url": "https://search.simulated.invalid/?q=" + quote(query),
        }
    store = _file_id(call["id"])
    return {"type": "file_citation", "file_id": store, "filename": "document.txt", "index": 0}


def _tool_usage(searches: int) -> dict[str, Any]:
    image_gen = {
        "input_tokens": 0,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"image_tokens": 0, "text_tokens": 0},
        "total_tokens": 0,
    }
    return {"image_gen": image_gen, "web_search": {"num_requests": searches}}


def _responses(body: dict[str, Any], model: str, state: dict[str, Any], chunks: int) -> Reply:
    raw_input = body.get("input")
    if raw_input is None:
        return error(400, "Missing required parameter: 'input'.", param="input")
    items = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input
    if not isinstance(items, list):
        return error(400, "Invalid type for 'input'.", param="input")
    cap = body.get("max_output_tokens")
    if cap is not None and not positive_int(cap):
        return error(400, "Invalid 'max_output_tokens': must be a positive integer.")
    instructions = body.get("instructions")
    prompt = sum(message_tokens(item) for item in items)
    rendered = _render(items)
    if isinstance(instructions, str):
        prompt += message_tokens(instructions)
        rendered = f"system: {instructions}\n{rendered}"
    cached, written = _prompt_cache(state, model, rendered, prompt)
    last_user = _last_user_text(items)
    query = _search_query(last_user)
    calls = [
        _tool_call(kind, tool, query, body.get("include")) for kind, tool in _server_tools(body)
    ]
    # Search results are fed back to the model after the cacheable prompt.
    prompt += TOOL_RESULT_TOKENS * len(calls)
    reply = simulated_reply(model, last_user)
    effort = (body.get("reasoning") or {}).get("effort")
    gen = fit(reply, cap, _reasoning(model, effort, reply))
    output_tokens = gen.tokens + gen.reasoning_tokens
    details = {"cached_tokens": cached}
    if _newer_responses(model):
        details = {"cache_write_tokens": written, "cached_tokens": cached}
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": details,
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": gen.reasoning_tokens},
        "total_tokens": prompt + output_tokens,
    }
    searches = sum(call["type"] == "web_search_call" for call in calls)
    tool_usage = _tool_usage(searches) if searches or _newer_responses(model) else None
    rid, created = new_id("resp_", 48), int(time.time())
    background = body.get("background") is True
    status = "incomplete" if gen.truncated else "completed"
    reasoning_item = (
        {"id": new_id("rs_", 48), "type": "reasoning", "summary": []}
        if is_reasoning_model(model)
        else None
    )
    annotations = [_citation(call, gen.text) for call in calls]
    part = {"type": "output_text", "annotations": annotations, "logprobs": [], "text": gen.text}
    msg_id = new_id("msg_", 48)
    message = {
        "id": msg_id,
        "type": "message",
        "status": status,
        "content": [part],
        "role": "assistant",
    }
    output: list[dict[str, Any]] = [reasoning_item] if reasoning_item else []
    output += [*calls, message]

    shown_effort = effort or ("medium" if reasoning_item else None)

    def response(state_: str, out: list[Any], use: Any, tier: str = "default") -> dict[str, Any]:
        obj = {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": state_,
            "background": background,
            "completed_at": int(time.time()) if state_ == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if state_ == "incomplete"
            else None,
            "instructions": instructions,
            "max_output_tokens": cap,
            "max_tool_calls": None,
            "model": model,
            "output": out,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": shown_effort, "summary": None},
            "safety_identifier": None,
            "service_tier": tier,
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": 0,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": use,
            "user": None,
            "metadata": body.get("metadata") or {},
        }
        if tool_usage is not None and use is not None:
            obj["tool_usage"] = tool_usage
        return obj

    def events() -> list[tuple[str, dict[str, Any]]]:
        # A background run is queued first and reports service_tier "auto" until it is done.
        if background:
            queued = response("queued", [], None, "auto")
            out: list[tuple[str, dict[str, Any]]] = [
                ("response.created", {"response": queued}),
                ("response.queued", {"response": queued}),
                ("response.in_progress", {"response": response("in_progress", [], None, "auto")}),
            ]
        else:
            out = [
                ("response.created", {"response": response("in_progress", [], None)}),
                ("response.in_progress", {"response": response("in_progress", [], None)}),
            ]
        for index, item in enumerate(output[:-1]):
            pending = {**item, "status": "in_progress"} if item is not reasoning_item else item
            out.append(("response.output_item.added", {"output_index": index, "item": pending}))
            if item is not reasoning_item:
                where_ = {"output_index": index, "item_id": item["id"]}
                kind = item["type"]
                for phase in ("in_progress", "searching", "completed"):
                    out.append((f"response.{kind}.{phase}", where_))
            out.append(("response.output_item.done", {"output_index": index, "item": item}))
        index = len(output) - 1
        where = {"item_id": msg_id, "output_index": index, "content_index": 0}
        pending_msg = {**message, "status": "in_progress", "content": []}
        out.append(("response.output_item.added", {"output_index": index, "item": pending_msg}))
        empty = {**part, "annotations": [], "text": ""}
        out.append(("response.content_part.added", {**where, "part": empty}))
        for n, piece in enumerate(split_text(gen.text, chunks) if gen.text else []):
            delta = {**where, "delta": piece, "logprobs": [], "obfuscation": "sim" + "x" * (n % 7)}
            out.append(("response.output_text.delta", delta))
        out.append(("response.output_text.done", {**where, "text": gen.text, "logprobs": []}))
        out.append(("response.content_part.done", {**where, "part": part}))
        out.append(("response.output_item.done", {"output_index": index, "item": message}))
        out.append((f"response.{status}", {"response": response(status, output, usage)}))
        return out

    final = response(status, output, usage)
    if background or body.get("store", True) is not False:
        stored: OrderedDict[str, dict[str, Any]] = state.setdefault("responses", OrderedDict())
        stored[rid] = {
            "final": final,
            "pending": response("in_progress", [], None, "auto"),
            # Only a background run is still going when created; a streamed one has finished.
            "polls": 0 if background and not body.get("stream") else 1,
            "events": events,
        }
        while len(stored) > STORED_RESPONSES:
            stored.popitem(last=False)
    if body.get("stream"):
        return stream_reply(_event_frames(events()), _headers(), _SSE)
    if background:
        return json_reply(200, response("queued", [], None, "auto"), _headers(), pretty=True)
    return json_reply(200, final, _headers(), pretty=True)


def _event_frames(events: list[tuple[str, dict[str, Any]]], after: int = -1) -> list[str]:
    return [
        f"event: {kind}\ndata: "
        f"{json.dumps({'type': kind, 'sequence_number': seq, **data}, separators=(',', ':'))}\n\n"
        for seq, (kind, data) in enumerate(events)
        if seq > after
    ]


def _retrieve(record: RecordedRequest, state: dict[str, Any]) -> Reply:
    """GET /v1/responses/{id}: poll a stored response, or replay its events with stream=true."""
    match_ = _STORED_PATH.search(record.path)
    rid = match_.group(1) if match_ else ""
    stored = state.get("responses", {}).get(rid)
    if stored is None:
        return error(404, f"Response with id '{rid}' not found.")
    query = parse_qs(record.query)
    if query.get("stream", [""])[0].lower() == "true":
        after = query.get("starting_after", ["-1"])[0]
        if not after.lstrip("-").isdigit():
            return error(
                400, "Invalid 'starting_after': must be an integer.", param="starting_after"
            )
        stored["polls"] += 1
        events: Callable[[], list[tuple[str, dict[str, Any]]]] = stored["events"]
        return stream_reply(_event_frames(events(), int(after)), _headers(), _SSE)
    stored["polls"] += 1
    if stored["polls"] == 1:
        return json_reply(200, stored["pending"], _headers(), pretty=True)
    return json_reply(200, stored["final"], _headers(), pretty=True)


# --- Images ---------------------------------------------------------------------------------


def _images(body: dict[str, Any]) -> Reply:
    # The real endpoint falls back to dall-e-2 when no model is named.
    model = body.get("model") or "dall-e-2"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return error(400, "Missing required parameter: 'prompt'.", param="prompt")
    n = 1 if body.get("n") is None else body["n"]
    if not positive_int(n) or n > 10:
        return error(400, "Invalid 'n': integer must be between 1 and 10.", param="n")
    created = int(time.time())
    if str(model).startswith("dall-e"):
        if model == "dall-e-3" and n != 1:
            return error(400, "You must provide n=1 for this model.", param="n")
        data = []
        for index in range(n):
            seed = f"{model}|{prompt}|{index}"
            item: dict[str, Any] = (
                {"b64_json": _png(seed)}
                if body.get("response_format") == "b64_json"
                else {"url": f"https://images.simulated.invalid/{_digest(seed)}.png"}
            )
            if model == "dall-e-3":
                item["revised_prompt"] = prompt
            data.append(item)
        return json_reply(200, {"created": created, "data": data}, _headers(), pretty=True)
    quality = body.get("quality") or "auto"
    quality = "high" if quality == "auto" else quality
    if quality not in IMAGE_OUTPUT_TOKENS:
        return error(
            400,
            f"Invalid value: '{quality}'. Supported values are: 'low', 'medium', 'high', and "
            "'auto'.",
            param="quality",
        )
    size = body.get("size") or "auto"
    size = "1024x1024" if size == "auto" else size
    if size not in IMAGE_OUTPUT_TOKENS[quality]:
        return error(
            400,
            f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', "
            "'1536x1024', and 'auto'.",
            param="size",
        )
    text_tokens = count_tokens(prompt)
    output = IMAGE_OUTPUT_TOKENS[quality][size] * n
    background = body.get("background")
    result = {
        "created": created,
        "background": background if background in ("transparent", "opaque") else "opaque",
        "data": [{"b64_json": _png(f"{model}|{prompt}|{index}")} for index in range(n)],
        "output_format": body.get("output_format") or "png",
        "quality": quality,
        "size": size,
        "usage": {
            "input_tokens": text_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
            "output_tokens": output,
            "total_tokens": text_tokens + output,
        },
    }
    return json_reply(200, result, _headers(), pretty=True)


def _digest(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def _png(seed: str) -> str:
    """A valid 1x1 PNG whose colour depends on `seed`, base64-encoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rgb = hashlib.sha256(seed.encode()).digest()[:3]
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" + rgb))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode()


# --- Audio ----------------------------------------------------------------------------------


def _speech(body: dict[str, Any], model: str, chunks: int) -> Reply:
    text = body.get("input")
    if not isinstance(text, str) or not text:
        return error(400, "Missing required parameter: 'input'.", param="input")
    voice = body.get("voice")
    if not voice:
        return error(400, "Missing required parameter: 'voice'.", param="voice")
    fmt = body.get("response_format") or "mp3"
    if fmt not in _AUDIO_FORMATS:
        return error(
            400,
            f"Invalid value: '{fmt}'. Supported values are: 'mp3', 'opus', 'aac', 'flac', 'wav', "
            "and 'pcm'.",
            param="response_format",
        )
    content_type, magic = _AUDIO_FORMATS[fmt]
    tokens = count_tokens(text)
    seed = f"{model}|{json.dumps(voice, sort_keys=True)}|{text}".encode()
    audio = magic + hashlib.shake_256(seed).digest(_AUDIO_BYTES_PER_TOKEN * tokens)
    if (body.get("stream_format") or "audio") != "sse":
        return Reply(200, content_type, _headers(), audio)
    if model.startswith("tts-1"):
        return error(
            400, f"stream_format 'sse' is not supported for model '{model}'.", param="stream_format"
        )
    instructions = body.get("instructions")
    input_tokens = tokens + (count_tokens(instructions) if isinstance(instructions, str) else 0)
    output_tokens = SPEECH_TOKENS_PER_TOKEN * tokens
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    size = -(-len(audio) // max(1, chunks))
    frames = [
        _sse(
            {"type": "speech.audio.delta", "audio": base64.b64encode(audio[i : i + size]).decode()}
        )
        for i in range(0, len(audio), size)
    ]
    frames.append(_sse({"type": "speech.audio.done", "usage": usage}))
    return stream_reply(frames, _headers(), _SSE)


def _transcriptions(record: RecordedRequest, chunks: int) -> Reply:
    content_type = record.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return error(
            400,
            f"Invalid Content-Type header ({content_type or 'none'}), expected "
            "multipart/form-data. (HINT: If you're using curl, you can pass -F 'key=value' pairs)",
        )
    form = record.body or {}
    model = form.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "you must provide a model parameter", param="model")
    upload = form.get("file")
    if not isinstance(upload, dict):
        return error(400, "Missing required parameter: 'file'.", param="file")
    fmt = form.get("response_format") or "json"
    # whisper-1 bills audio time; the gpt-4o*-transcribe models bill tokens.
    by_tokens = "transcribe" in model
    formats = ("json", "text") if by_tokens else ("json", "text", "srt", "verbose_json", "vtt")
    if fmt not in formats:
        return error(
            400,
            f"response_format '{fmt}' is not compatible with model '{model}'. Use "
            + " or ".join(f"'{name}'" for name in formats)
            + " instead.",
            param="response_format",
        )
    size = int(upload.get("size") or 0)
    duration = size / AUDIO_BYTES_PER_SECOND
    seconds = max(1, math.ceil(duration))
    text = f"Simulated transcription of {upload.get('filename') or 'audio'} ({size} bytes)."
    usage: dict[str, Any] = {"type": "duration", "seconds": seconds}
    if by_tokens:
        prompt = form.get("prompt")
        text_tokens = count_tokens(prompt) if isinstance(prompt, str) else 0
        audio_tokens = TRANSCRIBE_TOKENS_PER_SECOND * seconds
        output = count_tokens(text)
        usage = {
            "type": "tokens",
            "input_tokens": text_tokens + audio_tokens,
            "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
            "output_tokens": output,
            "total_tokens": text_tokens + audio_tokens + output,
        }
        if str(form.get("stream", "")).lower() == "true":
            frames = [
                _sse({"type": "transcript.text.delta", "delta": piece})
                for piece in split_text(text, chunks)
            ]
            frames.append(_sse({"type": "transcript.text.done", "text": text, "usage": usage}))
            return stream_reply(frames, _headers(), _SSE)
    if fmt == "text":
        return Reply(200, "text/plain; charset=utf-8", _headers(), (text + "\n").encode())
    if fmt in ("srt", "vtt"):
        return Reply(200, "text/plain; charset=utf-8", _headers(), _captions(fmt, text, duration))
    if fmt == "json":
        return json_reply(200, {"text": text, "usage": usage}, _headers(), pretty=True)
    return json_reply(200, _verbose(form, text, duration, usage), _headers(), pretty=True)


def _verbose(form: dict[str, Any], text: str, duration: float, usage: Any) -> dict[str, Any]:
    granularities = form.get("timestamp_granularities[]", form.get("timestamp_granularities"))
    wanted = [granularities] if isinstance(granularities, str) else granularities or ["segment"]
    result: dict[str, Any] = {
        "task": "transcribe",
        "language": form.get("language") or "english",
        "duration": duration,
        "text": text,
    }
    if "word" in wanted:
        words = text.split()
        step = duration / len(words)
        result["words"] = [
            {"word": word, "start": i * step, "end": (i + 1) * step} for i, word in enumerate(words)
        ]
    if "segment" in wanted:
        result["segments"] = [
            {
                "id": 0,
                "seek": 0,
                "start": 0.0,
                "end": duration,
                "text": text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": -0.1,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.0,
            }
        ]
    result["usage"] = usage
    return result


def _captions(fmt: str, text: str, duration: float) -> bytes:
    def stamp(seconds: float, mark: str) -> str:
        millis = round(seconds * 1000)
        hours, rest = divmod(millis, 3_600_000)
        minutes, rest = divmod(rest, 60_000)
        return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{mark}{rest % 1000:03d}"

    if fmt == "srt":
        return f"1\n{stamp(0, ',')} --> {stamp(duration, ',')}\n{text}\n\n".encode()
    return f"WEBVTT\n\n{stamp(0, '.')} --> {stamp(duration, '.')}\n{text}\n\n".encode()


# --- Embeddings and Models ------------------------------------------------------------------


def _embeddings(body: dict[str, Any], model: str) -> Reply:
    raw = body.get("input")
    if raw is None or raw == "" or raw == []:
        return error(400, "'input' is a required property", param="input")
    # A flat list of ints is one tokenized input; any other list holds one input per item.
    inputs = [raw] if isinstance(raw, str) or _is_tokens(raw) else list(raw)
    dimensions = body.get("dimensions") or _EMBEDDING_DIMENSIONS.get(model, 1536)
    if not positive_int(dimensions):
        return error(400, "Invalid 'dimensions': must be a positive integer.", param="dimensions")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        text, count = _prompt_texts(item)
        tokens += count
        vector = embedding_vector(text or json.dumps(item), dimensions)
        encoded = _encode(vector, as_base64)
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_reply(
        200, {"object": "list", "data": data, "model": model, "usage": usage}, _headers()
    )


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) for v in value)


def _encode(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()  # the wire format is float32 little-endian
    return base64.b64encode(packed.tobytes()).decode()


def _models() -> Reply:
    data = [
        {"id": model, "object": "model", "created": 1715367049, "owned_by": "system"}
        for model in _MODELS
    ]
    return json_reply(200, {"object": "list", "data": data}, _headers(), pretty=True)


__all__ = ["NAME", "is_reasoning_model", "writes_cache"]
