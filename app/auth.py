"""Who is asking: browser sessions, HTTP Basic, bearer tokens, and the guard in front of every route.

Only the login page, `GET /api/health` and NiceGUI's static assets are public. API and
DICOMweb clients without valid credentials get 401; a browser gets redirected to the login
page. Failed logins are limited per user and address, per address, and slowed down per
account (app/login_throttle.py), on the login page and for Basic credentials alike. Basic
credentials are verified once however many parallel requests carry them, then remembered;
once correct, they are never throttled (app/basic_credentials.py).
A browser session is a cookie Vireo issues at login (app/browser_session.py); a change made
with it must come from Vireo's own pages (app/csrf.py).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app import browser_session, csrf
from app.basic_credentials import CredentialCache, SingleFlight
from app.browser_session import AuthenticatedBy
from app.login_throttle import LoginThrottle, TooManyAttempts
from app.runtime import current_services
from core import accounts
from core.accounts import Principal
from core.browser_sessions import LiveSession

PUBLIC_PATHS = frozenset({"/login", browser_session.COMPLETE_PATH, "/api/health", "/favicon.ico"})
# Routes other Vireo instances call: no user, but a request signature the route itself checks (federation/signing.py).
INSTANCE_SIGNED_PATHS = frozenset({"/api/federation/sync", "/api/federation/fetch"})
GUARDED_NICEGUI_PREFIXES = ("/_nicegui/client/", "/_nicegui/auto/")
MACHINE_PREFIXES = ("/api", "/dicomweb")


throttle = LoginThrottle()
credentials = CredentialCache()
verifications: SingleFlight[Principal | None] = SingleFlight()


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def login(username: str, password: str, address: str, *, throttled: bool = True) -> Principal | None:
    """Check a password, under the failed-login throttle unless `throttled` is False (blocking: call from a thread)."""
    stamp = throttle.attempt(username, address) if throttled else 0.0
    with current_services().db.session() as session:
        user = accounts.authenticate(session, username, password)
        if user is None:
            return None
        if throttled:
            throttle.succeeded(username, address, stamp)
        return accounts.principal(user)


def _basic(header: str, address: str) -> Principal | None:
    """The principal of Basic credentials: remembered, or verified once however many requests send them at a time.

    Credentials that were correct before are checked again outside the throttle: the throttle
    is for guesses, and whoever sends a once-correct password is not guessing
    (app/basic_credentials.py says why this matters for parallel clients).
    """
    try:
        decoded = base64.b64decode(header, validate=True).decode()
        username, password = decoded.split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    key = CredentialCache.key(username, password)
    cached = credentials.get(key)
    if cached is not None:
        return cached
    settings = current_services().settings
    # Read before anything else: a check that began before a user changed (`clear`) may have read the
    # old password, so it neither puts its answer back nor is joined by requests that came after.
    generation = credentials.generation
    flight = f"{generation}:{key}"

    def verify() -> Principal | None:
        again = credentials.get(key)  # verified by a flight that ended just before this one began
        if again is not None:
            return again
        known = credentials.known(key) is not None
        principal = login(username, password, address, throttled=not known)
        if principal is not None:
            credentials.put(key, principal, settings.credential_cache_seconds, generation)
        elif known:
            credentials.forget(key)
        return principal

    once_correct = credentials.known(key)
    if once_correct is not None:
        verifications.start(flight, verify)  # checked again beside this request, which need not wait for argon2
        return once_correct
    return verifications.run(flight, verify)


def _bearer(token: str) -> Principal | None:
    with current_services().db.session() as session:
        user = accounts.user_for_token(session, token.strip())
        return accounts.principal(user) if user else None


@dataclass(frozen=True)
class Identity:
    """Who a request is and how it proved it; `session` is set for the browser's session cookie."""

    principal: Principal
    auth: AuthenticatedBy
    session: LiveSession | None = None


def _session(request: Request) -> Identity | None:
    found = browser_session.session_of(request)
    if found is None:
        return None
    return Identity(browser_session.principal_of(found), AuthenticatedBy("session", found.user_id, found.token_hash), found)


def identify(request: Request) -> Identity | None:
    """The principal behind a request, from its Authorization header or its browser session (blocking)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        principal = _basic(value.strip(), client_address(request))
        return Identity(principal, AuthenticatedBy("basic", principal.user_id)) if principal else None
    if scheme.lower() == "bearer":
        principal = _bearer(value)
        return Identity(principal, AuthenticatedBy("bearer", principal.user_id)) if principal else None
    return _session(request)


def is_public(path: str) -> bool:
    if path in PUBLIC_PATHS:
        return True
    if path.startswith("/_nicegui/"):
        return not path.startswith(GUARDED_NICEGUI_PREFIXES)
    return path.startswith("/_nicegui_ws/")


def is_machine_route(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in MACHINE_PREFIXES)


def _cached_basic(request: Request) -> Identity | None:
    """The principal of Basic credentials verified within the last minute, without leaving the event loop."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, password = base64.b64decode(value.strip(), validate=True).decode().split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    principal = credentials.get(CredentialCache.key(username, password))
    return Identity(principal, AuthenticatedBy("basic", principal.user_id)) if principal else None


def forgery_refusal(request: Request, identity: Identity) -> str | None:
    """Why a request that changes something may not use the credentials the browser sent by itself (app/csrf.py)."""
    if identity.session is not None:
        return csrf.session_refusal(request, identity.session)
    if identity.auth.kind == "basic":
        return csrf.basic_refusal(request)
    return None


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
            identity = _cached_basic(request) or await run_in_threadpool(identify, request)
        except TooManyAttempts as exc:
            identity = None
            refusal = JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)})
        if identity is None:
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
        forged = forgery_refusal(request, identity)
        if forged:
            await JSONResponse({"detail": forged}, status_code=403)(scope, receive, send)
            return
        # stored in the scope: the route's own Request (and an open tab's page request) sees them
        request.state.principal = identity.principal
        request.state.vireo_auth = identity.auth
        request.state.csrf_token = identity.session.csrf_token if identity.session else ""
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


