"""Times as the person at the browser reads them: their own zone, "3 min ago", exact UTC on hover.

The server cannot know where the reader sits, so the browser's IANA zone is asked once per
client (`Intl.DateTimeFormat().resolvedOptions().timeZone`) and kept for that client; pages
then format every time on the server with `core.timeutil`. When the browser does not answer
(not connected yet, an unknown zone) the times are shown in UTC, which is still correct.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nicegui import Client, background_tasks, ui

from core.timeutil import exact_utc, readable_time, relative_time, utcnow

_ZONE_SCRIPT = "Intl.DateTimeFormat().resolvedOptions().timeZone"
_zones: "weakref.WeakKeyDictionary[Client, tzinfo]" = weakref.WeakKeyDictionary()
_by_browser: "OrderedDict[str, tzinfo]" = OrderedDict()  # a browser's later pages know its zone at once
_BROWSERS_KEPT = 5000


def zone_from_name(name: object) -> tzinfo:
    """The zone the browser named, or UTC for anything that is not a known IANA name."""
    if not isinstance(name, str) or not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _browser_id(client: Client) -> str | None:
    try:
        return str(client.request.session.get("id") or "") or None
    except (AttributeError, RuntimeError, AssertionError):
        return None


def known_zone(client: Client | None = None) -> tzinfo | None:
    """The zone if this client (or an earlier page of the same browser) has told it already; no round trip."""
    client = client or ui.context.client
    zone = _zones.get(client)
    if zone is None and (browser := _browser_id(client)) and browser in _by_browser:
        zone = _zones[client] = _by_browser[browser]
    return zone


async def browser_zone(timeout: float = 3.0, client: Client | None = None) -> tzinfo:
    """The client's time zone, asked of its browser the first time and cached after (UTC if it cannot say)."""
    client = client or ui.context.client
    cached = known_zone(client)
    if cached is not None:
        return cached
    try:
        await client.connected(timeout=timeout)
        zone = zone_from_name(await client.run_javascript(_ZONE_SCRIPT, timeout=timeout))
    except (TimeoutError, RuntimeError):
        return UTC  # not cached: the next call may reach a browser that is connected by then
    _zones[client] = zone
    if browser := _browser_id(client):
        _by_browser[browser] = zone
        while len(_by_browser) > _BROWSERS_KEPT:
            _by_browser.popitem(last=False)
    return zone


def zone_now_or_later(redraw: Callable[[tzinfo], Awaitable[None] | None]) -> tzinfo:
    """The zone to draw with now (known, else UTC); when it was not known, `redraw` runs once the browser says.

    Pages draw at once rather than wait for a round trip to the browser; only a browser's first
    page is drawn twice, and only if it is not in UTC.
    """
    client = ui.context.client
    zone = known_zone(client)
    if zone is not None:
        return zone

    async def learn() -> None:
        learnt = await browser_zone(client=client)
        if learnt is not UTC and client.id in Client.instances:
            with client:
                result = redraw(learnt)
                if result is not None:
                    await result

    background_tasks.create(learn(), name="learn-browser-zone")
    return UTC


def time_text(dt: datetime | None, zone: tzinfo, now: datetime | None = None) -> str:
    """`3 min ago · 2 Dec 2026, 11:16`, or `—` when there is no time."""
    if dt is None:
        return "—"
    return f"{relative_time(dt, now or utcnow())} · {readable_time(dt, zone)}"


def time_label(dt: datetime | None, zone: tzinfo) -> None:
    """A label with the relative and readable local time, the exact UTC as its tooltip."""
    label = ui.label(time_text(dt, zone)).classes("vireo-time whitespace-nowrap")
    if dt is not None:
        label.tooltip(exact_utc(dt))
