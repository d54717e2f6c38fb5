"""What the `/dicomweb` routers share: the root URL links are built on, and UID checking.

Links a client follows later (RetrieveURL, BulkDataURI) must point at an address the client
can reach. The Host header alone is no guide — dicomweb-client sends it without the port, so
every link pointed at port 80 — hence, in order:
1. `VIREO_PUBLIC_URL`, when set (behind a reverse proxy it is the only truthful answer);
2. else the address the request was served on: its scheme, the host name the client used
   (so a browser stays on its own origin and keeps its session cookie), and the port the
   client named or, when it named none, the port the connection actually came in on.
Links are absolute, so a client that resolves them relative to the request URL (as OHIF does
for relative BulkDataURIs) reaches the same resource.
"""

from __future__ import annotations

import re

from fastapi import HTTPException, Request

from app.runtime import current_services
from core.pacs_store import InvalidUID, clean_uid

PREFIX = "/dicomweb"
DICOM_JSON = "application/dicom+json"
DEFAULT_PORTS = {"http": 80, "https": 443}
# A host name, IPv4 address or bracketed IPv6 address, then an optional port: anything else in Host is not used in links.
_HOST = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")


def dicomweb_root(request: Request) -> str:
    """This server's DICOMweb root URL as clients should reach it (BulkDataURIs and RetrieveURLs are built on it)."""
    public = current_services().settings.public_base
    return f"{public or served_base(request)}{PREFIX}"


def served_base(request: Request) -> str:
    """scheme://host[:port] of the address this request was served on (see the module docstring)."""
    scheme = request.url.scheme
    server = request.scope.get("server") or (None, None)
    name, port = split_host(request.headers.get("host", ""))
    name = name or _bracketed(str(server[0] or "127.0.0.1"))
    if port is None:
        port = server[1]
    shown = "" if port is None or port == DEFAULT_PORTS.get(scheme) else f":{port}"
    return f"{scheme}://{name}{shown}"


def split_host(value: str) -> tuple[str, int | None]:
    """A Host header's (name, port): `example.org:8080`, `[::1]:8080`, `example.org` → port None; ('', None) when unusable."""
    match = _HOST.fullmatch(value.strip())
    if match is None:
        return "", None
    return match["name"], int(match["port"]) if match["port"] else None


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def checked_uid(value: str, what: str) -> str:
    """`value` as a UID, or HTTP 400 naming what it was meant to be."""
    try:
        return clean_uid(value)
    except InvalidUID:
        raise HTTPException(400, f"{what} {value!r} is not a valid UID") from None
