"""The browser's login session: a cookie Vireo issues at login and ends at logout, checked on every request.

The login page checks the password over NiceGUI's websocket, where no cookie can be set, so it
hands the browser a one-time login ticket (valid for a minute, bound to the browser that typed
the password) and sends it to `GET /login/complete`, which issues a *new* session cookie: an
id planted before login (another port of the same host can set cookies for this one) never
becomes the logged-in session.

Sessions live in the database (core/browser_sessions.py); this module keeps a few seconds'
memory of which ones are live, because an open tab asks on every click (app/open_tabs.py).
Whatever ends sessions here forgets them at once, so ending one takes effect on the next
request or event, not when the memory expires. Nothing here reads NiceGUI's user storage:
NiceGUI drops it every 10 s for a browser with no page open and reloads it on its next
request, and parallel requests racing that reload (a viewer's) must still find their session.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from app.runtime import current_services
from core import browser_sessions
from core.accounts import Principal
from core.browser_sessions import LiveSession

COOKIE = "vireo_session"
COMPLETE_PATH = "/login/complete"
TICKET_SECONDS = 60.0
LIVE_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class AuthenticatedBy:
    """How a request proved who it is, kept on `request.state.vireo_auth` (an open tab's page request keeps it)."""

    kind: str  # "session" | "basic" | "bearer"
    user_id: int
    token_hash: str = ""  # the session's, for kind "session"


class LiveSessionCache:
    """token hash → the live session (or None), remembered for a few seconds; forgotten at once when ended here."""

    def __init__(self, ttl: float = LIVE_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[LiveSession | None, float]] = {}
        self._lock = threading.Lock()

    def get(self, hashed: str) -> tuple[bool, LiveSession | None]:
        with self._lock:
            entry = self._entries.get(hashed)
            if entry is None or entry[1] < time.monotonic():
                self._entries.pop(hashed, None)
                return False, None
            return True, entry[0]

    def put(self, hashed: str, live: LiveSession | None) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()  # stale cookies of many browsers: start over rather than grow
            self._entries[hashed] = (live, time.monotonic() + self.ttl)

    def forget(self, hashes: list[str]) -> None:
        with self._lock:
            for hashed in hashes:
                self._entries[hashed] = (None, time.monotonic() + self.ttl)

    def forget_user(self, user_id: int) -> None:
        with self._lock:
            for hashed, (live, _) in list(self._entries.items()):
                if live is not None and live.user_id == user_id:
                    self._entries[hashed] = (None, time.monotonic() + self.ttl)


@dataclass(frozen=True)
class LoginTicket:
    principal: Principal
    browser_id: str
    target: str
    expires: float


class LoginTickets:
    """One-time tickets from a correct password on the login page to `GET /login/complete`."""

    def __init__(self) -> None:
        self._tickets: dict[str, LoginTicket] = {}
        self._lock = threading.Lock()

    def issue(self, principal: Principal, browser_id: str, target: str) -> str:
        ticket = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            for key in [k for k, t in self._tickets.items() if t.expires < now]:
                del self._tickets[key]
            self._tickets[ticket] = LoginTicket(principal, browser_id, target, now + TICKET_SECONDS)
        return ticket

    def redeem(self, ticket: str, browser_id: str) -> LoginTicket | None:
        with self._lock:
            found = self._tickets.pop(ticket, None)
        if found is None or found.expires < time.monotonic() or not secrets.compare_digest(found.browser_id, browser_id):
            return None
        return found


live_sessions = LiveSessionCache()
tickets = LoginTickets()


def browser_id(request: Request) -> str:
    """NiceGUI's per-browser id (its own signed cookie); it only binds a login ticket to the browser that asked."""
    session = request.scope.get("session") or {}
    return str(session.get("id", ""))


def live(hashed: str) -> LiveSession | None:
    """The live session with this token hash (blocking on a cache miss: one indexed query)."""
    known, found = live_sessions.get(hashed)
    if known:
        return found
    with current_services().db.session() as session:
        found = browser_sessions.find_live(session, hashed)
    live_sessions.put(hashed, found)
    return found


def cookie_hash(request: Request) -> str | None:
    token = request.cookies.get(COOKIE)
    return browser_sessions.token_hash(token) if token else None


def session_of(request: Request) -> LiveSession | None:
    """The live session the request's cookie names, or None (blocking)."""
    hashed = cookie_hash(request)
    return live(hashed) if hashed else None


def principal_of(found: LiveSession) -> Principal:
    return Principal(found.user_id, found.username, found.is_admin)


def cookie_is_secure(request: Request) -> bool:
    """Secure when the browser reaches Vireo over HTTPS: this request's scheme, or the public URL's."""
    return request.url.scheme == "https" or current_services().settings.public_base.startswith("https://")


def _set_cookie(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(COOKIE, token, max_age=max_age, path="/", httponly=True, samesite="lax", secure=cookie_is_secure(request))


def _open(user_id: int, replaced: str | None) -> tuple[LiveSession, str]:
    with current_services().db.session() as session:
        if replaced:
            browser_sessions.end_session(session, replaced)  # logging in again in this browser replaces its session
        browser_sessions.prune_expired(session)  # at each login: the table holds live sessions only
        found, token = browser_sessions.open_session(session, user_id, current_services().settings.session_hours)
    if replaced:
        live_sessions.forget([replaced])
    return found, token


async def complete_login(request: Request) -> Response:
    """`GET /login/complete?ticket=…`: exchange the login page's ticket for a new session cookie."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        return PlainTextResponse("a login is completed only from Vireo's own login page", status_code=403)
    ticket = tickets.redeem(request.query_params.get("ticket", ""), browser_id(request))
    if ticket is None:
        return RedirectResponse("/login", status_code=303)  # expired, used or from another browser: log in again
    _, token = await run_in_threadpool(_open, ticket.principal.user_id, cookie_hash(request))
    response = RedirectResponse(ticket.target, status_code=303)
    _set_cookie(response, request, token, int(current_services().settings.session_hours * 3600))
    return response


def end_session_of(request: Request) -> None:
    """Log out the browser of this request (blocking): its session row goes, its cookie is dead from now on."""
    hashed = cookie_hash(request)
    if not hashed:
        return
    with current_services().db.session() as session:
        browser_sessions.end_session(session, hashed)
    live_sessions.forget([hashed])


def end_user_sessions(user_id: int, *, keep: str | None = None) -> int:
    """End every browser session of a user but `keep` (blocking); returns how many ended."""
    with current_services().db.session() as session:
        ended = browser_sessions.end_user_sessions(session, user_id, keep=keep)
    live_sessions.forget(ended)
    if keep is None:
        live_sessions.forget_user(user_id)
    return len(ended)


def session_count(user_id: int) -> int:
    with current_services().db.session() as session:
        return browser_sessions.count_sessions(session, user_id)
