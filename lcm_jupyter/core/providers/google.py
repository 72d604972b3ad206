"""Google Gemini: paths (``{resource}:{method}``), auth, usageMetadata, error shape.

Usage rules, as Gemini reports them (``usageMetadata``, camelCase on the wire):

- the prompt is ``promptTokenCount`` plus ``toolUsePromptTokenCount`` (what tools such as
  search grounding fed back in); ``cachedContentTokenCount`` is the cached part of it;
- the output is ``candidatesTokenCount`` plus ``thoughtsTokenCount`` (thinking is billed
  as output but not counted in the candidates);
- ``promptTokensDetails`` / ``cacheTokensDetails`` / ``candidatesTokensDetails`` split
  those by modality: audio, image and video tokens have their own prices on some models;
- Google Search grounding is billed per search query the model ran (Gemini 3) or per
  grounded prompt (Gemini 2.x), as ``groundingMetadata.webSearchQueries`` shows.

In a stream, every chunk may repeat the cumulative usage; the last one wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from ..usage import Usage, first, obj
from .base import COSTLY, FREE, METERED, Endpoint, Request, Signals

WIRES = frozenset({"google.generate", "google.stream", "google.embed"})
VERSIONS = frozenset({"v1beta", "v1alpha", "v1beta1", "v1beta2", "v1beta3"})
"""Path segments only Google's APIs use."""
# Gemini "{resource}:{method}" methods that return usage.
_METHODS = {
    "generateContent": "google.generate",
    "streamGenerateContent": "google.stream",
    "embedContent": "google.embed",
    "batchEmbedContents": "google.embed",
}
_FREE_METHODS = frozenset({"countTokens", "get", "list", "cancel"})
_MODALITY_UNITS = {
    "promptTokensDetails": {
        "AUDIO": "input_audio_tokens",
        "IMAGE": "input_image_tokens",
        "DOCUMENT": "input_image_tokens",
        "VIDEO": "input_video_tokens",
    },
    "toolUsePromptTokensDetails": {
        "AUDIO": "input_audio_tokens",
        "IMAGE": "input_image_tokens",
        "DOCUMENT": "input_image_tokens",
        "VIDEO": "input_video_tokens",
    },
    "cacheTokensDetails": {
        "AUDIO": "cache_audio_read_tokens",
        "IMAGE": "cache_image_read_tokens",
        "DOCUMENT": "cache_image_read_tokens",
        "VIDEO": "cache_video_read_tokens",
    },
    "candidatesTokensDetails": {
        "AUDIO": "output_audio_tokens",
        "IMAGE": "output_image_tokens",
        "VIDEO": "output_video_tokens",
    },
}
_SNAKE = {
    "promptTokensDetails": "prompt_tokens_details",
    "toolUsePromptTokensDetails": "tool_use_prompt_tokens_details",
    "cacheTokensDetails": "cache_tokens_details",
    "candidatesTokensDetails": "candidates_tokens_details",
}
_PRICED_TIERS = frozenset({"flex", "priority"})
_TEXT_KEYS = frozenset({"text", "thought", "thoughtSignature", "thought_signature"})
_TOOL_PARTS = frozenset(
    {
        "functionCall",
        "function_call",
        "functionResponse",
        "function_response",
        "executableCode",
        "executable_code",
        "codeExecutionResult",
        "code_execution_result",
    }
)
_SCHEMA_KEYS = (
    "responseSchema",
    "response_schema",
    "responseJsonSchema",
    "response_json_schema",
    "_responseJsonSchema",
)
_BODY_KEYS = (
    "contents",
    "generationConfig",
    "generation_config",
    "systemInstruction",
    "system_instruction",
    "safetySettings",
    "cachedContent",
)
SIGNALS = Signals(
    model_prefixes=(
        "gemini-",
        "gemma-",
        "text-embedding-00",
        "text-multilingual-embedding-",
        "embedding-",
        "imagen-",
        "veo-",
        "learnlm-",
        "models/",
        "tunedmodels/",
    ),
    model_help="gemini-, gemma-, text-embedding-00x, embedding-, models/",
    headers=("x-goog-api-key", "x-goog-api-client"),
    key_prefixes=("AIza",),
    user_agent="google-genai-sdk",
    body_help="contents/generationConfig/systemInstruction",
)


def _model_from_resource(segments: list[str]) -> str | None:
    """The model in a Gemini resource path like ``models/x`` or ``projects/.../models/x``."""
    if len(segments) < 2 or not segments[-1]:
        return None
    if segments[-2] == "models":
        return segments[-1]
    # Tuned models are addressed by their full resource name.
    return f"tunedModels/{segments[-1]}" if segments[-2] == "tunedModels" else None


class Google:
    """The Gemini API (Google AI and Vertex AI paths)."""

    name: ClassVar[str] = "google"
    label: ClassVar[str] = "Google Gemini"
    auth_header: ClassVar[str] = "x-goog-api-key"
    wires: ClassVar[frozenset[str]] = WIRES
    signals: ClassVar[Signals] = SIGNALS

    def body_signals(self, body: Mapping[str, Any]) -> list[str]:
        found = [f"top-level {k!r}" for k in _BODY_KEYS if k in body]
        content = body.get("content")
        if isinstance(content, Mapping) and "parts" in content:  # embedContent
            found.append("'content' with 'parts'")
        requests = body.get("requests")
        head = requests[0] if isinstance(requests, list) and requests else None
        if isinstance(head, Mapping) and ("content" in head or "contents" in head):
            found.append("'requests' of contents")  # batchEmbedContents
        tools = body.get("tools")
        for tool in tools if isinstance(tools, list) else ():
            if isinstance(tool, Mapping) and (
                "functionDeclarations" in tool or "function_declarations" in tool
            ):
                found.append("a tool with functionDeclarations")
        return found

    def auth_value(self, secret: str) -> str:
        return secret

    def match(self, segments: list[str], method: str) -> Endpoint | None:
        last = segments[-1] if segments else ""
        resource, colon, verb = last.rpartition(":")
        norm = "/".join(segments)
        if colon and resource:
            model = _model_from_resource([*segments[:-1], resource])
            wire = _METHODS.get(verb)
            if wire is not None:
                return Endpoint(verb, wire, model, "google", METERED)
            if "anthropic" in segments:
                # Vertex AI's Claude (rawPredict/streamRawPredict): not metered here.
                return Endpoint(norm, None, model, "anthropic", COSTLY)
            charge = FREE if verb in _FREE_METHODS or method == "GET" else COSTLY
            return Endpoint(norm, None, model, "google", charge)
        if not set(segments) & VERSIONS:
            return None
        if method in ("GET", "HEAD", "DELETE", "OPTIONS") or "files" in segments:
            return Endpoint(norm, None, None, "google", FREE)
        return Endpoint(norm, None, None, "google", COSTLY)

    def usage_from_body(self, wire: str, body: Mapping[str, Any], req: Request) -> Usage | None:
        u = metadata(body)
        if u is None:
            return None
        usage = usage_object(u)
        usage.service_tier = _tier(body)
        searches = _searches(body, self.response_model(wire, body))
        if searches:
            usage.extra["web_searches"] = searches
        return usage

    def usage_from_request(self, wire: str, req: Request) -> Usage | None:
        return None

    def usage_from_event(
        self, wire: str, event: Mapping[str, Any], prior: Usage | None
    ) -> Usage | None:
        usage = self.usage_from_body(wire, event, Request())
        if usage is None:
            return prior
        if prior is not None and not usage.extra.get("web_searches"):
            # Grounding metadata comes in one chunk; later chunks' usage keeps its count.
            searches = prior.extra.get("web_searches")
            if searches:
                usage.extra["web_searches"] = searches
        return usage

    def usage_from_lines(self, wire: str, data: bytes) -> Usage | None:
        return None

    def response_model(self, wire: str, body: Mapping[str, Any]) -> str | None:
        for key in ("modelVersion", "model_version", "model"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def stream_markers(self, wire: str) -> tuple[bytes, ...]:
        return (b'"error"', b'"usageMetadata"', b'"usage_metadata"', b'"groundingMetadata"')

    def error_payload(
        self, status: int, message: str, code: str, param: str | None, request_id: str
    ) -> dict:
        return {
            "error": {
                "code": status,
                "message": message,
                "status": _STATUS.get(status, "UNKNOWN"),
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": code.upper(),
                        "domain": "lcm-jupyter",
                    }
                ],
            }
        }

    def stream_error(self, payload: dict) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    def unroutable_reason(self, wire: str, body: Mapping[str, Any]) -> str | None:
        if body.get("cachedContent") or body.get("cached_content"):
            # A cache is created for one model and cannot be used with another.
            return "cached content is tied to the model"
        config = generation_config(body)
        for key in _SCHEMA_KEYS:
            if config.get(key):
                return f"structured output ({key})"
        modalities = config.get("responseModalities") or config.get("response_modalities")
        if isinstance(modalities, list):
            for modality in modalities:
                if isinstance(modality, str) and modality.upper() != "TEXT":
                    return f"non-text output ({modality})"
        if config.get("speechConfig") or config.get("speech_config"):
            return "non-text output (speech)"
        for key in ("systemInstruction", "system_instruction"):
            problem = _parts_problem(body.get(key))
            if problem:
                return problem
        contents = body.get("contents")
        if isinstance(contents, Mapping):
            contents = [contents]
        for content in contents if isinstance(contents, list) else ():
            problem = _parts_problem(content)
            if problem:
                return problem
        return None


# google.rpc.Code names, as Gemini's `error.status`.
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def generation_config(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """Gemini's generationConfig object (camelCase or snake_case), else empty."""
    for name in ("generationConfig", "generation_config"):
        value = body.get(name)
        if isinstance(value, Mapping):
            return value
    return {}


def _parts_problem(content: Any) -> str | None:
    """First non-text part of a Gemini Content object."""
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if not isinstance(parts, list):
        return None
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        for key in part:
            if key not in _TEXT_KEYS:
                if key in _TOOL_PARTS:
                    return f"tool calls in conversation ({key})"
                return f"non-text input ({key})"
    return None


def metadata(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The usageMetadata object of a Gemini response or stream chunk, if any."""
    u = body.get("usageMetadata")
    if u is None:
        u = body.get("usage_metadata")
    return u if isinstance(u, Mapping) else None


def _details(u: Mapping[str, Any], name: str) -> list:
    value = u.get(name)
    if value is None:
        value = u.get(_SNAKE[name])
    return value if isinstance(value, list) else []


def usage_object(u: Mapping[str, Any]) -> Usage:
    """Normalize Gemini usageMetadata (camelCase on the wire, snake_case tolerated)."""
    prompt = first(u, "promptTokenCount", "prompt_token_count")
    tool_prompt = first(u, "toolUsePromptTokenCount", "tool_use_prompt_token_count")
    # generateContent reports candidatesTokenCount; embedContent's UsageMetadata responseTokenCount.
    visible = first(
        u,
        "candidatesTokenCount",
        "candidates_token_count",
        "responseTokenCount",
        "response_token_count",
    )
    thoughts = first(u, "thoughtsTokenCount", "thoughts_token_count")
    cached = first(u, "cachedContentTokenCount", "cached_content_token_count")
    extra: dict[str, int] = {}
    for name, units in _MODALITY_UNITS.items():
        for item in _details(u, name):
            if not isinstance(item, Mapping):
                continue
            unit = units.get(str(item.get("modality", "")).upper())
            n = first(item, "tokenCount", "token_count")
            if unit is not None and n:
                extra[unit] = extra.get(unit, 0) + n
    if tool_prompt:
        extra["input_tool_tokens"] = tool_prompt
    inp = prompt + tool_prompt
    return Usage(
        input_tokens=inp,
        output_tokens=visible + thoughts,
        cached_tokens=min(cached, inp),
        reasoning_tokens=thoughts,
        extra=extra,
        raw=dict(u),
    )


def _tier(body: Mapping[str, Any]) -> str | None:
    """The service tier a Gemini answer reports (flex/priority change the price)."""
    u = metadata(body) or {}
    candidates = (u.get("serviceTier"), u.get("service_tier"), body.get("serviceTier"))
    for value in candidates:
        if isinstance(value, str) and value.lower() in _PRICED_TIERS:
            return value.lower()
    return None


def _searches(body: Mapping[str, Any], model: str | None) -> int:
    """Billed Google Search grounding: queries run (Gemini 3+) or grounded prompts (2.x)."""
    candidates = body.get("candidates")
    if not isinstance(candidates, list):
        return 0
    queries = 0
    grounded = False
    for cand in candidates:
        grounding = (
            obj(cand, "groundingMetadata", "grounding_metadata")
            if isinstance(cand, Mapping)
            else {}
        )
        found = grounding.get("webSearchQueries") or grounding.get("web_search_queries")
        if isinstance(found, list) and found:
            grounded = True
            queries += len(found)
    if not grounded:
        return 0
    per_query = isinstance(model, str) and not model.startswith(("gemini-1", "gemini-2"))
    return queries if per_query else 1
