"""`/api/series`: search and page through series, one series, its thumbnail."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel

from app import series_browsing
from app.api.search_params import search_errors, selection, whole_number
from app.runtime import current_services
from core import catalog
from core.pacs_store import InvalidUID
from core.search.service import MAX_PAGE, Selection
from ingest.thumbnails import placeholder_thumbnail

router = APIRouter(prefix="/api/series", tags=["series"])


class SeriesPageModel(BaseModel):
    total: int
    items: list[dict[str, Any]]
    next: str | None = None


@router.get("", response_model=SeriesPageModel)
def list_series(
    chosen: Selection = Depends(selection),
    sort: str | None = Query(None, description="Field, -Field, Field:asc or Field:desc; any DICOM keyword, tags, instances, arrived, updated (default: -arrived)"),
    limit: str | None = Query(None, description=f"page size, 0–{MAX_PAGE} (default 100)"),
    offset: str | None = Query(None, description="items to skip (default 0)"),
    after: str | None = Query(None, description="cursor from the previous page's `next` (keyset paging; offset is then ignored)"),
) -> dict[str, Any]:
    page_size = whole_number("limit", limit, 100, MAX_PAGE)
    skip = whole_number("offset", offset, 0, None)
    with search_errors():
        listing = series_browsing.find_series(chosen, sort=sort or None, limit=page_size, offset=skip, after=after or None)
    return {"total": listing.total, "items": listing.items, "next": listing.next}


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
