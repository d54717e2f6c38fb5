"""Who is asking: browser sessions, HTTP Basic, bearer tokens, and the guard in front of every route.

Only the login page, `GET /api/health` and NiceGUI's static assets are public. API and
DICOMweb clients without valid credentials get 401; a browser gets redirected to the login
page. Failed logins are rate-limited per user and address (and per address over all
users), on the login page and for Basic credentials alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from collections import deque

from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from nicegui import app as nicegui_app
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.runtime import current_services
from core import accounts
from core.accounts import Principal
from core.models import User

PUBLIC_PATHS = frozenset({"/login", "/api/health", "/favicon.ico"})
# Routes other Vireo instances call: no user, but a request signature the route itself checks (federation/signing.py).
INSTANCE_SIGNED_PATHS = frozenset({"/api/federation/sync"})
GUARDED_NICEGUI_PREFIXES = ("/_nicegui/client/", "/_nicegui/auto/")
MACHINE_PREFIXES = ("/api", "/dicomweb")
SESSION_KEY = "vireo"


class TooManyAttempts(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


class LoginThrottle:
    """Sliding-window limits on failed logins: per (user, address) and per address.

    An attempt counts as failed from the moment it starts, so a burst of parallel guesses
    is limited as strictly as one after another; a success takes its attempt back.
    """

    def __init__(self, per_user: int = 5, per_address: int = 20, window: float = 900.0) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def attempt(self, username: str, address: str) -> float:
        """Start an attempt; raises TooManyAttempts while either limit is reached. Returns its stamp."""
        now = time.monotonic()
        pair, anyone = (username, address), ("", address)
        with self._lock:
            for key, limit in ((pair, self.per_user), (anyone, self.per_address)):
                failures = self._prune(key, now)
                if len(failures) >= limit:
                    raise TooManyAttempts(max(1, int(failures[0] + self.window - now)))
            for key in (pair, anyone):
                self._failures.setdefault(key, deque()).append(now)
        return now

    def succeeded(self, username: str, address: str, stamp: float) -> None:
        """The attempt was right: forget this user's failures from here and take the attempt back."""
        with self._lock:
            self._failures.pop((username, address), None)
            failures = self._failures.get(("", address))
            if failures is not None and stamp in failures:
                failures.remove(stamp)

    def _prune(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]  # never keep an entry per name a stranger tried
        return failures


class CredentialCache:
    """Remembers verified Basic credentials for a minute: argon2 is slow on purpose, API clients call often."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(username: str, password: str) -> str:
        return hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()

    def get(self, key: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[1] < time.monotonic():
                self._entries.pop(key, None)
                return None
            return entry[0]

    def put(self, key: str, principal: Principal) -> None:
        with self._lock:
            self._entries[key] = (principal, time.monotonic() + self.ttl)

    def clear(self) -> None:
        """Forget everything: called whenever a user is changed, disabled or removed."""
        with self._lock:
            self._entries.clear()


throttle = LoginThrottle()
credentials = CredentialCache()


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def login(username: str, password: str, address: str) -> Principal | None:
    """Check a password under the throttle (blocking: call from a thread)."""
    stamp = throttle.attempt(username, address)
    with current_services().db.session() as session:
        user = accounts.authenticate(session, username, password)
        if user is None:
            return None
        throttle.succeeded(username, address, stamp)
        return accounts.principal(user)


def _basic(header: str, address: str) -> Principal | None:
    try:
        decoded = base64.b64decode(header, validate=True).decode()
        username, password = decoded.split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    key = CredentialCache.key(username, password)
    cached = credentials.get(key)
    if cached is not None:
        return cached
    principal = login(username, password, address)
    if principal is not None:
        credentials.put(key, principal)
    return principal


def _bearer(token: str) -> Principal | None:
    with current_services().db.session() as session:
        user = accounts.user_for_token(session, token.strip())
        return accounts.principal(user) if user else None


def _session() -> Principal | None:
    data = nicegui_app.storage.user.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    if data.get("expires", 0) < time.time():
        return None  # expired (left in place: storage must only be changed on the event loop)
    with current_services().db.session() as session:
        user = session.get(User, data.get("user_id"))
        if user is None or user.disabled or user.username != data.get("username"):
            return None
        return accounts.principal(user)


def start_session(principal: Principal) -> None:
    hours = current_services().settings.session_hours
    nicegui_app.storage.user[SESSION_KEY] = {
        "user_id": principal.user_id,
        "username": principal.username,
        "expires": time.time() + hours * 3600,
    }


def end_session() -> None:
    nicegui_app.storage.user.pop(SESSION_KEY, None)


def identify(request: Request) -> Principal | None:
    """The principal behind a request, from its Authorization header or its browser session (blocking)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        return _basic(value.strip(), client_address(request))
    if scheme.lower() == "bearer":
        return _bearer(value)
    return _session()


def is_public(path: str) -> bool:
    if path in PUBLIC_PATHS:
        return True
    if path.startswith("/_nicegui/"):
        return not path.startswith(GUARDED_NICEGUI_PREFIXES)
    return path.startswith("/_nicegui_ws/")


def is_machine_route(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in MACHINE_PREFIXES)


def _cached_basic(request: Request) -> Principal | None:
    """The principal of Basic credentials verified within the last minute, without leaving the event loop."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, password = base64.b64decode(value.strip(), validate=True).decode().split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return credentials.get(CredentialCache.key(username, password))


class AuthMiddleware:
    """Guards every route but the public ones, before any route code runs.

    A plain ASGI middleware, not Starlette's BaseHTTPMiddleware: that one relays every request
    and response body through an extra task and memory stream, which cost upload throughput
    and a few milliseconds on every API call. Here an allowed request goes straight on, body
    untouched, with its principal in `request.state.principal`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        if is_public(path) or (path in INSTANCE_SIGNED_PATHS and request.method == "POST"):
            await self.app(scope, receive, send)
            return
        refusal: Response | None = None
        try:
            principal = _cached_basic(request) or await run_in_threadpool(identify, request)
        except TooManyAttempts as exc:
            principal = None
            refusal = JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)})
        if principal is None:
            if refusal is None and is_machine_route(path):
                refusal = JSONResponse(
                    {"detail": "authentication required: HTTP Basic or a bearer API token"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="Vireo"'},
                )
            elif refusal is None:
                target = path + (f"?{request.url.query}" if request.url.query else "")
                refusal = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            await refusal(scope, receive, send)
            return
        request.state.principal = principal  # stored in the scope: the route's own Request sees it
        await self.app(scope, receive, send)


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated principal (the middleware has checked it)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise HTTPException(401, "authentication required")
    return principal


def admin_principal(principal: Principal = Depends(current_principal)) -> Principal:
    if not principal.is_admin:
        raise HTTPException(403, "only administrators may do this")
    return principal


