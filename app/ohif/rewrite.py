"""Edits to the prebuilt OHIF dist so it works under /ohif/ and never reaches the internet.

The npm dist is built for `/`: its index.html, webpack runtimes (app bundle and every web
worker), stylesheet and manifest name absolute paths, so under /ohif/ its chunks and workers
404. Measured on 3.13.2: 11 files — index.html, manifest.json, app.bundle.css and 8 bundles
whose runtime sets `__webpack_require__.p = "/"`. Rebuilding with PUBLIC_URL would need the
whole OHIF monorepo and its toolchain; a literal rewrite of these known patterns needs nothing.

Three features fetch from the internet: the AI segmentation tools (a SAM model from
huggingface.co), labelmap interpolation (ITK-wasm pipelines from cdn.jsdelivr.net) and the
service worker (Workbox from storage.googleapis.com). Their URLs are pointed at
/ohif/offline/…, which Vireo answers with 404, so those tools fail on this machine instead
of sending anything out; normal viewing uses none of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

PUBLIC_PATH = "/ohif/"
OFFLINE_PATH = PUBLIC_PATH + "offline/"

_WEBPACK_PUBLIC_PATH = '__webpack_require__.p = "/";'
_HTML_ATTRIBUTE = re.compile(r'(\s(?:href|src|content)=")/(?!/|ohif/)')
_CSS_URL = re.compile(r"url\(/(?!/|ohif/)")
_MANIFEST_PATH = re.compile(r'"/(?!/|ohif/)')

EXTERNAL_URLS = {
    "https://huggingface.co/": OFFLINE_PATH + "huggingface/",
    "https://cdn.jsdelivr.net/npm/": OFFLINE_PATH + "jsdelivr/",
    "https://storage.googleapis.com/workbox-cdn/": OFFLINE_PATH + "workbox/",
}
NO_SERVICE_WORKER = "// Vireo: OHIF's service worker is disabled (it loads Workbox from the internet and caches across upgrades).\n"


def _edit(path: Path, change: Callable[[str], str]) -> bool:
    text = path.read_text(encoding="utf-8")
    changed = change(text)
    if changed == text:
        return False
    path.write_text(changed, encoding="utf-8")
    return True


def rewrite_public_path(dist: Path) -> list[str]:
    """Make the dist load from /ohif/; returns the files changed (relative names, sorted)."""
    changed: list[str] = []

    def index_html(text: str) -> str:
        text = text.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{PUBLIC_PATH}"')
        return _HTML_ATTRIBUTE.sub(rf"\1{PUBLIC_PATH}", text)

    for path in sorted(dist.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(dist).as_posix()
        edited = False
        if relative == "index.html":
            edited = _edit(path, index_html)
        elif relative == "manifest.json":
            edited = _edit(path, lambda t: _MANIFEST_PATH.sub(f'"{PUBLIC_PATH}', t))
        elif path.suffix == ".css":
            edited = _edit(path, lambda t: _CSS_URL.sub(f"url({PUBLIC_PATH}", t))
        elif path.suffix == ".js" and "/" not in relative:
            edited = _edit(path, lambda t: t.replace(_WEBPACK_PUBLIC_PATH, f'__webpack_require__.p = "{PUBLIC_PATH}";'))
        if edited:
            changed.append(relative)
    return changed


def neutralise_external_urls(dist: Path) -> list[str]:
    """Point every internet URL OHIF would fetch at /ohif/offline/; returns the files changed."""
    changed: list[str] = []
    worker = dist / "init-service-worker.js"
    if worker.is_file():
        worker.write_text(NO_SERVICE_WORKER)
        changed.append(worker.name)

    def local(text: str) -> str:
        for remote, offline in EXTERNAL_URLS.items():
            text = text.replace(remote, offline)
        return text

    for path in sorted(dist.glob("*.js")):
        if path.name != worker.name and _edit(path, local):
            changed.append(path.name)
    return changed
