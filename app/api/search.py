"""`/api/aggregations`, `/api/values/{field}` and `/api/fields`: counts for the dashboard, completion for the search row."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from app.api.search_params import search_errors, selection, whole_number
from app.runtime import current_services
from core.search.service import Selection

router = APIRouter(prefix="/api", tags=["search"])


class AggregationsModel(BaseModel):
    series: int
    studies: int
    patients: int
    fields: dict[str, dict[str, int]]


class ValueCount(BaseModel):
    value: str
    count: int


@router.get("/aggregations", response_model=AggregationsModel)
def aggregations(
    field: list[str] | None = Query(None, description="a field to count values of; repeat for more. Dates: StudyDate:year, StudyDate:month"),
    size: str | None = Query(None, description="most frequent values per field (default 1000)"),
    chosen: Selection = Depends(selection),
) -> AggregationsModel:
    top = whole_number("size", size, 1000, 100_000)
    with search_errors():
        result = current_services().search.aggregate(chosen, [f for f in field or [] if f.strip()], size=top)
    return AggregationsModel(series=result.series, studies=result.studies, patients=result.patients, fields=result.fields)


@router.get("/values/{field}", response_model=list[ValueCount])
def values(
    field: str,
    prefix: str = Query("", description="the start of the value (case- and accent-insensitive)"),
    limit: str | None = Query(None, description="at most this many values (default 20)"),
    chosen: Selection = Depends(selection),
) -> list[dict[str, object]]:
    """Values of a field starting with `prefix`, most frequent first; counts over everything, or over `q`/`filter`/`dataset` when given."""
    most = whole_number("limit", limit, 20, 1000)
    if most == 0:
        raise HTTPException(400, "limit must be at least 1")
    with search_errors():
        return current_services().search.values(field, prefix, most, chosen)


@router.get("/fields", response_model=list[str])
def fields() -> list[str]:
    """Every field the index holds values of (for a field picker)."""
    return current_services().search.fields()
