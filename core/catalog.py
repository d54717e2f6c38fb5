"""Series documents: what `/api/series` and the pages show of a series.

A document carries the series', its study's and its patient's attributes by DICOM keyword,
plus `tags`, `datasets`, `instances` and the derived fields the index keeps (arrival,
completeness). Which series a listing shows, in which order, is core.search's business;
this module turns the UIDs it picks into documents.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Select, select
from sqlmodel import Session

from core.models import Dataset, DatasetSeries, Patient, Series, SeriesTag, Study
from core.timeutil import isoformat

MAX_PAGE = 1000

class UnknownSeries(LookupError):
    pass


def _joined(query: Select[Any]) -> Select[Any]:
    return query.join(Study, Study.study_uid == Series.study_uid).join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]


def documents_for(session: Session, series_uids: list[str]) -> list[dict[str, Any]]:
    """Series documents for `series_uids`, in that order (UIDs no longer indexed are skipped)."""
    rows = []
    for start in range(0, len(series_uids), 500):
        chunk = series_uids[start : start + 500]
        rows.extend(session.execute(_joined(select(Series, Study, Patient)).where(Series.series_uid.in_(chunk))).all())  # type: ignore[attr-defined]
    by_uid = {row[0].series_uid: row for row in rows}
    return _documents(session, [by_uid[uid] for uid in series_uids if uid in by_uid])


def unknown_series(connection: Session | Connection, series_uids: list[str]) -> str | None:
    """None when every UID names an indexed series, else a message naming (some of) the others."""
    known: set[str] = set()
    for start in range(0, len(series_uids), 500):
        chunk = series_uids[start : start + 500]
        known.update(connection.execute(select(Series.series_uid).where(Series.series_uid.in_(chunk))).scalars())  # type: ignore[attr-defined]
    unknown = [uid for uid in series_uids if uid not in known]
    if not unknown:
        return None
    return "unknown series: " + ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")


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


def attribute_values(series: Series, study: Study, patient: Patient) -> dict[str, Any]:
    """The DICOM attributes of a series document by keyword: series, study and patient level."""
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
    return doc


def series_document(series: Series, study: Study, patient: Patient, tags: list[str], datasets: list[str]) -> dict[str, Any]:
    doc = attribute_values(series, study, patient)
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
