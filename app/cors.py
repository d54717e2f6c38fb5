"""CORS for `/dicomweb` only: a viewer served from another origin (OHIF on its own host) may call it.

Preflight requests carry no credentials, so this sits in front of the authentication
middleware and answers them itself; every other route stays same-origin only.

Answers allow credentials (a viewer's Basic login), so the list must name origins: `*` (or
`null`, which any sandboxed page can claim) with credentials would let every web page read
the PACS with the visitor's login. Such a value is refused at start (`origins_problem`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/dicomweb"


def origins_problem(origins: list[str]) -> str | None:
    """Why this VIREO_CORS_ORIGINS list cannot be used with credentials (None when it can)."""
    for origin in origins:
        if origin == "*":
            return ("'*' would let any web site read /dicomweb with the login of whoever visits it; "
                    "list the viewer's origins instead, e.g. https://ohif.example.org")
        if origin.lower() == "null":
            return "'null' is the origin of any sandboxed page or local file; list the viewer's real origin"
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
            return f"{origin!r} is not an origin: expected scheme://host[:port], e.g. https://ohif.example.org"
    return None


class DicomwebCors:
    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        problem = origins_problem(origins)
        if problem:
            raise ValueError(f"VIREO_CORS_ORIGINS: {problem}")
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            expose_headers=["Warning", "Content-Type", "Content-Length"],
            allow_credentials=True,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.cors(scope, receive, send)
            return
        await self.app(scope, receive, send)
