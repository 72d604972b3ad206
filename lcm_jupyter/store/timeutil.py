"""Timestamps as stored: ISO 8601 UTC with milliseconds, which sort as text."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now_iso() -> str:
    """Now, as stored in the database."""
    return to_iso(datetime.now(timezone.utc))


def to_iso(moment: datetime) -> str:
    """A timezone-aware datetime as stored in the database."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
