"""The response cache: exact-match answers for keys that turn it on (`cache_ttl_seconds`).

Keyed on the proxy key, provider, path, query and the canonical JSON body, so two
keys (two teams, two provider accounts) never share an answer. Only complete,
successful, non-streamed answers with usage are stored, with their usage, so a
hit can be logged with the savings it made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.usage import Usage
from ..store.counters import SharedKV

# Headers a cached answer keeps (the rest describe the original exchange only).
_KEPT_HEADERS = frozenset({"content-type", "openai-model", "anthropic-model"})


@dataclass(slots=True)
class CachedResponse:
    """A stored answer."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    model: str | None
    usage: Usage


def cache_digest(key_id: int, provider: str, path: str, query: str, body: Any) -> str:
    """The cache key of a request: what makes two requests the same question."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(
        f"{key_id}\0{provider}\0{path}\0{query}\0{canonical}".encode()
    ).hexdigest()


def wants_no_cache(headers: Mapping[str, str]) -> bool:
    """True when the client asked to bypass the cache (`cache-control: no-cache`/`no-store`)."""
    value = headers.get("cache-control", "").lower()
    return "no-cache" in value or "no-store" in value


class ResponseCache:
    """Stores and finds answers in the shared store's cache space (Redis, or memory)."""

    def __init__(self, counters: SharedKV) -> None:
        self._counters = counters

    async def get(self, digest: str) -> CachedResponse | None:
        """The answer stored under `digest`, or None."""
        raw = await self._counters.cache_get(digest)
        if raw is None:
            return None
        head, _, body = raw.partition(b"\n")
        meta = json.loads(head)
        return CachedResponse(
            status=meta["status"],
            headers=[tuple(h) for h in meta["headers"]],
            body=body,
            model=meta["model"],
            usage=_usage(meta["usage"]),
        )

    async def put(
        self,
        digest: str,
        *,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        model: str | None,
        usage: Usage,
        ttl: int,
    ) -> None:
        """Store an answer for `ttl` seconds."""
        meta = {
            "status": status,
            "headers": [(k, v) for k, v in headers if k.lower() in _KEPT_HEADERS],
            "model": model,
            "usage": {**usage.to_json(), "raw": usage.raw},
        }
        await self._counters.cache_set(digest, json.dumps(meta).encode() + b"\n" + body, ttl)


def _usage(stored: dict) -> Usage:
    usage = Usage.from_json(stored)
    usage.raw = stored.get("raw")
    return usage
