"""What every search endpoint takes (`q`, `filter`, `dataset`) and how its errors become HTTP answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException, Query
from pydantic import BaseModel, Field

from core.search.query import QueryError
from core.search.service import UnknownDataset
from core.selection import Selection, SelectionError


def selection(
    q: str | None = Query(None, description="Lucene query: words, Field:value, wildcards * ?, ranges [a TO b], AND/OR/NOT, -term; juxtaposed terms are ANDed"),
    filter: list[str] | None = Query(None, description="Field:v1,v2 — values ORed; repeat for more filters (ANDed)"),
    dataset: str | None = Query(None, description="only series in this dataset"),
) -> Selection:
    """The series a request is about. An empty parameter (`?q=&dataset=`, as a client fills a template) means "not given"."""
    return Selection.of(q, filter, dataset)


class SelectionBody(BaseModel):
    """A selection in a JSON body (datasets made from a query, workflows started on a search): a search or picked series."""

    q: str | None = Field(None, description="Lucene query")
    filter: list[str] = Field(default_factory=list, description="Field:v1,v2 filters (ANDed)")
    dataset: str | None = Field(None, description="only series in this dataset")
    series: list[str] = Field(default_factory=list, description="picked SeriesInstanceUIDs instead of a search")

    def selection(self) -> Selection:
        """The value type (core.selection); SelectionError when it names both series and a search."""
        return Selection.from_json(self.model_dump())


@contextmanager
def search_errors() -> Iterator[None]:
    """Bad queries are the caller's to fix (400, with the position); an unknown dataset is a 404."""
    try:
        yield
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from exc
    except UnknownDataset as exc:
        raise HTTPException(404, str(exc)) from exc
    except SelectionError as exc:
        raise HTTPException(400, str(exc)) from exc


def whole_number(name: str, raw: str | None, default: int | None, maximum: int | None) -> int | None:
    """A non-negative integer query parameter (blank: `default`), or a 400 that says what was wrong."""
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, not {raw!r}") from None
    if value < 0 or (maximum is not None and value > maximum):
        raise HTTPException(400, f"{name} must be between 0 and {maximum}" if maximum is not None else f"{name} must not be negative")
    return value
