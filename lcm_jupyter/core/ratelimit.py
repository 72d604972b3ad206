"""Pure rate-limit response rules: OpenAI-style headers, retry-after and the 429 text.

OpenAI sends ``x-ratelimit-{limit,remaining,reset}-requests`` with the reset as a Go
``time.Duration`` string ("1s", "6m0s", "59.2s", "120ms"); clients such as go-openai
parse it with ``time.ParseDuration``. The openai and anthropic Python SDKs only read
``retry-after-ms`` (preferred) and ``retry-after`` (seconds, floats tolerated) and
only honour a positive delay (openai: at most 120 s); otherwise they back off on
their own.
"""

from __future__ import annotations

import math

__all__ = [
    "format_duration",
    "rate_limit_headers",
    "rate_limited_message",
    "retry_after",
    "retry_after_ms",
]

# A reset can only be as far away as the window; anything non-finite is a caller bug
# that must not turn into "inf" on the wire or an OverflowError.
_MAX_SECONDS = 24 * 3600.0


def _clean(seconds: float) -> float:
    """A finite, non-negative number of seconds."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(value) or value <= 0:
        return 0.0
    return min(value, _MAX_SECONDS)


def _ceil_scaled(seconds: float, per_second: int) -> int:
    """ceil(seconds * per_second), ignoring float noise (0.3 * 10 is 3.0000000000000004)."""
    return math.ceil(round(seconds * per_second, 6))


def format_duration(seconds: float) -> str:
    """Go time.Duration text as OpenAI sends it, rounded up to the millisecond."""
    ms = _ceil_scaled(_clean(seconds), 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_headers(
    *, limit: int, remaining: int, reset_seconds: float
) -> list[tuple[str, str]]:
    """OpenAI's request rate-limit headers for a key's window; never negative."""
    limit = max(int(limit), 0)
    remaining = min(max(int(remaining), 0), limit)
    return [
        ("x-ratelimit-limit-requests", str(limit)),
        ("x-ratelimit-remaining-requests", str(remaining)),
        ("x-ratelimit-reset-requests", format_duration(reset_seconds)),
    ]


def retry_after(reset_seconds: float) -> str:
    """The retry-after header: whole seconds, rounded up, at least 1."""
    # Rounded up so a client that honours it is admitted, and >= 1 because the SDKs
    # ignore a zero delay and fall back to their own backoff.
    return str(max(_ceil_scaled(_clean(reset_seconds), 1), 1))


def retry_after_ms(reset_seconds: float) -> str:
    """The retry-after-ms header the openai/anthropic SDKs prefer: milliseconds, at least 1."""
    return str(max(_ceil_scaled(_clean(reset_seconds), 1000), 1))


def _seconds_text(seconds: float) -> str:
    """Seconds rounded up to a tenth, without a trailing ".0" ("2.4s", "3s")."""
    tenths = max(_ceil_scaled(_clean(seconds), 10), 1)
    whole, frac = divmod(tenths, 10)
    return f"{whole}.{frac}s" if frac else f"{whole}s"


def rate_limited_message(*, limit: int, reset_seconds: float) -> str:
    """The 429 rate_limit error text."""
    unit = "request" if limit == 1 else "requests"
    return (
        f"Rate limit of {limit} {unit} per minute reached for this proxy key; "
        f"retry in {_seconds_text(reset_seconds)}."
    )
