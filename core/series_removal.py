"""Deleting series from the index: search entry, instances, tags, dataset memberships, empty studies and patients.

The caller deletes the files (the PACS store lives in ingest's hands); this only answers which
files belonged to the series, so nothing is left indexed that is gone from disk, and no dataset
keeps pointing at a series that no longer exists (a Kaapana FAQ complaint).
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, select

from core.models import DatasetSeries, Instance, Patient, Series, SeriesTag, Study
from core.search.indexing import forget_series


def delete_series(conn: Connection, series_uids: list[str]) -> list[str]:
    """Remove the series from the index in the caller's transaction; returns their files (relative to the PACS root)."""
    uids = list(dict.fromkeys(series_uids))
    paths: list[str] = []
    studies: set[str] = set()
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        paths.extend(conn.execute(select(Instance.path).where(Instance.series_uid.in_(chunk))).scalars())  # type: ignore[attr-defined]
        studies.update(conn.execute(select(Series.study_uid).where(Series.series_uid.in_(chunk))).scalars())  # type: ignore[attr-defined]
        forget_series(conn, chunk)
        for table in (Instance, SeriesTag, DatasetSeries):
            conn.execute(delete(table).where(table.series_uid.in_(chunk)))  # type: ignore[attr-defined]
        conn.execute(delete(Series).where(Series.series_uid.in_(chunk)))  # type: ignore[attr-defined]
    if studies:
        left = set(conn.execute(select(Series.study_uid).where(Series.study_uid.in_(studies))).scalars())  # type: ignore[attr-defined]
        empty = list(studies - left)
        if empty:
            patients = set(conn.execute(select(Study.patient_pk).where(Study.study_uid.in_(empty))).scalars())  # type: ignore[attr-defined]
            conn.execute(delete(Study).where(Study.study_uid.in_(empty)))  # type: ignore[attr-defined]
            still = set(conn.execute(select(Study.patient_pk).where(Study.patient_pk.in_(patients))).scalars())  # type: ignore[attr-defined]
            if patients - still:
                conn.execute(delete(Patient).where(Patient.id.in_(list(patients - still))))  # type: ignore[union-attr]
    return paths
