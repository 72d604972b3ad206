"""OpenAI wire formats for the simulator: Chat Completions, Completions, Responses, Embeddings.

Provider rules on top of the shared text model:

* reasoning models (o1*, o3*, o4*, gpt-5* except *-chat*) spend 2 reasoning tokens per reply
  token, reported in ``completion_tokens_details.reasoning_tokens`` / ``output_tokens_details``
  and included in ``completion_tokens`` / ``output_tokens``; ``reasoning_effort`` (or
  ``reasoning.effort``) "none" turns that off;
* prompt caching: a prompt of at least 1024 tokens that shares a prefix of P characters with an
  earlier prompt to the same model reports ``cached_tokens`` = the largest multiple of 128 not
  above min(P // 4, prompt_tokens), or 0 when that is under 1024. The prefix is taken over the
  messages rendered as ``"{role}: {texts joined by space}\\n"``;
* legacy completions default ``max_tokens`` to 16, as the real endpoint does.
"""

from __future__ import annotations

import array
import base64
import json
import sys
import time
from collections import deque
from typing import Any

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
_REMEMBERED_PROMPTS = 64
_FINGERPRINT = "fp_sim0000001"
_SSE = "text/event-stream; charset=utf-8"
_ROUTES = (
    ("POST", "/v1/chat/completions", "chat"),
    ("POST", "/v1/completions", "completions"),
    ("POST", "/v1/responses", "responses"),
    ("POST", "/v1/embeddings", "embeddings"),
    ("GET", "/v1/models", "models"),
)
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
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "you must provide a model parameter", param="model")
    if endpoint == "chat":
        return _chat(body, model, state, chunks)
    if endpoint == "completions":
        return _completions(body, model, chunks)
    if endpoint == "responses":
        return _responses(body, model, state, chunks)
    return _embeddings(body, model)


# --- shared rules ---------------------------------------------------------------------------


def is_reasoning_model(model: str) -> bool:
    """Whether `model` bills hidden reasoning tokens."""
    name = model.rsplit(":", 1)[-1] if model.startswith("ft:") else model
    return name.startswith(("o1", "o3", "o4", "gpt-5")) and "-chat" not in name


def _reasoning(model: str, effort: Any, reply: str) -> int:
    if not is_reasoning_model(model) or effort == "none":
        return 0
    return 2 * count_tokens(reply)


def _cached_tokens(state: dict[str, Any], model: str, rendered: str, prompt_tokens: int) -> int:
    seen: deque[str] = state.setdefault(model, deque(maxlen=_REMEMBERED_PROMPTS))
    cached = 0
    if prompt_tokens >= CACHE_MIN_TOKENS:
        shared = max((_common_prefix(rendered, old) for old in seen), default=0)
        cached = min(shared // 4, prompt_tokens) // CACHE_BLOCK * CACHE_BLOCK
        if cached < CACHE_MIN_TOKENS:
            cached = 0
        seen.append(rendered)
    return cached


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


def _chat_usage(prompt: int, cached: int, gen: Generation) -> dict[str, Any]:
    completion = gen.tokens + gen.reasoning_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
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
    cached = _cached_tokens(state, model, _render(messages), prompt)
    reply = simulated_reply(model, _last_user_text(messages))
    gen = fit(reply, cap, _reasoning(model, body.get("reasoning_effort"), reply))
    usage = _chat_usage(prompt, cached, gen)
    finish = "length" if gen.truncated else "stop"
    cid, created = new_id("chatcmpl-", 29), int(time.time())
    if not body.get("stream"):
        message = {"role": "assistant", "content": gen.text, "refusal": None, "annotations": []}
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
    cached = _cached_tokens(state, model, rendered, prompt)
    reply = simulated_reply(model, _last_user_text(items))
    effort = (body.get("reasoning") or {}).get("effort")
    gen = fit(reply, cap, _reasoning(model, effort, reply))
    output_tokens = gen.tokens + gen.reasoning_tokens
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": gen.reasoning_tokens},
        "total_tokens": prompt + output_tokens,
    }
    rid, created = new_id("resp_", 48), int(time.time())
    status = "incomplete" if gen.truncated else "completed"
    reasoning_item = (
        {"id": new_id("rs_", 48), "type": "reasoning", "summary": []}
        if is_reasoning_model(model)
        else None
    )
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": gen.text}
    msg_id = new_id("msg_", 48)
    message = {
        "id": msg_id,
        "type": "message",
        "status": status,
        "content": [part],
        "role": "assistant",
    }
    output = [reasoning_item, message] if reasoning_item else [message]

    shown_effort = effort or ("medium" if reasoning_item else None)

    def response(state_: str, out: list[Any], use: Any) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": state_,
            "background": False,
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
            "service_tier": "default",
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

    if not body.get("stream"):
        return json_reply(200, response(status, output, usage), _headers(), pretty=True)

    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": response("in_progress", [], None)}),
        ("response.in_progress", {"response": response("in_progress", [], None)}),
    ]
    index = 0
    if reasoning_item:
        events.append(("response.output_item.added", {"output_index": 0, "item": reasoning_item}))
        events.append(("response.output_item.done", {"output_index": 0, "item": reasoning_item}))
        index = 1
    where = {"item_id": msg_id, "output_index": index, "content_index": 0}
    pending = {**message, "status": "in_progress", "content": []}
    events.append(("response.output_item.added", {"output_index": index, "item": pending}))
    events.append(("response.content_part.added", {**where, "part": {**part, "text": ""}}))
    for n, piece in enumerate(split_text(gen.text, chunks) if gen.text else []):
        delta = {**where, "delta": piece, "logprobs": [], "obfuscation": "sim" + "x" * (n % 7)}
        events.append(("response.output_text.delta", delta))
    events.append(("response.output_text.done", {**where, "text": gen.text, "logprobs": []}))
    events.append(("response.content_part.done", {**where, "part": part}))
    events.append(("response.output_item.done", {"output_index": index, "item": message}))
    events.append((f"response.{status}", {"response": response(status, output, usage)}))
    frames = [
        f"event: {kind}\ndata: "
        f"{json.dumps({'type': kind, 'sequence_number': seq, **data}, separators=(',', ':'))}\n\n"
        for seq, (kind, data) in enumerate(events)
    ]
    return stream_reply(frames, _headers(), _SSE)


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


__all__ = ["NAME", "is_reasoning_model"]
