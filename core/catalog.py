"""Series documents: what `/api/series` and the pages show of a series.

A document carries the series', its study's and its patient's attributes by DICOM keyword,
plus `tags`, `datasets`, `instances` and the derived fields the index keeps (arrival,
completeness). The search language (Lucene syntax) builds on `series_query` in the
Datasets-core work; here a listing filters by dataset, sorts and pages.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import InstrumentedAttribute
from sqlmodel import Session

from core.models import Dataset, DatasetSeries, Patient, Series, SeriesTag, Study
from core.timeutil import isoformat

MAX_PAGE = 1000

# Fields a listing can be sorted by, as the API names them.
SORTABLE: dict[str, InstrumentedAttribute[Any]] = {
    "arrived": Series.arrived,  # type: ignore[dict-item]
    "updated": Series.updated,  # type: ignore[dict-item]
    "instances": Series.instance_count,  # type: ignore[dict-item]
    "Modality": Series.modality,  # type: ignore[dict-item]
    "SeriesDescription": Series.series_description,  # type: ignore[dict-item]
    "SeriesNumber": Series.series_number,  # type: ignore[dict-item]
    "SeriesInstanceUID": Series.series_uid,  # type: ignore[dict-item]
    "StudyInstanceUID": Series.study_uid,  # type: ignore[dict-item]
    "StudyDate": Study.study_date,  # type: ignore[dict-item]
    "StudyDescription": Study.study_description,  # type: ignore[dict-item]
    "PatientID": Patient.patient_id,  # type: ignore[dict-item]
    "PatientName": Patient.patient_name,  # type: ignore[dict-item]
}


class UnknownSeries(LookupError):
    pass


@dataclass(frozen=True)
class Page:
    total: int
    items: list[dict[str, Any]]


def parse_sort(sort: str | None) -> tuple[InstrumentedAttribute[Any], bool]:
    """`Field`, `-Field`, `Field:asc` or `Field:desc` (case-insensitive field) → column, descending."""
    if not sort:
        return SORTABLE["arrived"], True
    text = sort.strip()
    descending = text.startswith("-")
    text = text.lstrip("-+")
    if ":" in text:
        text, direction = text.rsplit(":", 1)
        if direction.lower() not in ("asc", "desc"):
            raise ValueError(f"sort direction must be asc or desc, not {direction!r}")
        descending = direction.lower() == "desc"
    by_lower = {name.lower(): name for name in SORTABLE}
    if text.lower() not in by_lower:
        raise ValueError(f"cannot sort by {text!r}; sortable fields: {', '.join(sorted(SORTABLE))}")
    return SORTABLE[by_lower[text.lower()]], descending


def _joined(query: Select[Any]) -> Select[Any]:
    return query.join(Study, Study.study_uid == Series.study_uid).join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]


def list_series(session: Session, *, dataset: str | None = None, sort: str | None = None, limit: int = 100, offset: int = 0) -> Page:
    """One page of series documents, newest arrival first unless sorted otherwise."""
    column, descending = parse_sort(sort)
    limit = max(0, min(limit, MAX_PAGE))
    base = _joined(select(Series, Study, Patient))
    count = select(func.count()).select_from(Series)
    if dataset is not None:
        dataset_id = session.execute(select(Dataset.id).where(Dataset.name == dataset)).scalar_one_or_none()
        if dataset_id is None:
            raise LookupError(f"no dataset {dataset!r}")
        member = select(DatasetSeries.series_uid).where(DatasetSeries.dataset_id == dataset_id)
        base = base.where(Series.series_uid.in_(member))  # type: ignore[attr-defined]
        count = count.where(Series.series_uid.in_(member))  # type: ignore[attr-defined]
    order = column.desc() if descending else column.asc()
    rows = session.execute(base.order_by(order, Series.series_uid).limit(limit).offset(max(0, offset))).all()  # type: ignore[arg-type]
    total = session.execute(count).scalar_one()
    return Page(total=total, items=_documents(session, rows))


def get_series(session: Session, series_uid: str) -> dict[str, Any]:
    row = session.execute(_joined(select(Series, Study, Patient)).where(Series.series_uid == series_uid)).first()
    if row is None:
        raise UnknownSeries(f"no series {series_uid}")
    return _documents(session, [row])[0]


def _documents(session: Session, rows: list[Any]) -> list[dict[str, Any]]:
    uids = [row[0].series_uid for row in rows]
    tags: dict[str, list[str]] = defaultdict(list)
    datasets: dict[str, list[str]] = defaultdict(list)
    if uids:
        for uid, tag in session.execute(select(SeriesTag.series_uid, SeriesTag.tag).where(SeriesTag.series_uid.in_(uids)).order_by(SeriesTag.tag)):  # type: ignore[attr-defined]
            tags[uid].append(tag)
        query = select(DatasetSeries.series_uid, Dataset.name).join(Dataset, Dataset.id == DatasetSeries.dataset_id)  # type: ignore[arg-type]
        for uid, name in session.execute(query.where(DatasetSeries.series_uid.in_(uids)).order_by(Dataset.name)):  # type: ignore[attr-defined]
            datasets[uid].append(name)
    return [series_document(s, st, p, tags[s.series_uid], datasets[s.series_uid]) for s, st, p in rows]


def series_document(series: Series, study: Study, patient: Patient, tags: list[str], datasets: list[str]) -> dict[str, Any]:
    # A study carries its patient's attributes as that study recorded them (PatientIDs can be empty or shared).
    doc: dict[str, Any] = {**study.attributes, **series.attributes}
    doc.update(
        PatientID=patient.patient_id,
        StudyInstanceUID=study.study_uid,
        SeriesInstanceUID=series.series_uid,
        Modality=series.modality,
    )
    doc.setdefault("PatientName", patient.patient_name)
    doc.setdefault("StudyDate", study.study_date)
    doc.setdefault("StudyDescription", study.study_description)
    doc.setdefault("SeriesDescription", series.series_description)
    if series.series_number is not None:
        doc.setdefault("SeriesNumber", series.series_number)
    doc.update(
        tags=tags,
        datasets=datasets,
        instances=series.instance_count,
        size_bytes=series.size_bytes,
        arrived=isoformat(series.arrived),
        updated=isoformat(series.updated),
        min_instance_number=series.min_instance_number,
        max_instance_number=series.max_instance_number,
        missing_instance_numbers=series.missing_instance_numbers,
        is_complete=series.is_complete,
        referenced_series=series.referenced_series_uid,
        thumbnail=f"/api/series/{series.series_uid}/thumbnail",
        thumbnail_version=isoformat(series.thumbnail_at),
    )
    return doc
