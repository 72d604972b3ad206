"""Gemini API wire formats for the simulator: generate, stream (SSE and JSON array), embed, count.

Paths are accepted under /v1/, /v1beta/ and /v1alpha/, after any prefix. Provider rules on top
of the shared text model:

* thinking models (gemini-2.5*, gemini-3* and later, the -latest aliases) spend 2 thought tokens
  per reply token, capped by ``thinkingConfig.thinkingBudget`` (0 turns thinking off, as does
  leaving it unset on a *-lite* model). ``thoughtsTokenCount`` is NOT part of
  ``candidatesTokenCount`` but is part of ``totalTokenCount``; ``maxOutputTokens`` caps both;
* ``cachedContent`` adds the cache's tokens (counted when created through ``cachedContents``,
  else ``DEFAULT_CACHED_TOKENS``) to ``promptTokenCount`` and reports them as
  ``cachedContentTokenCount``;
* a ``google_search`` / ``googleSearch`` tool runs one search for the last user text: the
  candidate gets ``groundingMetadata`` (one ``webSearchQueries`` entry; on the last chunk of a
  stream) and ``usageMetadata`` gets ``toolUsePromptTokenCount`` = ``SEARCH_RESULT_TOKENS``,
  which is NOT part of ``promptTokenCount`` but is part of ``totalTokenCount``;
* Gemini 2.5 and later report ``"serviceTier": "standard"`` in ``usageMetadata``, as recent
  recordings do;
* zero counts are omitted, as proto3 JSON does, and bodies are indented like the real API's.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote

from .simulator import (
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

NAME = "google"
DEFAULT_CACHED_TOKENS = 2048
SEARCH_RESULT_TOKENS = 100
_JSON = "application/json; charset=UTF-8"
_CALL = re.compile(r"/(v1|v1beta|v1alpha)/(?:models|tunedModels)/([^/:]+):([A-Za-z]+)$")
_CACHES = re.compile(r"/(v1|v1beta|v1alpha)/cachedContents$")
_LIST = re.compile(r"/(v1|v1beta|v1alpha)/models$")
_VERSION = re.compile(r"gemini-(\d+)(?:\.(\d+))?")
_METHODS = {
    "generateContent": "generate",
    "embedContent": "embed",
    "batchEmbedContents": "batch_embed",
    "countTokens": "count",
}
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_EMBEDDING_DIMENSIONS = {"text-embedding-004": 768, "embedding-001": 768}
_MODELS = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash")


# --- routing and errors ---------------------------------------------------------------------


def match(record: RecordedRequest) -> str | None:
    """The endpoint `record` asks for, if it is a Gemini one."""
    if record.method == "POST":
        call = _CALL.search(record.path)
        if call is not None:
            if call.group(3) == "streamGenerateContent":
                alt = parse_qs(record.query).get("alt", [""])[0]
                return "stream_sse" if alt == "sse" else "stream_array"
            return _METHODS.get(call.group(3))
        if _CACHES.search(record.path):
            return "caches"
    if record.method == "GET":
        listing = _LIST.search(record.path)
        # /v1/models is OpenAI's too; only a Google key makes it Gemini's.
        if listing is not None and (listing.group(1) != "v1" or _has_key(record)):
            return "models"
    return None


def owns(record: RecordedRequest) -> bool:
    """Whether an unknown path should get a Google-shaped 404."""
    return bool(_CALL.search(record.path)) or "/v1beta/" in record.path or _has_key(record)


def _key(record: RecordedRequest) -> str | None:
    return record.headers.get("x-goog-api-key") or parse_qs(record.query).get("key", [None])[0]


def _has_key(record: RecordedRequest) -> bool:
    return _key(record) is not None


def error(
    status: int, message: str, endpoint: str | None = None, *, details: list[Any] | None = None
) -> Reply:
    """Google's {"error": {code, message, status}} body ([...] around it for array streams)."""
    payload: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS.get(status, "FAILED_PRECONDITION" if status < 500 else "UNKNOWN"),
    }
    if status == 429 and details is None:
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
    if details:
        payload["details"] = details
    body: Any = {"error": payload}
    if endpoint == "stream_array":
        body = [body]  # the array-streaming form wraps its error the same way
    return json_reply(status, body, {}, pretty=True, content_type=_JSON)


def authorize(record: RecordedRequest, keys: frozenset[str], endpoint: str | None) -> Reply | None:
    """Accept x-goog-api-key / ?key= (or an OAuth bearer) naming one of `keys`."""
    key = _key(record)
    if key is not None:
        if key in keys:
            return None
        message = "API key not valid. Please pass a valid API key."
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": message,
            },
        ]
        # The real API answers a wrong key with 400 INVALID_ARGUMENT, not 401.
        return error(400, message, endpoint, details=details)
    auth = record.headers.get("authorization", "")
    if auth.startswith("Bearer "):
        if auth[7:].strip() in keys:
            return None
        return error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential.",
            endpoint,
        )
    return error(
        403,
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
        endpoint,
    )


def handle(endpoint: str, record: RecordedRequest, state: dict[str, Any], chunks: int) -> Reply:
    """Answer one Gemini request."""
    body = record.body or {}
    if endpoint == "models":
        return _models()
    if endpoint == "caches":
        return _create_cache(body, state)
    call = _CALL.search(record.path)
    model = call.group(2) if call is not None else ""
    if endpoint == "embed":
        return _embed(body, model)
    if endpoint == "batch_embed":
        return _batch_embed(body, model)
    if endpoint == "count":
        return _count(body, state)
    return _generate(body, model, state, chunks, endpoint)


def _field(obj: Any, name: str) -> Any:
    """`obj[name]` under its lowerCamel or snake_case spelling: the API accepts both."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(name)
    if value is None:
        value = obj.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name))
    return value


def _ok(obj: Any, *, pretty: bool = True) -> Reply:
    return json_reply(200, obj, {}, pretty=pretty, content_type=_JSON)


# --- counting -------------------------------------------------------------------------------


def _prompt_tokens(body: dict[str, Any]) -> int:
    total = sum(message_tokens(content) for content in body.get("contents") or [])
    system = _field(body, "systemInstruction")
    return total + (message_tokens(system) if system else 0)


def _cached(body: dict[str, Any], state: dict[str, Any]) -> int:
    name = _field(body, "cachedContent")
    if not name:
        return 0
    return state.get("caches", {}).get(name, DEFAULT_CACHED_TOKENS)


def is_thinking_model(model: str) -> bool:
    """Whether `model` thinks by default (Gemini 2.5 and later)."""
    version = _VERSION.search(model)
    if version is not None:
        return (int(version.group(1)), int(version.group(2) or 0)) >= (2, 5)
    return model.startswith(("gemini-flash-latest", "gemini-pro-latest", "gemini-flash-lite-l"))


def _thoughts(model: str, config: dict[str, Any], reply_tokens: int) -> int:
    thinking = _field(config, "thinkingConfig") or {}
    budget = _field(thinking, "thinkingBudget")
    if not is_thinking_model(model) or budget == 0:
        return 0
    if "-lite" in model and budget is None and not _field(thinking, "thinkingLevel"):
        return 0
    wanted = 2 * reply_tokens
    return min(wanted, budget) if positive_int(budget) else wanted


def _usage(
    prompt: int,
    cached: int,
    candidates: int,
    thoughts: int,
    tool_use: int = 0,
    tier: str | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt + tool_use + candidates + thoughts
    if cached:
        usage["cachedContentTokenCount"] = cached
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if cached:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if tool_use:
        usage["toolUsePromptTokenCount"] = tool_use
        usage["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": tool_use}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if tier:
        usage["serviceTier"] = tier
    return usage


def _searches(body: dict[str, Any]) -> bool:
    """Whether the request offers the Google Search tool (either spelling)."""
    tools = body.get("tools")
    return any(_field(tool, "googleSearch") is not None for tool in tools or [])


def _grounding(query: str, text: str) -> dict[str, Any]:
    uri = "https://search.simulated.invalid/?q=" + quote(query)
    chip = f'<div class="container"><a class="chip" href="{uri}">{escape(query)}</a></div>'
    return {
        "searchEntryPoint": {"renderedContent": chip},
        "groundingChunks": [{"web": {"uri": uri, "title": f"Search results for {query}"}}],
        "groundingSupports": [
            {
                # Gemini's segment offsets count UTF-8 bytes.
                "segment": {"startIndex": 0, "endIndex": len(text.encode()), "text": text},
                "groundingChunkIndices": [0],
            }
        ],
        "webSearchQueries": [query],
    }


def _last_user_text(contents: list[Any]) -> str:
    for content in reversed(contents):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            return " ".join(texts_in(content))
    return ""


# --- generateContent / streamGenerateContent ------------------------------------------------


def _generate(
    body: dict[str, Any], model: str, state: dict[str, Any], chunks: int, endpoint: str
) -> Reply:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return error(400, "* GenerateContentRequest.contents: contents is not specified", endpoint)
    config = _field(body, "generationConfig") or {}
    cap = _field(config, "maxOutputTokens")
    if cap is not None and not positive_int(cap):
        return error(400, "max_output_tokens must be positive.", endpoint)
    cached = _cached(body, state)
    prompt = _prompt_tokens(body) + cached
    last_user = _last_user_text(contents)
    reply = simulated_reply(model, last_user)
    gen = fit(reply, cap, _thoughts(model, config, count_tokens(reply)))
    finish = "MAX_TOKENS" if gen.truncated else "STOP"
    response_id = new_id("", 22)
    searched = _searches(body)
    query = " ".join(last_user.split())[:100] or "latest news"
    tool_use = SEARCH_RESULT_TOKENS if searched else 0
    tier = "standard" if is_thinking_model(model) else None

    def response(text: str, reason: str | None, candidates: int) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
        if reason:
            candidate["finishReason"] = reason
            if searched:
                candidate["groundingMetadata"] = _grounding(query, gen.text)
        candidate["index"] = 0
        thoughts = gen.reasoning_tokens
        return {
            "candidates": [candidate],
            "usageMetadata": _usage(prompt, cached, candidates, thoughts, tool_use, tier),
            "modelVersion": model,
            "responseId": response_id,
        }

    if endpoint == "generate":
        return _ok(response(gen.text, finish, gen.tokens))
    pieces = split_text(gen.text, chunks)
    chunk_objs = []
    so_far = ""
    for index, piece in enumerate(pieces):
        so_far += piece
        last = index == len(pieces) - 1
        chunk_objs.append(response(piece, finish if last else None, count_tokens(so_far)))
    if endpoint == "stream_sse":
        # Google ends each event with CRLF CRLF; SSE parsers accept either line ending.
        frames = [f"data: {json.dumps(obj)}\r\n\r\n" for obj in chunk_objs]
        return stream_reply(frames, {}, "text/event-stream")
    rendered = [json.dumps(obj, indent=2) for obj in chunk_objs]
    frames = ["[" + rendered[0]] + ["\n,\r\n" + text for text in rendered[1:]]
    frames[-1] += "\n]"
    return stream_reply(frames, {}, _JSON)


# --- embeddings, countTokens, cachedContents, models ----------------------------------------


def _embedding(content: Any, model: str, dimensions: Any) -> tuple[dict[str, Any], int]:
    texts = texts_in(content)
    size = dimensions if positive_int(dimensions) else _EMBEDDING_DIMENSIONS.get(model, 3072)
    return {"values": embedding_vector(" ".join(texts), size)}, sum(map(count_tokens, texts))


def _embed_usage(tokens: int) -> dict[str, int]:
    return {"promptTokenCount": tokens, "totalTokenCount": tokens}


def _embed(body: dict[str, Any], model: str) -> Reply:
    if not isinstance(body.get("content"), dict):
        return error(400, "* EmbedContentRequest.content: content is not specified")
    embedding, tokens = _embedding(body["content"], model, _field(body, "outputDimensionality"))
    # Compact on purpose: thousands of indented floats would make this path slow.
    return _ok({"embedding": embedding, "usageMetadata": _embed_usage(tokens)}, pretty=False)


def _batch_embed(body: dict[str, Any], model: str) -> Reply:
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return error(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
    embeddings, total = [], 0
    for request in requests:
        dimensions = _field(request, "outputDimensionality")
        embedding, tokens = _embedding(_field(request, "content"), model, dimensions)
        embeddings.append(embedding)
        total += tokens
    return _ok({"embeddings": embeddings, "usageMetadata": _embed_usage(total)}, pretty=False)


def _count(body: dict[str, Any], state: dict[str, Any]) -> Reply:
    request = _field(body, "generateContentRequest") or body
    cached = _cached(request, state)
    total = _prompt_tokens(request) + cached
    result: dict[str, Any] = {"totalTokens": total}
    if cached:
        result["cachedContentTokenCount"] = cached
    result["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": total}]
    return _ok(result)


def _timestamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _create_cache(body: dict[str, Any], state: dict[str, Any]) -> Reply:
    if not body.get("model"):
        return error(400, "* CachedContent.model: model is not specified")
    tokens = _prompt_tokens(body)
    name = "cachedContents/" + new_id("", 16)
    state.setdefault("caches", {})[name] = tokens
    ttl = str(body.get("ttl") or "3600s").rstrip("s")
    now = time.time()
    expires = now + float(ttl) if ttl.replace(".", "", 1).isdigit() else now + 3600
    cache = {
        "name": name,
        "model": body["model"],
        "createTime": _timestamp(now),
        "updateTime": _timestamp(now),
        "expireTime": _field(body, "expireTime") or _timestamp(expires),
        "displayName": _field(body, "displayName") or "",
        "usageMetadata": {"totalTokenCount": tokens},
    }
    return _ok(cache)


def _models() -> Reply:
    models = [
        {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model.replace("-", " ").title(),
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent"],
            "thinking": is_thinking_model(model),
        }
        for model in _MODELS
    ]
    return _ok({"models": models})


__all__ = ["DEFAULT_CACHED_TOKENS", "NAME", "is_thinking_model"]
