"""Anthropic: paths, auth, usage of Messages (JSON, SSE, batches), error shape.

Usage rules, as Anthropic reports them:

- ``input_tokens`` excludes cache reads and writes; our `Usage.input_tokens` is the
  whole prompt, so the three are summed. ``cache_creation`` splits writes by TTL
  (5-minute and 1-hour writes have different prices).
- ``iterations`` (compaction, advisor sub-inferences, multi-step server tools) lists
  every sampling step billed for the call; the top-level counts are only the final
  message's. When present, the call is billed as the sum of its steps, each at its own
  model's price (an advisor runs on a stronger model) and its own long-context tier.
- Without ``iterations``, a call with server tools is still several sampling steps whose
  inputs are summed into ``input_tokens``; the long-context tier is judged on one step's
  prompt (the average per step), not on that sum.
- ``server_tool_use`` counts billed tool calls (web searches); ``service_tier`` says
  which tier served it.
- In a stream, ``message_start`` carries the input counts and ``message_delta`` the
  cumulative output; a value present in ``message_delta`` replaces the earlier one,
  an explicit 0 included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ..usage import Step, Usage, count, obj
from .base import (
    COSTLY,
    FREE,
    METERED,
    Endpoint,
    Request,
    Signals,
    block_types,
    chat_problem,
    parts_problem,
)

WIRES = frozenset({"anthropic.messages", "anthropic.batch_results"})
SEGMENTS = frozenset({"messages", "complete"})
"""Path segments of Anthropic's API (after OpenAI's, which also has thread messages)."""
_FREE_POSTS = frozenset({"count_tokens", "cancel"})
# Server tools billed per call: server_tool_use field -> catalog unit.
_TOOL_FIELDS = {
    "web_search_requests": "web_searches",
    "web_fetch_requests": "web_fetches",
    "code_execution_requests": "code_executions",
}
_PRICED_TIERS = frozenset({"priority", "batch"})
# Top-level fields of Anthropic's Messages API that OpenAI's APIs do not have.
_BODY_KEYS = (
    "system",
    "stop_sequences",
    "top_k",
    "thinking",
    "anthropic_version",
    "anthropic_beta",
    "max_tokens_to_sample",
    "mcp_servers",
    "container",
    "context_management",
)
_BLOCKS = frozenset(
    {
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "document",
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "image",  # {"type": "image", "source": {...}}
    }
)
_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
# Content blocks that are plain text (thinking blocks are text the target must accept thinking
# for; routing checks the `thinking` parameter).
_TEXT = frozenset({"text", "thinking", "redacted_thinking"})
_DATED_TOOL = re.compile(r"_\d{8}$")
SIGNALS = Signals(
    model_prefixes=("claude-",),
    model_help="claude-",
    headers=("anthropic-version", "anthropic-beta"),
    key_prefixes=("sk-ant-",),
    user_agent="anthropic/",
    body_help="top-level system, stop_sequences, top_k, thinking, tool_use/tool_result "
    "blocks, tools with input_schema",
)


class Anthropic:
    """The Anthropic Messages API."""

    name: ClassVar[str] = "anthropic"
    label: ClassVar[str] = "Anthropic"
    auth_header: ClassVar[str] = "x-api-key"
    wires: ClassVar[frozenset[str]] = WIRES
    signals: ClassVar[Signals] = SIGNALS

    def body_signals(self, body: Mapping[str, Any]) -> list[str]:
        found = [f"top-level {k!r}" for k in _BODY_KEYS if k in body]
        messages = body.get("messages")
        for msg in messages if isinstance(messages, list) else ():
            blocks = block_types(msg.get("content")) & _BLOCKS if isinstance(msg, Mapping) else ()
            if blocks:
                found.append(f"{sorted(blocks)[0]} content block")
        tools = body.get("tools")
        for tool in tools if isinstance(tools, list) else ():
            dated = isinstance(tool, Mapping) and _DATED_TOOL.search(str(tool.get("type", "")))
            if isinstance(tool, Mapping) and ("input_schema" in tool or dated):
                found.append("a tool with input_schema or a dated tool type")
        choice = body.get("tool_choice")
        if isinstance(choice, Mapping) and choice.get("type") in _TOOL_CHOICES:
            found.append(f"tool_choice of type {choice.get('type')!r}")
        return found

    def auth_value(self, secret: str) -> str:
        return secret

    def match(self, segments: list[str], method: str) -> Endpoint | None:
        norm = "/".join(segments)
        if "organizations" in segments:
            return Endpoint(norm, None, None, "anthropic", FREE)  # the admin API
        if segments[-1:] == ["messages"]:
            return Endpoint("messages", "anthropic.messages", None, "anthropic", METERED)
        if "messages" in segments and "batches" in segments and segments[-1] == "results":
            return Endpoint(norm, "anthropic.batch_results", None, "anthropic", METERED)
        if not set(segments) & SEGMENTS:
            return None
        if method in ("GET", "HEAD", "DELETE", "OPTIONS") or segments[-1] in _FREE_POSTS:
            return Endpoint(norm, None, None, "anthropic", FREE)
        return Endpoint(norm, None, None, "anthropic", COSTLY)

    def usage_from_body(self, wire: str, body: Mapping[str, Any], req: Request) -> Usage | None:
        u = body.get("usage")
        return usage_object(u) if isinstance(u, Mapping) else None

    def usage_from_request(self, wire: str, req: Request) -> Usage | None:
        return None

    def usage_from_event(
        self, wire: str, event: Mapping[str, Any], prior: Usage | None
    ) -> Usage | None:
        if event.get("type") == "message_start":
            u = obj(obj(event, "message"), "usage")
            return usage_object(u) if u else prior
        u = obj(event, "usage")
        # message_delta: cumulative output, possibly repeated input/cache counts.
        return usage_object(u, prior) if u else prior

    def usage_from_lines(self, wire: str, data: bytes) -> Usage | None:
        """Batch results (JSON Lines): every succeeded message as one step at its model."""
        steps = []
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                return None
            if not isinstance(item, Mapping) or "custom_id" not in item:
                return None
            result = obj(item, "result")
            message = obj(result, "message")
            u = obj(message, "usage")
            if result.get("type") != "succeeded" or not u:
                continue
            usage = usage_object(u)
            model = message.get("model")
            steps.append(
                Step(
                    kind="batch",
                    model=model if isinstance(model, str) else None,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cached_tokens=usage.cached_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                    cache_write_1h_tokens=usage.cache_write_1h_tokens,
                )
            )
        if not steps:
            return None
        return Usage(
            input_tokens=sum(s.input_tokens for s in steps),
            output_tokens=sum(s.output_tokens for s in steps),
            cached_tokens=sum(s.cached_tokens for s in steps),
            cache_write_tokens=sum(s.cache_write_tokens for s in steps),
            cache_write_1h_tokens=sum(s.cache_write_1h_tokens for s in steps),
            steps=tuple(steps),
        )

    def response_model(self, wire: str, body: Mapping[str, Any]) -> str | None:
        for container in (body, obj(body, "message")):
            value = container.get("model")
            if isinstance(value, str) and value:
                return value
        return None

    def stream_markers(self, wire: str) -> tuple[bytes, ...]:
        return (b"message_start", b"message_delta", b'"error"')

    def error_payload(
        self, status: int, message: str, code: str, param: str | None, request_id: str
    ) -> dict:
        return {
            "type": "error",
            "error": {
                "type": _ERROR_TYPES.get(status, "api_error"),
                "message": message,
                "code": code,
            },
            "request_id": request_id,
        }

    def stream_error(self, payload: dict) -> bytes:
        return f"event: error\ndata: {json.dumps(payload)}\n\n".encode()

    def unroutable_reason(self, wire: str, body: Mapping[str, Any]) -> str | None:
        if body.get("output_format"):
            return "structured output (output_format)"
        return parts_problem(body.get("system"), _TEXT) or chat_problem(body.get("messages"), _TEXT)


_ERROR_TYPES = {  # Anthropic's documented error types (any other status: api_error)
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _prompt(u: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(uncached input, cache writes, of which 1-hour, cache reads) of one usage object."""
    write = count(u.get("cache_creation_input_tokens"))
    split = obj(u, "cache_creation")
    hour = count(split.get("ephemeral_1h_input_tokens"))
    if not write and split:
        write = count(split.get("ephemeral_5m_input_tokens")) + hour
    return (
        count(u.get("input_tokens")),
        write,
        min(hour, write),
        count(u.get("cache_read_input_tokens")),
    )


def _steps(u: Mapping[str, Any]) -> tuple[Step, ...]:
    """The billed sampling steps an ``iterations`` list reports."""
    items = u.get("iterations")
    if not isinstance(items, list):
        return ()
    steps = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        base, write, hour, read = _prompt(item)
        model = item.get("model")
        steps.append(
            Step(
                kind=str(item.get("type") or "message"),
                model=model if isinstance(model, str) and model else None,
                input_tokens=base + write + read,
                output_tokens=count(item.get("output_tokens")),
                cached_tokens=read,
                cache_write_tokens=write,
                cache_write_1h_tokens=hour,
            )
        )
    return tuple(steps)


def usage_object(u: Mapping[str, Any], prior: Usage | None = None) -> Usage:
    """Normalize an Anthropic usage object, keeping `prior`'s fields it leaves out."""
    if prior is None:
        base = write = hour = read = out = reasoning = 0
        extra: dict[str, int] = {}
        steps: tuple[Step, ...] = ()
        tier = None
    else:
        write, hour, read = (
            prior.cache_write_tokens,
            prior.cache_write_1h_tokens,
            prior.cached_tokens,
        )
        base = prior.input_tokens - write - read
        out, reasoning = prior.output_tokens, prior.reasoning_tokens
        extra, steps, tier = dict(prior.extra), prior.steps, prior.service_tier
    # A field present replaces what came before (message_delta repeats the cumulative
    # counts, an explicit 0 included); an absent or null field keeps it.
    if u.get("input_tokens") is not None:
        base = count(u.get("input_tokens"))
    if u.get("cache_creation_input_tokens") is not None or isinstance(
        u.get("cache_creation"), Mapping
    ):
        _, write, new_hour, _ = _prompt(u)
        # message_delta repeats the total written but not its TTL split (message_start's).
        hour = new_hour if isinstance(u.get("cache_creation"), Mapping) else min(hour, write)
    if u.get("cache_read_input_tokens") is not None:
        read = count(u.get("cache_read_input_tokens"))
    if u.get("output_tokens") is not None:
        out = count(u.get("output_tokens"))
    details = obj(u, "output_tokens_details")
    if details.get("thinking_tokens") is not None:
        reasoning = count(details.get("thinking_tokens"))
    tools = obj(u, "server_tool_use")
    for field, unit in _TOOL_FIELDS.items():
        if tools.get(field) is not None:
            extra[unit] = count(tools.get(field))
    extra = {k: v for k, v in extra.items() if v}
    if isinstance(u.get("iterations"), list):
        steps = _steps(u)
    if isinstance(u.get("service_tier"), str):
        tier = u["service_tier"] if u["service_tier"] in _PRICED_TIERS else None
    if steps:
        # The top level is only the final message (or the sum of the executor's messages):
        # the call's own tokens are its steps' at its model (an advisor's are its own).
        own = [st for st in steps if st.model is None]
        base = sum(st.input_tokens - st.cached_tokens - st.cache_write_tokens for st in own)
        write = sum(st.cache_write_tokens for st in own)
        hour = sum(st.cache_write_1h_tokens for st in own)
        read = sum(st.cached_tokens for st in own)
        out = max(sum(st.output_tokens for st in own), reasoning)
    usage = Usage(
        input_tokens=base + write + read,
        output_tokens=max(out, reasoning),
        cached_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=hour,
        reasoning_tokens=reasoning,
        extra=extra,
        steps=steps,
        service_tier=tier,
        raw=dict(u),
    )
    if not steps:
        calls = sum(extra.get(unit, 0) for unit in _TOOL_FIELDS.values())
        if calls:
            usage.steps = _split_steps(usage, calls + 1)
    return usage


def _split_steps(usage: Usage, n: int) -> tuple[Step, ...]:
    """A call with server tools as `n` equal steps: its tier is judged per step.

    Anthropic sums the inputs of a tool-using call's sampling steps into one count
    without listing them; the long-context tier applies to one step's prompt, so the
    average step stands in for each (a total under the tier's start is unaffected).
    """
    if usage.input_tokens // n <= 0:
        return ()
    parts = []
    for i in range(n):

        def share(total: int, i: int = i) -> int:
            return total // n + (1 if i < total % n else 0)

        parts.append(
            Step(
                kind="message",
                model=None,
                input_tokens=share(usage.input_tokens),
                output_tokens=share(usage.output_tokens),
                cached_tokens=share(usage.cached_tokens),
                cache_write_tokens=share(usage.cache_write_tokens),
                cache_write_1h_tokens=share(usage.cache_write_1h_tokens),
            )
        )
    return tuple(parts)
