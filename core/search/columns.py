"""In-memory columns of every series' values: filters, counts and sorting at numpy speed.

The database answers "which series contain these words" (its text index); everything that
is about whole values — filter chips, ranges, aggregations, sorting, tags and datasets —
is answered here, from arrays of value ids per field, which SQL GROUP BY cannot match
(search-design.md: 2–29 ms against 0.1–0.26 s at 100k series).

The columns are a cache of the database, never the truth: before each query they read the
`search_change` rows committed since their last look and re-read just those series, so a
tag added a millisecond ago is in the next answer, whoever wrote it.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from sqlalchemy import Connection, func, select

from core.models import Dataset, DatasetSeries, SearchChange, SearchDocument, SearchField, SearchValue, Series, SeriesTag
from core.search.analysis import LABEL_FIELDS, fold, vr_of

FULL_RELOAD = 50_000  # more changed series than this: reload everything (one scan beats many lookups)
WINDOW = 1_000  # PostgreSQL may commit change rows out of sequence order: look back this far
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class Ranking:
    """Distinct values of a field in order: `rank[value id]`, and the sorted keys themselves."""

    size: int
    rank: np.ndarray
    keys: list[Any]
    numeric: bool


@dataclass
class FieldColumn:
    """All (series, value) pairs of one field, as two parallel arrays."""

    docs: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    values: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))

    def replace(self, changed: np.ndarray, docs: np.ndarray, values: np.ndarray) -> None:
        keep = ~np.isin(self.docs, changed)
        self.docs = np.concatenate([self.docs[keep], docs.astype(np.int32)])
        self.values = np.concatenate([self.values[keep], values.astype(np.int32)])


@dataclass
class Labels:
    """Tags or dataset names: a small vocabulary of their own, outside the value dictionary."""

    names: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    column: FieldColumn = field(default_factory=FieldColumn)

    def id_of(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.names)
            self.names.append(name)
        return self.ids[name]


class Columns:
    """The column cache of one database. Every public method syncs first and holds the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.loaded = False
        self.last_seq = 0
        self._applied: set[int] = set()
        self.capacity = 0
        self.alive = np.zeros(0, bool)
        self.study = np.zeros(0, np.int32)
        self.patient = np.zeros(0, np.int64)
        self.counters: dict[str, np.ndarray] = {}
        self._study_keys: dict[str, int] = {}
        # value dictionary
        self.value_field = np.zeros(0, np.int32)
        self.value_display: list[str] = []
        self.value_norm: list[str] = []
        self.field_ids: dict[str, int] = {}
        # every (doc, value id) pair as loaded, plus documents re-read since (they win)
        self._pairs_doc = np.zeros(0, np.int32)
        self._pairs_value = np.zeros(0, np.int32)
        self._overrides: dict[int, np.ndarray] = {}
        self._columns: dict[str, FieldColumn] = {}
        self._ranks: dict[str, Ranking] = {}
        self._sort_keys: dict[str, tuple[int, np.ndarray, list[Any]]] = {}
        self.version = 0  # counts the changes applied: what cached per-doc arrays are checked against
        self.labels: dict[str, Labels] = {name: Labels() for name in LABEL_FIELDS}

    # --- keeping up with the database -------------------------------------------------

    def sync(self, conn: Connection) -> None:
        """Catch up with every change committed before this call."""
        with self.lock:
            if not self.loaded:
                self._load_all(conn)
                return
            floor = self.last_seq - (WINDOW if conn.dialect.name == "postgresql" else 0)
            rows = conn.execute(select(SearchChange.seq, SearchChange.doc_id).where(SearchChange.seq > floor).order_by(SearchChange.seq)).all()  # type: ignore[arg-type, operator]
            fresh = [(seq, doc) for seq, doc in rows if seq > self.last_seq or seq not in self._applied]
            if not fresh:
                return
            oldest = conn.execute(select(func.min(SearchChange.seq))).scalar_one()
            if oldest is not None and oldest > self.last_seq + 1 and self.last_seq > 0:
                self._load_all(conn)  # the change rows we missed were pruned
                return
            docs = sorted({doc for _, doc in fresh})
            self._remember([seq for seq, _ in fresh])
            if len(docs) > FULL_RELOAD:
                self._load_all(conn)
                return
            self._reload_documents(conn, docs)
            self.version += 1

    def _remember(self, seqs: list[int]) -> None:
        self.last_seq = max([self.last_seq, *seqs])
        self._applied.update(seqs)
        if len(self._applied) > 4 * WINDOW:
            self._applied = {s for s in self._applied if s > self.last_seq - WINDOW}

    def _load_all(self, conn: Connection) -> None:
        newest = conn.execute(select(func.max(SearchChange.seq))).scalar_one_or_none() or 0
        self.field_ids = dict(conn.execute(select(SearchField.name, SearchField.id)).all())  # type: ignore[arg-type]
        self.value_field = np.zeros(0, np.int32)
        self.value_display, self.value_norm = [], []
        self._load_values(conn)
        rows = conn.execute(self._documents_query()).all()
        top = max((r[0] for r in rows), default=0)
        self._allocate(top + 1)
        self._study_keys = {}
        self._apply_rows(rows)
        lengths = np.fromiter((len(r[3]) // 4 for r in rows), dtype=np.int64, count=len(rows))
        self._pairs_value = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.int32).copy()
        self._pairs_doc = np.repeat(np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows)), lengths)
        self._overrides = {}
        self._columns = {}
        self._ranks = {}
        for name in LABEL_FIELDS:
            self.labels[name] = Labels()
            self._load_labels(conn, name, None)
        self.last_seq = newest
        self._applied = set()
        self.loaded = True
        self.version += 1

    def _documents_query(self) -> Any:
        return select(
            SearchDocument.id, SearchDocument.study_uid, SearchDocument.patient_pk, SearchDocument.value_ids,
            Series.instance_count, Series.arrived, Series.updated,
        ).join(Series, Series.series_uid == SearchDocument.series_uid)  # type: ignore[arg-type]

    def _allocate(self, size: int) -> None:
        self.capacity = max(1024, size)
        self.alive = np.zeros(self.capacity, bool)
        self.study = np.full(self.capacity, -1, np.int32)
        self.patient = np.full(self.capacity, -1, np.int64)
        self.counters = {name: np.full(self.capacity, np.nan) for name in ("instances", "arrived", "updated")}

    def _grow(self, size: int) -> None:
        if size <= self.capacity:
            return
        new = max(size, self.capacity * 2)
        self.alive = np.concatenate([self.alive, np.zeros(new - self.capacity, bool)])
        self.study = np.concatenate([self.study, np.full(new - self.capacity, -1, np.int32)])
        self.patient = np.concatenate([self.patient, np.full(new - self.capacity, -1, np.int64)])
        for name, column in self.counters.items():
            self.counters[name] = np.concatenate([column, np.full(new - self.capacity, np.nan)])
        self.capacity = new

    def _apply_rows(self, rows: list[Any]) -> None:
        if not rows:
            return
        self._grow(max(r[0] for r in rows) + 1)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        keys = self._study_keys
        self.alive[ids] = True
        self.study[ids] = [keys.setdefault(r[1], len(keys)) for r in rows]
        self.patient[ids] = [r[2] for r in rows]
        self.counters["instances"][ids] = [r[4] for r in rows]
        self.counters["arrived"][ids] = [r[5].timestamp() if r[5] else math.nan for r in rows]
        self.counters["updated"][ids] = [r[6].timestamp() if r[6] else math.nan for r in rows]

    def _load_values(self, conn: Connection) -> None:
        known = len(self.value_display)
        rows = conn.execute(select(SearchValue.id, SearchValue.field_id, SearchValue.display, SearchValue.norm).where(SearchValue.id >= known).order_by(SearchValue.id)).all()  # type: ignore[arg-type, operator]
        if not rows:
            return
        top = rows[-1][0] + 1
        self.value_field = np.concatenate([self.value_field, np.full(top - len(self.value_field), -1, np.int32)])
        self.value_display.extend([""] * (top - len(self.value_display)))
        self.value_norm.extend([""] * (top - len(self.value_norm)))
        for value_id, field_id, display, norm in rows:
            self.value_field[value_id] = field_id
            self.value_display[value_id] = display
            self.value_norm[value_id] = norm
        self._ranks = {}

    def _reload_documents(self, conn: Connection, docs: list[int]) -> None:
        self.field_ids = dict(conn.execute(select(SearchField.name, SearchField.id)).all())  # type: ignore[arg-type]
        self._load_values(conn)
        rows: list[Any] = []
        for start in range(0, len(docs), 500):
            chunk = docs[start : start + 500]
            rows.extend(conn.execute(self._documents_query().where(SearchDocument.id.in_(chunk))).all())  # type: ignore[union-attr]
        changed = np.asarray(docs, dtype=np.int32)
        self._grow(int(changed.max()) + 1)
        self.alive[changed] = False
        self._apply_rows(rows)
        for row in rows:
            self._overrides[row[0]] = np.frombuffer(row[3], dtype=np.int32)
        for doc in docs:
            self._overrides.setdefault(doc, np.empty(0, np.int32))
        if self._columns:
            new_docs, new_values = self._pairs_of(docs)
            for name, column in self._columns.items():
                field_id = self.field_ids.get(name, -2)
                selected = self.value_field[new_values] == field_id
                column.replace(changed, new_docs[selected], new_values[selected])
        for name in LABEL_FIELDS:
            self._load_labels(conn, name, docs)
        if len(self._overrides) > FULL_RELOAD:
            self._fold_overrides()

    def _pairs_of(self, docs: list[int]) -> tuple[np.ndarray, np.ndarray]:
        parts = [self._overrides[d] for d in docs]
        values = np.concatenate(parts) if parts else np.empty(0, np.int32)
        owners = np.repeat(np.asarray(docs, dtype=np.int32), [len(p) for p in parts])
        return owners, values

    def _fold_overrides(self) -> None:
        changed = np.fromiter(self._overrides, dtype=np.int32)
        keep = ~np.isin(self._pairs_doc, changed)
        docs, values = self._pairs_of(list(self._overrides))
        self._pairs_doc = np.concatenate([self._pairs_doc[keep], docs])
        self._pairs_value = np.concatenate([self._pairs_value[keep], values])
        self._overrides = {}

    def _load_labels(self, conn: Connection, name: str, docs: list[int] | None) -> None:
        if name == "tags":
            query = select(SearchDocument.id, SeriesTag.tag).join(SeriesTag, SeriesTag.series_uid == SearchDocument.series_uid)  # type: ignore[arg-type]
        else:
            query = (
                select(SearchDocument.id, Dataset.name)
                .join(DatasetSeries, DatasetSeries.series_uid == SearchDocument.series_uid)  # type: ignore[arg-type]
                .join(Dataset, Dataset.id == DatasetSeries.dataset_id)  # type: ignore[arg-type]
            )
        labels = self.labels[name]
        rows: list[Any] = []
        if docs is None:
            rows = conn.execute(query).all()
        else:
            for start in range(0, len(docs), 500):
                rows.extend(conn.execute(query.where(SearchDocument.id.in_(docs[start : start + 500]))).all())  # type: ignore[union-attr]
        new_docs = np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows))
        new_values = np.fromiter((labels.id_of(r[1]) for r in rows), dtype=np.int32, count=len(rows))
        if docs is None:
            labels.column = FieldColumn(new_docs, new_values)
        else:
            labels.column.replace(np.asarray(docs, dtype=np.int32), new_docs, new_values)

    # --- reading ------------------------------------------------------------------------

    def column(self, name: str) -> FieldColumn:
        """The (doc, value) pairs of a field, built on first use from the loaded pairs."""
        if name in self.labels:
            return self.labels[name].column
        if name not in self._columns:
            field_id = self.field_ids.get(name, -2)
            selected = self.value_field[self._pairs_value] == field_id if len(self.value_field) else np.zeros(0, bool)
            docs, values = self._pairs_doc[selected], self._pairs_value[selected]
            if self._overrides:
                changed = np.fromiter(self._overrides, dtype=np.int32)
                keep = ~np.isin(docs, changed)
                extra_docs, extra_values = self._pairs_of(list(self._overrides))
                extra = self.value_field[extra_values] == field_id
                docs = np.concatenate([docs[keep], extra_docs[extra]])
                values = np.concatenate([values[keep], extra_values[extra]])
            self._columns[name] = FieldColumn(docs.astype(np.int32), values.astype(np.int32))
        return self._columns[name]

    def display(self, name: str, value_id: int) -> str:
        return self.labels[name].names[value_id] if name in self.labels else self.value_display[value_id]

    def values_where(self, name: str, accept: Callable[[str, str], bool]) -> np.ndarray:
        """Ids of the field's values (display, norm) that `accept` takes."""
        if name in self.labels:
            names = self.labels[name].names
            return np.asarray([i for i, n in enumerate(names) if accept(n, fold(n))], dtype=np.int32)
        field_id = self.field_ids.get(name)
        if field_id is None:
            return np.empty(0, np.int32)
        ids = np.flatnonzero(self.value_field == field_id)
        return np.asarray([i for i in ids if accept(self.value_display[i], self.value_norm[i])], dtype=np.int32)

    def docs_with(self, name: str, value_ids: np.ndarray | None) -> np.ndarray:
        """Boolean mask of series that hold any of `value_ids` in the field (any value when None)."""
        mask = np.zeros(self.capacity, bool)
        column = self.column(name)
        if value_ids is None:
            mask[column.docs] = True
        elif len(value_ids):
            mask[column.docs[np.isin(column.values, value_ids)]] = True
        return mask & self.alive

    def mask_of_ids(self, ids: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.capacity, bool)
        ids = ids[(ids >= 0) & (ids < self.capacity)]
        mask[ids] = True
        return mask & self.alive

    def counts(self, name: str, hits: np.ndarray) -> dict[str, int]:
        """Series per value of a field among `hits`, most frequent first."""
        column = self.column(name)
        selected = column.values[hits[column.docs]]
        if not len(selected):
            return {}
        tally = np.bincount(selected)
        nonzero = np.flatnonzero(tally)
        order = nonzero[np.argsort(-tally[nonzero], kind="stable")]
        return {self.display(name, int(v)): int(tally[v]) for v in order}

    def distinct(self, keys: np.ndarray, hits: np.ndarray) -> int:
        selected = keys[hits]
        selected = selected[selected >= 0]
        return int(np.count_nonzero(np.bincount(selected))) if len(selected) else 0

    def ranking(self, name: str) -> "Ranking":
        """The order of a field's distinct values: numbers by value, dates and text by folded text."""
        column = self.column(name)
        size = len(self.labels[name].names) if name in self.labels else len(self.value_display)
        cached = self._ranks.get(name)
        if cached is not None and cached.size == size:
            return cached
        ids = np.unique(column.values)
        displays = [self.display(name, int(i)) for i in ids]
        numeric = bool(displays) and vr_of(name) not in ("DA", "DT", "TM") and all(_NUMBER.match(d) for d in displays)
        keys: list[Any] = [float(d) for d in displays] if numeric else [(fold(d), d) for d in displays]
        order = sorted(range(len(ids)), key=keys.__getitem__)
        rank = np.full(size, np.nan)
        rank[ids[order]] = np.arange(len(order), dtype=float)
        ranking = Ranking(size, rank, [keys[i] for i in order], numeric)
        self._ranks[name] = ranking
        return ranking

    def sort_keys(self, name: str) -> tuple[np.ndarray, list[Any]]:
        """(per-doc key with NaN for no value, the sorted distinct keys) for ordering by a field."""
        if name in self.counters:
            return self.counters[name], []
        cached = self._sort_keys.get(name)
        if cached is not None and cached[0] == self.version:
            return cached[1], cached[2]
        column = self.column(name)
        ranking = self.ranking(name)
        keys = np.full(self.capacity, np.nan)
        values = ranking.rank[column.values]
        if len(np.unique(column.docs)) == len(column.docs):
            keys[column.docs] = values
        else:  # a series with several values sorts by its smallest
            order = np.argsort(-values, kind="stable")
            keys[column.docs[order]] = values[order]
        self._sort_keys[name] = (self.version, keys, ranking.keys)
        return keys, ranking.keys

    def docs_with_rank(self, name: str, low: float, high: float) -> np.ndarray:
        """Series holding a value of the field whose rank lies in [low, high]."""
        column = self.column(name)
        ranks = self.ranking(name).rank[column.values]
        mask = np.zeros(self.capacity, bool)
        mask[column.docs[(ranks >= low) & (ranks <= high)]] = True
        return mask & self.alive

    def docs_with_any(self, value_ids: np.ndarray) -> np.ndarray:
        """Series holding any of these dictionary values, in whatever field (any-field wildcards)."""
        mask = np.zeros(self.capacity, bool)
        if not len(value_ids):
            return mask
        mask[self._pairs_doc[np.isin(self._pairs_value, value_ids)]] = True
        if self._overrides:
            changed = np.fromiter(self._overrides, dtype=np.int32)
            mask[changed] = False
            docs, values = self._pairs_of(list(self._overrides))
            mask[docs[np.isin(values, value_ids)]] = True
        return mask & self.alive

    def field_names(self) -> list[str]:
        return sorted(self.field_ids)


def parse_number(value: str) -> float | None:
    return float(value) if _NUMBER.match(value.strip()) else None

