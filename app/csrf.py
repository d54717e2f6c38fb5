"""Cross-site request forgery: a request that changes something with the browser's cookie must come from Vireo's pages.

Cookies are scoped by host, not port, so `SameSite` does not stop a page on another port
of the same host (or another subdomain) from sending the session cookie along. A POST,
PUT, PATCH or DELETE that is authenticated by the session cookie therefore needs both

* an `Origin` (or, without one, a `Referer`) that is Vireo's own: the origin this request
  was addressed to, or that of `VIREO_PUBLIC_URL`; and
* the session's CSRF token in the `X-Vireo-CSRF` header. Vireo's pages carry it in
  `<meta name="vireo-csrf">` (components/frame.py) and their fetch calls send it; another
  origin cannot read a Vireo page, so it cannot know the token. A cookie would not do as
  the token's carrier: another port may read and write this host's cookies.

NiceGUI's own uploads (`/_nicegui/client/<id>/…`) name the page's client id instead, which
is as secret as the token; it must belong to the same session. Bearer tokens are never sent
by a browser on its own, so bearer callers are unaffected. Basic credentials usually are not
either, but a browser remembers those typed into its login dialog: a Basic request that says
it comes from a *foreign* browser origin (one not listed in `VIREO_CORS_ORIGINS`) is refused;
scripts send no `Origin` and are unaffected.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request

from app.runtime import current_services
from core.browser_sessions import LiveSession

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEADER = "X-Vireo-CSRF"
META_NAME = "vireo-csrf"
NICEGUI_CLIENT_PREFIX = "/_nicegui/client/"
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, lower-case, default ports left out; None when it has no host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    shown = f":{port}" if port is not None and str(port) != _DEFAULT_PORTS.get(scheme) else ""
    return f"{scheme}://{host}{shown}"


def own_origins(connection: HTTPConnection) -> set[str]:
    """The origins Vireo's own pages have: the one this request was addressed to, and the public URL's."""
    scheme = {"ws": "http", "wss": "https"}.get(connection.url.scheme, connection.url.scheme)
    host = connection.headers.get("host", "")
    origins = {o for o in (origin_of(f"{scheme}://{host}"),) if o}
    public = current_services().settings.public_base
    if public and (public_origin := origin_of(public)):
        origins.add(public_origin)
    return origins


def claimed_origin(connection: HTTPConnection) -> str | None:
    """Where the browser says the request comes from: `Origin`, else the origin of `Referer` ("null" counts as foreign)."""
    origin = connection.headers.get("origin")
    if origin is not None:
        return origin_of(origin) or "null"
    referer = connection.headers.get("referer")
    return (origin_of(referer) or "null") if referer else None


def origin_refusal(connection: HTTPConnection) -> str | None:
    """Why the request's origin is not Vireo's own (None when it is)."""
    claimed = claimed_origin(connection)
    if claimed is None:
        return "refused: a change made with a browser session must say where it comes from (no Origin or Referer header)"
    if claimed not in own_origins(connection):
        return f"refused: a page of another site ({claimed}) may not change anything in Vireo with your browser session"
    return None


def session_refusal(request: Request, live: LiveSession) -> str | None:
    """Why a cookie-authenticated request may not go on (None when it may). Only unsafe methods are checked."""
    if request.method not in UNSAFE_METHODS:
        return None
    reason = origin_refusal(request)
    if reason:
        return reason
    path = request.url.path
    if path.startswith(NICEGUI_CLIENT_PREFIX):
        return _client_refusal(path, live)
    sent = request.headers.get(HEADER, "")
    if not sent or not secrets.compare_digest(sent.encode(), live.csrf_token.encode()):
        return f"refused: a change made with a browser session needs the page's CSRF token (header {HEADER})"
    return None


def basic_refusal(request: Request) -> str | None:
    """A Basic-authenticated change from a foreign browser page (the browser remembered the password)."""
    if request.method not in UNSAFE_METHODS or "origin" not in request.headers:
        return None
    claimed = claimed_origin(request)
    if claimed in own_origins(request) or claimed in current_services().settings.cors_origin_list:
        return None
    return f"refused: a page of another site ({claimed}) may not use credentials your browser remembered"


def _client_refusal(path: str, live: LiveSession) -> str | None:
    """A NiceGUI element endpoint: the client id in the path must be a page of this very session."""
    from nicegui import Client

    from app.browser_session import cookie_hash

    client_id = path[len(NICEGUI_CLIENT_PREFIX):].split("/", 1)[0]
    client = Client.instances.get(client_id)
    if client is None:
        return "refused: this page is no longer open"
    try:
        owner = cookie_hash(client.request)
    except RuntimeError:  # a client without a request belongs to no session
        owner = None
    if owner != live.token_hash:
        return "refused: this page belongs to another browser session"
    return None
