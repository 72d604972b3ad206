"""Real recorded provider traffic, replayed through the proxy: what is logged must be what the
provider reported, priced at list price.

Each recording in ``tests/data/recordings/`` (real exchanges recorded by public test suites,
see the README there) is served byte for byte by a small upstream standing in for the provider,
and its request is sent through a real Jupyter server with the extension, by the official
OpenAI and Anthropic SDKs (their generic request methods, so the recorded body goes out as
recorded) and, for Gemini, as google-genai sends it (``x-goog-api-key``). Then:

- the client gets the recorded answer byte for byte (streams cut into uneven pieces);
- the log row's tokens are the recording's usage as read from the provider's documentation
  (``expect``, written by hand, not by our code);
- its cost is that usage at list price, computed by genai-prices' own calculator, step by
  step where the provider reports steps (compaction, advisor), at the step's model.
"""

from __future__ import annotations

import json
import random
import warnings
from decimal import Decimal
from urllib.parse import urlsplit

import anthropic
import genai_prices
import httpx
import openai
import pytest
from aiohttp import web

from lcm_jupyter.core.budget import to_units

try:  # the SDKs' own HTTP library (httpx2 in current releases, httpx before)
    from httpx2 import Response as SDKResponse
except ImportError:  # pragma: no cover
    from httpx import Response as SDKResponse

from .recordings import Recording, load_recordings
from .upstreams import LocalUpstream

RECORDINGS = load_recordings()
ROUTES = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
PROVIDER_KEY = "sk-replay-upstream"
# Tiers that change the price (a recorded "default", "auto" or "standard" bills standard rates).
PRICED_TIERS = {"flex", "priority"}


class ReplayUpstream(LocalUpstream):
    """Serves one recording's exchanges in order, exactly as recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list = []
        self.seen: list[tuple[str, str, bytes]] = []
        self.rng = random.Random(7)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, body))
        if not self.exchanges:
            return web.json_response({"error": "no recorded exchange left"}, status=599)
        exchange = self.exchanges.pop(0)
        recorded = exchange.response
        kind = recorded.headers.get("content-type", "application/json")
        data = recorded.body or b""
        if not recorded.is_stream:
            return web.Response(status=recorded.status, body=data, headers={"content-type": kind})
        out = web.StreamResponse(status=recorded.status, headers={"content-type": kind})
        await out.prepare(request)
        at = 0
        while at < len(data):  # uneven pieces: events split mid-line and mid-character
            step = self.rng.randint(1, 400)
            await out.write(data[at : at + step])
            at += step
        await out.write_eof()
        return out


@pytest.fixture
def replay(jp_asyncio_loop):
    upstream = ReplayUpstream()
    jp_asyncio_loop.run_until_complete(upstream.start())
    yield upstream
    jp_asyncio_loop.run_until_complete(upstream.stop())


@pytest.fixture
def lcm_config(replay, tmp_path):
    return {
        "db_path": str(tmp_path / "lcm.sqlite3"),
        "secret_key_file": str(tmp_path / "secret.key"),
        "openai_base_url": replay.url,
        "anthropic_base_url": replay.url,
        "google_base_url": replay.url,
        "upstream_read_timeout": 10.0,
        "max_request_body_bytes": 32 * 1024 * 1024,
    }


def _genai_usage(part: dict, *, tokens_only: bool = False) -> genai_prices.Usage:
    """The genai-prices usage of an `expect` entry (a whole call or one iteration)."""
    fields = {
        "input_tokens": part.get("input_tokens", 0),
        "cache_read_tokens": part.get("cache_read_tokens", 0),
        "cache_write_tokens": part.get("cache_write_tokens", 0),
        "cache_write_1h_tokens": part.get("cache_write_1h_tokens", 0),
        "output_tokens": part.get("output_tokens", 0),
    }
    if not tokens_only:
        for key in (
            "input_audio_tokens",
            "output_audio_tokens",
            "input_image_tokens",
            "input_video_tokens",
            "output_image_tokens",
            "web_searches",
        ):
            fields[key] = part.get(key, 0)
        fields["storage_searches"] = part.get("file_searches", 0)
        if part.get("audio_seconds"):
            fields["audio_seconds"] = round(part["audio_seconds"])
        # Explicit zeros where genai-prices wants them once a modality is reported.
        fields["cache_audio_read_tokens"] = fields["cache_image_read_tokens"] = 0
    return genai_prices.Usage(**fields)


def list_price(rec: Recording, provider: str, at) -> Decimal | None:
    """The recording's usage at list price, from genai-prices, or None when it has no price."""
    expect = rec.expect
    model = expect.get("model")
    tier = expect.get("service_tier")
    context = {"service_tier": tier} if tier in PRICED_TIERS else None

    def calc(usage: genai_prices.Usage, name: str) -> Decimal:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return genai_prices.calc_price(
                usage, name, provider_id=provider, genai_request_timestamp=at,
                price_context=context,
            ).total_price  # fmt: skip

    try:
        if expect.get("iterations"):
            total = Decimal(0)
            for step in expect["iterations"]:
                total += calc(_genai_usage(step, tokens_only=True), step.get("model") or model)
            if expect.get("web_searches"):
                total += calc(genai_prices.Usage(web_searches=expect["web_searches"]), model)
            return total
        return calc(_genai_usage(expect), model)
    except LookupError:
        return None


def _route(rec: Recording, url: str) -> str:
    parts = urlsplit(url)
    path = parts.path.lstrip("/")
    return f"lcm/proxy/{ROUTES[rec.provider]}/{path}" + (f"?{parts.query}" if parts.query else "")


async def _send(base_url: str, key: str, rec: Recording, exchange) -> tuple[int, bytes, str]:
    """Send one recorded request through the proxy; (status, body, x-lcm-request-id)."""
    req = exchange.request
    route = _route(rec, req.url)
    headers = {k: v for k, v in req.headers.items() if k.lower() != "content-length"}
    is_json = "json" in headers.get("content-type", "application/json")
    body = json.loads(req.body) if req.body and is_json else None
    if not is_json:  # an upload (multipart): sent as recorded, with the SDK's auth header
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.request(
                req.method,
                base_url + route,
                content=req.body,
                headers={**headers, "authorization": f"Bearer {key}"},
            )
            return resp.status_code, resp.content, resp.headers.get("x-lcm-request-id", "")
    if rec.provider == "openai":
        client = openai.AsyncOpenAI(
            base_url=base_url + "lcm/proxy/openai/v1", api_key=key, max_retries=0
        )
        sdk_path = "/" + route.split("lcm/proxy/openai/v1/", 1)[1]
    elif rec.provider == "anthropic":
        client = anthropic.AsyncAnthropic(
            base_url=base_url + "lcm/proxy/anthropic", api_key=key, max_retries=0
        )
        sdk_path = "/" + route.split("lcm/proxy/anthropic/", 1)[1]
    else:
        client = None
    if client is not None:
        options = {"headers": headers}
        try:
            if req.method == "GET":
                resp = await client.get(sdk_path, cast_to=SDKResponse, options=options)
            else:
                resp = await client.post(sdk_path, cast_to=SDKResponse, body=body, options=options)
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:  # a recorded error
            resp = exc.response
        data = await resp.aread()
        return resp.status_code, data, resp.headers.get("x-lcm-request-id", "")
    async with httpx.AsyncClient(timeout=30) as http:  # as google-genai sends it
        resp = await http.request(
            req.method,
            base_url + route,
            content=req.body,
            headers={**headers, "x-goog-api-key": key},
        )
        return resp.status_code, resp.content, resp.headers.get("x-lcm-request-id", "")


def _id(rec: Recording) -> str:
    return f"{rec.provider}/{rec.name}"


@pytest.mark.parametrize("rec", RECORDINGS, ids=_id)
async def test_replayed_call_is_logged_with_the_recorded_usage_at_list_price(
    rec: Recording, replay, base_url, make_key, logs
):
    provider = ROUTES[rec.provider]
    record = await make_key(provider="auto", provider_api_keys={provider: PROVIDER_KEY})
    replay.exchanges = list(rec.exchanges)
    ids = []
    for exchange in rec.exchanges:
        status, data, log_id = await _send(base_url, record["key"], rec, exchange)
        assert status == exchange.response.status
        assert data == exchange.response.body  # byte for byte
        ids.append(log_id)
    rows = {row["id"]: row for row in await logs(key_id=record["id"])}
    assert set(rows) == set(ids)  # every answered call has its row
    expect = rec.expect
    billed_at = expect.get("usage_exchange_index", len(ids) - 1)
    row = rows[ids[billed_at]]
    for other in (rows[i] for n, i in enumerate(ids) if n != billed_at):
        assert not other["cost_usd"], other  # billed once, by one call only
    if rec.exchanges[billed_at].response.status >= 400:
        assert row["status"] == rec.exchanges[billed_at].response.status
        assert not row["cost_usd"]
        return
    if expect.get("not_billed"):
        assert row["cost_usd"] == 0 and row["input_tokens"] == 0
        return
    assert (row["input_tokens"], row["output_tokens"]) == (
        expect["input_tokens"],
        expect["output_tokens"],
    )
    assert (row["cached_tokens"], row["cache_write_tokens"], row["reasoning_tokens"]) == (
        expect["cache_read_tokens"],
        expect["cache_write_tokens"],
        expect["reasoning_tokens"],
    )
    assert row["usage_estimated"] is False
    from datetime import datetime

    at = datetime.fromisoformat(row["created_at"].replace("Z", "+00:00"))
    price = list_price(rec, provider, at)
    if price is None:  # a model the catalog does not know: unpriced, never $0
        assert row["cost_usd"] is None and row["unpriced"] is True
        return
    assert to_units(row["cost_usd"]) == to_units(price), (row["cost_usd"], price)
