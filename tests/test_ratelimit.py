"""Rate-limit response rules: OpenAI-style headers, retry-after and the 429 text."""

from __future__ import annotations

import re

import pytest

from lcm_jupyter.core.ratelimit import (
    format_duration,
    rate_limit_headers,
    rate_limited_message,
    retry_after,
    retry_after_ms,
)

# Go time.Duration text as time.ParseDuration accepts it (no sign: never negative).
GO_DURATION = re.compile(r"0s|\d+ms|(?:\d+h)?(?:\d+m)?\d+(?:\.\d{1,3})?s")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (float("nan"), "0s"),
        (0.0001, "1ms"),  # rounded up: a client waiting that long is admitted
        (0.12, "120ms"),
        (0.999, "999ms"),
        (0.9991, "1s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.2, "59.2s"),
        (8.64, "8.64s"),
        (0.3 * 10, "3s"),  # 3.0000000000000004 is not 3.001
        (60, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3661.25, "1h1m1.25s"),
        (float("inf"), "24h0m0s"),
    ],
)
def test_format_duration(seconds, text) -> None:
    assert format_duration(seconds) == text
    assert GO_DURATION.fullmatch(text)


def test_rate_limit_headers() -> None:
    assert rate_limit_headers(limit=60, remaining=59, reset_seconds=1) == [
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "59"),
        ("x-ratelimit-reset-requests", "1s"),
    ]
    headers = dict(rate_limit_headers(limit=60, remaining=0, reset_seconds=2.4))
    assert headers["x-ratelimit-reset-requests"] == "2.4s"


def test_rate_limit_headers_never_negative() -> None:
    headers = dict(rate_limit_headers(limit=5, remaining=-3, reset_seconds=-1.0))
    assert headers == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "0s",
    }
    headers = dict(rate_limit_headers(limit=5, remaining=9, reset_seconds=0.05))
    assert headers["x-ratelimit-remaining-requests"] == "5"
    assert headers["x-ratelimit-reset-requests"] == "50ms"
    for name, value in rate_limit_headers(limit=-1, remaining=-1, reset_seconds=-1):
        assert name.islower() and not value.startswith("-")


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0, "1"), (-5, "1"), (float("nan"), "1"), (0.2, "1"), (1, "1"), (1.01, "2"), (2.4, "3"),
     (59.999, "60"), (60, "60"), (0.1 * 30, "3")],
)  # fmt: skip
def test_retry_after(seconds, header) -> None:
    assert retry_after(seconds) == header


def test_retry_after_ms() -> None:
    assert retry_after_ms(2.4) == "2400"
    assert retry_after_ms(0) == "1"
    assert retry_after_ms(0.0001) == "1"
    assert retry_after_ms(0.1 * 3) == "300"


def test_sdk_parses_headers() -> None:
    """The openai SDK reads retry-after-ms / retry-after as floats and honours 0 < d <= 120."""
    for seconds in (0.0, 0.3, 2.4, 59.9):
        assert 0 < float(retry_after(seconds)) <= 120
        assert 0 < float(retry_after_ms(seconds)) / 1000 <= 120
        assert float(retry_after(seconds)) >= seconds


def test_rate_limited_message() -> None:
    assert rate_limited_message(limit=60, reset_seconds=2.4) == (
        "Rate limit of 60 requests per minute reached for this proxy key; retry in 2.4s."
    )
    assert rate_limited_message(limit=1, reset_seconds=59.96).endswith(
        "1 request per minute reached for this proxy key; retry in 60s."
    )
    assert rate_limited_message(limit=10, reset_seconds=3.0000000000000004).endswith("retry in 3s.")
    assert rate_limited_message(limit=10, reset_seconds=0).endswith("retry in 0.1s.")
    assert rate_limited_message(limit=10, reset_seconds=2.41).endswith("retry in 2.5s.")
