"""Pure budget rules: months, money units, worst-case reservations and alert texts.

Money moves through the counters as integer units of 1e-10 USD (`MONEY_SCALE`),
so every conversion from a Decimal cost or a configured float budget happens
here, once, with explicit rounding. A call is admitted against its worst case
(estimated prompt at the input price plus its output cap at the output price)
and settled later at its real cost.

Nothing here does I/O: the server layer owns the counters, the clock it passes
in, and the webhook POST.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from .money import format_usd
from .pricing import RateCard
from .prompt import MEDIA_KEYS, MEDIA_TYPES
from .providers.google import generation_config

MONEY_SCALE = 10**10
"""Money counter units per US dollar (1e-10 USD each): see store/counters.py for why."""

__all__ = [
    "MEDIA_TOKENS",
    "Threshold",
    "alert_message",
    "budget_exceeded_message",
    "crossed_thresholds",
    "current_month",
    "estimate_input_tokens",
    "max_output_tokens",
    "month_bounds",
    "month_of",
    "reservation_units",
    "severity_for",
    "to_units",
    "to_usd",
    "webhook_payload",
    "worst_case_usd",
]

# --- months -------------------------------------------------------------------------------

_MONTH_RE = re.compile(r"(\d{4})-(\d{2})")


def month_of(moment: datetime) -> str:
    """The UTC calendar month of `moment` as "YYYY-MM" (naive datetimes are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return f"{moment.year:04d}-{moment.month:02d}"


def current_month() -> str:
    """The current UTC calendar month as "YYYY-MM"."""
    return month_of(datetime.now(timezone.utc))


def month_bounds(month: str) -> tuple[str, str]:
    """[start, next month's start) of "YYYY-MM" as stored UTC timestamps (they sort as text)."""
    match = _MONTH_RE.fullmatch(month) if isinstance(month, str) else None
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"month must look like 'YYYY-MM', got {month!r}")
    year, mon = int(match.group(1)), int(match.group(2))
    nyear, nmon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    # Same shape as timeutil.to_iso, so `start <= created_at < end` works on the text column.
    return f"{year:04d}-{mon:02d}-01T00:00:00.000Z", f"{nyear:04d}-{nmon:02d}-01T00:00:00.000Z"


# --- money --------------------------------------------------------------------------------

_ONE = Decimal(1)
_CENT = Decimal("0.01")
_SCALE_EXP = 10  # MONEY_SCALE == 10**10; scaleb shifts the exponent without rounding noise
assert 10**_SCALE_EXP == MONEY_SCALE


def to_units(usd: Decimal | float | int | str | None) -> int:
    """USD -> counter units (1e-10 USD), rounded half-up; None -> 0."""
    if usd is None:
        return 0
    if isinstance(usd, bool):
        raise TypeError("a USD amount must be a number, not a bool")
    if isinstance(usd, int):
        return usd * MONEY_SCALE
    if isinstance(usd, Decimal):
        value = usd
    elif isinstance(usd, (float, str)):
        # str(float) is the shortest repr: 0.1 -> Decimal("0.1"), not 0.1000000000000000055...
        try:
            value = Decimal(str(usd).strip())
        except InvalidOperation:
            raise ValueError(f"not a USD amount: {usd!r}") from None
    else:
        raise TypeError(f"a USD amount must be a number, got {type(usd).__name__}")
    if not value.is_finite():
        raise ValueError(f"a USD amount must be finite, got {usd!r}")
    return int(value.scaleb(_SCALE_EXP).to_integral_value(rounding=ROUND_HALF_UP))


def to_usd(units: int) -> float:
    """Counter units -> USD as a float (for JSON and messages)."""
    # int / int true division is correctly rounded, unlike units * 1e-10.
    return units / MONEY_SCALE


# --- prompt estimate ----------------------------------------------------------------------

MEDIA_TOKENS = 1600
"""Tokens counted for each image, audio clip or file part (their size is not knowable here)."""

CHARS_PER_TOKEN = 3
"""Conservative: English averages ~4 characters per token, code and CJK fewer."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Role and delimiter tokens each message adds."""

# Request keys holding prompt content, per provider: OpenAI chat/completions/Responses/
# embeddings, Anthropic messages, Gemini generate/embed/batchEmbed.
# Lists of messages (4 tokens of overhead per object in them), single messages (4 tokens),
# and definitions the provider serializes into the prompt (keys count too).
_MESSAGES, _SINGLE, _SCHEMA = 1, 2, 3
_PROMPT_KEYS = {
    **dict.fromkeys(("messages", "input", "prompt", "contents", "requests"), _MESSAGES),
    **dict.fromkeys(
        ("system", "instructions", "systemInstruction", "system_instruction", "content"), _SINGLE
    ),
    **dict.fromkeys(("tools", "functions", "response_format", "text"), _SCHEMA),
}

# Parts whose payload is binary (base64) or a reference: a fixed count, never its length.
_MEDIA_TYPES = MEDIA_TYPES | {"document"}
_MEDIA_KEYS = frozenset(MEDIA_KEYS)
# Metadata strings that are not prompt text (or are covered by the per-message overhead);
# Anthropic's thinking signature is a long opaque blob that is not billed as text.
_SKIP_KEYS = frozenset(
    {"role", "type", "signature", "cache_control", "mimeType", "mime_type", "media_type"}
)
# Far above any real request (a 10,000-message chat with parts is ~30,000 containers); a
# cyclic structure gives up after ~0.1 s.
_MAX_CONTAINERS = 200_000


def _is_media(node: Mapping[str, Any]) -> bool:
    """Whether a content part is an image/audio/file rather than text."""
    kind = node.get("type")
    if not isinstance(kind, str) or kind not in _MEDIA_TYPES:
        return False
    if kind == "document":
        # Anthropic plain-text documents carry their text inline: count it as text.
        source = node.get("source")
        if isinstance(source, Mapping) and source.get("type") in ("text", "content"):
            return False
    return True


def _text(value: str) -> tuple[int, int]:
    """(characters, tokens) of one string: a base64 data URL is media, not text."""
    if value.startswith("data:") and ";base64," in value[:256]:
        return 0, MEDIA_TOKENS
    return len(value), 0


def _measure(root: Any, schema: bool) -> tuple[int, int]:
    """(characters of text, tokens counted directly) under `root`; never raises."""
    if isinstance(root, str):
        return _text(root)
    if not isinstance(root, (dict, list, tuple, Mapping)):
        return 0, 0
    chars = tokens = 0
    # Iterative walk: deep nesting cannot hit the recursion limit, and the visit cap makes
    # a (non-JSON) self-referencing structure finite. No seen-set: a body built in Python
    # may legitimately repeat one object, and each repetition is sent and billed.
    stack: list[Any] = [root]
    visits = 0
    try:
        while stack:
            node = stack.pop()
            visits += 1
            if visits > _MAX_CONTAINERS:
                break
            # Concrete type checks first: isinstance against the Mapping ABC is slower.
            if type(node) is dict or isinstance(node, Mapping):
                if schema:
                    # Tool/schema definitions are serialized into the prompt, keys included.
                    for key, value in node.items():
                        if type(key) is str:
                            chars += len(key)
                        if type(value) is str:
                            chars += len(value)
                        elif isinstance(value, (dict, list, tuple, Mapping)):
                            stack.append(value)
                    continue
                if _is_media(node):
                    tokens += MEDIA_TOKENS
                    continue
                for key, value in node.items():
                    if key in _SKIP_KEYS:
                        continue
                    if key in _MEDIA_KEYS:
                        tokens += MEDIA_TOKENS
                    elif type(value) is str or isinstance(value, str):
                        c, t = _text(value)
                        chars += c
                        tokens += t
                    elif isinstance(value, (dict, list, tuple, Mapping)):
                        stack.append(value)
            else:
                for item in node:
                    if type(item) is str or isinstance(item, str):
                        c, t = _text(item)
                        chars += c
                        tokens += t
                    elif type(item) is int:
                        # Token-id arrays (embeddings/completions `input`/`prompt`).
                        tokens += 1
                    elif isinstance(item, (dict, list, tuple, Mapping)):
                        stack.append(item)
    except Exception:
        # An exotic Mapping that fails on access: keep what was counted, never fail a call.
        pass
    return chars, tokens


def estimate_input_tokens(body: Mapping | None) -> int:
    """Cheap, deliberately high estimate of a request's prompt tokens (any provider)."""
    if isinstance(body, (list, tuple)):
        chars, tokens = _measure(body, schema=False)
        return -(-chars // CHARS_PER_TOKEN) + tokens
    if not isinstance(body, Mapping):
        return 0
    chars = tokens = 0
    try:
        # One pass over the body's own keys: cheaper than probing every known name.
        for name, value in body.items():
            kind = _PROMPT_KEYS.get(name)
            if kind is None or value is None:
                continue
            if kind == _SCHEMA:
                if not isinstance(value, (dict, list, tuple, Mapping)):
                    continue
            elif kind == _MESSAGES and isinstance(value, (list, tuple)):
                for item in value:
                    if type(item) is dict or isinstance(item, Mapping):
                        tokens += MESSAGE_OVERHEAD_TOKENS
            elif isinstance(value, (str, dict, list, tuple, Mapping)):
                tokens += MESSAGE_OVERHEAD_TOKENS
            c, t = _measure(value, schema=kind == _SCHEMA)
            chars += c
            tokens += t
    except Exception:
        pass  # a Mapping whose iteration fails: what was counted so far stands
    return -(-chars // CHARS_PER_TOKEN) + tokens


# --- output cap and reservation -----------------------------------------------------------

_OUTPUT_KEYS = (
    "max_completion_tokens",  # OpenAI chat (current)
    "max_tokens",  # OpenAI chat (legacy), completions, Anthropic
    "max_output_tokens",  # OpenAI Responses
    "maxOutputTokens",
)
_GENERATION_OUTPUT_KEYS = ("maxOutputTokens", "max_output_tokens")
_MAX_CHOICES = 128  # OpenAI caps n at 128


def _positive_int(value: Any) -> int | None:
    """A positive integer from an int, an integral float or a digit string (proto3 JSON)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value >= 1 and value.is_integer() else None
    if isinstance(value, str) and value.strip().isdigit():
        parsed = int(value.strip())
        return parsed if parsed > 0 else None
    return None


def max_output_tokens(body: Mapping | None, default: int) -> int:
    """The request's output cap (the largest one it names), else `default`."""
    if not isinstance(body, Mapping):
        return default
    try:
        found = [_positive_int(body.get(k)) for k in _OUTPUT_KEYS]
        config = generation_config(body)
        found += [_positive_int(config.get(k)) for k in _GENERATION_OUTPUT_KEYS]
    except Exception:
        return default
    caps = [v for v in found if v is not None]
    # Worst case: if a client sends two spellings, the larger one may be the one honoured.
    return max(caps) if caps else default


def _choices(body: Mapping | None) -> int:
    """How many completions one call generates (OpenAI n/best_of, Gemini candidateCount)."""
    if not isinstance(body, Mapping):
        return 1
    try:
        config = generation_config(body)
        found = (
            _positive_int(body.get("n")),
            _positive_int(body.get("best_of")),
            _positive_int(config.get("candidateCount")),
            _positive_int(config.get("candidate_count")),
        )
    except Exception:
        return 1
    return min(max([v for v in found if v is not None] or [1]), _MAX_CHOICES)


# Server-side tools a request may run, and how many calls of each a request is assumed
# to make at most when it sets no limit (Anthropic's max_uses is honoured).
_SERVER_TOOLS = (
    ("web_search", "web_searches"),
    ("google_search", "web_searches"),
    ("googleSearch", "web_searches"),
    ("file_search", "storage_searches"),
)
_ASSUMED_TOOL_CALLS = 10
# Output tokens one generated image may take (gpt-image, high quality, largest size).
_IMAGE_TOKENS = 6_300
# Audio uploads: bytes per second at the lowest bitrate a provider accepts (8 kbit/s), so a
# file's duration is at most its size over this; tokens per second of audio input.
_AUDIO_BYTES_PER_SECOND = 1_000
_AUDIO_TOKENS_PER_SECOND = 25
REQUEST_OVERHEAD_TOKENS = 16
"""Tokens a provider bills beyond the text of a request: chat formatting and reply priming
(a two-word chat is billed 8 to 12 tokens; the text estimate says 7)."""
TOOL_OVERHEAD_TOKENS = 800
"""Tokens the provider adds when tools are offered (Anthropic's tool-use system prompt is up
to ~550 tokens, its computer-use and text-editor tools more)."""


def _tool_calls(body: Mapping) -> dict[str, int]:
    """The server-tool calls a request may make, by catalog unit."""
    tools = body.get("tools")
    out: dict[str, int] = {}
    if not isinstance(tools, list):
        return out
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        kind = str(tool.get("type") or "")
        names = [kind, *(k for k in tool if isinstance(k, str))]
        for name, unit in _SERVER_TOOLS:
            if any(n.startswith(name) for n in names):
                limit = _positive_int(tool.get("max_uses")) or _ASSUMED_TOOL_CALLS
                out[unit] = out.get(unit, 0) + limit
                break
    return out


def worst_case_usd(
    card: RateCard,
    body: Mapping | None,
    *,
    wire: str | None = None,
    default_output_tokens: int,
    raw_size: int = 0,
) -> Decimal:
    """The most a call can cost at `card`: prompt and output caps at the dearest rates that
    may apply, plus the server-tool calls it may make."""
    body = body if isinstance(body, Mapping) else {}
    prompt = estimate_input_tokens(body) + REQUEST_OVERHEAD_TOKENS
    if body.get("tools"):
        prompt += TOOL_OVERHEAD_TOKENS
    output = max_output_tokens(body, default_output_tokens) * _choices(body)
    extra = Decimal(0)
    if wire == "openai.images":
        output = _IMAGE_TOKENS * _choices(body)
    elif wire == "openai.speech":
        text = body.get("input")
        chars = len(text) if isinstance(text, str) else 0
        per_char = card.rate("input_characters")
        if per_char is not None:
            extra += per_char.base * chars / 1_000_000
        prompt, output = -(-chars // CHARS_PER_TOKEN), 2 * chars
    elif wire == "openai.transcription":
        seconds = raw_size // _AUDIO_BYTES_PER_SECOND + 1
        for unit in ("audio_seconds", "input_audio_seconds"):
            rate = card.rate(unit)
            if rate is not None:
                extra += rate.base * seconds / 3600
                break
        prompt = seconds * _AUDIO_TOKENS_PER_SECOND
    # Input at the dearest token rate (cache writes, audio) and output likewise: the
    # request may write its whole prompt to the cache or ask for audio.
    in_p = card.worst_rate("input", prompt)
    out_p = card.worst_rate("output", prompt)
    total = (prompt * in_p + max(output, 0) * out_p) / 1_000_000 + extra
    for unit, calls in _tool_calls(body).items():
        total += card.tool_fee(unit) * calls
    return total


def reservation_units(
    card: RateCard | None,
    body: Mapping | None,
    *,
    default_output_tokens: int,
    unpriced_units: int,
    wire: str | None = None,
    raw_size: int = 0,
) -> int:
    """Worst-case cost of a call in counter units; `unpriced_units` when it has no price."""
    if card is None:
        return unpriced_units
    worst = worst_case_usd(
        card,
        body,
        wire=wire,
        default_output_tokens=default_output_tokens,
        raw_size=raw_size,
    )
    # Rounded up: a reservation must never fall short of the call's cost.
    return int(worst.scaleb(_SCALE_EXP).to_integral_value(rounding=ROUND_CEILING))


# --- thresholds and alert texts -----------------------------------------------------------


def severity_for(percent: int) -> str:
    """Alert severity: "info" below 90%, "warning" from 90% to 99%, "critical" from 100%."""
    if percent >= 100:
        return "critical"
    if percent >= 90:
        return "warning"
    return "info"


@dataclass(frozen=True, slots=True)
class Threshold:
    """A budget threshold (percent of the monthly budget) and its alert severity."""

    percent: int
    severity: str


def crossed_thresholds(
    before_units: int, after_units: int, budget_units: int, thresholds: Iterable[int]
) -> list[Threshold]:
    """Thresholds spend crossed going from `before` to `after` (reaching one counts), ascending."""
    if budget_units <= 0 or after_units <= before_units:
        return []
    crossed = []
    for percent in sorted({t for t in thresholds if type(t) is int and t > 0}):
        # Integer arithmetic: "spend reaches percent% of budget" is spend*100 >= percent*budget.
        line = percent * budget_units
        if before_units * 100 < line <= after_units * 100:
            crossed.append(Threshold(percent, severity_for(percent)))
    return crossed


def alert_message(
    *,
    key_name: str,
    percent: int,
    spent_usd: float,
    budget_usd: float,
    month: str,
    locale: str = "en",
) -> str:
    """A one-line budget alert in English, or Korean when `locale` starts with "ko"."""
    figures = f"{format_usd(spent_usd)} / {format_usd(budget_usd)}"
    korean = isinstance(locale, str) and locale.strip().lower().startswith("ko")
    if percent >= 100:
        if korean:
            return (
                f"예산 소진: '{key_name}' 키가 {month} 월 예산을 모두 사용했습니다 "
                f"({percent}%, {figures})."
            )
        return (
            f"Budget exhausted for key '{key_name}': {percent}% of the monthly budget used "
            f"({figures}) in {month}."
        )
    if korean:
        return (
            f"예산 알림: '{key_name}' 키가 {month} 월 예산의 {percent}%를 사용했습니다 ({figures})."
        )
    return (
        f"Budget alert for key '{key_name}': {percent}% of the monthly budget used "
        f"({figures}) in {month}."
    )


def unpriced_model_message(model: str | None) -> str:
    """Why a budgeted key's call to a model without a price is refused, and the two ways out."""
    name = f"'{model}'" if model else "This model"
    return (
        f"{name} has no price in lcm-jupyter's price table, so its cost cannot be held "
        "against this key's monthly budget. Set its price (PUT lcm/api/pricing, or "
        "lcm_jupyter.ui.PricingTable()), or set LCMExtension.unpriced_reserve_usd to hold "
        "a flat amount for calls to unpriced models."
    )


def budget_exceeded_message(
    *, spent_usd: float, reserved_usd: float, budget_usd: float, month: str
) -> str:
    """The 429 budget_exceeded error text: spend, holds of calls in flight, and the limit."""
    in_flight = (
        f" (+{format_usd(reserved_usd)} reserved by calls in flight)" if reserved_usd > 0 else ""
    )
    figures = f"{format_usd(spent_usd)} spent{in_flight} of {format_usd(budget_usd)}"
    if spent_usd >= budget_usd:
        head = f"Monthly budget exhausted for {month}: {figures}."
    else:
        # Under budget but this call's worst case does not fit in what is left.
        head = f"Monthly budget for {month} has too little left for this call: {figures}."
    return f"{head} Raise monthly_budget_usd or wait for next month."


_SLACK_COLORS = {"info": "#439FE0", "warning": "warning", "critical": "danger"}


def _slack_escape(text: str) -> str:
    """Escape Slack's control characters so a key name cannot @-mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(
    *,
    key_name: str,
    key_id: int,
    percent: int,
    severity: str,
    message: str,
    spent_usd: float,
    budget_usd: float,
    month: str,
) -> dict:
    """A Slack-compatible incoming-webhook body with the alert's fields under "lcm"."""
    text = _slack_escape(message)
    return {
        "text": text,
        "attachments": [
            {
                "fallback": text,
                "color": _SLACK_COLORS.get(severity, "#439FE0"),
                "fields": [
                    {"title": "Key", "value": _slack_escape(key_name), "short": True},
                    {"title": "Month", "value": month, "short": True},
                    {"title": "Spent", "value": format_usd(spent_usd), "short": True},
                    {"title": "Budget", "value": format_usd(budget_usd), "short": True},
                    {"title": "Threshold", "value": f"{percent}%", "short": True},
                    {"title": "Severity", "value": severity, "short": True},
                ],
            }
        ],
        # Raw values for non-Slack consumers (Slack ignores unknown top-level fields).
        "lcm": {
            "event": "budget_alert",
            "key_id": key_id,
            "key_name": key_name,
            "month": month,
            "percent": percent,
            "severity": severity,
            "spent_usd": spent_usd,
            "budget_usd": budget_usd,
            "message": message,
        },
    }
