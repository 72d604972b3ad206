"""The seam between the proxy and the providers: one pooled HTTP client, chosen by measurement.

aiohttp's ClientSession sustained about 7x the throughput of httpx 0.28's
AsyncClient under 32 concurrent calls on these machines (httpx's pool
collapses under concurrency), so the proxy uses aiohttp here; httpx stays the
kernel-side REST client. Transport failures are translated into the proxy's
errors in exactly one place, `_translate`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import contextmanager
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from ..core.errors import UpstreamTimeout, UpstreamUnavailable


class UpstreamResponse(Protocol):
    """What the pipeline needs of an upstream answer."""

    status: int
    headers: list[tuple[str, str]]

    async def read(self) -> bytes: ...
    def iter_chunks(self) -> AsyncIterator[bytes]: ...
    def release(self) -> None: ...
    def abort(self) -> None: ...


class Upstream(Protocol):
    """Sends one request to a provider."""

    async def send(
        self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> UpstreamResponse: ...

    async def close(self) -> None: ...


@contextmanager
def _translate(url: str, read_timeout: float):
    try:
        yield
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(
            f"The provider at {origin(url)} did not answer within {read_timeout:g}s."
        ) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(
            f"The provider at {origin(url)} could not be reached: {exc.__class__.__name__}: {exc}"
        ) from exc
    except OSError as exc:
        raise UpstreamUnavailable(
            f"The provider at {origin(url)} could not be reached: {exc}"
        ) from exc


def origin(url: str) -> str:
    """A base URL's scheme, host and port, as error messages name a provider (no path, and
    no credentials a URL may carry); '' when it has no host."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}" if parts.hostname else ""


class _AiohttpResponse:
    __slots__ = ("_read_timeout", "_resp", "_url", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, url: str, read_timeout: float) -> None:
        self._resp = resp
        self._url = url
        self._read_timeout = read_timeout
        self.status = resp.status
        self.headers = list(resp.headers.items())

    async def read(self) -> bytes:
        with _translate(self._url, self._read_timeout):
            try:
                return await self._resp.read()
            finally:
                self._resp.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        with _translate(self._url, self._read_timeout):
            async for chunk in self._resp.content.iter_any():
                yield chunk

    def release(self) -> None:
        self._resp.release()

    def abort(self) -> None:
        # close() drops the connection: the provider sees the cancel and stops generating.
        self._resp.close()


class AiohttpUpstream:
    """A pooled aiohttp session for every provider call of this process."""

    def __init__(
        self, *, connect_timeout: float, read_timeout: float, max_connections: int = 512
    ) -> None:
        self._read_timeout = read_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Made lazily: a ClientSession belongs to the loop it is created on.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=True,
                # Forward what the client sent; add nothing of our own.
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def send(
        self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> UpstreamResponse:
        """Send the request; returns once the status and headers are in."""
        with _translate(url, self._read_timeout):
            resp = await self._get_session().request(
                method, url, headers=list(headers), data=body, allow_redirects=False
            )
        return _AiohttpResponse(resp, url, self._read_timeout)

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None
