"""In-memory columns of every series' values: the postings of the value dictionary, at numpy speed.

For each field the columns hold every (series, value id) pair as two int32 arrays. A query
leaf first finds the matching *values* in the database (a few hundred out of the dictionary,
by words, prefix, pattern or range), then marks the series holding them with one gather over
the field's pairs — a few milliseconds at 100k series, where asking SQL for 50,000 matching
series ids costs 50–100 ms. Counting values for the dashboard is a `bincount` over the same
pairs (search-design.md: 2–29 ms against 0.1–0.26 s for SQL GROUP BY at 100k).

The columns are a cache of the database, never the truth: before each query they read the
`search_change` rows committed since their last look and re-read just those series, so a tag
added a millisecond ago is in the next answer, whoever wrote it. Changed series are marked
`stale` in the loaded arrays and their new pairs kept in small `delta` arrays, merged in now
and then, so a change costs in proportion to its size, not to the index.
"""

from __future__ import annotations

import math
from datetime import timezone
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from sqlalchemy import Connection, func, select

from core.models import Dataset, DatasetSeries, SearchChange, SearchDocument, SearchField, SeriesTag
from core.search.analysis import LABEL_FIELDS, fold, vr_of

FULL_RELOAD = 50_000  # more changed series than this at once: reload everything (one scan beats many lookups)
WINDOW = 1_000  # PostgreSQL may commit change rows out of sequence order: look back this far
COMPACT_AT = 200_000  # changed pairs kept apart before they are folded into the loaded ones
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_EMPTY = np.empty(0, np.int32)


@dataclass
class FieldColumn:
    """The (series, value) pairs of one field: as loaded (`docs`, `values`) and changed since (`delta_*`)."""

    docs: np.ndarray = field(default_factory=lambda: _EMPTY)
    values: np.ndarray = field(default_factory=lambda: _EMPTY)
    delta_docs: np.ndarray = field(default_factory=lambda: _EMPTY)
    delta_values: np.ndarray = field(default_factory=lambda: _EMPTY)

    def pairs(self, stale: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Every current pair (loaded ones of changed series dropped, their new ones added)."""
        if stale is None and not len(self.delta_docs):
            return self.docs, self.values
        keep = ~stale[self.docs] if stale is not None else slice(None)
        return np.concatenate([self.docs[keep], self.delta_docs]), np.concatenate([self.values[keep], self.delta_values])

    def set_delta(self, changed: np.ndarray, docs: np.ndarray, values: np.ndarray) -> None:
        if len(self.delta_docs):
            keep = ~np.isin(self.delta_docs, changed)
            docs, values = np.concatenate([self.delta_docs[keep], docs]), np.concatenate([self.delta_values[keep], values])
        self.delta_docs, self.delta_values = docs.astype(np.int32), values.astype(np.int32)


@dataclass
class Labels:
    """Tags or dataset names: a small vocabulary of their own, outside the value dictionary."""

    names: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    def id_of(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.names)
            self.names.append(name)
        return self.ids[name]


@dataclass
class Ranking:
    """Distinct values of a field in order: `rank[value id]`, and the sorted keys themselves."""

    size: int
    rank: np.ndarray
    keys: list[Any]
    numeric: bool


class Columns:
    """The column cache of one database. Callers hold `lock` and call `sync` first (SeriesSearch does)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.loaded = False
        self.version = 0  # bumped by every applied change: what cached per-series arrays are checked against
        self.last_seq = 0
        self._gaps: set[int] = set()  # change numbers below last_seq not seen yet (PostgreSQL only)
        self.capacity = 0
        self.alive = np.zeros(0, bool)
        self.study = np.zeros(0, np.int32)
        self.patient = np.zeros(0, np.int64)
        self.counters: dict[str, np.ndarray] = {}
        self._stale: np.ndarray | None = None  # series whose loaded pairs are outdated (None: none are)
        self._delta_size = 0
        self._study_keys: dict[str, int] = {}
        # the value dictionary, by value id
        self.value_field = np.zeros(0, np.int32)
        self.value_display: list[str] = []
        self.field_ids: dict[str, int] = {}
        self.field_names: dict[int, str] = {}
        self.columns: dict[str, FieldColumn] = {}
        self.labels: dict[str, Labels] = {name: Labels() for name in LABEL_FIELDS}
        self._ranks: dict[str, Ranking] = {}
        self._sort_keys: dict[str, tuple[int, np.ndarray, list[Any]]] = {}
        self._bucket_cache: dict[tuple[str, int], tuple[int, list[str], np.ndarray]] = {}

    # --- keeping up with the database -------------------------------------------------

    def sync(self, conn: Connection) -> None:
        """Catch up with every change committed before this call."""
        if not self.loaded:
            self._load_all(conn)
            return
        # PostgreSQL may commit sequence numbers out of order: look again from the oldest one still missing
        floor = min(self._gaps) - 1 if self._gaps else self.last_seq
        rows = conn.execute(select(SearchChange.seq, SearchChange.doc_id).where(SearchChange.seq > floor).order_by(SearchChange.seq)).all()  # type: ignore[arg-type, operator]
        fresh = [(seq, doc) for seq, doc in rows if seq > self.last_seq or seq in self._gaps]
        if not fresh:
            return
        if self.last_seq > 0 and rows[0][0] > self.last_seq + 1 and not self._gaps:
            oldest = conn.execute(select(func.min(SearchChange.seq))).scalar_one()
            if oldest is not None and oldest > self.last_seq + 1:
                self._load_all(conn)  # the change rows we missed were pruned
                return
        self._note_seen([seq for seq, _ in fresh], postgres=conn.dialect.name == "postgresql")
        docs = sorted({doc for _, doc in fresh})
        if len(docs) > FULL_RELOAD:
            self._load_all(conn)
            return
        self._reload(conn, docs)
        self.version += 1

    def _note_seen(self, seqs: list[int], postgres: bool) -> None:
        newest = max(seqs)
        self._gaps.difference_update(seqs)
        if postgres and newest > self.last_seq:
            self._gaps.update(set(range(self.last_seq + 1, newest)) - set(seqs))
        self.last_seq = max(self.last_seq, newest)
        # a sequence number missing this long belonged to a transaction that rolled back
        self._gaps = {s for s in self._gaps if s > self.last_seq - WINDOW}

    def _load_all(self, conn: Connection) -> None:
        newest = conn.execute(select(func.max(SearchChange.seq))).scalar_one_or_none() or 0
        rows = self._documents(conn)
        # after the documents: every value they name was committed with them
        self._load_fields(conn)
        self.value_field = np.zeros(0, np.int32)
        self.value_display = []
        self._load_values(conn)
        self._allocate(max((r[0] for r in rows), default=0) + 1)
        self._study_keys = {}
        self._apply_rows(rows)
        lengths = np.fromiter((len(r[3]) // 4 for r in rows), dtype=np.int64, count=len(rows))
        values = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.int32)
        docs = np.repeat(np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows)), lengths)
        self.columns = {name: FieldColumn(d, v) for name, (d, v) in self._split_by_field(docs, values).items()}
        for name in LABEL_FIELDS:
            self.labels[name] = Labels()
            docs, values = self._label_pairs(conn, name, None)
            known = docs < self.capacity  # labels of series newer than the documents read: the next sync adds them
            self.columns[name] = FieldColumn(docs[known], values[known])
        self._stale, self._delta_size = None, 0
        self._ranks, self._sort_keys = {}, {}
        self.last_seq, self._gaps = newest, set()
        self.loaded = True
        self.version += 1

    def _split_by_field(self, docs: np.ndarray, values: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Pairs grouped by the field of their value (a stable radix sort on 16-bit field ids)."""
        if not len(values):
            return {}
        fields = self.value_field[values].astype(np.int16)
        order = np.argsort(fields, kind="stable")
        fields, docs, values = fields[order], docs[order], values[order]
        bounds = np.flatnonzero(np.diff(fields)) + 1
        starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(fields)]])
        return {self.field_names[int(fields[a])]: (docs[a:b], values[a:b]) for a, b in zip(starts, ends) if int(fields[a]) in self.field_names}

    _DOCUMENTS = (
        "SELECT d.id, d.study_uid, d.patient_pk, d.value_ids, s.instance_count, s.arrived, s.updated "
        "FROM search_document d JOIN series s ON s.series_uid = d.series_uid"
    )

    def _documents(self, conn: Connection, ids: list[int] | None = None) -> list[Any]:
        """Document rows straight from the driver: a million rows through SQLAlchemy's type handling cost a minute."""
        if ids is None:
            return conn.exec_driver_sql(self._DOCUMENTS).fetchall()
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        rows: list[Any] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows.extend(conn.exec_driver_sql(f"{self._DOCUMENTS} WHERE d.id IN ({', '.join([mark] * len(chunk))})", tuple(chunk)).fetchall())
        return rows

    def _allocate(self, size: int) -> None:
        self.capacity = max(1024, size)
        self.alive = np.zeros(self.capacity, bool)
        self.study = np.full(self.capacity, -1, np.int32)
        self.patient = np.full(self.capacity, -1, np.int64)
        self.counters = {name: np.full(self.capacity, np.nan) for name in ("instances", "arrived", "updated")}

    def _grow(self, size: int) -> None:
        if size <= self.capacity:
            return
        extra = max(size, self.capacity * 2) - self.capacity
        self.alive = np.concatenate([self.alive, np.zeros(extra, bool)])
        self.study = np.concatenate([self.study, np.full(extra, -1, np.int32)])
        self.patient = np.concatenate([self.patient, np.full(extra, -1, np.int64)])
        for name, column in self.counters.items():
            self.counters[name] = np.concatenate([column, np.full(extra, np.nan)])
        if self._stale is not None:
            self._stale = np.concatenate([self._stale, np.zeros(extra, bool)])
        self.capacity += extra

    def _apply_rows(self, rows: list[Any]) -> None:
        if not rows:
            return
        self._grow(max(r[0] for r in rows) + 1)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        keys = self._study_keys
        self.alive[ids] = True
        self.study[ids] = [keys.setdefault(r[1], len(keys)) for r in rows]
        self.patient[ids] = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
        self.counters["instances"][ids] = np.fromiter((r[4] for r in rows), dtype=float, count=len(rows))
        self.counters["arrived"][ids] = _seconds([r[5] for r in rows])
        self.counters["updated"][ids] = _seconds([r[6] for r in rows])

    def _load_fields(self, conn: Connection) -> None:
        self.field_ids = dict(conn.execute(select(SearchField.name, SearchField.id)).all())  # type: ignore[arg-type]
        self.field_names = {i: n for n, i in self.field_ids.items()}

    def _load_values(self, conn: Connection) -> None:
        known = len(self.value_display)
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        rows = conn.exec_driver_sql(f"SELECT id, field_id, display FROM search_value WHERE id >= {mark} ORDER BY id", (known,)).fetchall()
        if not rows:
            return
        top = rows[-1][0] + 1
        self.value_field = np.concatenate([self.value_field, np.full(top - len(self.value_field), -1, np.int32)])
        self.value_display.extend([""] * (top - len(self.value_display)))
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        self.value_field[ids] = np.fromiter((r[1] for r in rows), dtype=np.int32, count=len(rows))
        display = self.value_display
        for value_id, _, text in rows:
            display[value_id] = text

    def _reload(self, conn: Connection, docs: list[int]) -> None:
        """Re-read changed series: their base pairs go stale, their current pairs into the deltas."""
        rows = self._documents(conn, docs)
        self._load_fields(conn)
        self._load_values(conn)
        changed = np.asarray(docs, dtype=np.int32)
        self._grow(int(changed.max()) + 1)
        if self._stale is None:
            self._stale = np.zeros(self.capacity, bool)
        self._stale[changed] = True
        self.alive[changed] = False
        self._apply_rows(rows)
        lengths = [len(r[3]) // 4 for r in rows]
        values = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.int32) if rows else _EMPTY
        owners = np.repeat(np.asarray([r[0] for r in rows], dtype=np.int32), lengths) if rows else _EMPTY
        grouped = self._split_by_field(owners, values)
        for name in LABEL_FIELDS:
            grouped[name] = self._label_pairs(conn, name, docs)
        for name in set(grouped) | {n for n, c in self.columns.items() if len(c.delta_docs)}:
            column = self.columns.setdefault(name, FieldColumn())
            before = len(column.delta_docs)
            column.set_delta(changed, *grouped.get(name, (_EMPTY, _EMPTY)))
            self._delta_size += len(column.delta_docs) - before
        if self._delta_size > max(COMPACT_AT, int(self.alive.sum()) // 4):
            self._compact()

    def _compact(self) -> None:
        """Fold the deltas into the loaded pairs (so queries stop paying for two arrays per field)."""
        for column in self.columns.values():
            column.docs, column.values = column.pairs(self._stale)
            column.delta_docs = column.delta_values = _EMPTY
        self._stale, self._delta_size = None, 0

    def _label_pairs(self, conn: Connection, name: str, docs: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
        if name == "tags":
            query = select(SearchDocument.id, SeriesTag.tag).join(SeriesTag, SeriesTag.series_uid == SearchDocument.series_uid)  # type: ignore[arg-type]
        else:
            query = (
                select(SearchDocument.id, Dataset.name)
                .join(DatasetSeries, DatasetSeries.series_uid == SearchDocument.series_uid)  # type: ignore[arg-type]
                .join(Dataset, Dataset.id == DatasetSeries.dataset_id)  # type: ignore[arg-type]
            )
        rows: list[Any] = []
        if docs is None:
            rows = conn.execute(query).all()
        else:
            for start in range(0, len(docs), 500):
                rows.extend(conn.execute(query.where(SearchDocument.id.in_(docs[start : start + 500]))).all())  # type: ignore[union-attr]
        labels = self.labels[name]
        return (
            np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows)),
            np.fromiter((labels.id_of(r[1]) for r in rows), dtype=np.int32, count=len(rows)),
        )

    # --- reading ------------------------------------------------------------------------

    def column(self, name: str) -> FieldColumn:
        return self.columns.get(name) or FieldColumn()

    def vocabulary_size(self, name: str) -> int:
        return len(self.labels[name].names) if name in self.labels else len(self.value_display)

    def display(self, name: str, value_id: int) -> str:
        return self.labels[name].names[value_id] if name in self.labels else self.value_display[value_id]

    def label_ids_where(self, name: str, accept: Callable[[str], bool]) -> np.ndarray:
        """Ids of the tags or dataset names whose folded text `accept` takes."""
        return np.asarray([i for i, n in enumerate(self.labels[name].names) if accept(fold(n))], dtype=np.int64)

    def docs_with(self, name: str, value_ids: np.ndarray | None) -> np.ndarray:
        """Boolean mask of series holding any of `value_ids` in the field (any value when None)."""
        mask = np.zeros(self.capacity, bool)
        column = self.column(name)
        stale = self._stale
        if value_ids is None:
            mask[column.docs if stale is None else column.docs[~stale[column.docs]]] = True
            mask[column.delta_docs] = True
            return mask & self.alive
        if not len(value_ids):
            return mask
        wanted = np.zeros(self.vocabulary_size(name) + 1, bool)
        wanted[value_ids] = True
        selected = wanted[column.values]
        if stale is not None:
            selected &= ~stale[column.docs]
        mask[column.docs[selected]] = True
        if len(column.delta_docs):
            mask[column.delta_docs[wanted[column.delta_values]]] = True
        return mask & self.alive

    def counts(self, name: str, hits: np.ndarray, size: int | None = None) -> dict[str, int]:
        """Series per value of a field among `hits`, most frequent first (the first `size`)."""
        docs, values = self.column(name).pairs(self._stale)
        selected = values[hits[docs]]
        if not len(selected):
            return {}
        tally = np.bincount(selected)
        nonzero = np.flatnonzero(tally)
        order = nonzero[np.argsort(-tally[nonzero], kind="stable")][:size]
        return {self.display(name, int(v)): int(tally[v]) for v in order}

    def bucket_counts(self, name: str, hits: np.ndarray, width: int) -> dict[str, int]:
        """Series per date bucket among `hits`: the first `width` digits of each value (4 year, 6 month, 8 day)."""
        docs, values = self.column(name).pairs(self._stale)
        labels, bucket_of = self._buckets(name, width)
        tally = np.bincount(bucket_of[values[hits[docs]]], minlength=len(labels))
        return {labels[i]: int(tally[i]) for i in range(len(labels)) if tally[i]}

    def _buckets(self, name: str, width: int) -> tuple[list[str], np.ndarray]:
        """Bucket labels in order, and the bucket of every value id of the field (cached until values are added)."""
        size = self.vocabulary_size(name)
        cached = self._bucket_cache.get((name, width))
        if cached is not None and cached[0] == size:
            return cached[1], cached[2]
        ids = np.unique(self.column(name).pairs(self._stale)[1])
        keys = {int(i): _bucket_label(self.display(name, int(i)), width) for i in ids}
        labels = sorted(set(keys.values()), key=lambda label: (label == "other", label))
        index = {label: n for n, label in enumerate(labels)}
        bucket_of = np.zeros(size + 1, np.int64)
        for value_id, label in keys.items():
            bucket_of[value_id] = index[label]
        self._bucket_cache[(name, width)] = (size, labels, bucket_of)
        return labels, bucket_of

    def distinct(self, keys: np.ndarray, hits: np.ndarray) -> int:
        selected = keys[hits]
        selected = selected[selected >= 0]
        return int(np.count_nonzero(np.bincount(selected))) if len(selected) else 0

    def ranking(self, name: str) -> Ranking:
        """The order of a field's distinct values: numbers by value, dates and text by folded text."""
        size = self.vocabulary_size(name)
        cached = self._ranks.get(name)
        if cached is not None and cached.size == size:
            return cached
        _, values = self.column(name).pairs(self._stale)
        ids = np.unique(values)
        displays = [self.display(name, int(i)) for i in ids]
        numeric = bool(displays) and vr_of(name) not in ("DA", "DT", "TM") and all(_NUMBER.match(d) for d in displays)
        keys: list[Any] = [float(d) for d in displays] if numeric else [(fold(d), d) for d in displays]
        order = sorted(range(len(ids)), key=keys.__getitem__)
        rank = np.full(size + 1, np.nan)
        rank[ids[order]] = np.arange(len(order), dtype=float)
        ranking = Ranking(size, rank, [keys[i] for i in order], numeric)
        self._ranks[name] = ranking
        return ranking

    def sort_keys(self, name: str) -> tuple[np.ndarray, list[Any]]:
        """(per-series key, NaN for no value; the sorted distinct keys) for ordering by a field."""
        if name in self.counters:
            return self.counters[name], []
        cached = self._sort_keys.get(name)
        if cached is not None and cached[0] == self.version:
            return cached[1], cached[2]
        docs, values = self.column(name).pairs(self._stale)
        ranking = self.ranking(name)
        keys = np.full(self.capacity, np.nan)
        ranks = ranking.rank[values]
        order = np.argsort(-ranks, kind="stable")  # a series with several values sorts by its smallest
        keys[docs[order]] = ranks[order]
        self._sort_keys[name] = (self.version, keys, ranking.keys)
        return keys, ranking.keys

    def docs_with_rank(self, name: str, low: float, high: float) -> np.ndarray:
        """Series holding a value of the field whose rank lies in [low, high]."""
        docs, values = self.column(name).pairs(self._stale)
        ranks = self.ranking(name).rank[values]
        mask = np.zeros(self.capacity, bool)
        mask[docs[(ranks >= low) & (ranks <= high)]] = True
        return mask & self.alive

    def known_fields(self) -> list[str]:
        return sorted(n for n, c in self.columns.items() if n not in LABEL_FIELDS and (len(c.docs) or len(c.delta_docs)))


def _bucket_label(value: str, width: int) -> str:
    """'2020', '2020-03' or '2020-03-15' for a DICOM date (dashes allowed); 'other' for anything else."""
    digits = value.replace("-", "")
    if len(digits) < width or not digits[:width].isdigit():
        return "other"
    return "-".join(part for part in (digits[:4], digits[4:6] if width >= 6 else "", digits[6:8] if width == 8 else "") if part)


def _seconds(times: list[Any]) -> np.ndarray:
    """UTC times (the driver's datetimes, or SQLite's 'YYYY-MM-DD HH:MM:SS.ffffff' text) as epoch seconds, vectorised."""
    if any(getattr(t, "tzinfo", None) is not None for t in times[:1]):
        times = [t.astimezone(timezone.utc).replace(tzinfo=None) if t is not None else None for t in times]
    stamps = np.array([t if t is not None else "NaT" for t in times], dtype="datetime64[us]") if times else np.empty(0, "datetime64[us]")
    seconds = stamps.astype("int64") / 1e6
    seconds[np.isnat(stamps)] = math.nan
    return seconds


def parse_number(value: str) -> float | None:
    return float(value) if _NUMBER.match(value.strip()) else None
