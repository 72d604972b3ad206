"""Anthropic wire formats for the simulator: Messages (JSON and SSE), count_tokens, Models.

Provider rules on top of the shared text model:

* extended thinking (``thinking: {type: enabled, budget_tokens}`` or ``{type: adaptive}``)
  adds a thinking block whose text is ``simulated_thinking(prompt)``; its tokens are part of
  ``output_tokens`` (and of ``output_tokens_details.thinking_tokens``);
* prompt caching: the prefix through the last block carrying ``cache_control`` (tools, then
  system, then messages) is written on first sight (``cache_creation_input_tokens``) and read
  afterwards (``cache_read_input_tokens``) from the longest breakpoint seen before;
  ``input_tokens`` is only the uncached remainder, as with the real API. There is no minimum
  cacheable length here, unlike the real 1024/2048/4096-token minimums. Written tokens up to
  the last ``"ttl": "1h"`` breakpoint count as ``cache_creation.ephemeral_1h_input_tokens``,
  the rest as ``ephemeral_5m_input_tokens``. A top-level ``cache_control`` (automatic caching)
  is a breakpoint at the end of the prompt that also reads a prefix ending at any message end;
* server tools: the first ``web_search_*`` or ``advisor_*`` tool in ``tools`` is called once.
  The model samples twice: step 1 reads the prompt and writes (thinking +) a short preamble and
  the call (its input JSON's tokens); step 2 reads the prompt again, now cached as far as step
  1 read or wrote it, plus step 1's output and the tool result (``WEB_SEARCH_RESULT_TOKENS``,
  or the advisor's reply), and writes the answer. An advisor call is a sampling step of its
  own: the advisor model reads the whole prompt plus step 1's output, uncached;
* compaction: a ``context_management`` edit ``compact_*`` whose trigger (``input_tokens``,
  default ``DEFAULT_COMPACTION_TRIGGER``) the prompt reaches adds a compaction step over the
  whole prompt (it takes the prompt's cache reads and writes) that writes
  ``simulated_summary(prompt)``; the model then reads only the system prompt plus one message
  holding that summary;
* usage: the top level is the sum of the ``message`` steps (compaction and advisor steps are
  left out), the cumulative total ``message_delta`` also reports; ``message_start`` reports the
  first step. ``usage.iterations`` lists every step when there is a compaction or an advisor
  (not for web search alone, as recorded).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .simulator import (
    MESSAGE_OVERHEAD,
    Generation,
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
WEB_SEARCH_RESULT_TOKENS = 5000
DEFAULT_COMPACTION_TRIGGER = 150000
_PREAMBLES = {
    "web_search": "Let me search the web for that.",
    "advisor": "Let me consult the advisor first.",
}
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
    prompt = _prompt(body)
    if endpoint == "count_tokens":
        return json_reply(200, {"input_tokens": prompt.total}, _headers())
    return _messages(body, state, chunks, prompt)


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
        if not isinstance(budget, int) or not positive_int(budget) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= body["max_tokens"]:
            return (
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/"
                "extended-thinking#max-tokens-and-context-window-size"
            )
    return None


# --- counting and caching -------------------------------------------------------------------


@dataclass(slots=True)
class _Prompt:
    """A request's input tokens and its cache points."""

    total: int
    system: int
    """Tokens of the system prompt (with its overhead), kept when the context is compacted."""
    breakpoints: list[tuple[int, str, str]] = field(default_factory=list)
    """Each cache breakpoint as (tokens through it, prefix key, ttl): written, and read back."""
    lookups: list[tuple[int, str]] = field(default_factory=list)
    """Prefixes that may be read but are not written (message ends, for automatic caching)."""


def _prompt(body: dict[str, Any]) -> _Prompt:
    """Count the prompt and find its cache points (the key hashes everything before them)."""
    hasher = hashlib.sha256(str(body["model"]).encode())
    result = _Prompt(0, 0)

    def add(block: Any) -> None:
        result.total += sum(count_tokens(text) for text in texts_in(block))
        control = block.get("cache_control") if isinstance(block, dict) else None
        if isinstance(block, dict):
            block = {k: v for k, v in block.items() if k != "cache_control"}
        hasher.update(json.dumps(block, sort_keys=True).encode())
        if isinstance(control, dict):
            ttl = str(control.get("ttl", "5m"))
            result.breakpoints.append((result.total, hasher.hexdigest(), ttl))

    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            control = tool.get("cache_control")
            hasher.update(json.dumps(tool, sort_keys=True).encode())
            if isinstance(control, dict):
                ttl = str(control.get("ttl", "5m"))
                result.breakpoints.append((result.total, hasher.hexdigest(), ttl))
    system = body.get("system")
    if system:
        result.total += MESSAGE_OVERHEAD
        hasher.update(b"\x00system")
        for block in [system] if isinstance(system, str) else system:
            add(block)
    result.system = result.total
    automatic = body.get("cache_control")
    for message in body["messages"]:
        result.total += MESSAGE_OVERHEAD
        content = message.get("content") if isinstance(message, dict) else None
        hasher.update(f"\x00{message.get('role') if isinstance(message, dict) else ''}".encode())
        for block in [content] if isinstance(content, str) else content or []:
            add(block)
        if isinstance(automatic, dict):
            result.lookups.append((result.total, hasher.hexdigest()))
    if isinstance(automatic, dict):
        # Automatic caching: one breakpoint after the last block of the last message.
        ttl = str(automatic.get("ttl", "5m"))
        result.breakpoints.append((result.total, hasher.hexdigest(), ttl))
    return result


def _cache(state: dict[str, Any], prompt: _Prompt) -> tuple[int, int, int]:
    """(read, written, written with a 1h ttl) tokens for this request, remembering its prefixes."""
    if not prompt.breakpoints:
        return 0, 0, 0
    seen: set[str] = state.setdefault("prefixes", set())
    points = [(tokens, key) for tokens, key, _ in prompt.breakpoints] + prompt.lookups
    read = max((tokens for tokens, key in points if key in seen), default=0)
    seen.update(key for _, key, _ in prompt.breakpoints)
    written = max(prompt.breakpoints[-1][0] - read, 0)
    # 1h breakpoints must precede 5m ones, so the 1h part is the head of what is written.
    long_end = max((tokens for tokens, _, ttl in prompt.breakpoints if ttl == "1h"), default=0)
    return read, written, min(max(long_end - read, 0), written)


def simulated_thinking(prompt: str) -> str:
    """The thinking text the simulator produces before replying to `prompt`."""
    return f"The user wrote: {snippet(prompt) or '(nothing)'}. A short, direct answer will do."


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return " ".join(texts_in(message))
    return ""


def simulated_summary(prompt: str) -> str:
    """The compaction summary the simulator writes for a conversation ending in `prompt`."""
    return (
        f"Summary of the conversation so far: the user wrote: {snippet(prompt) or '(nothing)'}."
        " Next step: answer it."
    )


def simulated_advice(model: str, prompt: str) -> str:
    """The advisor model's reply to a conversation ending in `prompt`."""
    return f"Advice from {model}: answer directly. The user wrote: {snippet(prompt) or '(nothing)'}"


# --- Messages -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Step:
    """One sampling step: what it read (uncached, from cache, written to cache) and wrote."""

    type: str
    input: int
    read: int = 0
    written: int = 0
    written_1h: int = 0
    output: int = 0
    model: str | None = None

    def split(self) -> dict[str, int]:
        """The cache_creation object: written tokens by ttl."""
        return {
            "ephemeral_5m_input_tokens": self.written - self.written_1h,
            "ephemeral_1h_input_tokens": self.written_1h,
        }

    def iteration(self) -> dict[str, Any]:
        """This step as a usage.iterations entry."""
        entry: dict[str, Any] = {
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_read_input_tokens": self.read,
            "cache_creation_input_tokens": self.written,
            "cache_creation": self.split(),
            "type": self.type,
        }
        if self.model is not None:
            entry["model"] = self.model
        return entry


def _compaction_trigger(body: dict[str, Any]) -> int | None:
    """The input-token threshold of the request's compaction edit, or None without one."""
    management = body.get("context_management")
    edits = management.get("edits") if isinstance(management, dict) else None
    for edit in edits if isinstance(edits, list) else []:
        if isinstance(edit, dict) and str(edit.get("type", "")).startswith("compact_"):
            trigger = edit.get("trigger")
            value = trigger.get("value") if isinstance(trigger, dict) else None
            return value if positive_int(value) else DEFAULT_COMPACTION_TRIGGER
    return None


def _server_tool(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """("web_search" | "advisor", tool) for the first server tool the model will call."""
    for tool in body.get("tools") or []:
        kind = str(tool.get("type", "")) if isinstance(tool, dict) else ""
        if kind.startswith("web_search_"):
            return "web_search", tool
        if kind.startswith("advisor_"):
            return "advisor", tool
    return None


def _has_server_tools(body: dict[str, Any]) -> bool:
    # Client tools have no type (or "custom"); every versioned type is a server tool.
    return any(
        isinstance(tool, dict) and tool.get("type") not in (None, "custom")
        for tool in body.get("tools") or []
    )


def _search_results(query: str) -> list[dict[str, Any]]:
    results = []
    for index in (1, 2):
        digest = hashlib.sha256(f"{index}|{query}".encode()).digest()
        results.append(
            {
                "type": "web_search_result",
                "title": f"Result {index} for {query}",
                "url": f"https://search.simulated.invalid/{index}?q={quote(query)}",
                "encrypted_content": base64.b64encode(digest * 2).decode(),
                "page_age": None,
            }
        )
    return results


def _sample(
    body: dict[str, Any],
    prompt: _Prompt,
    cache: tuple[int, int, int],
    thinking: dict[str, Any] | None,
    gen: Generation,
) -> tuple[list[_Step], list[dict[str, Any]]]:
    """The sampling steps behind one reply, and the content blocks they produce."""
    read, written, written_1h = cache
    last_user = _last_user_text(body["messages"])
    thinking_tokens = count_tokens(thinking["thinking"]) if thinking else 0
    blocks: list[dict[str, Any]] = []
    steps: list[_Step] = []
    uncached = prompt.total - read - written
    trigger = _compaction_trigger(body)
    if trigger is not None and prompt.total >= trigger:
        summary = simulated_summary(last_user)
        steps.append(
            _Step("compaction", uncached, read, written, written_1h, count_tokens(summary))
        )
        blocks.append({"type": "compaction", "content": summary})
        context = _Step("message", prompt.system + MESSAGE_OVERHEAD + count_tokens(summary))
    else:
        context = _Step("message", uncached, read, written, written_1h)
    if thinking:
        blocks.append(thinking)
    called = _server_tool(body)
    if called is None:
        context.output = thinking_tokens + gen.tokens
        steps.append(context)
    else:
        kind, tool = called
        preamble = _PREAMBLES[kind]
        query = " ".join(last_user.split())[:100] or "latest news"
        call_input: dict[str, Any] = {"query": query} if kind == "web_search" else {}
        call_json = json.dumps(call_input, separators=(",", ":")) if call_input else ""
        context.output = thinking_tokens + count_tokens(preamble) + count_tokens(call_json)
        steps.append(context)
        tool_id = new_id("srvtoolu_01", 22)
        name = tool.get("name", kind)
        blocks.append({"type": "text", "text": preamble})
        blocks.append({"type": "server_tool_use", "id": tool_id, "name": name, "input": call_input})
        if kind == "web_search":
            fed_back = WEB_SEARCH_RESULT_TOKENS
            content: Any = _search_results(query)
            blocks.append(
                {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": content}
            )
        else:
            advisor = str(tool.get("model") or body["model"])
            advice_cap = tool.get("max_tokens") if positive_int(tool.get("max_tokens")) else None
            advice = fit(simulated_advice(advisor, last_user), advice_cap)
            fed_back = advice.tokens
            # The advisor reads everything the executor has seen and written so far, uncached.
            seen = context.input + context.read + context.written + context.output
            steps.append(_Step("advisor_message", seen, output=advice.tokens, model=advisor))
            content = {"type": "advisor_result", "text": advice.text, "stop_reason": "end_turn"}
            blocks.append(
                {"type": "advisor_tool_result", "tool_use_id": tool_id, "content": content}
            )
        # The second step reads what the first read or wrote from the cache.
        steps.append(
            _Step(
                "message",
                context.input + context.output + fed_back,
                read=context.read + context.written,
                output=gen.tokens,
            )
        )
    if gen.text or not thinking:
        blocks.append({"type": "text", "text": gen.text})
    return steps, blocks


def _messages(body: dict[str, Any], state: dict[str, Any], chunks: int, prompt: _Prompt) -> Reply:
    model, cap = body["model"], body["max_tokens"]
    cache = _cache(state, prompt)
    last_user = _last_user_text(body["messages"])
    thinking_mode = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
    thought = ""
    if thinking_mode:
        budget = (body.get("thinking") or {}).get("budget_tokens") or cap
        thought = simulated_thinking(last_user)[: budget * 4]
    gen = fit(simulated_reply(model, last_user), cap, count_tokens(thought))
    thought = thought[: gen.reasoning_tokens * 4]
    signature = base64.b64encode(hashlib.sha256(thought.encode()).digest() * 3).decode()
    thinking = None
    if thinking_mode:
        thinking = {"type": "thinking", "thinking": thought, "signature": signature}
    stop_reason = "max_tokens" if gen.truncated else "end_turn"
    steps, blocks = _sample(body, prompt, cache, thinking, gen)

    own = [step for step in steps if step.type == "message"]
    top = _Step(
        "message",
        sum(step.input for step in own),
        sum(step.read for step in own),
        sum(step.written for step in own),
        sum(step.written_1h for step in own),
        sum(step.output for step in own),
    )
    cache_fields = {
        "input_tokens": top.input,
        "cache_creation_input_tokens": top.written,
        "cache_read_input_tokens": top.read,
    }
    details: dict[str, Any] = {}
    if thinking_mode:
        details["output_tokens_details"] = {"thinking_tokens": count_tokens(thought)}
    searched = any(block["type"] == "web_search_tool_result" for block in blocks)
    server_tool_use = {"web_search_requests": int(searched), "web_fetch_requests": 0}
    kinds = {step.type for step in steps}
    # Recorded: iterations come with compaction and the advisor, not with web search alone.
    iterations = None
    if kinds & {"compaction", "advisor_message"}:
        iterations = [step.iteration() for step in steps]
    usage: dict[str, Any] = {**cache_fields, "cache_creation": top.split()}
    if iterations is not None:
        usage["iterations"] = iterations
    usage["output_tokens"] = top.output
    if _has_server_tools(body) or _compaction_trigger(body) is not None:
        usage["server_tool_use"] = server_tool_use
    usage["service_tier"] = "standard"
    usage.update(details)
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
    managed = "context_management" in body
    if managed:
        message["context_management"] = {"applied_edits": []}
    if not body.get("stream"):
        return json_reply(200, message, _headers())

    first = steps[0]
    start_usage = {
        "input_tokens": first.input,
        "cache_creation_input_tokens": first.written,
        "cache_read_input_tokens": first.read,
        "cache_creation": first.split(),
        "output_tokens": 1,
        "service_tier": "standard",
    }
    start = {**message, "content": [], "stop_reason": None, "usage": start_usage}
    start.pop("context_management", None)
    frames = [_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(blocks):
        frames.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": _opening(block)},
            )
        )
        if index == 0:
            frames.append('event: ping\ndata: {"type": "ping"}\n\n')
        for delta in _deltas(block, chunks):
            payload = {"type": "content_block_delta", "index": index, "delta": delta}
            frames.append(_event("content_block_delta", payload))
        frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    # Cumulative, with explicit zeros, and no cache_creation split (as recorded).
    delta_usage: dict[str, Any] = {**cache_fields, "output_tokens": top.output, **details}
    if _has_server_tools(body):
        delta_usage["server_tool_use"] = server_tool_use
    if iterations is not None:
        delta_usage["iterations"] = iterations
    closing: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": delta_usage,
    }
    if managed:
        closing["context_management"] = {"applied_edits": []}
    frames.append(_event("message_delta", closing))
    frames.append(_event("message_stop", {"type": "message_stop"}))
    return stream_reply(frames, _headers(), _SSE)


def _opening(block: dict[str, Any]) -> dict[str, Any]:
    """A block as content_block_start shows it, before any delta."""
    kind = block["type"]
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if kind == "text":
        return {"type": "text", "text": ""}
    if kind == "compaction":
        return {"type": "compaction", "content": None}
    if kind == "server_tool_use":
        return {**block, "input": {}}
    return block  # tool results arrive whole


def _deltas(block: dict[str, Any], chunks: int) -> list[dict[str, Any]]:
    kind = block["type"]
    if kind == "thinking":
        deltas: list[dict[str, Any]] = [
            {"type": "thinking_delta", "thinking": piece}
            for piece in split_text(block["thinking"], chunks)
        ]
        return [*deltas, {"type": "signature_delta", "signature": block["signature"]}]
    if kind == "text":
        return [
            {"type": "text_delta", "text": piece} for piece in split_text(block["text"], chunks)
        ]
    if kind == "compaction":
        return [{"type": "compaction_delta", "content": block["content"]}]
    if kind == "server_tool_use":
        partial = json.dumps(block["input"]) if block["input"] else ""
        return [{"type": "input_json_delta", "partial_json": partial}]
    return []


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _models() -> Reply:
    data = [
        {"type": "model", "id": model, "display_name": name, "created_at": "2025-09-29T00:00:00Z"}
        for model, name in _MODELS
    ]
    body = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    return json_reply(200, body, _headers())


__all__ = ["NAME", "simulated_advice", "simulated_summary", "simulated_thinking"]
