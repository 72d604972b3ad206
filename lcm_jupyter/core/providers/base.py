"""What every provider adapter provides, and the request endpoint it classifies paths into.

An adapter is one provider's rules in one place: which paths are which endpoint and how
each is charged, where the key goes, how usage reads from an answer or a stream, what
the stream events that matter look like, and the provider's error shape. The pipeline,
the stream meter, the error renderer and the detector ask the adapter instead of
knowing wire strings themselves, so adding a provider or an endpoint is one file plus its
tests (the shape of httpx's transports and simonw/llm's per-provider model classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from ..usage import Usage

__all__ = [
    "COSTLY",
    "FREE",
    "METERED",
    "Adapter",
    "Endpoint",
    "Request",
    "Signals",
    "block_types",
    "chat_problem",
    "part_problem",
    "parts_problem",
]

METERED = "metered"
"""Priced from what the answer reports (or, where it reports nothing, from the request)."""
FREE = "free"
"""Costs nothing: listing models, counting tokens, reading state, moderation."""
COSTLY = "costly"
"""Costs money but is not metered here (batch jobs, fine-tuning, stores): refused for a
key with a budget unless the operator allows it (`LCMExtension.unmetered_endpoints`)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A classified request path: its log name, wire format, model and provider hint."""

    name: str
    wire: str | None
    """How the answer is read (``openai.chat``, ``anthropic.messages``, ``google.stream``,
    ``openai.images``, ...); None when the answer carries nothing to meter."""
    path_model: str | None
    provider_hint: str | None
    charge: str = FREE
    """METERED, FREE or COSTLY."""


@dataclass(frozen=True, slots=True)
class Request:
    """What usage extraction may need of the request beyond the answer itself."""

    method: str = "POST"
    body: Mapping[str, Any] | None = None
    raw_size: int = 0
    """Bytes of the request body (an audio upload's size bounds its duration)."""


@dataclass(frozen=True, slots=True)
class Signals:
    """What tells a request on the generic route (`lcm/proxy/v2/`) is for this provider."""

    model_prefixes: tuple[str, ...]
    """Model names this provider's scheme starts with (lower-case)."""
    model_help: str
    headers: tuple[str, ...] = ()
    """Request headers only this provider's SDK sends (lower-case)."""
    key_prefixes: tuple[str, ...] = ()
    """Prefixes of this provider's API keys (only the prefix is ever reported)."""
    user_agent: str = ""
    """What this provider's SDK puts in User-Agent."""
    body_help: str = ""


def block_types(items: Any) -> set[str]:
    """The ``type`` values of a list of JSON objects (content blocks, tools)."""
    if not isinstance(items, list):
        return set()
    return {i["type"] for i in items if isinstance(i, Mapping) and isinstance(i.get("type"), str)}


def part_problem(kind: str) -> str:
    """The reason a non-text part or item blocks routing."""
    # tool_use/tool_result, function_call(_output), computer_call, mcp_call, *_tool_result...
    if any(word in kind for word in ("tool", "function", "_call", "mcp")):
        return f"tool calls in conversation ({kind})"
    return f"non-text input ({kind})"


def parts_problem(parts: Any, text: frozenset[str]) -> str | None:
    """First non-text part of an OpenAI/Anthropic content list (a string is text)."""
    if not isinstance(parts, list):
        return None
    for part in parts:
        if isinstance(part, Mapping):
            kind = part.get("type")
            if isinstance(kind, str) and kind not in text:
                return part_problem(kind)
    return None


def chat_problem(messages: Any, text: frozenset[str]) -> str | None:
    """Tool turns or non-text parts in OpenAI chat or Anthropic messages."""
    if not isinstance(messages, list):
        return None
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        if message.get("role") in ("tool", "function"):
            return f"tool calls in conversation ({message['role']} message)"
        if message.get("tool_calls") or message.get("function_call"):
            return "tool calls in conversation (tool_calls)"
        problem = parts_problem(message.get("content"), text)
        if problem:
            return problem
    return None


class Adapter(Protocol):
    """One provider's wire rules."""

    name: ClassVar[str]
    label: ClassVar[str]
    """How the provider is named to people."""
    auth_header: ClassVar[str]
    """Where the provider takes its API key (authorization, x-api-key, x-goog-api-key)."""
    wires: ClassVar[frozenset[str]]
    """The wire formats this adapter reads."""
    signals: ClassVar[Signals]

    def body_signals(self, body: Mapping[str, Any]) -> list[str]:
        """The features of a request body that only this provider's API has."""

    def auth_value(self, secret: str) -> str:
        """The auth header's value for a provider key."""

    def match(self, segments: list[str], method: str) -> Endpoint | None:
        """The endpoint a path (split on "/") names, if it is this provider's API shape."""

    def usage_from_body(self, wire: str, body: Mapping[str, Any], req: Request) -> Usage | None:
        """Usage of a complete JSON answer; None when it reports none."""

    def usage_from_event(
        self, wire: str, event: Mapping[str, Any], prior: Usage | None
    ) -> Usage | None:
        """Usage known after one streamed event, given what was known before it."""

    def usage_from_request(self, wire: str, req: Request) -> Usage | None:
        """Usage of an answer that reports none, from the request alone (tts-1 bills the
        input's characters); None when the request does not tell."""

    def usage_from_lines(self, wire: str, data: bytes) -> Usage | None:
        """Usage of a batch's results (JSON Lines), each result one step at its model."""

    def response_model(self, wire: str, body: Mapping[str, Any]) -> str | None:
        """The model the answer (or a stream event) says served the call."""

    def stream_markers(self, wire: str) -> tuple[bytes, ...]:
        """Byte strings whose presence means a streamed event may carry usage or an error."""

    def error_payload(self, status: int, message: str, code: str, param: str | None,
                      request_id: str) -> dict:  # fmt: skip
        """An error in this provider's JSON shape, so its SDK raises its usual exception."""

    def stream_error(self, payload: dict) -> bytes:
        """An error event for a stream whose headers are already sent."""

    def unroutable_reason(self, wire: str, body: Mapping[str, Any]) -> str | None:
        """Why a generation request may not go to another model of this provider, if so:
        non-text input or output, tool turns, structured output, state held upstream."""
