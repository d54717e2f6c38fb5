"""The series index writer: group commit of stored instances into the database.

Receiver threads hand over instances whose files are already durable and wait for the
commit that indexes them, so a sender hears Success only when its instance is both on disk
and searchable. One writer thread commits whatever has queued up since its last commit in a
single transaction: one association pays one small commit per instance, ten associations
share commits. Index rows are written only after their files exist (never the other way).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import JSON, String, bindparam, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from core.db import Database, insert_ignoring_duplicates
from core.models import Dataset, DatasetSeries, Instance, InstanceDocument, Patient, Series, Study
from core.person_names import folded_names
from core.search.indexing import index_series, note_changed
from core.timeutil import UTCDateTime, utcnow
from ingest.incoming import IncomingInstance

log = logging.getLogger(__name__)

MAX_BATCH = 1000
# Longest wait of a commit for more instances when nobody waits on the first (see `submit`). Each commit
# costs the main process about a millisecond of SQL whatever its size: at 250 instances/s, 0.1 s makes
# it ~25 instances a commit instead of ~5 (0.85 -> 0.65 ms of main-process CPU per instance, four
# associations), and search still catches up well within the second the receiver promises.
LINGER = 0.1
MAX_MISSING = 10_000  # longest list of missing InstanceNumbers kept on a series


SeriesListener = Callable[[set[str]], None]


class IndexWriter:
    """Owns the one thread that writes ingest rows, so SQLite never sees two ingest writers."""

    def __init__(self, db: Database, heartbeat: Path | None = None) -> None:
        self.db = db
        self.heartbeat = heartbeat
        self._queue: queue.Queue[tuple[IncomingInstance, Future[None], bool] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._known_series: set[str] = set()
        self._known_lock = threading.Lock()
        self._listeners: list[SeriesListener] = []
        self._last_beat = 0.0
        self._sql = _Statements(db)
        self._numbers = _NumbersCache()

    def add_listener(self, listener: SeriesListener) -> None:
        """Called (in the writer thread) with the series UIDs each commit changed."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vireo-index-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop; anything submitted later fails at once instead of waiting."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            if pending is not None:
                pending[1].set_exception(RuntimeError("Vireo is stopping"))

    def knows_series(self, series_uid: str) -> bool:
        """Whether the series exists in the index already (then its attributes need not be extracted again)."""
        with self._known_lock:
            if series_uid in self._known_series:
                return True
        with self.db.engine.connect() as conn:
            exists = conn.execute(select(Series.series_uid).where(Series.series_uid == series_uid)).first() is not None
        if exists:
            self._remember(series_uid)
        return exists

    def submit(self, item: IncomingInstance, *, linger: bool = False) -> Future[None]:
        """Queue an instance for the next commit. `linger`: nobody waits on it, so the commit may wait up to LINGER
        for company (an association that was answered before indexing sends the next instance meanwhile):
        one commit per few dozen instances instead of one per instance."""
        future: Future[None] = Future()
        self._queue.put((item, future, linger))
        return future

    def forget(self, series_uids: Iterable[str] | None = None) -> None:
        """Drop series from the known-series cache (all of them when None): call after deleting series."""
        with self._known_lock:
            if series_uids is None:
                self._known_series.clear()
            else:
                self._known_series.difference_update(series_uids)
        self._numbers.clear()

    def _remember(self, series_uid: str) -> None:
        with self._known_lock:
            if len(self._known_series) > 100_000:
                self._known_series.clear()
            self._known_series.add(series_uid)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            # Items nobody waits for may wait for company, until LINGER after the first or an item someone waits for.
            deadline = time.monotonic() + LINGER if first[2] else 0.0
            while len(batch) < MAX_BATCH:
                try:
                    wait = deadline - time.monotonic()
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                if not nxt[2]:
                    deadline = 0.0
            try:
                self.write([item for item, _, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    log.exception("indexing %s failed", batch[0][0].stored.relative_path)
                    batch[0][1].set_exception(exc)
                    continue
                # One bad row must not fail the others that shared its transaction: retry them one by one.
                for item, future, _ in batch:
                    try:
                        self.write([item])
                    except Exception as single:
                        log.exception("indexing %s failed", item.stored.relative_path)
                        future.set_exception(single)
                    else:
                        future.set_result(None)
                continue
            for _, future, _ in batch:
                future.set_result(None)

    def write(self, items: list[IncomingInstance]) -> set[str]:
        """Index `items` in one transaction; returns the series UIDs that changed."""
        if not items:
            return set()
        try:
            with self.db.engine.begin() as conn:
                touched = _write_batch(self.db, conn, items, self._known_series, self._sql, self._numbers)
        except IntegrityError:
            # A series the cache remembered is gone from the index (deleted meanwhile): write it anew.
            self.forget()
            with self.db.engine.begin() as conn:
                touched = _write_batch(self.db, conn, items, set(), self._sql, self._numbers)
        for uid in touched:
            self._remember(uid)
        for listener in self._listeners:
            try:
                listener(touched)
            except Exception:
                log.exception("series listener failed")
        self._beat()
        return touched

    def _beat(self) -> None:
        """Touch the heartbeat file now and then: crash recovery only rescans series changed since."""
        if self.heartbeat is None:
            return
        now = utcnow().timestamp()
        if now - self._last_beat >= 5:
            self._last_beat = now
            self.heartbeat.touch()


class _Statements:
    """The ingest path's statements, built once per engine: building SQLAlchemy expressions per instance costs more than running them."""

    def __init__(self, db: Database) -> None:
        engine = db.engine
        self.insert_patients = insert_ignoring_duplicates(engine, Patient.__table__)  # type: ignore[arg-type]
        self.insert_studies = insert_ignoring_duplicates(engine, Study.__table__)  # type: ignore[arg-type]
        self.insert_series = insert_ignoring_duplicates(engine, Series.__table__)  # type: ignore[arg-type]
        # RETURNING names only the rows really inserted: a resent instance is stored and counted once.
        self.insert_instances = insert_ignoring_duplicates(engine, Instance.__table__).returning(Instance.sop_instance_uid)  # type: ignore[arg-type]
        self.insert_metadata = insert_ignoring_duplicates(engine, InstanceDocument.__table__)  # type: ignore[arg-type]
        self.insert_datasets = insert_ignoring_duplicates(engine, Dataset.__table__)  # type: ignore[arg-type]
        member = select(Dataset.id, bindparam("m_series", type_=String), bindparam("m_added", type_=UTCDateTime)).where(Dataset.name == bindparam("m_name"))
        self.insert_members = insert_ignoring_duplicates(engine, DatasetSeries.__table__).from_select(  # type: ignore[arg-type]
            ["dataset_id", "series_uid", "added"], member
        )
        self.instance_numbers = select(Instance.instance_number).where(
            Instance.series_uid == bindparam("n_uid"), Instance.instance_number.is_not(None)  # type: ignore[union-attr]
        )
        self.series_counts = (
            select(Series.series_uid, Series.instance_count, Series.size_bytes)
            .where(Series.series_uid.in_(bindparam("uids", expanding=True)))  # type: ignore[attr-defined]
            .with_for_update()
        )
        self.update_counts = (
            update(Series)
            .where(Series.series_uid == bindparam("c_uid"))  # type: ignore[arg-type]
            .values(
                instance_count=bindparam("c_count"), size_bytes=bindparam("c_size"), min_instance_number=bindparam("c_low"),
                max_instance_number=bindparam("c_high"), missing_instance_numbers=bindparam("c_missing", type_=JSON),
                is_complete=bindparam("c_complete"), updated=bindparam("c_now"),
            )
        )


def _write_batch(
    db: Database, conn: Connection, items: list[IncomingInstance], known_series: set[str], sql: _Statements, numbers: _NumbersCache
) -> set[str]:
    """One transaction: new patients, studies and series first, then instances, datasets and counts.

    `known_series` are series the index holds already; their patient, study and series rows
    are not written again (the common case: the 2nd to Nth instance of a series).
    """
    now = utcnow()
    series: dict[str, IncomingInstance] = {}
    for item in items:
        series.setdefault(item.meta.series_uid, item)
    new_series = [item for uid, item in series.items() if uid not in known_series]
    if new_series:
        _add_series(conn, new_series, now, sql)
    unique = {item.meta.sop_instance_uid: item for item in items}
    inserted = set(conn.execute(sql.insert_instances, [_instance_row(item) for item in unique.values()]).scalars())
    new_items = [item for uid, item in unique.items() if uid in inserted]
    documents = [
        {"sop_instance_uid": i.meta.sop_instance_uid, "series_uid": i.meta.series_uid, "document": i.metadata_document}
        for i in new_items if i.metadata_document is not None
    ]
    if documents:
        conn.execute(sql.insert_metadata, documents)
    _add_to_datasets(conn, items, now, sql)
    _count_new_instances(conn, series, new_items, now, sql, numbers)
    # searchable in the same commit: new series get their document, the others a change row (counts)
    fresh = {item.meta.series_uid for item in new_series}
    if fresh:
        index_series(conn, fresh)
    if len(fresh) < len(series):
        note_changed(conn, [uid for uid in series if uid not in fresh])
    return set(series)


def _add_series(conn: Connection, items: list[IncomingInstance], now: datetime, sql: _Statements) -> None:
    patients = {_text(i.meta.patient_id, 128): i.meta for i in items}
    conn.execute(
        sql.insert_patients,
        [{"patient_id": pid, "patient_name": _text(m.patient_name, 256), "attributes": m.patient_attributes,
          "names_folded": folded_names({**m.patient_attributes, "PatientName": m.patient_name}), "created": now} for pid, m in patients.items()],
    )
    patient_pk = dict(conn.execute(select(Patient.patient_id, Patient.id).where(Patient.patient_id.in_(patients))).all())  # type: ignore[attr-defined, call-overload]
    studies = {i.meta.study_uid: i.meta for i in items}
    conn.execute(
        sql.insert_studies,
        [{"study_uid": uid, "patient_pk": patient_pk[_text(m.patient_id, 128)], "study_date": _text(m.study_date, 16),
          "study_description": _text(m.study_description, 256),
          # the patient's attributes as this study saw them: an empty or shared PatientID must not borrow another's name
          "attributes": {**m.patient_attributes, **m.study_attributes},
          "names_folded": folded_names({**m.patient_attributes, **m.study_attributes}), "created": now} for uid, m in studies.items()],
    )
    conn.execute(sql.insert_series, [_series_row(item, now) for item in items])


def _add_to_datasets(conn: Connection, items: Iterable[IncomingInstance], now: datetime, sql: _Statements) -> None:
    """The called AE title names the dataset: created if missing, the series added if not in it yet."""
    pairs = {(i.dataset, i.meta.series_uid) for i in items if i.dataset}
    if not pairs:
        return
    names = {name for name, _ in pairs}
    conn.execute(sql.insert_datasets, [{"name": name, "username": "", "created": now, "updated": now} for name in names])
    conn.execute(sql.insert_members, [{"m_name": name, "m_series": uid, "m_added": now} for name, uid in pairs])


@dataclass
class _SeriesNumbers:
    """The InstanceNumbers of one series as of `count` indexed instances (for completeness without a recount)."""

    count: int
    numbers: set[int]


class _NumbersCache:
    """Instance numbers of recently active series, so completeness costs no query per instance."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._entries: OrderedDict[str, _SeriesNumbers] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, uid: str) -> _SeriesNumbers | None:
        with self._lock:
            entry = self._entries.get(uid)
            if entry is not None:
                self._entries.move_to_end(uid)
            return entry

    def put(self, uid: str, entry: _SeriesNumbers) -> None:
        with self._lock:
            self._entries[uid] = entry
            self._entries.move_to_end(uid)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _count_new_instances(
    conn: Connection, series: dict[str, IncomingInstance], new_items: list[IncomingInstance], now: datetime, sql: _Statements, cache: _NumbersCache
) -> None:
    """Add the batch's new instances to their series' counts, size and completeness.

    The set of InstanceNumbers comes from the cache; it is (re)read from the index only
    when the cache does not know the series or another writer changed it meanwhile.
    """
    added: dict[str, list[IncomingInstance]] = {uid: [] for uid in series}
    for item in new_items:
        added[item.meta.series_uid].append(item)
    updates = []
    for uid, count, size in conn.execute(sql.series_counts, {"uids": list(series)}).all():
        batch = added[uid]
        cached = cache.get(uid)
        if cached is None or cached.count != count:
            numbers = set(conn.execute(sql.instance_numbers, {"n_uid": uid}).scalars())  # the batch's rows included
        else:
            numbers = cached.numbers | {i.meta.instance_number for i in batch if i.meta.instance_number is not None}
        count += len(batch)
        cache.put(uid, _SeriesNumbers(count, numbers))
        low, high = (min(numbers), max(numbers)) if numbers else (None, None)
        missing = missing_numbers(numbers)
        updates.append({
            "c_uid": uid, "c_count": count, "c_size": size + sum(i.stored.size for i in batch), "c_low": low, "c_high": high,
            "c_missing": missing, "c_complete": not missing, "c_now": now,
        })
    if updates:
        conn.execute(sql.update_counts, updates)


def _text(value: str, length: int) -> str:
    """Text as every backend stores it: no NUL (PostgreSQL refuses it), cut to the column's length."""
    return value.replace("\x00", "")[:length]


def _int32(value: int | None) -> int | None:
    """An integer column's value; out-of-range numbers (IS allows them) are dropped, not fatal."""
    return value if value is not None and -(2**31) <= value < 2**31 else None


def _series_row(item: IncomingInstance, now: datetime) -> dict[str, object]:
    m = item.meta
    reference = m.referenced_series_uid if m.referenced_series_uid and len(m.referenced_series_uid) <= 64 else None
    return {
        "series_uid": m.series_uid, "study_uid": m.study_uid, "modality": _text(m.modality, 16),
        "series_description": _text(m.series_description, 256), "series_number": _int32(m.series_number),
        "attributes": m.series_attributes, "names_folded": folded_names(m.series_attributes), "arrived": item.received, "updated": now, "instance_count": 0,
        "size_bytes": 0, "missing_instance_numbers": [], "is_complete": True, "referenced_series_uid": reference,
    }


def _instance_row(item: IncomingInstance) -> dict[str, object]:
    m = item.meta
    return {
        "sop_instance_uid": m.sop_instance_uid, "series_uid": m.series_uid, "sop_class_uid": _text(m.sop_class_uid, 64),
        "transfer_syntax_uid": _text(item.transfer_syntax_uid, 64), "instance_number": _int32(m.instance_number),
        "slice_position": m.slice_position, "number_of_frames": _int32(m.number_of_frames) or 1,
        "path": item.stored.relative_path, "size_bytes": item.stored.size, "calling_aet": _text(item.calling_aet, 16),
        "called_aet": _text(item.called_aet, 16), "peer_address": _text(item.peer_address, 64), "received": item.received,
    }


def missing_numbers(numbers: set[int]) -> list[int]:
    """The gaps between the lowest and highest InstanceNumber, at most MAX_MISSING of them.

    Never builds the whole range: one instance numbered 2,147,483,647 must not cost gigabytes.
    """
    if not numbers or len(numbers) == max(numbers) - min(numbers) + 1:
        return []
    missing: list[int] = []
    ordered = sorted(numbers)
    for previous, current in zip(ordered, ordered[1:], strict=False):
        if current > previous + 1:
            missing.extend(range(previous + 1, min(current, previous + 1 + MAX_MISSING - len(missing))))
            if len(missing) >= MAX_MISSING:
                break
    return missing


def refresh_series_counts(conn: Connection, series_uids: set[str], now: datetime) -> None:
    """Instance count, size and completeness of each touched series, from its instance rows."""
    stats = conn.execute(
        select(
            Instance.series_uid, func.count(), func.coalesce(func.sum(Instance.size_bytes), 0),
            func.min(Instance.instance_number), func.max(Instance.instance_number), func.count(Instance.instance_number),
        ).where(Instance.series_uid.in_(series_uids)).group_by(Instance.series_uid)  # type: ignore[attr-defined]
    ).all()
    for uid, count, size, low, high, numbered in stats:
        missing: list[int] = []
        if low is not None and high is not None and numbered < high - low + 1:
            present = conn.execute(select(Instance.instance_number).where(Instance.series_uid == uid, Instance.instance_number.is_not(None))).scalars()  # type: ignore[union-attr]
            missing = missing_numbers(set(present))
        conn.execute(
            update(Series).where(Series.series_uid == uid).values(  # type: ignore[arg-type]
                instance_count=count, size_bytes=size, min_instance_number=low, max_instance_number=high,
                missing_instance_numbers=missing, is_complete=not missing, updated=now,
            )
        )
    note_changed(conn, series_uids)
