"""Tags on series: one row per (series, tag), so adding and removing never read-modify-write.

(Minimal version for the workflows issue; the Datasets-core issue owns this module.)
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete, select
from sqlmodel import Session

from core.db import insert_ignoring_duplicates
from core.models import SeriesTag
from core.timeutil import utcnow


def change_tags(session: Session, series_uids: list[str], add: list[str], remove: list[str]) -> dict[str, list[str]]:
    """Add and remove tags on series (atomic per call); returns the new tags per series."""
    uids = list(dict.fromkeys(series_uids))
    add = [t.strip() for t in add if t and t.strip()]
    remove = [t.strip() for t in remove if t and t.strip()]
    now = utcnow()
    if add and uids:
        statement = insert_ignoring_duplicates(session.get_bind(), SeriesTag.__table__)  # type: ignore[arg-type]
        session.execute(statement, [{"series_uid": uid, "tag": tag, "added": now} for uid in uids for tag in dict.fromkeys(add)])
    if remove and uids:
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            session.execute(delete(SeriesTag).where(SeriesTag.series_uid.in_(chunk), SeriesTag.tag.in_(remove)))  # type: ignore[attr-defined]
    tags: dict[str, list[str]] = defaultdict(list)
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        for uid, tag in session.execute(select(SeriesTag.series_uid, SeriesTag.tag).where(SeriesTag.series_uid.in_(chunk)).order_by(SeriesTag.tag)):  # type: ignore[attr-defined]
            tags[uid].append(tag)
    return {uid: tags[uid] for uid in uids}
