"""Anthropic wire formats for the simulator: Messages (JSON and SSE), count_tokens, Models.

Provider rules on top of the shared text model:

* extended thinking (``thinking: {type: enabled, budget_tokens}`` or ``{type: adaptive}``)
  adds a thinking block whose text is ``simulated_thinking(prompt)``; its tokens are part of
  ``output_tokens`` (and of ``output_tokens_details.thinking_tokens``);
* prompt caching: the prefix through the last block carrying ``cache_control`` (tools, then
  system, then messages) is written on first sight (``cache_creation_input_tokens``) and read
  afterwards (``cache_read_input_tokens``) from the longest breakpoint seen before;
  ``input_tokens`` is only the uncached remainder, as with the real API. There is no minimum
  cacheable length here, unlike the real 1024/2048/4096-token minimums.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from .simulator import (
    MESSAGE_OVERHEAD,
    RecordedRequest,
    Reply,
    count_tokens,
    fit,
    json_reply,
    new_id,
    positive_int,
    simulated_reply,
    snippet,
    split_text,
    stream_reply,
    texts_in,
)

NAME = "anthropic"
_SSE = "text/event-stream; charset=utf-8"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_MODELS = (
    ("claude-opus-4-5-20251101", "Claude Opus 4.5"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5"),
)


# --- routing and errors ---------------------------------------------------------------------


def match(record: RecordedRequest) -> str | None:
    """The endpoint `record` asks for, if it is an Anthropic one."""
    path = record.path
    if record.method == "POST" and path.endswith("/v1/messages"):
        return "messages"
    if record.method == "POST" and path.endswith("/v1/messages/count_tokens"):
        return "count_tokens"
    # /v1/models is shared with OpenAI; Anthropic's clients always send anthropic-version.
    if record.method == "GET" and path.endswith("/v1/models") and _is_anthropic(record):
        return "models"
    return None


def owns(record: RecordedRequest) -> bool:
    """Whether an unknown path should get an Anthropic-shaped 404."""
    return "/v1/messages" in record.path or _is_anthropic(record)


def _is_anthropic(record: RecordedRequest) -> bool:
    return "anthropic-version" in record.headers or "x-api-key" in record.headers


def error(status: int, message: str, endpoint: str | None = None) -> Reply:
    """Anthropic's {"type": "error", "error": {type, message}, "request_id"} body."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    request_id = new_id("req_011C", 20)
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    headers = {"request-id": request_id}
    if status == 429:
        headers["retry-after"] = "1"
    return json_reply(status, body, headers)


def authorize(record: RecordedRequest, keys: frozenset[str], endpoint: str | None) -> Reply | None:
    """401 unless x-api-key (or Authorization: Bearer) names one of `keys`."""
    key = record.headers.get("x-api-key")
    auth = record.headers.get("authorization", "")
    if key is None and auth.startswith("Bearer "):
        key = auth[7:].strip()
    if not key:
        return error(401, "x-api-key header is required")
    return None if key in keys else error(401, "invalid x-api-key")


def handle(endpoint: str, record: RecordedRequest, state: dict[str, Any], chunks: int) -> Reply:
    """Answer one Anthropic request."""
    body = record.body or {}
    if endpoint == "models":
        return _models()
    problem = _validate(body, endpoint)
    if problem is not None:
        return error(400, problem)
    total, breakpoints = _prompt(body)
    if endpoint == "count_tokens":
        return json_reply(200, {"input_tokens": total}, _headers())
    return _messages(body, state, chunks, total, breakpoints)


def _headers() -> dict[str, str]:
    return {"request-id": new_id("req_011C", 20), "anthropic-organization-id": "sim-org"}


def _validate(body: dict[str, Any], endpoint: str) -> str | None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("messages"), list):
        return "messages: Field required"
    if endpoint == "count_tokens":
        return None
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    if not positive_int(body["max_tokens"]):
        return "max_tokens: Input should be greater than or equal to 1"
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not positive_int(budget) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= body["max_tokens"]:
            return (
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/"
                "extended-thinking#max-tokens-and-context-window-size"
            )
    return None


# --- counting and caching -------------------------------------------------------------------


def _prompt(body: dict[str, Any]) -> tuple[int, list[tuple[int, str, str]]]:
    """All input tokens, and each cache breakpoint as (tokens through it, prefix key, ttl)."""
    hasher = hashlib.sha256(str(body["model"]).encode())
    total = 0
    breakpoints: list[tuple[int, str, str]] = []

    def add(block: Any) -> None:
        nonlocal total
        total += sum(count_tokens(text) for text in texts_in(block))
        control = block.get("cache_control") if isinstance(block, dict) else None
        if isinstance(block, dict):
            block = {k: v for k, v in block.items() if k != "cache_control"}
        hasher.update(json.dumps(block, sort_keys=True).encode())
        if isinstance(control, dict):
            breakpoints.append((total, hasher.hexdigest(), str(control.get("ttl", "5m"))))

    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            control = tool.get("cache_control")
            hasher.update(json.dumps(tool, sort_keys=True).encode())
            if isinstance(control, dict):
                breakpoints.append((total, hasher.hexdigest(), str(control.get("ttl", "5m"))))
    system = body.get("system")
    if system:
        total += MESSAGE_OVERHEAD
        hasher.update(b"\x00system")
        for block in [system] if isinstance(system, str) else system:
            add(block)
    for message in body["messages"]:
        total += MESSAGE_OVERHEAD
        content = message.get("content") if isinstance(message, dict) else None
        hasher.update(f"\x00{message.get('role') if isinstance(message, dict) else ''}".encode())
        for block in [content] if isinstance(content, str) else content or []:
            add(block)
    return total, breakpoints


def _cache(state: dict[str, Any], breakpoints: list[tuple[int, str, str]]) -> tuple[int, int, str]:
    """(read, written, ttl) tokens for this request, remembering its prefixes."""
    if not breakpoints:
        return 0, 0, "5m"
    seen: set[str] = state.setdefault("prefixes", set())
    read = max((tokens for tokens, key, _ in breakpoints if key in seen), default=0)
    seen.update(key for _, key, _ in breakpoints)
    last_tokens, _, ttl = breakpoints[-1]
    return read, last_tokens - read, ttl


def simulated_thinking(prompt: str) -> str:
    """The thinking text the simulator produces before replying to `prompt`."""
    return f"The user wrote: {snippet(prompt) or '(nothing)'}. A short, direct answer will do."


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return " ".join(texts_in(message))
    return ""


# --- Messages -------------------------------------------------------------------------------


def _messages(
    body: dict[str, Any],
    state: dict[str, Any],
    chunks: int,
    total: int,
    breakpoints: list[tuple[int, str, str]],
) -> Reply:
    model, cap = body["model"], body["max_tokens"]
    read, written, ttl = _cache(state, breakpoints)
    prompt = _last_user_text(body["messages"])
    thinking_mode = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
    thought = ""
    if thinking_mode:
        budget = (body.get("thinking") or {}).get("budget_tokens") or cap
        thought = simulated_thinking(prompt)[: budget * 4]
    gen = fit(simulated_reply(model, prompt), cap, count_tokens(thought))
    thought = thought[: gen.reasoning_tokens * 4]
    thinking_tokens = count_tokens(thought)
    output = thinking_tokens + gen.tokens
    signature = base64.b64encode(hashlib.sha256(thought.encode()).digest() * 3).decode()
    stop_reason = "max_tokens" if gen.truncated else "end_turn"
    cache_fields = {
        "input_tokens": total - read - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }
    usage: dict[str, Any] = {
        **cache_fields,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 0 if ttl == "1h" else written,
            "ephemeral_1h_input_tokens": written if ttl == "1h" else 0,
        },
        "output_tokens": output,
        "service_tier": "standard",
    }
    details: dict[str, Any] = {}
    if thinking_mode:
        details["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    usage.update(details)
    blocks: list[dict[str, Any]] = []
    if thinking_mode:
        blocks.append({"type": "thinking", "thinking": thought, "signature": signature})
    if gen.text or not thinking_mode:
        blocks.append({"type": "text", "text": gen.text})
    message = {
        "id": new_id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        return json_reply(200, message, _headers())

    start_usage = {**usage, "output_tokens": 1}
    start_usage.pop("output_tokens_details", None)
    start = {**message, "content": [], "stop_reason": None, "usage": start_usage}
    frames = [_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(blocks):
        empty = {"type": "thinking", "thinking": "", "signature": ""}
        if block["type"] == "text":
            empty = {"type": "text", "text": ""}
        frames.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        )
        if index == 0:
            frames.append('event: ping\ndata: {"type": "ping"}\n\n')
        if block["type"] == "thinking":
            pieces = split_text(thought, chunks)
            deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces]
            deltas.append({"type": "signature_delta", "signature": signature})
        else:
            deltas = [{"type": "text_delta", "text": p} for p in split_text(gen.text, chunks)]
        for delta in deltas:
            payload = {"type": "content_block_delta", "index": index, "delta": delta}
            frames.append(_event("content_block_delta", payload))
        frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta_usage = {**cache_fields, "output_tokens": output, **details}
    frames.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": delta_usage,
            },
        )
    )
    frames.append(_event("message_stop", {"type": "message_stop"}))
    return stream_reply(frames, _headers(), _SSE)


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _models() -> Reply:
    data = [
        {"type": "model", "id": model, "display_name": name, "created_at": "2025-09-29T00:00:00Z"}
        for model, name in _MODELS
    ]
    body = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    return json_reply(200, body, _headers())


__all__ = ["NAME", "simulated_thinking"]
