"""Real provider exchanges recorded by public test suites, for replay tests.

The corpus lives in ``tests/data/recordings/<provider>/<source>__<name>.json`` (see the README
there for sources, licenses and the usage shapes). Stdlib only: bodies come back as bytes,
exactly as stored (UTF-8), so they can be replayed byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORDINGS_DIR = Path(__file__).resolve().parent / "data" / "recordings"
PROVIDERS = ("openai", "anthropic", "gemini")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    body_exact: bool
    note: str | None = None


@dataclass(frozen=True)
class RecordedResponse:
    status: int
    headers: dict[str, str]
    body: bytes | None
    body_exact: bool

    @property
    def is_stream(self) -> bool:
        """True for server-sent events (OpenAI, Anthropic, Gemini ``alt=sse``)."""
        return "text/event-stream" in self.headers.get("content-type", "").lower()


@dataclass(frozen=True)
class Exchange:
    request: RecordedRequest
    response: RecordedResponse


@dataclass(frozen=True)
class Recording:
    name: str
    source: dict[str, Any]
    recorded_at: str | None
    exchanges: list[Exchange]
    expect: dict[str, Any]
    provider: str = ""
    path: Path | None = field(default=None, compare=False)


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else value.encode("utf-8")


def _exchange(raw: dict[str, Any]) -> Exchange:
    rq, rs = raw["request"], raw["response"]
    return Exchange(
        request=RecordedRequest(
            method=rq["method"],
            url=rq["url"],
            headers=dict(rq.get("headers") or {}),
            body=_bytes(rq.get("body")),
            body_exact=bool(rq.get("body_exact", False)),
            note=rq.get("note"),
        ),
        response=RecordedResponse(
            status=int(rs["status"]),
            headers=dict(rs.get("headers") or {}),
            body=_bytes(rs.get("body")),
            body_exact=bool(rs.get("body_exact", False)),
        ),
    )


def load_recording(path: Path) -> Recording:
    """Load one recording file."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    return Recording(
        name=path.stem,
        source=doc["source"],
        recorded_at=doc.get("recorded_at"),
        exchanges=[_exchange(x) for x in doc["exchanges"]],
        expect=doc.get("expect") or {},
        provider=path.parent.name,
        path=path,
    )


def recording_paths(provider: str | None = None) -> list[Path]:
    """The recording files, sorted, optionally for one provider."""
    providers = [provider] if provider else list(PROVIDERS)
    paths: list[Path] = []
    for name in providers:
        if name not in PROVIDERS:
            raise ValueError(f"unknown provider {name!r}; expected one of {PROVIDERS}")
        paths.extend(sorted((RECORDINGS_DIR / name).glob("*.json")))
    return paths


def load_recordings(provider: str | None = None) -> list[Recording]:
    """All recordings (or one provider's), sorted by provider then file name."""
    return [load_recording(p) for p in recording_paths(provider)]
