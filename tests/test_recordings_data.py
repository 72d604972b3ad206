"""The recorded-exchange corpus is well formed: sources, licenses, no secrets, parseable bodies."""

from __future__ import annotations

import json
import re

import pytest

from tests.recordings import PROVIDERS, load_recording, load_recordings, recording_paths

PERMISSIVE = {"MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "BSD"}
SECRET_PATTERNS = [
    re.compile(r"(?<![A-Za-z0-9])sk-ant-[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?<![A-Za-z0-9])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    re.compile(r"AIza[0-9A-Za-z_-]{30,}"),
]
SECRET_HEADERS = {"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "set-cookie"}
EXPECT_KEYS = {"model", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"}

PATHS = recording_paths()


def test_corpus_is_not_empty():
    assert len(PATHS) > 0
    for provider in PROVIDERS:
        assert load_recordings(provider), provider


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recording_is_well_formed(path):
    rec = load_recording(path)
    assert rec.provider in PROVIDERS
    source = rec.source
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", source["repo"]), source
    assert source["path"]
    assert source["license"] in PERMISSIVE, source["license"]
    assert source.get("commit") is None or re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert rec.exchanges
    for ex in rec.exchanges:
        assert ex.request.method in {"GET", "POST", "DELETE"}
        headers = {*ex.request.headers, *ex.response.headers}
        assert not {h.lower() for h in headers} & SECRET_HEADERS
        assert ex.request.url.startswith("https://")
        assert "key=" not in ex.request.url or "key=REDACTED" in ex.request.url
        assert 100 <= ex.response.status < 600
        assert ex.response.body is not None
    assert set(rec.expect) >= EXPECT_KEYS, sorted(EXPECT_KEYS - set(rec.expect))


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recording_has_no_secrets(path):
    text = path.read_text(encoding="utf-8")
    for pattern in SECRET_PATTERNS:
        match = pattern.search(text)
        assert match is None, f"secret-looking string {match.group(0)[:24]!r}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_exact_json_bodies_parse(path):
    for ex in load_recording(path).exchanges:
        resp = ex.response
        if not resp.body_exact or resp.is_stream:
            continue
        if "json" not in resp.headers.get("content-type", "").lower():
            continue
        json.loads(resp.body)  # also covers Gemini's non-SSE stream (a JSON array)
