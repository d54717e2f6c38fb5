"""Which series were derived from which: a result (SEG, SR, ...) and the image series it describes.

Why from the index: the indexer already records, for each series, the image series it
references (`Series.referenced_series_uid`, from a SEG's ReferencedSeriesSequence, an
RTSTRUCT's referenced frame of reference, or an SR's evidence — see ingest/metadata.py), so
linking a result to its source and back ("results of this series") is one indexed lookup,
with no files read and no new column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from core.models import Series


@dataclass(frozen=True)
class DerivedSeries:
    """A result series in the index: what a link to it shows."""

    series_uid: str
    modality: str
    description: str
    series_number: int | None


def results_of(conn: Any, series_uid: str) -> list[DerivedSeries]:
    """The series that reference `series_uid` (its SEGs, measurement reports, ...), by modality then number."""
    rows = conn.execute(
        select(Series.series_uid, Series.modality, Series.series_description, Series.series_number)
        .where(Series.referenced_series_uid == series_uid, Series.series_uid != series_uid)
        .order_by(Series.modality, Series.series_number, Series.series_uid)  # type: ignore[arg-type]
    ).all()
    return [DerivedSeries(uid, modality or "", description or "", number) for uid, modality, description, number in rows]


def source_of(conn: Any, series_uid: str) -> str | None:
    """The series `series_uid` was derived from (None when it references none, or it is no longer in the index)."""
    reference = conn.execute(select(Series.referenced_series_uid).where(Series.series_uid == series_uid)).scalar()
    if not reference:
        return None
    present = conn.execute(select(Series.series_uid).where(Series.series_uid == reference)).scalar()
    return str(present) if present else None
