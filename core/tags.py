"""Tags on series: one row per (series, tag), so adding and removing never read-modify-write.

Two people tagging the same series at the same moment each insert or delete their own rows;
neither can overwrite the other's tags (Kaapana's OpenSearch documents could: read, change, write).
"""

from __future__ import annotations

import re
from collections import defaultdict

from sqlalchemy import Connection, delete, select

from core.catalog import unknown_series
from core.db import insert_ignoring_duplicates
from core.models import SeriesTag
from core.search.indexing import note_changed
from core.timeutil import utcnow

MAX_TAG = 128
_FORBIDDEN = re.compile(r"[\x00-\x1f,]")


class TagError(ValueError):
    """A tag request that cannot be honoured; the message says why."""


def check_tag(tag: str) -> str:
    cleaned = tag.strip()
    if not cleaned or len(cleaned) > MAX_TAG or _FORBIDDEN.search(cleaned):
        raise TagError(f"a tag is 1–{MAX_TAG} characters without commas or control characters, not {tag!r}")
    return cleaned


def change_tags(conn: Connection, series_uids: list[str], add: list[str], remove: list[str]) -> dict[str, list[str]]:
    """Add and remove tags on many series in one transaction; returns each series' tags afterwards."""
    uids = list(dict.fromkeys(series_uids))
    adding = list(dict.fromkeys(check_tag(t) for t in add))
    removing = [t for t in dict.fromkeys(check_tag(t) for t in remove) if t not in adding]
    problem = unknown_series(conn, uids)
    if problem:
        raise LookupError(problem)
    now = utcnow()
    insert = insert_ignoring_duplicates(conn.engine, SeriesTag.__table__)  # type: ignore[arg-type]
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        if adding:
            conn.execute(insert, [{"series_uid": uid, "tag": tag, "added": now} for uid in chunk for tag in adding])
        if removing:
            conn.execute(delete(SeriesTag).where(SeriesTag.series_uid.in_(chunk), SeriesTag.tag.in_(removing)))  # type: ignore[attr-defined]
    if adding or removing:
        note_changed(conn, uids)
    return tags_of(conn, uids)


def tags_of(conn: Connection, series_uids: list[str]) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = defaultdict(list)
    for start in range(0, len(series_uids), 500):
        chunk = series_uids[start : start + 500]
        for uid, tag in conn.execute(select(SeriesTag.series_uid, SeriesTag.tag).where(SeriesTag.series_uid.in_(chunk)).order_by(SeriesTag.tag)):  # type: ignore[attr-defined]
            tags[uid].append(tag)
    return {uid: tags.get(uid, []) for uid in series_uids}


def rename_tag(conn: Connection, old: str, new: str) -> int:
    """Rename a tag on every series (merging into `new` where both exist); returns the series affected."""
    old, new = check_tag(old), check_tag(new)
    uids = list(conn.execute(select(SeriesTag.series_uid).where(SeriesTag.tag == old)).scalars())
    if not uids:
        raise LookupError(f"no series is tagged {old!r}")
    if old == new:
        return len(uids)
    now = utcnow()
    insert = insert_ignoring_duplicates(conn.engine, SeriesTag.__table__)  # type: ignore[arg-type]
    for start in range(0, len(uids), 500):
        conn.execute(insert, [{"series_uid": uid, "tag": new, "added": now} for uid in uids[start : start + 500]])
    conn.execute(delete(SeriesTag).where(SeriesTag.tag == old))  # type: ignore[arg-type]
    note_changed(conn, uids)
    return len(uids)


def delete_tag(conn: Connection, tag: str) -> int:
    """Remove a tag from every series; returns how many series had it."""
    tag = check_tag(tag)
    uids = list(conn.execute(select(SeriesTag.series_uid).where(SeriesTag.tag == tag)).scalars())
    if not uids:
        raise LookupError(f"no series is tagged {tag!r}")
    conn.execute(delete(SeriesTag).where(SeriesTag.tag == tag))  # type: ignore[arg-type]
    note_changed(conn, uids)
    return len(uids)
