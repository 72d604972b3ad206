"""OpenAI: paths, auth, usage on every billed endpoint, stream events, error shape.

Also read by Gemini's OpenAI-compatible endpoints and Azure OpenAI deployments, which
speak this wire (the path decides where the call goes, this adapter how it reads).

Billed endpoints and how each is metered:

- chat/completions, completions, responses, embeddings: the answer's ``usage`` (cached
  reads, cache writes, reasoning, audio and image tokens), the ``service_tier`` that
  served it, and for Responses the server tools it ran (web and file searches, per call).
- responses/{id} (GET, also streamed): a background response is billed once, by the
  retrieval that first sees it finished with its usage.
- images/generations, edits, variations: the answer's token usage (gpt-image models);
  DALL-E answers carry none, and those models have no catalog price (refused for a
  budgeted key as unpriced).
- audio/speech: characters of ``input`` (tts-1, tts-1-hd); the token models' usage when
  streamed as events, else an estimate flagged as such.
- audio/transcriptions and translations: the answer's ``usage`` (seconds or tokens).
- files/{id}/content (GET): a batch's output file, each result at its model's batch price.
- moderations, token counting, listing and reading state: free. Anything else that
  costs money (batch creation, fine-tuning, vector stores, realtime sessions, videos)
  is COSTLY: refused for a budgeted key unless allowed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from ..usage import Step, Usage, count, first, obj
from .base import (
    COSTLY,
    FREE,
    METERED,
    Endpoint,
    Request,
    Signals,
    block_types,
    chat_problem,
    part_problem,
    parts_problem,
)

# Suffix (as path segments) -> (name, wire). Longest suffixes first: "chat/completions"
# must win over "completions".
_SUFFIXES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("chat", "completions"), "chat.completions", "openai.chat"),
    (("completions",), "completions", "openai.completions"),
    (("responses", "compact"), "responses.compact", "openai.responses"),
    (("responses",), "responses", "openai.responses"),
    (("embeddings",), "embeddings", "openai.embeddings"),
    (("images", "generations"), "images.generations", "openai.images"),
    (("images", "edits"), "images.edits", "openai.images"),
    (("images", "variations"), "images.variations", "openai.images"),
    (("audio", "speech"), "audio.speech", "openai.speech"),
    (("audio", "transcriptions"), "audio.transcriptions", "openai.transcription"),
    (("audio", "translations"), "audio.translations", "openai.transcription"),
)
# Prefixes under which an inference-like suffix is something else: Assistants thread
# messages, OpenAI's usage API (organization/usage/completions).
_NOT_INFERENCE = frozenset({"threads", "organization", "organizations"})
# POSTs that cost nothing.
_FREE_POSTS = frozenset(
    {"moderations", "input_tokens", "cancel", "files", "uploads", "parts", "complete"}
)
SEGMENTS = frozenset(
    {
        "responses",
        "chat",
        "completions",
        "embeddings",
        "assistants",
        "threads",
        "moderations",
        "audio",
        "images",
        "fine_tuning",
        "vector_stores",
        "realtime",
        "conversations",
        "organization",
        "videos",
        "containers",
        "evals",
    }
)
"""Path segments only OpenAI's API uses (the detector's path signal)."""

WIRES = frozenset(
    {
        "openai.chat",
        "openai.completions",
        "openai.responses",
        "openai.embeddings",
        "openai.images",
        "openai.speech",
        "openai.transcription",
        "openai.response_get",
        "openai.batch_output",
    }
)
# Service tiers that change the price (default/auto/scale bill the standard rates).
_PRICED_TIERS = frozenset({"flex", "priority", "fast"})
_IMAGE_TOOL_MODEL = "gpt-image-1"
# Content-part types that are plain text.
_CHAT_TEXT = frozenset({"text", "refusal"})
_RESPONSES_TEXT = frozenset({"input_text", "output_text", "text", "refusal"})
# Responses API requests whose real prompt is stored upstream, out of the router's sight.
_UPSTREAM_STATE_KEYS = ("previous_response_id", "conversation", "prompt")
# Responses output items billed per call, by the catalog's unit.
_TOOL_ITEMS = {
    "web_search_call": "web_searches",
    "file_search_call": "storage_searches",
    "code_interpreter_call": "code_executions",
}


# Top-level fields of OpenAI's chat/completions/Responses/embeddings APIs that Anthropic lacks.
_BODY_KEYS = (
    "input",
    "instructions",
    "prompt",
    "max_completion_tokens",
    "max_output_tokens",
    "response_format",
    "stream_options",
    "reasoning_effort",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "n",
    "seed",
    "modalities",
    "parallel_tool_calls",
    "prediction",
    "previous_response_id",
    "encoding_format",
    "dimensions",
)
_BLOCKS = frozenset({"image_url", "input_audio", "input_text", "input_image", "refusal"})
_ROLES = frozenset({"system", "developer", "tool", "function"})
SIGNALS = Signals(
    model_prefixes=(
        "gpt-",
        "chatgpt-",
        "ft:",  # fine-tuned: ft:gpt-4o-mini:org::id
        "text-embedding-3",
        "text-embedding-ada",
        "text-davinci",
        "davinci",
        "babbage",
        "omni-moderation",
        "text-moderation",
        "codex-",
        "computer-use-",
        "dall-e-",
        "tts-",
        "whisper-",
    ),
    model_help="gpt-, o1/o3/o4, chatgpt-, text-embedding-3/-ada, davinci, babbage, ft:",
    headers=("openai-organization", "openai-project", "openai-beta"),
    key_prefixes=("sk-",),
    user_agent="openai/",
    body_help="input, instructions, max_completion_tokens, response_format, system/tool roles "
    "in messages, tool_calls, image_url blocks",
)


def _google_compat(prefix: list[str]) -> bool:
    """Whether the segments before an OpenAI-shaped suffix are a Google OpenAI-compat base."""
    # Gemini API: v1beta/openai/...; Vertex AI: .../endpoints/openapi/...
    if len(prefix) >= 2 and prefix[-1] == "openai" and prefix[-2].startswith("v1"):
        return True
    return len(prefix) >= 2 and prefix[-2:] == ["endpoints", "openapi"]


class OpenAI:
    """The OpenAI API and its compatible endpoints."""

    name: ClassVar[str] = "openai"
    label: ClassVar[str] = "OpenAI"
    auth_header: ClassVar[str] = "authorization"
    wires: ClassVar[frozenset[str]] = WIRES
    signals: ClassVar[Signals] = SIGNALS

    def body_signals(self, body: Mapping[str, Any]) -> list[str]:
        found = [f"top-level {k!r}" for k in _BODY_KEYS if k in body]
        messages = body.get("messages")
        for msg in messages if isinstance(messages, list) else ():
            if not isinstance(msg, Mapping):
                continue
            role = msg.get("role")
            if role in _ROLES:
                found.append(f"a message with role {role!r}")
            if "tool_calls" in msg or "tool_call_id" in msg:
                found.append("tool_calls/tool_call_id in a message")
            blocks = block_types(msg.get("content")) & _BLOCKS
            if blocks:
                found.append(f"{sorted(blocks)[0]} content block")
        tools = body.get("tools")
        for tool in tools if isinstance(tools, list) else ():
            if not isinstance(tool, Mapping) or "input_schema" in tool:
                continue
            if "function" in tool or tool.get("type") == "function":
                found.append("a function tool")
        return found

    def auth_value(self, secret: str) -> str:
        return f"Bearer {secret}"

    # -- paths ---------------------------------------------------------------------------------

    def match(self, segments: list[str], method: str) -> Endpoint | None:
        for suffix, name, wire in _SUFFIXES:
            n = len(suffix)
            if tuple(segments[-n:]) != suffix:
                continue
            prefix = segments[:-n]
            if _NOT_INFERENCE.intersection(prefix):
                break  # thread messages, the usage API: passthrough
            hint = "openai"
            deployment = None
            if len(prefix) >= 2 and prefix[-2] == "deployments":
                # Azure OpenAI names the deployment (usually the model) in the path.
                deployment = prefix[-1]
            elif _google_compat(prefix):
                hint = "google"
            return Endpoint(name, wire, deployment, hint, METERED)
        norm = "/".join(segments)
        if len(segments) >= 2 and segments[-2] == "responses" and method == "GET":
            # Retrieving a response (polled or streamed): a background one is billed here.
            return Endpoint(norm, "openai.response_get", None, "openai", METERED)
        is_file = len(segments) >= 3 and segments[-3] == "files" and segments[-1] == "content"
        if is_file and method == "GET":
            # A batch's output file: its results are billed when fetched.
            return Endpoint(norm, "openai.batch_output", None, "openai", METERED)
        present = set(segments)
        if not present & SEGMENTS:
            return None
        return Endpoint(norm, None, None, "openai", self.charge(segments, method))

    def charge(self, segments: list[str], method: str) -> str:
        """How a passthrough path is charged: reading state and a few POSTs are free."""
        if method in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return FREE
        if segments and segments[-1] in _FREE_POSTS:
            return FREE
        if "organization" in segments:
            return FREE  # the admin API
        return COSTLY

    # -- usage -----------------------------------------------------------------------------------

    def usage_from_body(self, wire: str, body: Mapping[str, Any], req: Request) -> Usage | None:
        if wire == "openai.batch_output":
            return None  # JSON Lines, read by usage_from_lines
        if wire == "openai.response_get":
            if body.get("status") not in ("completed", "incomplete", "failed"):
                return None  # still queued or running: nothing billed yet
            return _responses_usage(body)
        if wire == "openai.responses":
            if body.get("background") is True and body.get("status") in ("queued", "in_progress"):
                return None
            return _responses_usage(body)
        if wire == "openai.transcription":
            return _transcription_usage(body)
        u = body.get("usage")
        if not isinstance(u, Mapping):
            return None
        usage = usage_object(u)
        usage.service_tier = _tier(body.get("service_tier"))
        return usage

    def usage_from_request(self, wire: str, req: Request) -> Usage | None:
        """Usage of an answer that reports none, from the request (speech by characters)."""
        if wire != "openai.speech" or not isinstance(req.body, Mapping):
            return None
        text = req.body.get("input")
        if not isinstance(text, str):
            return None
        model = str(req.body.get("model") or "")
        if model.startswith("tts-1"):
            return Usage(extra={"input_characters": len(text)})
        return None

    def usage_from_event(
        self, wire: str, event: Mapping[str, Any], prior: Usage | None
    ) -> Usage | None:
        if wire in ("openai.responses", "openai.response_get"):
            # response.completed / .incomplete / .failed carry the final usage in `response`.
            response = obj(event, "response")
            if not isinstance(response.get("usage"), Mapping):
                return prior
            return _responses_usage(response) or prior
        if wire == "openai.speech":
            # speech.audio.done events carry the token usage of a streamed speech.
            u = obj(event, "usage")
            return usage_object(u) if u else prior
        chat_usage = event.get("usage")
        if not isinstance(chat_usage, Mapping):
            return prior
        usage = usage_object(chat_usage)
        usage.service_tier = _tier(event.get("service_tier"))
        return usage

    def usage_from_lines(self, wire: str, data: bytes) -> Usage | None:
        """A batch output file (JSON Lines): every succeeded result as one step at its model."""
        steps = []
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                return None  # not a batch output file
            response = obj(item, "response") if isinstance(item, Mapping) else {}
            body = obj(response, "body")
            u = obj(body, "usage")
            if "custom_id" not in item or not u:
                if "custom_id" not in item:
                    return None
                continue
            usage = usage_object(u)
            steps.append(
                Step(
                    kind="batch",
                    model=body.get("model") if isinstance(body.get("model"), str) else None,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cached_tokens=usage.cached_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                )
            )
        return _batch_usage(steps)

    def response_model(self, wire: str, body: Mapping[str, Any]) -> str | None:
        for container in (body, obj(body, "response")):
            value = container.get("model")
            if isinstance(value, str) and value:
                return value
        return None

    # -- streams -------------------------------------------------------------------------------

    def stream_markers(self, wire: str) -> tuple[bytes, ...]:
        if wire in ("openai.responses", "openai.response_get"):
            return (
                b"response.completed",
                b"response.incomplete",
                b"response.failed",
                b"response.created",
                b'"error"',
            )
        if wire == "openai.embeddings":
            return (b'"error"', b'"usage"')
        if wire == "openai.speech":
            return (b"speech.audio.done", b'"usage"', b'"error"')
        return (b'"error"',)

    # -- errors --------------------------------------------------------------------------------

    def error_payload(
        self, status: int, message: str, code: str, param: str | None, request_id: str
    ) -> dict:
        return {
            "error": {
                "message": message,
                "type": _ERROR_TYPES.get(status, "server_error"),
                "param": param,
                "code": code,
            }
        }

    def stream_error(self, payload: dict) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    # -- routing -------------------------------------------------------------------------------

    def unroutable_reason(self, wire: str, body: Mapping[str, Any]) -> str | None:
        if wire == "openai.chat":
            if _schema_type(body.get("response_format")) == "json_schema":
                return "structured output (json_schema)"
            modalities = body.get("modalities")
            if body.get("audio") or (isinstance(modalities, list) and "audio" in modalities):
                return "non-text output (audio)"
            return chat_problem(body.get("messages"), _CHAT_TEXT)
        if wire == "openai.responses":
            text = body.get("text")
            if isinstance(text, Mapping) and _schema_type(text.get("format")) == "json_schema":
                return "structured output (json_schema)"
            return _responses_problem(body)
        return None  # completions: a plain text prompt


def _schema_type(value: Any) -> str | None:
    """The ``type`` of an OpenAI response_format / Responses text.format object."""
    return value.get("type") if isinstance(value, Mapping) else None


def _responses_problem(body: Mapping[str, Any]) -> str | None:
    """Upstream state, non-message items or non-text parts in a Responses request."""
    for key in _UPSTREAM_STATE_KEYS:
        if body.get(key):
            return f"conversation held upstream ({key})"
    items = body.get("input")
    if not isinstance(items, list):
        return None
    for item in items:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if isinstance(kind, str) and kind != "message":
            # function_call(_output), reasoning, item_reference, computer_call, ...
            return part_problem(kind) if kind != "reasoning" else "reasoning items in input"
        problem = parts_problem(item.get("content"), _RESPONSES_TEXT)
        if problem:
            return problem
    return None


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def _tier(value: Any) -> str | None:
    """The service tier that changes the price, if the answer names one."""
    return value if isinstance(value, str) and value in _PRICED_TIERS else None


def usage_object(u: Mapping[str, Any]) -> Usage:
    """Normalize an OpenAI usage object (chat/completions, Responses, embeddings, images)."""
    inp = first(u, "prompt_tokens", "input_tokens")
    out = first(u, "completion_tokens", "output_tokens")
    total = first(u, "total_tokens")
    # OpenAI's totals are exactly input + output. Some OpenAI-compatible servers (Gemini's
    # compat layer) leave reasoning out of completion_tokens but not out of total_tokens:
    # bill what the total says was generated.
    if total > inp + out:
        out = total - inp
    details_in = obj(u, "prompt_tokens_details", "input_tokens_details", "input_token_details")
    details_out = obj(
        u, "completion_tokens_details", "output_tokens_details", "output_token_details"
    )
    cached = min(first(details_in, "cached_tokens"), inp)
    written = min(first(details_in, "cache_write_tokens", "cache_creation_tokens"), inp - cached)
    reasoning = first(details_out, "reasoning_tokens")
    extra = {}
    for key, unit in (
        ("audio_tokens", "input_audio_tokens"),
        ("image_tokens", "input_image_tokens"),
    ):
        n = first(details_in, key)
        if n:
            extra[unit] = min(n, inp)
    for key, unit in (
        ("audio_tokens", "output_audio_tokens"),
        ("image_tokens", "output_image_tokens"),
    ):
        n = first(details_out, key)
        if n:
            extra[unit] = min(n, max(out, reasoning))
    return Usage(
        input_tokens=inp,
        output_tokens=max(out, reasoning),
        cached_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=reasoning,
        extra=extra,
        raw=dict(u),
    )


def _responses_usage(response: Mapping[str, Any]) -> Usage | None:
    """A Responses object's usage, tier and server-tool calls."""
    u = response.get("usage")
    if not isinstance(u, Mapping):
        return None
    usage = usage_object(u)
    usage.service_tier = _tier(response.get("service_tier"))
    output = response.get("output")
    if isinstance(output, list):
        for item in output:
            unit = _TOOL_ITEMS.get(str(item.get("type"))) if isinstance(item, Mapping) else None
            if unit is not None:
                usage.extra[unit] = usage.extra.get(unit, 0) + 1
    tools = obj(response, "tool_usage")
    searches = obj(tools, "web_search")
    if searches.get("num_requests") is not None:
        # Newer answers count the searches themselves (one call may run several).
        usage.extra["web_searches"] = count(searches.get("num_requests"))
    image = obj(tools, "image_gen")
    if first(image, "total_tokens", "output_tokens"):
        # The image generation tool runs gpt-image-1 and is billed at its rates.
        made = usage_object(image)
        usage.steps = (
            Step("message", None, usage.input_tokens, usage.output_tokens, usage.cached_tokens,
                 usage.cache_write_tokens),
            Step("image_gen", _IMAGE_TOOL_MODEL, made.input_tokens, made.output_tokens,
                 made.cached_tokens),
        )  # fmt: skip
    return usage


def _transcription_usage(body: Mapping[str, Any]) -> Usage | None:
    """Seconds (whisper-1) or tokens (gpt-4o-transcribe) as the answer reports them."""
    u = body.get("usage")
    if not isinstance(u, Mapping):
        return None
    if u.get("type") == "duration" or "seconds" in u:
        seconds = u.get("seconds")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
            # Billed by the second, rounded to the nearest one.
            return Usage(extra={"audio_seconds": int(seconds + 0.5)}, raw=dict(u))
        return None
    return usage_object(u)


def _batch_usage(steps: list[Step]) -> Usage | None:
    """The usage of a batch's results: one step per result, totals summed."""
    if not steps:
        return None
    return Usage(
        input_tokens=sum(s.input_tokens for s in steps),
        output_tokens=sum(s.output_tokens for s in steps),
        cached_tokens=sum(s.cached_tokens for s in steps),
        cache_write_tokens=sum(s.cache_write_tokens for s in steps),
        steps=tuple(steps),
    )
