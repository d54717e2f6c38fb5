"""What the series page reads: a page of series documents and the dataset list, and the events that change them."""

from __future__ import annotations

from typing import Any

from app.runtime import current_services
from app.viewers import ohif_study_url
from core import catalog, datasets
from core.catalog import MAX_PAGE, Page
from core.events import SERIES_CHANGED, THUMBNAIL_READY, EventBus

__all__ = ["MAX_PAGE", "SERIES_CHANGED", "THUMBNAIL_READY", "Page", "bus", "ohif_url", "series_and_datasets"]


def series_and_datasets(dataset: str | None, limit: int) -> tuple[Page, list[dict[str, Any]]]:
    """Newest series first (in `dataset`, or all), and every dataset with its series count."""
    with current_services().db.session() as session:
        return catalog.list_series(session, dataset=dataset, limit=limit), datasets.list_datasets(session)


def bus() -> EventBus:
    return current_services().bus


def ohif_url(study_uid: str) -> str | None:
    """'Open in OHIF' for a series' study, when VIREO_OHIF_URL is set."""
    return ohif_study_url(current_services().settings.ohif_url, study_uid)
