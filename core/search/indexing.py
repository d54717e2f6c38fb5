"""Writing the search index, in the caller's transaction: a change is searchable at its commit.

For each series the index keeps a `search_document` (its attributes as indexed and their
value ids), its words in the backend's text index (`core.search.text_index`), the value
dictionary's counts, and one `search_change` row that tells the in-memory columns
(`core.search.columns`) which series to re-read. Tags and dataset memberships are not
copied anywhere: they are read from their own tables, so tagging 10,000 series writes
10,000 tag rows and 10,000 change rows, not 10,000 re-indexed documents.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, event, func, select, update
from sqlalchemy.orm import Session

from core.catalog import attribute_values
from core.db import executemany, insert_ignoring_duplicates
from core.models import Patient, SearchChange, SearchDocument, SearchField, SearchValue, Series, Study
from core.search.analysis import as_strings, fold, is_identifier
from core.search.text_index import text_index_for

CHUNK = 500


def document_values(attributes: dict[str, Any]) -> dict[str, list[str]]:
    """The searchable values of a series' attributes, as text, field by field."""
    values: dict[str, list[str]] = {}
    for field, value in attributes.items():
        strings = as_strings(value)
        if len(strings) > 1:
            strings = list(dict.fromkeys(strings))
        if strings:
            values[field] = strings
    return values


def index_series(conn: Connection, series_uids: Iterable[str]) -> None:
    """(Re-)index the attributes of these series; unchanged documents only get a change row."""
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
    fields = _field_ids(conn)
    texts = text_index_for(conn)
    for start in range(0, len(uids), CHUNK):
        chunk = uids[start : start + CHUNK]
        rows = conn.execute(select(SearchDocument.id, SearchDocument.attributes, SearchDocument.value_ids).where(SearchDocument.series_uid.in_(chunk))).all()  # type: ignore[attr-defined]
        if not rows:
            continue
        texts.delete(conn, [(doc_id, attributes, fields) for doc_id, attributes, _ in rows])
        _count(conn, Counter(v for _, _, blob in rows for v in _ids(blob)), -1)
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
    existing = {
        uid: (doc_id, attributes, blob)
        for doc_id, uid, attributes, blob in conn.execute(
            select(SearchDocument.id, SearchDocument.series_uid, SearchDocument.attributes, SearchDocument.value_ids).where(
                SearchDocument.series_uid.in_(list(documents))  # type: ignore[attr-defined]
            )
        )
    }
    write_documents(conn, documents, existing)


def write_documents(
    conn: Connection,
    documents: dict[str, tuple[str, int, dict[str, list[str]]]],
    existing: dict[str, tuple[int, dict[str, list[str]], bytes]] | None = None,
) -> None:
    """Insert or replace documents `{series_uid: (study_uid, patient_pk, values)}` (the bulk loader's entry too)."""
    existing = existing or {}
    changed_ids: list[int] = []
    replaced = {uid: old for uid, old in existing.items() if uid in documents and old[1] != documents[uid][2]}
    unchanged = [old[0] for uid, old in existing.items() if uid in documents and uid not in replaced]
    fresh = {uid: doc for uid, doc in documents.items() if uid not in existing}
    fields = _field_ids(conn, {f for _, _, values in documents.values() for f in values})
    texts = text_index_for(conn)
    if replaced:
        texts.delete(conn, [(doc_id, old_values, fields) for doc_id, old_values, _ in replaced.values()])
        _count(conn, Counter(v for _, _, blob in replaced.values() for v in _ids(blob)), -1)
    value_ids = _value_ids(conn, fields, [documents[uid][2] for uid in (*replaced, *fresh)])
    new_counts: Counter[int] = Counter()
    blobs: dict[str, bytes] = {}
    for uid in (*replaced, *fresh):
        ids = array("i", sorted({value_ids[(fields[f], v)] for f, vs in documents[uid][2].items() if not is_identifier(f) for v in vs}))
        new_counts.update(ids)
        blobs[uid] = ids.tobytes()
    for uid, (doc_id, _, _) in replaced.items():
        study_uid, patient_pk, values = documents[uid]
        conn.execute(
            update(SearchDocument).where(SearchDocument.id == doc_id).values(  # type: ignore[arg-type]
                study_uid=study_uid, patient_pk=patient_pk, attributes=values, value_ids=blobs[uid]
            )
        )
        changed_ids.append(doc_id)
    new_ids: dict[str, int] = {}
    if fresh:
        executemany(
            conn,
            "INSERT INTO search_document (series_uid, study_uid, patient_pk, attributes, value_ids) VALUES (?, ?, ?, ?, ?)",
            [(uid, st, p, json.dumps(values, separators=(",", ":")), blobs[uid]) for uid, (st, p, values) in fresh.items()],
        )
        uids = list(fresh)
        for start in range(0, len(uids), CHUNK):
            chunk = uids[start : start + CHUNK]
            new_ids.update(conn.execute(select(SearchDocument.series_uid, SearchDocument.id).where(SearchDocument.series_uid.in_(chunk))).all())  # type: ignore[attr-defined, arg-type]
        changed_ids.extend(new_ids.values())
    ids_by_uid = {**{uid: old[0] for uid, old in replaced.items()}, **new_ids}
    texts.insert(conn, [(ids_by_uid[uid], documents[uid][2], fields) for uid in (*replaced, *fresh)])
    _count(conn, new_counts, +1)
    _log(conn, [*changed_ids, *unchanged])


def _ids(blob: bytes) -> array[int]:
    ids = array("i")
    ids.frombytes(blob)
    return ids


def _log(conn: Connection, doc_ids: Sequence[int]) -> None:
    executemany(conn, "INSERT INTO search_change (doc_id) VALUES (?)", [(doc_id,) for doc_id in doc_ids])


def _count(conn: Connection, counts: Counter[int], sign: int) -> None:
    executemany(conn, "UPDATE search_value SET count = count + ? WHERE id = ?", [(sign * n, value_id) for value_id, n in counts.items()])


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
    """(field id, value) → dictionary id for every value of `documents`, adding new values."""
    cache = _value_cache(conn)
    known = cache.known
    wanted: dict[int, set[str]] = {}
    for values in documents:
        for field, strings in values.items():
            if not is_identifier(field):
                field_id = fields[field]
                for display in strings:
                    if (field_id, display) not in known:
                        wanted.setdefault(field_id, set()).add(display)
    if not wanted:
        return known
    query = select(SearchValue.display, SearchValue.id).where(SearchValue.field_id == bindparam("f"), SearchValue.display.in_(bindparam("d", expanding=True)))  # type: ignore[attr-defined]

    def look_up(items_by_field: dict[int, list[str]]) -> None:
        for field_id, items in items_by_field.items():
            for start in range(0, len(items), CHUNK):
                for display, value_id in conn.execute(query, {"f": field_id, "d": items[start : start + CHUNK]}):
                    known[(field_id, display)] = value_id

    look_up({f: sorted(v) for f, v in wanted.items()})
    new = [(f, d) for f, strings in wanted.items() for d in strings if (f, d) not in known]
    if new:
        executemany(
            conn,
            "INSERT INTO search_value (field_id, display, norm, count) VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING",
            [(f, d, fold(d)[:256]) for f, d in new],
        )
        by_field: dict[int, list[str]] = {}
        for f, d in new:
            by_field.setdefault(f, []).append(d)
        look_up(by_field)
    return known


def prune_changes(conn: Connection, keep: int = 200_000) -> None:
    """Drop change rows far behind the newest (a reader that far behind reloads everything)."""
    newest = conn.execute(select(func.max(SearchChange.seq))).scalar_one_or_none()
    if newest is not None and newest > keep:
        conn.execute(delete(SearchChange).where(SearchChange.seq < newest - keep))  # type: ignore[arg-type, operator]

