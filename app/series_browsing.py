"""Finding series for the API and the pages: search (core.search) picks the UIDs, the catalog draws the documents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.runtime import current_services
from app.viewers import ohif_study_url
from core import catalog, datasets
from core.events import SERIES_CHANGED, THUMBNAIL_READY, EventBus
from core.search.query import QueryError, field_name, parse_filter
from core.search.service import MAX_PAGE, Aggregation, Selection

__all__ = ["MAX_PAGE", "SERIES_CHANGED", "THUMBNAIL_READY", "Listing", "Selection", "bus", "find_series", "ohif_url", "series_and_datasets"]


@dataclass(frozen=True)
class Listing:
    total: int
    items: list[dict[str, Any]]
    next: str | None = None


def find_series(selection: Selection, *, sort: str | None = None, limit: int = 100, offset: int = 0, after: str | None = None) -> Listing:
    """One page of series documents matching `selection`; raises QueryError (bad query) or LookupError (no such dataset)."""
    services = current_services()
    page = services.search.page(selection, sort=sort, limit=limit, offset=offset, after=after)
    with services.db.session() as session:
        items = catalog.documents_for(session, page.series_uids)
    return Listing(total=page.total, items=items, next=page.next_cursor)


def series_and_datasets(dataset: str | None, limit: int) -> tuple[Listing, list[dict[str, Any]]]:
    """Newest series first (in `dataset`, or all), and every dataset with its series count."""
    listing = find_series(Selection.of(dataset=dataset), limit=limit)
    with current_services().db.session() as session:
        return listing, datasets.list_datasets(session)


def count(selection: Selection) -> int:
    return current_services().search.count(selection)


def aggregate(selection: Selection, fields: list[str], size: int = 1000) -> Aggregation:
    """Series/study/patient counts and value counts per field (dates as `Field:month`), for the dashboard."""
    return current_services().search.aggregate(selection, fields, size)


def indexed_fields() -> list[str]:
    return current_services().search.fields()


def field_values(field: str, prefix: str, selection: Selection | None = None, limit: int = 30) -> list[dict[str, Any]]:
    return current_services().search.values(field, prefix, limit, selection)


def values_in_search(field: str, prefix: str, dataset: str | None, q: str, filters: list[str], limit: int = 30) -> list[dict[str, Any]]:
    """A filter field's values with counts among the series the page shows now (see `values_matching`)."""
    return values_matching(current_services().search, field, prefix, dataset, q, filters, limit)


def values_matching(search: Any, field: str, prefix: str, dataset: str | None, q: str, filters: list[str], limit: int = 30) -> list[dict[str, Any]]:
    """Values of `field` with their series counts within dataset + query + the other filters.

    The field's own filters are left out, so that the picker still offers the values one could
    add to them; a query that does not parse counts as no query (the page shows its error).
    """
    others = [f for f in filters if not _filters_field(f, field)]
    for selection in (Selection.of(q, others, dataset), Selection.of(None, others, dataset)):
        try:
            return search.values(field, prefix, limit, selection)  # type: ignore[no-any-return]
        except QueryError:
            continue
        except LookupError:  # the dataset was deleted meanwhile
            break
    return search.values(field, prefix, limit, None)  # type: ignore[no-any-return]


def _filters_field(filter_text: str, field: str) -> bool:
    try:
        return field_name(parse_filter(filter_text).field) == field_name(field)
    except QueryError:
        return False


def bus() -> EventBus:
    return current_services().bus


def ohif_url(study_uid: str) -> str | None:
    """'Open in OHIF' for a series' study, when VIREO_OHIF_URL is set."""
    return ohif_study_url(current_services().settings.ohif_url, study_uid)
