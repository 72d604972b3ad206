"""Which logged calls a listing asks for: the filters of `GET lcm/api/logs`, checked.

Pure: the handler hands over the raw query arguments and the analytics timezone; a
mistake is a `BadRequest` naming its parameter. The store turns a `LogFilter` into SQL.

- `model`: the model that answered (the one asked for when none did), as the analytics'
  `model` filter and breakdown count it.
- `provider`: openai, anthropic or google.
- `user`, `notebook`: who made the call and from which notebook (a team's attribution).
- `status`: `ok` (answered below 400), `error` (400 and up, or no answer at all, as the
  analytics' error rate counts), `cache_hit`, a class `2xx` to `5xx`, or one code (`429`).
- `start`/`end`: calendar days, inclusive, in the analytics timezone (as the analytics
  endpoints take them); or `since`/`until`: ISO 8601 instants with a UTC offset, `since`
  included and `until` not. Either bound may be left out; the two forms do not mix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from .analytics import midnight, parse_date
from .errors import BadRequest
from .providers import PROVIDERS

STATUS_CLASSES = ("ok", "error", "cache_hit", "2xx", "3xx", "4xx", "5xx")
MAX_MODEL_LENGTH = 200
_CODE = re.compile(r"[1-5]\d\d")


@dataclass(frozen=True, slots=True)
class LogFilter:
    """The calls a listing keeps; None keeps every call for that field."""

    key_id: int | None = None
    model: str | None = None
    provider: str | None = None
    status: str | None = None
    """One of STATUS_CLASSES, or a three-digit HTTP status."""
    user: str | None = None
    notebook: str | None = None
    since: datetime | None = None
    """First instant kept (UTC)."""
    until: datetime | None = None
    """First instant no longer kept (UTC)."""

    def status_code(self) -> int | None:
        """The one HTTP status asked for, if `status` is a code rather than a class."""
        return int(self.status) if self.status and self.status.isdigit() else None

    def status_class(self) -> int | None:
        """The hundreds of a class such as `4xx` (4), if `status` is one."""
        if self.status and self.status.endswith("xx"):
            return int(self.status[0])
        return None


def _instant(raw: str, param: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"{param} must be an ISO 8601 time such as 2025-01-02T09:30:00Z", param=param
        ) from None
    if moment.tzinfo is None:
        raise BadRequest(
            f"{param} must carry a UTC offset (Z or +09:00): {raw!r} could be any timezone",
            param=param,
        )
    return moment.astimezone(timezone.utc)


def _status(raw: str) -> str:
    value = raw.strip().lower()
    if value in STATUS_CLASSES or _CODE.fullmatch(value):
        return value
    raise BadRequest(
        f"status must be one of {', '.join(STATUS_CLASSES)} or an HTTP status such as 429",
        param="status",
    )


def _model(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > MAX_MODEL_LENGTH:
        raise BadRequest(
            f"model must be a model name of 1 to {MAX_MODEL_LENGTH} characters", param="model"
        )
    return value


def _provider(raw: str) -> str:
    if raw not in PROVIDERS:
        raise BadRequest(f"provider must be one of {', '.join(PROVIDERS)}", param="provider")
    return raw


def _bounds(args: Mapping[str, str | None], tz: tzinfo) -> tuple[datetime | None, ...]:
    start, end = args.get("start"), args.get("end")
    since, until = args.get("since"), args.get("until")
    if (start or end) and (since or until):
        raise BadRequest(
            "give days (start, end) or instants (since, until), not both",
            param="since" if since else "until",
        )
    if start or end:
        first = parse_date(start, "start") if start else None
        last = parse_date(end, "end") if end else None
        if first and last and first > last:
            raise BadRequest("start is after end", param="start")
        return (
            _utc(midnight(first, tz)) if first else None,
            _utc(midnight(last + timedelta(1), tz)) if last else None,
        )
    lo = _instant(since, "since") if since else None
    hi = _instant(until, "until") if until else None
    if lo and hi and lo >= hi:
        raise BadRequest("since must be before until", param="since")
    return lo, hi


def _utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def parse_log_filter(
    args: Mapping[str, str | None], tz: tzinfo, *, key_id: int | None = None
) -> LogFilter:
    """The filter the query arguments `args` ask for (empty values count as absent); days
    are read in `tz`. BadRequest, naming the parameter, for anything it cannot be."""
    given: dict[str, str] = {name: value for name, value in args.items() if value}
    since, until = _bounds(given, tz)
    return LogFilter(
        key_id=key_id,
        model=_model(given["model"]) if "model" in given else None,
        provider=_provider(given["provider"]) if "provider" in given else None,
        status=_status(given["status"]) if "status" in given else None,
        user=given.get("user"),
        notebook=given.get("notebook"),
        since=since,
        until=until,
    )
