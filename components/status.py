"""Job state colours, as Kaapana users know them, and short formats for times and durations."""

from __future__ import annotations

from datetime import datetime

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


def short_time(iso: str | None) -> str:
    """`2026-11-28T06:10:53.5Z` → `2026-11-28 06:10:53` (UTC)."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


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
