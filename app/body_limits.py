"""How much a request may send: a size limit per route, enforced while the body streams in.

FastAPI and Starlette read a body whole before a route can look at its size, so a limit
checked in the route comes too late (an anonymous 400 MiB POST once took 1 GiB of memory
before its 413). This plain ASGI middleware sits in front of authentication and of every
route: a `Content-Length` over the route's limit is refused before a byte of the body is
read; a chunked body is counted as it arrives and cut off with 413 the moment it passes the
limit. A response sent while the client is still sending (a 401 to an anonymous upload, a
413) closes the connection, so the rest of the body is never waited for.

Routes that other Vireo instances call carry a signature instead of a user (see
`app.auth.INSTANCE_SIGNED_PATHS`); the signature covers the body, so it can only be checked
after reading it. A request to such a route that is plainly not signed (headers missing, or
a timestamp outside the accepted window) is handed on with an empty body instead: the route
refuses and audits it as before, and the client's body is never read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federation.signing import MAX_SKEW, REQUIRED_HEADERS, TIMESTAMP_HEADER

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULT_REQUEST_LIMIT = 8 * MiB  # JSON APIs and forms: far above any real one (130,000 series UIDs fit)
DEFAULT_UPLOAD_LIMIT = 2 * GiB  # one file or chunk to /api/uploads (the Data Upload page sends 8 MiB chunks)
DEFAULT_STOW_LIMIT = 4 * GiB  # one STOW-RS request (its parts stream to the PACS)
FEDERATION_SYNC_LIMIT = 64 * MiB  # a runner's poll with its results (each at most 16 MiB, federation/results.py)
SIGNED_PATHS = frozenset({"/api/federation/sync"})


class BodyTooLarge(HTTPException):
    """A request body over its route's limit: 413 with the limit in plain words.

    An HTTPException, so FastAPI passes it on as it is (any other error while it parses a
    body becomes "There was an error parsing the body") and answers 413 with this detail.
    """

    def __init__(self, limit: RouteLimit) -> None:
        super().__init__(413, limit.refusal(), headers={"Connection": "close"})


@dataclass(frozen=True)
class RouteLimit:
    """The largest body one kind of request may send, and what to call it in a refusal."""

    what: str
    max_bytes: int

    def refusal(self) -> str:
        return f"the request body is too large: {self.what} may send at most {_size(self.max_bytes)}"


def _size(count: int) -> str:
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if count >= factor and count % factor == 0:
            return f"{count // factor} {unit}"
    return f"{count} bytes"


@dataclass(frozen=True)
class BodyLimitTable:
    """Which limit applies to which route; anything not named here gets the small default."""

    default: RouteLimit = RouteLimit("an API call", DEFAULT_REQUEST_LIMIT)
    uploads: RouteLimit = RouteLimit("one upload request (a file or one chunk of it; send larger files in chunks)", DEFAULT_UPLOAD_LIMIT)
    stow: RouteLimit = RouteLimit("one STOW-RS request", DEFAULT_STOW_LIMIT)
    federation_sync: RouteLimit = RouteLimit("a federation sync", FEDERATION_SYNC_LIMIT)

    @classmethod
    def sized(cls, request_bytes: int, upload_bytes: int, stow_bytes: int) -> BodyLimitTable:
        """The table with the configured sizes (VIREO_MAX_REQUEST_BYTES and friends)."""
        base = cls()
        return cls(
            default=RouteLimit(base.default.what, request_bytes),
            uploads=RouteLimit(base.uploads.what, upload_bytes),
            stow=RouteLimit(base.stow.what, stow_bytes),
        )

    def limit_for(self, method: str, path: str) -> RouteLimit:
        if method in ("POST", "PUT") and (path == "/api/uploads" or path.startswith("/api/uploads/")):
            return self.uploads
        if method == "POST" and (path == "/dicomweb/studies" or path.startswith("/dicomweb/studies/")):
            return self.stow
        if method == "POST" and path in SIGNED_PATHS:
            return self.federation_sync
        return self.default


def plainly_unsigned(headers: Headers, now: float | None = None) -> bool:
    """True when an instance-signed route would refuse this request whatever its body says.

    Only what can be told from the headers: a signature header missing, or a timestamp that
    is not whole seconds within the accepted window. The signature itself needs the body.
    """
    if not all(headers.get(name) for name in REQUIRED_HEADERS):
        return True
    try:
        stamp = int(headers[TIMESTAMP_HEADER])
    except ValueError:
        return True
    return abs((time.time() if now is None else now) - stamp) > MAX_SKEW


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class BodyLimitMiddleware:
    """Refuses request bodies over their route's limit while they stream (see the module docstring)."""

    def __init__(self, app: ASGIApp, table: BodyLimitTable | None = None) -> None:
        self.app = app
        self.table = table or BodyLimitTable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self.table.limit_for(scope["method"], scope["path"])
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if declared is not None and not chunked:
            if not declared.isdigit():
                await _refuse(400, "the Content-Length header is not a whole number of bytes", scope, receive, send)
                return
            if int(declared) > limit.max_bytes:
                await _refuse(413, limit.refusal(), scope, receive, send)
                return
        has_body = chunked or (declared is not None and int(declared) > 0)
        if has_body and scope["path"] in SIGNED_PATHS and plainly_unsigned(headers):
            await self.app(scope, _empty_body, _closing(send))  # the route refuses it; its body stays unread
            return
        stream = _CountedBody(receive, limit, has_body)
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not stream.done:
                    message = _with_connection_close(message)
            await send(message)

        try:
            await self.app(scope, stream.receive, send_wrapper)
        except BodyTooLarge as exc:
            if started:
                raise
            await _refuse(413, str(exc.detail), scope, receive, send)


class _CountedBody:
    """The request's `receive`, counting body bytes and raising BodyTooLarge once they pass the limit."""

    def __init__(self, receive: Receive, limit: RouteLimit, has_body: bool) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self.done = not has_body
        self.exceeded = False

    async def receive(self) -> Message:
        if self.exceeded:
            raise BodyTooLarge(self.limit)
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                self.exceeded = True
                raise BodyTooLarge(self.limit)
            if not message.get("more_body", False):
                self.done = True
        return message


def _with_connection_close(message: Message) -> Message:
    """The response start with `Connection: close`: the client is still sending a body nobody will read."""
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
    return {**message, "headers": [*headers, (b"connection", b"close")]}


def _closing(send: Send) -> Send:
    async def closing_send(message: Message) -> None:
        await send(_with_connection_close(message) if message["type"] == "http.response.start" else message)

    return closing_send


async def _refuse(status: int, reason: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": reason}, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)
