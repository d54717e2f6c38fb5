"""Instances' DICOM JSON documents (WADO-RS metadata), from the index.

Uploads and the receiver's own process write each instance's document as they index it.
Instances indexed without one (by a receiver worker process, by `reindex`, or before Vireo
kept documents) get theirs from ingest.document_backfill once their series is quiet, or here
on first request if that comes sooner: read from the file once, with bulk data left unread,
and kept.
"""

from __future__ import annotations

import logging

from pydicom import dcmread
from sqlalchemy import select
from sqlmodel import Session

from core.db import insert_ignoring_duplicates
from core.dicom_json import BULK_THRESHOLD, instance_document
from core.models import Instance, InstanceDocument, Series
from core.pacs_store import PacsStore

log = logging.getLogger(__name__)


def documents(
    session: Session, store: PacsStore, study_uid: str, series_uid: str | None = None, sop_instance_uid: str | None = None
) -> list[str]:
    """The documents of a study, one series of it, or one instance, in series then instance order ([] when none match)."""
    statement = (
        select(Instance.sop_instance_uid, Instance.series_uid, Instance.path, InstanceDocument.document)
        .join(Series, Series.series_uid == Instance.series_uid)  # type: ignore[arg-type]
        .join(InstanceDocument, InstanceDocument.sop_instance_uid == Instance.sop_instance_uid, isouter=True)  # type: ignore[arg-type]
        .where(Series.study_uid == study_uid)
        .order_by(Instance.series_uid, Instance.instance_number, Instance.sop_instance_uid)
    )
    if series_uid is not None:
        statement = statement.where(Instance.series_uid == series_uid)
    if sop_instance_uid is not None:
        statement = statement.where(Instance.sop_instance_uid == sop_instance_uid)
    rows = session.execute(statement).all()
    missing = [(sop, series, path) for sop, series, path, document in rows if document is None]
    made = make_missing(session, store, study_uid, missing) if missing else {}
    return [document if document is not None else made[sop] for sop, _, _, document in rows if document is not None or sop in made]


def missing_in_series(session: Session, series_uid: str, limit: int) -> tuple[str | None, list[tuple[str, str, str]]]:
    """The series' study UID, and up to `limit` of its instances without a document, as (SOP instance UID, series UID, path)."""
    study_uid = session.execute(select(Series.study_uid).where(Series.series_uid == series_uid)).scalar()
    statement = (
        select(Instance.sop_instance_uid, Instance.series_uid, Instance.path)
        .join(InstanceDocument, InstanceDocument.sop_instance_uid == Instance.sop_instance_uid, isouter=True)  # type: ignore[arg-type]
        .where(Instance.series_uid == series_uid, InstanceDocument.sop_instance_uid.is_(None))  # type: ignore[union-attr]
        .limit(limit)
    )
    return study_uid, [(sop, series, path) for sop, series, path in session.execute(statement).all()]


def make_missing(session: Session, store: PacsStore, study_uid: str, missing: list[tuple[str, str, str]]) -> dict[str, str]:
    """Make and keep the documents of these instances (SOP instance UID, series UID, path); returns them by SOP instance UID."""
    made: dict[str, str] = {}
    for sop, series, path in missing:
        try:
            ds = dcmread(store.path(path), defer_size=BULK_THRESHOLD)
            made[sop] = instance_document(ds, study_uid, series, sop)
        except Exception as exc:  # a file gone or unreadable: leave it out of the answer, say so in the log
            log.warning("metadata of %s could not be read from %s: %s", sop, path, exc)
    if made:
        bind = session.get_bind()
        statement = insert_ignoring_duplicates(bind, InstanceDocument.__table__)  # type: ignore[arg-type]
        series_of = {sop: series for sop, series, _ in missing}
        session.execute(statement, [{"sop_instance_uid": sop, "series_uid": series_of[sop], "document": doc} for sop, doc in made.items()])
    return made
