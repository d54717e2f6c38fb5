"""`/api/series`: series documents, one series, its thumbnail."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from app.runtime import current_services
from core import catalog
from core.pacs_store import InvalidUID

router = APIRouter(prefix="/api/series", tags=["series"])


@router.get("")
def list_series(
    dataset: str | None = Query(None, description="only series in this dataset"),
    sort: str | None = Query(None, description="Field, -Field or Field:desc (default: -arrived)"),
    limit: int = Query(100, ge=0, le=catalog.MAX_PAGE),
    offset: int = Query(0, ge=0),
    q: str | None = Query(None, description="Lucene query"),
    filter: list[str] | None = Query(None, description="Field:v1,v2"),
) -> dict[str, Any]:
    if q and q.strip() not in ("", "*"):
        raise HTTPException(400, "search queries (q=) are not supported by this version yet")
    if filter:
        raise HTTPException(400, "filters (filter=) are not supported by this version yet")
    try:
        with current_services().db.session() as session:
            page = catalog.list_series(session, dataset=dataset, sort=sort, limit=limit, offset=offset)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    return {"total": page.total, "items": page.items}


@router.get("/{series_uid}")
def get_series(series_uid: str) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            return catalog.get_series(session, series_uid)
        except catalog.UnknownSeries as exc:
            raise HTTPException(404, str(exc)) from exc


@router.get("/{series_uid}/thumbnail", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def get_thumbnail(series_uid: str) -> Response:
    services = current_services()
    try:
        png = services.thumbnails.thumbnail(series_uid)
    except (LookupError, InvalidUID) as exc:
        raise HTTPException(404, f"no series {series_uid}") from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=10"})
