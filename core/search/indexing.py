"""Writing the search index, in the caller's transaction: a change is searchable at its commit.

Each distinct (field, value) gets an id in the value dictionary (`search_value`, with the
number of series holding it, and its words in `core.search.value_words`); each series a
`search_document` with the ids of its values; and every change a `search_change` row that
tells the in-memory columns (`core.search.columns`) which series to re-read. Tags and dataset
memberships are not copied anywhere: they are read from their own tables, so tagging 10,000
series writes 10,000 tag rows and 10,000 change rows, not 10,000 re-indexed documents.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, delete, event, func, select
from sqlalchemy.orm import Session

from core.catalog import attribute_values
from core.db import executemany, insert_ignoring_duplicates
from core.models import Patient, SearchChange, SearchDocument, SearchField, Series, Study
from core.search.analysis import MAX_VALUE, as_strings, fold, folded_words, is_identifier
from core.search.value_words import tsvector, value_words_for

CHUNK = 500
Document = tuple[str, int, dict[str, list[str]]]  # study UID, patient key, values by field


def document_values(attributes: dict[str, Any]) -> dict[str, list[str]]:
    """The searchable values of a series' attributes, as text, field by field."""
    values: dict[str, list[str]] = {}
    for field, value in attributes.items():
        if isinstance(value, str):  # the common case, kept cheap: this runs for every attribute of every series
            text = value.strip()
            if text:
                values[field] = [text[:MAX_VALUE]]
            continue
        strings = as_strings(value)
        if len(strings) > 1:
            strings = list(dict.fromkeys(strings))
        if strings:
            values[field] = strings
    return values


def index_series(conn: Connection, series_uids: Iterable[str]) -> None:
    """(Re-)index the attributes of these series; an unchanged document only gets a change row."""
    uids = list(dict.fromkeys(series_uids))
    for start in range(0, len(uids), CHUNK):
        _index_chunk(conn, uids[start : start + CHUNK])


def note_changed(conn: Connection, series_uids: Iterable[str]) -> None:
    """Series whose tags, datasets or counts changed: the columns re-read them on the next query."""
    uids = list(dict.fromkeys(series_uids))
    for start in range(0, len(uids), CHUNK):
        chunk = uids[start : start + CHUNK]
        ids = conn.execute(select(SearchDocument.id).where(SearchDocument.series_uid.in_(chunk))).scalars().all()  # type: ignore[attr-defined]
        _log(conn, ids)


def forget_series(conn: Connection, series_uids: Iterable[str]) -> None:
    """Take series out of the index (before their rows are deleted)."""
    uids = list(dict.fromkeys(series_uids))
    for start in range(0, len(uids), CHUNK):
        chunk = uids[start : start + CHUNK]
        rows = conn.execute(select(SearchDocument.id, SearchDocument.value_ids).where(SearchDocument.series_uid.in_(chunk))).all()  # type: ignore[attr-defined]
        if not rows:
            continue
        _count(conn, Counter(v for _, blob in rows for v in _ids(blob)), -1)
        conn.execute(delete(SearchDocument).where(SearchDocument.id.in_([r[0] for r in rows])))  # type: ignore[union-attr]
        _log(conn, [r[0] for r in rows])


def missing_series(conn: Connection, limit: int = 10_000) -> list[str]:
    """Series that have no search document yet (a database indexed before search existed)."""
    query = select(Series.series_uid).where(~Series.series_uid.in_(select(SearchDocument.series_uid))).limit(limit)  # type: ignore[attr-defined]
    return list(conn.execute(query).scalars())


def _index_chunk(conn: Connection, uids: Sequence[str]) -> None:
    with Session(bind=conn) as session:
        rows = session.execute(
            select(Series, Study, Patient)
            .join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
            .join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]
            .where(Series.series_uid.in_(uids))  # type: ignore[attr-defined]
        ).all()
        documents = {s.series_uid: (st.study_uid, p.id, document_values(attribute_values(s, st, p))) for s, st, p in rows}
        session.expunge_all()
    write_documents(conn, documents)


def write_documents(conn: Connection, documents: dict[str, Document]) -> None:
    """Insert or replace documents `{series_uid: (study_uid, patient_pk, values)}` (the bulk loader's entry too)."""
    if not documents:
        return
    uids = list(documents)
    existing: dict[str, tuple[int, bytes]] = {}
    for start in range(0, len(uids), CHUNK):
        chunk = uids[start : start + CHUNK]
        for doc_id, uid, blob in conn.execute(select(SearchDocument.id, SearchDocument.series_uid, SearchDocument.value_ids).where(SearchDocument.series_uid.in_(chunk))):  # type: ignore[attr-defined]
            existing[uid] = (doc_id, blob)
    fields = _field_ids(conn, {f for _, _, values in documents.values() for f in values})
    value_ids = _value_ids(conn, fields, [values for _, _, values in documents.values()])
    blobs = {
        uid: array("i", sorted({value_ids[(fields[f], v)] for f, vs in values.items() for v in vs})).tobytes()
        for uid, (_, _, values) in documents.items()
    }
    changed = [uid for uid in uids if uid in existing and existing[uid][1] != blobs[uid]]
    fresh = [uid for uid in uids if uid not in existing]
    counts: Counter[int] = Counter()
    for uid in changed:
        counts.subtract(_ids(existing[uid][1]))
    for uid in (*changed, *fresh):
        counts.update(_ids(blobs[uid]))
    executemany(
        conn,
        "UPDATE search_document SET study_uid = ?, patient_pk = ?, value_ids = ? WHERE id = ?",
        [(documents[uid][0], documents[uid][1], blobs[uid], existing[uid][0]) for uid in changed],
    )
    executemany(
        conn,
        "INSERT INTO search_document (series_uid, study_uid, patient_pk, value_ids) VALUES (?, ?, ?, ?)",
        [(uid, documents[uid][0], documents[uid][1], blobs[uid]) for uid in fresh],
    )
    new_ids: list[int] = []
    for start in range(0, len(fresh), CHUNK):
        chunk = fresh[start : start + CHUNK]
        new_ids.extend(conn.execute(select(SearchDocument.id).where(SearchDocument.series_uid.in_(chunk))).scalars())  # type: ignore[attr-defined]
    _count(conn, counts, +1)
    _log(conn, [*(existing[uid][0] for uid in uids if uid in existing), *new_ids])


def _ids(blob: bytes) -> array[int]:
    ids = array("i")
    ids.frombytes(blob)
    return ids


def _log(conn: Connection, doc_ids: Sequence[int]) -> None:
    executemany(conn, "INSERT INTO search_change (doc_id) VALUES (?)", [(doc_id,) for doc_id in doc_ids])


def _count(conn: Connection, counts: Counter[int], sign: int) -> None:
    executemany(conn, "UPDATE search_value SET count = count + ? WHERE id = ?", [(sign * n, value_id) for value_id, n in counts.items() if n])


def _field_ids(conn: Connection, wanted: set[str] | None = None) -> dict[str, int]:
    """Field name → id, creating ids for `wanted` names the index has not seen."""
    fields: dict[str, int] = dict(conn.execute(select(SearchField.name, SearchField.id)).all())  # type: ignore[arg-type]
    missing = sorted((wanted or set()) - set(fields))
    if missing:
        conn.execute(insert_ignoring_duplicates(conn.engine, SearchField.__table__), [{"name": name} for name in missing])  # type: ignore[arg-type]
        fields = dict(conn.execute(select(SearchField.name, SearchField.id)).all())  # type: ignore[arg-type]
    return fields


class _ValueIds:
    """(field id, value) → dictionary id, remembered per engine; forgotten on any rollback,
    since a rolled-back transaction may have been the one that created an id."""

    def __init__(self) -> None:
        self.known: dict[tuple[int, str], int] = {}

    def clear(self, *_: Any) -> None:
        self.known = {}


_VALUE_IDS: dict[int, _ValueIds] = {}


def _value_cache(conn: Connection) -> _ValueIds:
    engine = conn.engine
    cache = _VALUE_IDS.get(id(engine))
    if cache is None:
        cache = _VALUE_IDS[id(engine)] = _ValueIds()
        event.listen(engine, "rollback", cache.clear)
    return cache


def _value_ids(conn: Connection, fields: dict[str, int], documents: list[dict[str, list[str]]]) -> dict[tuple[int, str], int]:
    """(field id, value) → dictionary id for every value of `documents`, adding new values (and their words)."""
    known = _value_cache(conn).known
    wanted: dict[int, set[str]] = {}
    for values in documents:
        for field, strings in values.items():
            field_id = fields[field]
            for display in strings:
                if (field_id, display) not in known:
                    wanted.setdefault(field_id, set()).add(display)
    if not wanted:
        return known
    postgres = conn.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"

    def look_up(items_by_field: dict[int, list[str]]) -> None:
        for field_id, items in items_by_field.items():
            for start in range(0, len(items), CHUNK):
                chunk = items[start : start + CHUNK]
                sql = f"SELECT display, id FROM search_value WHERE field_id = {mark} AND display IN ({', '.join([mark] * len(chunk))})"
                for display, value_id in conn.exec_driver_sql(sql, (field_id, *chunk)):
                    known[(field_id, display)] = value_id

    look_up({f: sorted(v) for f, v in wanted.items()})
    new = [(f, d) for f, strings in wanted.items() for d in strings if (f, d) not in known]
    if not new:
        return known
    identifier_fields = {fields[name] for name in fields if is_identifier(name)}
    analysed = []  # (field id, display, norm, words): identifiers are kept whole, never split into words
    for field_id, display in new:
        norm = fold(display)[:256]
        analysed.append((field_id, display, norm, [] if field_id in identifier_fields else folded_words(norm)))
    if postgres:
        # the words go in with the value; another writer may insert the same values meanwhile, so look them all up
        executemany(
            conn,
            "INSERT INTO search_value (field_id, display, norm, count, words) VALUES (?, ?, ?, 0, CAST(? AS tsvector)) ON CONFLICT DO NOTHING",
            [(f, d, n, tsvector(w)) for f, d, n, w in analysed],
        )
        by_field: dict[int, list[str]] = {}
        for f, d in new:
            by_field.setdefault(f, []).append(d)
        look_up(by_field)
        return known
    # SQLite writers take turns: the new rows are exactly those after the highest id before the insert
    highest = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM search_value").scalar_one()
    executemany(conn, "INSERT INTO search_value (field_id, display, norm, count) VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING", [a[:3] for a in analysed])
    for value_id, field_id, display in conn.exec_driver_sql("SELECT id, field_id, display FROM search_value WHERE id > ?", (highest,)):
        known[(field_id, display)] = value_id
    value_words_for(conn).add(conn, [(known[(f, d)], w) for f, d, _, w in analysed])
    return known


def prune_changes(conn: Connection, keep: int = 200_000) -> None:
    """Drop change rows far behind the newest (a reader that far behind reloads everything)."""
    newest = conn.execute(select(func.max(SearchChange.seq))).scalar_one_or_none()
    if newest is not None and newest > keep:
        conn.execute(delete(SearchChange).where(SearchChange.seq < newest - keep))  # type: ignore[arg-type, operator]
