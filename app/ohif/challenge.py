"""No Basic-auth challenge for a viewer's background requests, so an expired login is noticed, not prompted.

/dicomweb answers a request without valid credentials with 401 and `WWW-Authenticate: Basic`,
which DICOMweb clients need. A browser, though, answers that challenge on an XMLHttpRequest
by opening its own user-name/password dialog (headless: the request just hangs), and OHIF
never sees the 401 it could report. Vireo's OHIF marks its requests with the conventional
`X-Requested-With: XMLHttpRequest` (app/ohif/session_watch.js); for those the challenge is
left out, so the request fails at once and the page offers Vireo's own login instead.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MARK = (b"x-requested-with", b"xmlhttprequest")


class NoChallengeForScripts:
    """Drops `WWW-Authenticate` from 401 answers to requests a page's script marked as its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(k == MARK[0] and v.lower() == MARK[1] for k, v in scope["headers"]):
            await self.app(scope, receive, send)
            return

        async def send_unchallenged(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                message = {**message, "headers": [(k, v) for k, v in message.get("headers", []) if k.lower() != b"www-authenticate"]}
            await send(message)

        await self.app(scope, receive, send_unchallenged)
