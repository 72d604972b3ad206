"""Analytics shaping: periods as local days, top-N + other, CSV rendering.

Pure functions over usage totals that the store aggregated. Money arrives as integer
units of 1e-10 USD (`MONEY_SCALE`) so that sums stay exact however they are grouped;
it becomes float USD only in the rendered output. Days are calendar days in one IANA
timezone; their bounds are instants (epoch seconds), so a store grouped by UTC
instants can be folded into local days without knowing about timezones.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, tzinfo
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .budget import MONEY_SCALE
from .errors import BadRequest

PERIODS = {"7d": 7, "30d": 30, "90d": 90}
DEFAULT_PERIOD = "30d"
MAX_DAYS = 366
BREAKDOWN_BY = ("model", "provider", "key", "user", "notebook")
OTHER = "other"

POINT_FIELDS = (
    "date",
    "cost_usd",
    "savings_usd",
    "requests",
    "input_tokens",
    "output_tokens",
    "unpriced_requests",
)
ITEM_FIELDS = (
    "name",
    "cost_usd",
    "savings_usd",
    "requests",
    "input_tokens",
    "output_tokens",
    "avg_latency_ms",
    "error_rate",
    "unpriced_requests",
)

T = TypeVar("T")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def load_timezone(name: str) -> ZoneInfo:
    """The IANA timezone `name`; ValueError if there is none by that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        hint = "use an IANA name such as Asia/Seoul"
        raise ValueError(f"unknown timezone {name!r} ({hint})") from exc


@dataclass(slots=True)
class Totals:
    """Sums over some calls; money in units of 1e-10 USD, latency in microseconds."""

    requests: int = 0
    cost_units: int = 0
    savings_units: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_us_sum: int = 0
    latency_count: int = 0
    errors: int = 0
    unpriced_requests: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, int | None]) -> Totals:
        """Totals from a mapping with the same field names (NULL sums as 0)."""
        return cls(**{f.name: row[f.name] or 0 for f in fields(cls)})

    def add(self, other: Totals) -> None:
        """Add `other` in place."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def point(self, day: date) -> dict:
        """One day of a timeseries, as the API answers it."""
        return {
            "date": day.isoformat(),
            "cost_usd": self.cost_units / MONEY_SCALE,
            "savings_usd": self.savings_units / MONEY_SCALE,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "unpriced_requests": self.unpriced_requests,
        }

    def item(self, name: str) -> dict:
        """One group of a breakdown, as the API answers it."""
        return {
            "name": name,
            "cost_usd": self.cost_units / MONEY_SCALE,
            "savings_usd": self.savings_units / MONEY_SCALE,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            # The sum of latencies over the count is the request-weighted mean, also for "other".
            "avg_latency_ms": (
                round(self.latency_us_sum / self.latency_count / 1000, 3)
                if self.latency_count
                else None
            ),
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "unpriced_requests": self.unpriced_requests,
        }


@dataclass(frozen=True, slots=True)
class Period:
    """Consecutive local days, first to last inclusive, in one timezone."""

    label: str
    first: date
    last: date
    tz: tzinfo

    @property
    def days(self) -> list[date]:
        """Every day of the period, oldest first."""
        return [self.first + timedelta(n) for n in range((self.last - self.first).days + 1)]

    def bounds(self) -> list[int]:
        """Epoch seconds of each day's local midnight, then of the midnight after the last."""
        return [midnight(d, self.tz) for d in [*self.days, self.last + timedelta(1)]]

    def to_json(self) -> dict:
        """The period fields of an answer."""
        return {
            "period": self.label,
            "start": self.first.isoformat(),
            "end": self.last.isoformat(),
            "timezone": str(self.tz),
        }


def midnight(day: date, tz: tzinfo) -> int:
    """Epoch seconds of the local midnight that starts `day` in `tz`."""
    # fold=0 picks the earlier instant when midnight repeats; a skipped midnight maps
    # to the instant the day really starts at, so days tile without gaps or overlaps.
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())


def parse_date(raw: str, param: str) -> date:
    """A `YYYY-MM-DD` query argument as a date; BadRequest naming `param` otherwise."""
    if not _DATE.fullmatch(raw):
        raise BadRequest(f"{param} must be a date YYYY-MM-DD", param=param)
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{param} is not a calendar date: {raw!r}", param=param) from None


def resolve_period(
    period: str | None,
    start: str | None,
    end: str | None,
    tz: tzinfo,
    *,
    now: datetime | None = None,
) -> Period:
    """The days asked for: `period` (7d|30d|90d, ending today) or `start`..`end` inclusive."""
    if start or end:
        if period:
            raise BadRequest("give either period or start and end, not both", param="period")
        if not (start and end):
            raise BadRequest("start and end go together", param="start" if not start else "end")
        first, last = parse_date(start, "start"), parse_date(end, "end")
        if first > last:
            raise BadRequest("start is after end", param="start")
        if (last - first).days + 1 > MAX_DAYS:
            raise BadRequest(f"at most {MAX_DAYS} days at a time", param="end")
        return Period("custom", first, last, tz)
    label = period or DEFAULT_PERIOD
    if label not in PERIODS:
        raise BadRequest(f"period must be one of {', '.join(PERIODS)}", param="period")
    today = (now or datetime.now(tz)).astimezone(tz).date()
    return Period(label, today - timedelta(PERIODS[label] - 1), today, tz)


def top_with_other(groups: Iterable[tuple[T, Totals]], limit: int) -> list[tuple[T | str, Totals]]:
    """Groups by cost, most first; beyond `limit`, the rest summed into one named "other"."""
    ranked: list[tuple[T | str, Totals]] = sorted(
        groups, key=lambda g: (-g[1].cost_units, -g[1].requests, str(g[0]))
    )
    if len(ranked) <= limit:
        return ranked
    rest = Totals()
    for _, totals in ranked[limit:]:
        rest.add(totals)
    return [*ranked[:limit], (OTHER, rest)]


def to_csv(columns: Sequence[str], records: Iterable[Mapping]) -> str:
    """Records as CSV text with a header row; None becomes an empty cell."""
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()
