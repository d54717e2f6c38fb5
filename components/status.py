"""Job state colours, as Kaapana users know them, and short formats for times and durations."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from core.timeutil import exact_utc, parse_time, readable_time

STATUS_COLOURS = {
    "pending": "orange",
    "queued": "grey-6",
    "scheduled": "blue",
    "running": "green",
    "finished": "blue-grey-8",
    "failed": "red",
    "aborted": "brown-5",
    "deleted": "grey-4",
}
STATUS_ORDER = list(STATUS_COLOURS)


def colour(status: str) -> str:
    return STATUS_COLOURS.get(status, "grey")


def short_time(iso: str | datetime | None, zone: tzinfo = UTC) -> str:
    """`2026-11-28T06:10:53.5Z` → `28 Nov 2026, 07:10` in `zone` (a person's form, no microseconds).

    Pages pass the browser's zone from `components.local_time.browser_zone()`; without one the
    time reads in UTC. Text that is not a time is returned unchanged rather than hidden.
    """
    if not iso:
        return ""
    parsed = parse_time(iso)
    if parsed is None:
        return str(iso)
    return readable_time(parsed, zone)


def utc_tooltip(iso: str | datetime | None) -> str:
    """The exact UTC second for a tooltip beside `short_time`, or "" when there is no time."""
    parsed = parse_time(iso) if iso else None
    return exact_utc(parsed) if parsed else ""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
