"""`/api/series`: series documents, one series, its thumbnail."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from app.runtime import current_services
from ingest.thumbnails import placeholder_thumbnail
from core import catalog
from core.pacs_store import InvalidUID

router = APIRouter(prefix="/api/series", tags=["series"])


@router.get("")
def list_series(
    dataset: str | None = Query(None, description="only series in this dataset"),
    sort: str | None = Query(None, description="Field, -Field or Field:desc (default: -arrived)"),
    limit: str | None = Query(None, description=f"page size, 0–{catalog.MAX_PAGE} (default 100)"),
    offset: str | None = Query(None, description="items to skip (default 0)"),
    q: str | None = Query(None, description="Lucene query"),
    filter: list[str] | None = Query(None, description="Field:v1,v2"),
) -> dict[str, Any]:
    # An empty parameter (`?q=&dataset=`, as a client fills a template) means "not given".
    dataset = dataset or None
    sort = sort or None
    if q and q.strip() not in ("", "*"):
        raise HTTPException(400, "search queries (q=) are not supported by this version yet")
    if any(f.strip() for f in filter or []):
        raise HTTPException(400, "filters (filter=) are not supported by this version yet")
    page_size = _whole_number("limit", limit, 100, catalog.MAX_PAGE)
    skip = _whole_number("offset", offset, 0, None)
    try:
        with current_services().db.session() as session:
            page = catalog.list_series(session, dataset=dataset, sort=sort, limit=page_size, offset=skip)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    return {"total": page.total, "items": page.items}


def _whole_number(name: str, raw: str | None, default: int, maximum: int | None) -> int:
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, not {raw!r}") from None
    if value < 0 or (maximum is not None and value > maximum):
        raise HTTPException(400, f"{name} must be between 0 and {maximum}" if maximum is not None else f"{name} must not be negative")
    return value


@router.get("/{series_uid}")
def get_series(series_uid: str) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            return catalog.get_series(session, series_uid)
        except catalog.UnknownSeries as exc:
            raise HTTPException(404, str(exc)) from exc


@router.get("/{series_uid}/thumbnail", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def get_thumbnail(series_uid: str) -> Response:
    try:
        png = current_services().thumbnails.thumbnail(series_uid)
    except (LookupError, InvalidUID) as exc:
        raise HTTPException(404, f"no series {series_uid}") from exc
    if png is None:  # not drawn yet: a placeholder now, the thumbnail a few seconds later
        return Response(_drawing(), media_type="image/png", headers={"Cache-Control": "no-store"})
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=10"})


@lru_cache(maxsize=1)
def _drawing() -> bytes:
    return placeholder_thumbnail("thumbnail follows")
