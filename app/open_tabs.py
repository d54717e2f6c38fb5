"""An open tab is only as logged in as its session: checked on every UI event, not only at page load.

A NiceGUI page talks to the server over its websocket after the page request, so the HTTP
guard (app/auth.py) never sees a click. Here NiceGUI's socket handlers are wrapped:

* `connect`: a socket from a page of another origin is refused (cross-site websocket
  hijacking), and a tab reconnecting after its session ended is sent to the login page;
* `event` (clicks, inputs, ...): dropped, and the tab sent to the login page, once the
  session of the page's request has ended (logout, logout everywhere, password change,
  disabled or removed account) or expired;
* every few seconds, tabs whose session has ended are sent to the login page and their page
  is deleted, so server-side timers stop pushing data to them even if they never click.

The check uses a few seconds' memory of live sessions (app/browser_session.py) that ending a
session here updates at once; only a miss reads the database.
"""

from __future__ import annotations

import logging
from typing import Any

from nicegui import Client, background_tasks, core
from nicegui import app as nicegui_app
from nicegui import run
from socketio.exceptions import ConnectionRefusedError as SocketRefused
from starlette.requests import HTTPConnection

from app import browser_session, csrf
from app.browser_session import AuthenticatedBy

log = logging.getLogger(__name__)
SWEEP_SECONDS = 3.0
LOGIN_PATH = "/login"
_kicked: set[str] = set()


def authenticated_by(client: Client) -> AuthenticatedBy | None:
    """How the page of this client was authenticated (None: a public page, such as the login page)."""
    try:
        return getattr(client.request.state, "vireo_auth", None)
    except RuntimeError:  # no request: not one of Vireo's pages
        return None


def still_allowed(auth: AuthenticatedBy | None) -> bool:
    """Whether the page's login still holds (blocking on a cache miss)."""
    if auth is None:
        return True
    if auth.kind == "session":
        return browser_session.live(auth.token_hash) is not None
    return _user_enabled(auth.user_id)


def _user_enabled(user_id: int) -> bool:
    from app.runtime import current_services
    from core.models import User

    with current_services().db.session() as session:
        user = session.get(User, user_id)
        return user is not None and not user.disabled


def send_to_login(client: Client) -> None:
    """Tell the tab to go to the login page, then delete its page so nothing more reaches it."""
    if client.id in _kicked:
        return
    _kicked.add(client.id)
    log.info("page %s: its login session ended; sending the tab to the login page", client.page.path if client.page else client.id)
    # back to where the tab was after logging in again (pages/login.py only follows same-site paths)
    client.run_javascript(f"window.location.replace({LOGIN_PATH!r} + '?next=' + encodeURIComponent(location.pathname + location.search))")

    async def delete_later() -> None:
        import asyncio

        await asyncio.sleep(1.0)  # let the navigation reach the browser first
        _kicked.discard(client.id)
        if client.id in Client.instances:
            client.delete()

    background_tasks.create(delete_later(), name=f"end page of {client.id}")


def install() -> None:
    """Wrap NiceGUI's socket handlers and start the sweep (call once, before the server starts)."""
    nicegui_app.on_startup(lambda: nicegui_app.timer(SWEEP_SECONDS, sweep))
    handlers: dict[str, Any] = core.sio.handlers["/"]
    if getattr(handlers["event"], "vireo_guard", False):
        return  # installed already (NiceGUI's test user runs main.py again in the same process)
    original_connect = handlers["connect"]
    original_event = handlers["event"]

    async def guarded_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        scope = environ.get("asgi.scope")
        connection = HTTPConnection(scope) if isinstance(scope, dict) and scope.get("type") in ("http", "websocket") else None
        if connection is not None and connection.headers.get("origin") is not None and csrf.origin_refusal(connection):
            log.warning("refused a websocket from a page of %s (this server's origins: %s; behind a proxy that changes Host, set VIREO_PUBLIC_URL)",
                        connection.headers.get("origin"), ", ".join(sorted(csrf.own_origins(connection))))
            raise SocketRefused("a page of another site may not connect to Vireo")
        await original_connect(sid, environ, auth)

    def guarded_event(sid: str, msg: dict[str, Any]) -> None:
        client = Client.instances.get(msg.get("client_id", "")) if isinstance(msg, dict) else None
        if client is not None and not still_allowed(authenticated_by(client)):
            send_to_login(client)
            return
        original_event(sid, msg)

    guarded_event.vireo_guard = True  # type: ignore[attr-defined]
    core.sio.on("connect", guarded_connect)
    core.sio.on("event", guarded_event)


async def sweep() -> None:
    """Send every connected tab whose session has ended to the login page."""
    watched = [(client, auth) for client in list(Client.instances.values())
               if client.has_socket_connection and (auth := authenticated_by(client)) is not None]
    if not watched:
        return
    ended = await run.io_bound(lambda: [client for client, auth in watched if not still_allowed(auth)])
    for client in ended or []:
        send_to_login(client)
