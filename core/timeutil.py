"""Time in one form everywhere: aware UTC datetimes in Python, naive UTC in the database."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 with a `Z`, as API.md promises."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite has no time zones) and hands back aware UTC, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _aware_utc(dt: datetime) -> datetime:
    """Naive values in Vireo are UTC (see `UTCDateTime`); make that explicit before converting."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def readable_time(dt: datetime, zone: tzinfo) -> str:
    """`2 Dec 2026, 11:16` in the viewer's zone: what a person reads, without seconds or offsets."""
    local = _aware_utc(dt).astimezone(zone)
    return f"{local.day} {local.strftime('%b %Y, %H:%M')}"


def relative_time(dt: datetime, now: datetime) -> str:
    """`3 min ago` / `in 2 h`: how long ago, in the coarsest unit that still says something."""
    seconds = (_aware_utc(now) - _aware_utc(dt)).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        amount, unit = max(1, round(seconds / 60)), "min"
        if amount == 60:
            amount, unit = 1, "h"
    elif seconds < 86400:
        amount, unit = round(seconds / 3600), "h"
        if amount == 24:
            amount, unit = 1, "d"
    elif seconds < 86400 * 60:
        amount, unit = round(seconds / 86400), "d"
    elif seconds < 86400 * 730:
        amount, unit = round(seconds / (86400 * 30.44)), "mo"
    else:
        amount, unit = round(seconds / (86400 * 365.25)), "y"
    return f"in {amount} {unit}" if future else f"{amount} {unit} ago"


def exact_utc(dt: datetime) -> str:
    """`2026-12-02 11:16:05 UTC`: the unambiguous time for a tooltip, to the second."""
    return _aware_utc(dt).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_time(value: datetime | str | None) -> datetime | None:
    """Accept what the API and the models hand out (aware datetimes or ISO strings with `Z`)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _aware_utc(value)
    try:
        return _aware_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None
