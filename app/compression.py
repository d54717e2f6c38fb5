"""How responses are compressed: gzip at zlib's default level, never on pixel data.

NiceGUI adds Starlette's GZipMiddleware at level 9, which spent 6 ms of a 100-series QIDO
answer (108 KB of JSON) for 8 % less output than level 6 (1.4 ms); and it would compress
DICOM instances, frames and zips, which are either compressed already or not worth a CPU
on a LAN. Vireo passes this factory to `ui.run` instead.
"""

from __future__ import annotations

from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.types import ASGIApp

COMPRESS_LEVEL = 6
NOT_COMPRESSED = (
    *DEFAULT_EXCLUDED_CONTENT_TYPES,
    "application/dicom",
    "application/octet-stream",
    "multipart/related",  # WADO-RS instances, frames and bulk data
    "image/jp2",
    "image/jls",
)


def gzip_middleware(app: ASGIApp) -> GZipMiddleware:
    return GZipMiddleware(app, minimum_size=500, compresslevel=COMPRESS_LEVEL, exclude_content_types=NOT_COMPRESSED)
