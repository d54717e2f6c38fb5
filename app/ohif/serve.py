"""`/ohif/…`: the installed OHIF dist, same origin with /dicomweb, behind Vireo's login.

Vireo's AuthMiddleware guards every path that is not public, so a logged-out browser asking
for /ohif/ is sent to the login page like for any page; nothing here checks credentials.
OHIF is a single-page app: a path without a file (`/ohif/viewer?…`) answers index.html, while
a missing *file* (a chunk, a worker) answers 404, so a broken install shows up as such
instead of as JavaScript parse errors. Hashed bundles never change under their name and are
cached for a year; index.html and the generated config are revalidated on every load.
Text files are sent as the gzip twins the installer wrote.
"""

from __future__ import annotations

import html
import mimetypes
import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response

from app.ohif import location
from app.ohif.config import app_config_js
from app.ohif.rewrite import OFFLINE_PATH, PUBLIC_PATH

router = APIRouter(include_in_schema=False)

SESSION_SCRIPT = "vireo-session.js"
_SESSION_JS = (Path(__file__).with_name("session_watch.js")).read_text(encoding="utf-8")
_HASHED = re.compile(r"(?:^|[./])[0-9a-f]{16}\.(?:js|css|wasm|woff2)$")
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "no-cache"
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".jsonc": "application/json",
               ".json": "application/json", ".webapp": "application/x-web-app-manifest+json", ".woff2": "font/woff2"}

_index_cache: dict[Path, tuple[float, str]] = {}


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def cache_control(relative: str) -> str:
    return IMMUTABLE if _HASHED.search(relative) else REVALIDATE


def index_html(dist: Path) -> str:
    """OHIF's index.html with Vireo's session watch loaded before anything else."""
    page = dist / "index.html"
    mtime = page.stat().st_mtime
    cached = _index_cache.get(dist)
    if cached is None or cached[0] != mtime:
        text = page.read_text(encoding="utf-8")
        text = text.replace("<head>", f'<head><script src="{PUBLIC_PATH}{SESSION_SCRIPT}"></script>', 1)
        _index_cache[dist] = cached = (mtime, text)
    return cached[1]


def not_installed_page() -> HTMLResponse:
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>OHIF Viewer not installed</title></head>"
        "<body style='font:15px/1.5 system-ui,sans-serif;margin:2rem;max-width:42rem'>"
        f"<h1 style='font-size:1.3rem'>OHIF Viewer is not installed</h1><p>{html.escape(location.INSTALL_HINT)}</p>"
        "<p><a href='/datasets'>Back to Datasets</a></p></body></html>"
    )
    return HTMLResponse(body, status_code=404, headers={"Cache-Control": REVALIDATE})


def _file(dist: Path, relative: str, request: Request) -> Response | None:
    target = (dist / relative).resolve()
    if not target.is_relative_to(dist) or not target.is_file() or target.name.startswith(".") or target.suffix == ".gz":
        return None
    headers = {"Cache-Control": cache_control(relative), "Vary": "Accept-Encoding"}
    twin = target.with_name(target.name + ".gz")
    if "gzip" in request.headers.get("accept-encoding", "") and twin.is_file():
        headers["Content-Encoding"] = "gzip"
        return FileResponse(twin, media_type=media_type(target), headers=headers)
    return FileResponse(target, media_type=media_type(target), headers=headers)


@router.api_route("/ohif", methods=["GET", "HEAD"])
def ohif_root() -> Response:
    return RedirectResponse(PUBLIC_PATH, status_code=307)


@router.api_route(f"{PUBLIC_PATH}app-config.js", methods=["GET", "HEAD"])
def ohif_config() -> Response:
    return Response(app_config_js(), media_type="text/javascript", headers={"Cache-Control": REVALIDATE})


@router.api_route(f"{PUBLIC_PATH}{SESSION_SCRIPT}", methods=["GET", "HEAD"])
def ohif_session_script() -> Response:
    return Response(_SESSION_JS, media_type="text/javascript", headers={"Cache-Control": REVALIDATE})


@router.api_route(PUBLIC_PATH + "{relative:path}", methods=["GET", "HEAD"])
def ohif_file(relative: str, request: Request) -> Response:
    """A file of the dist, index.html for the app's own routes, 404 for a missing file."""
    dist = location.installed()
    if dist is None:
        return not_installed_page()
    if request.url.path.startswith(OFFLINE_PATH):
        return PlainTextResponse("This OHIF feature needs the internet, which Vireo's OHIF never uses.", status_code=404)
    found = _file(dist, relative, request) if relative else None
    if found is not None:
        return found
    if "." in relative.rsplit("/", 1)[-1]:
        return PlainTextResponse(f"OHIF has no file {relative!r}; reinstall it with `vireo ohif install --force`.", status_code=404)
    return HTMLResponse(index_html(dist), headers={"Cache-Control": REVALIDATE})
