"""Series search: a query, filters and a dataset in; hits, pages, counts and completions out.

`SeriesSearch` evaluates the query tree (core.search.query) as a boolean mask over series. Each
leaf first finds the matching *values* — words through the database's full-text index over the
value dictionary, prefixes and wildcards through its `norm` column, ranges through the values'
sort order — and then the series holding them through the in-memory columns. AND, OR and NOT
are mask operations. Sorting and paging happen on the mask too, so there is no hit limit and a
deep page costs what the first does.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, func, or_, select

from core import person_names
from core.db import Database
from core.models import Dataset, SearchDocument, SearchField, SearchValue, SeriesTag
from core.search.analysis import COUNTER_FIELDS, LABEL_FIELDS, canonical_field, fold, is_identifier, vr_of, words
from core.search.columns import Columns, parse_number
from core.search.query import And, Equals, Everything, Exists, Node, Not, Or, Pattern, QueryError, Range, Text, field_name, parse_filter, parse_query
from core.search.value_words import value_words_for
from core.selection import Selection

MAX_PAGE = 1000
DATE_INTERVALS = {"year": 4, "month": 6, "day": 8}


@dataclass
class SeriesPage:
    total: int
    series_uids: list[str]
    next_cursor: str | None = None


@dataclass
class Aggregation:
    series: int
    studies: int
    patients: int
    fields: dict[str, dict[str, int]] = field(default_factory=dict)


class UnknownDataset(LookupError):
    pass


class SeriesSearch:
    """Search over one database. Thread-safe: queries share the columns under their lock."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.columns = Columns()

    def warm(self) -> None:
        """Load the columns now (start-up), not at the first query."""
        with self._reading():
            pass

    # --- answers --------------------------------------------------------------------------

    def count(self, selection: Selection) -> int:
        with self._reading() as (conn, _):
            return int(np.count_nonzero(self._hits(conn, selection)))

    def page(self, selection: Selection, sort: str | None = None, limit: int = 100, offset: int = 0, after: str | None = None) -> SeriesPage:
        limit = max(0, min(limit, MAX_PAGE))
        with self._reading() as (conn, columns):
            hits = self._hits(conn, selection)
            total = int(np.count_nonzero(hits))
            name, descending = parse_sort(sort)
            keys, sorted_keys = columns.sort_keys(name)
            ids = np.flatnonzero(hits)
            primary = keys[ids]
            if descending:
                primary = -primary
            primary = np.where(np.isnan(primary), np.inf, primary)
            if after:
                threshold, last_id = _cursor_threshold(after, name, descending, sorted_keys)
                later = (primary > threshold) | ((primary == threshold) & (ids > last_id))
                ids, primary = ids[later], primary[later]
                offset = 0
            wanted = offset + limit
            more = len(ids) > wanted
            if wanted < len(ids) and wanted > 0:
                cut = np.partition(primary, wanted - 1)[wanted - 1]
                candidates = primary <= cut
                ids, primary = ids[candidates], primary[candidates]
            order = np.lexsort((ids, primary))[offset:wanted]
            page_ids = [int(i) for i in ids[order]]
            uids = self._series_uids(conn, page_ids)
            next_cursor = None
            if more and len(order):
                last = int(order[-1])
                next_cursor = _make_cursor(name, float(primary[last]), descending, sorted_keys, int(ids[last]))
            return SeriesPage(total=total, series_uids=[uids[i] for i in page_ids if i in uids], next_cursor=next_cursor)

    def series_uids(self, selection: Selection) -> list[str]:
        """Every matching series (for datasets made from a query): no page, no limit."""
        with self._reading() as (conn, _):
            ids = [int(i) for i in np.flatnonzero(self._hits(conn, selection))]
            uids = self._series_uids(conn, ids)
            return [uids[i] for i in ids if i in uids]

    def aggregate(self, selection: Selection, fields: list[str], size: int = 1000) -> Aggregation:
        wanted = [_aggregation_field(f) for f in fields]
        with self._reading() as (conn, columns):
            hits = self._hits(conn, selection)
            result = Aggregation(
                series=int(np.count_nonzero(hits)),
                studies=columns.distinct(columns.study, hits),
                patients=columns.distinct(columns.patient, hits),
            )
            for raw, name, interval in wanted:
                if interval:
                    result.fields[raw] = dict(list(columns.bucket_counts(name, hits, DATE_INTERVALS[interval]).items())[:size])
                else:
                    result.fields[raw] = columns.counts(name, hits, size)
            return result

    def values(self, field_raw: str, prefix: str = "", limit: int = 20, selection: Selection | None = None) -> list[dict[str, Any]]:
        """Values of a field starting with `prefix` (folded), most frequent first, with series counts."""
        name = field_name(field_raw)
        wanted = fold(prefix)
        limit = max(1, min(limit, 1000))
        if selection is not None and (selection.q or selection.filters or selection.dataset) or name in LABEL_FIELDS or name in COUNTER_FIELDS:
            with self._reading() as (conn, columns):
                hits = self._hits(conn, selection or Selection())
                counts = columns.counts(name, hits) if name not in COUNTER_FIELDS else _counter_counts(columns.counters[name], hits)
                return [{"value": v, "count": n} for v, n in counts.items() if fold(v).startswith(wanted)][:limit]
        with self.db.engine.connect() as conn:
            field_id = conn.execute(select(SearchField.id).where(SearchField.name == name)).scalar_one_or_none()
            if field_id is None:
                return []
            norm = _norm(conn)
            query = select(SearchValue.display, SearchValue.count).where(SearchValue.field_id == field_id, SearchValue.count > 0)  # type: ignore[arg-type]
            if wanted:
                query = query.where(norm >= wanted, norm < wanted + "\U0010ffff")
            query = query.order_by(SearchValue.count.desc(), SearchValue.display).limit(limit)  # type: ignore[attr-defined]
            return [{"value": v, "count": n} for v, n in conn.execute(query)]

    def tag_counts(self) -> list[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(SeriesTag.tag, func.count()).group_by(SeriesTag.tag).order_by(func.count().desc(), SeriesTag.tag)).all()  # type: ignore[arg-type]
        return [{"tag": tag, "count": n} for tag, n in rows]

    def fields(self) -> list[str]:
        """Every field the index holds values of, plus tags and datasets (for a field picker)."""
        with self._reading() as (_, columns):
            return sorted({*columns.known_fields(), *LABEL_FIELDS})

    # --- evaluation -------------------------------------------------------------------------

    def _reading(self) -> "_Reading":
        return _Reading(self)

    def _hits(self, conn: Connection, selection: Selection) -> np.ndarray:
        if selection.series:  # explicit series: those of them that exist, never "everything"
            return self._series_mask(conn, selection.series)
        parts: list[Node] = [parse_query(selection.q)]
        parts.extend(parse_filter(f) for f in selection.filters)
        mask = self._evaluate(conn, And(tuple(parts)) if len(parts) > 1 else parts[0])
        if selection.dataset is not None:
            mask &= self._dataset_mask(conn, selection.dataset)
        return mask

    def _series_mask(self, conn: Connection, series_uids: tuple[str, ...]) -> np.ndarray:
        mask = np.zeros(self.columns.capacity, bool)
        for start in range(0, len(series_uids), 900):
            chunk = list(series_uids[start : start + 900])
            ids = conn.execute(select(SearchDocument.id).where(SearchDocument.series_uid.in_(chunk))).scalars().all()  # type: ignore[union-attr, attr-defined]
            ids = [i for i in ids if i < self.columns.capacity]
            mask[np.asarray(ids, dtype=np.int64)] = True
        return mask & self.columns.alive

    def _dataset_mask(self, conn: Connection, name: str) -> np.ndarray:
        if conn.execute(select(Dataset.id).where(Dataset.name == name)).scalar_one_or_none() is None:
            raise UnknownDataset(f"no dataset {name!r}")
        labels = self.columns.labels["datasets"]
        if name not in labels.ids:
            return np.zeros(self.columns.capacity, bool)
        return self.columns.docs_with("datasets", np.asarray([labels.ids[name]], dtype=np.int32))

    def _evaluate(self, conn: Connection, node: Node) -> np.ndarray:
        columns = self.columns
        if isinstance(node, Everything):
            return columns.alive.copy()
        if isinstance(node, Not):
            return columns.alive & ~self._evaluate(conn, node.child)
        if isinstance(node, And):
            result = self._evaluate(conn, node.children[0])
            for child in node.children[1:]:
                if not result.any():
                    break
                result &= self._evaluate(conn, child)
            return result
        if isinstance(node, Or):
            result = self._evaluate(conn, node.children[0])
            for child in node.children[1:]:
                result |= self._evaluate(conn, child)
            return result
        return self._leaf(conn, node)

    def _leaf(self, conn: Connection, node: Node) -> np.ndarray:
        """One term: find the matching values (few), then the series holding them (many)."""
        columns = self.columns
        field = getattr(node, "field", None)
        if field in COUNTER_FIELDS:
            return self._counter_leaf(node)
        if isinstance(node, Exists):
            return columns.docs_with(node.field, None)
        if isinstance(node, Range):
            if is_identifier(node.field):
                raise QueryError(f"{node.field} is an identifier: it has no ranges")
            ranks = _rank_bounds(columns.ranking(node.field), node)
            if ranks is not None:
                return columns.docs_with_rank(node.field, *ranks)
            accept = _range_test(node)
            return self._docs_for_values(self._value_ids(conn, node.field, lambda d, _n: accept(d)), node.field)
        if field in LABEL_FIELDS:
            return columns.docs_with(field, columns.label_ids_where(field, _label_test(node)))
        if isinstance(node, Text):
            ids = self._words(conn, node.words)
            exact = conn.execute(select(SearchValue.id).where(_norm(conn) == node.whole[:256])).scalars().all() if node.whole else []
            return self._docs_for_values(np.union1d(ids, np.asarray(exact, dtype=np.int64)), field)
        if isinstance(node, Equals):
            query = select(SearchValue.id).where(_norm(conn).in_([v[:256] for v in node.values]))
            return self._docs_for_values(self._field_values(conn, query, node.field), node.field)
        if isinstance(node, Pattern):
            prefix = node.prefix
            norm = _norm(conn)
            if prefix is not None:
                condition = and_(norm >= prefix, norm < prefix + "\U0010ffff")
            else:
                condition = _matches_pattern(conn, SearchValue.norm, node.pattern)
            if node.field is not None and vr_of(node.field) == "PN":
                # a name also matches by any of its component groups (`PatientName:山田*`), as in QIDO-RS and C-FIND
                by_group = person_names.name_condition(norm, None, node.pattern, conn.dialect.name)
                condition = condition if by_group is None else or_(condition, by_group)
            query = select(SearchValue.id).where(condition)
            return self._docs_for_values(self._field_values(conn, query, node.field), node.field)
        raise QueryError(f"cannot evaluate {node}")

    def _words(self, conn: Connection, words: tuple[str, ...]) -> np.ndarray:
        return value_words_for(conn).matching(conn, words)

    def _field_values(self, conn: Connection, query: Any, field: str | None) -> np.ndarray:
        if field is not None:
            field_id = self.columns.field_ids.get(field)
            if field_id is None:
                return np.empty(0, np.int64)
            query = query.where(SearchValue.field_id == field_id)
        return np.asarray(conn.execute(query).scalars().all(), dtype=np.int64)

    def _value_ids(self, conn: Connection, field: str, accept: Any) -> np.ndarray:
        """Value ids of a field that a Python test accepts (ranges the rank order cannot answer)."""
        field_id = self.columns.field_ids.get(field)
        if field_id is None:
            return np.empty(0, np.int64)
        rows = conn.execute(select(SearchValue.id, SearchValue.display, SearchValue.norm).where(SearchValue.field_id == field_id)).all()  # type: ignore[arg-type]
        return np.asarray([i for i, display, norm in rows if accept(display, norm)], dtype=np.int64)

    def _docs_for_values(self, value_ids: np.ndarray, field: str | None) -> np.ndarray:
        """Series holding any of these values — in `field`, or in whichever field each value belongs to."""
        columns = self.columns
        value_ids = value_ids[value_ids < len(columns.value_field)]
        if field is not None:
            field_id = columns.field_ids.get(field, -2)
            return columns.docs_with(field, value_ids[columns.value_field[value_ids] == field_id])
        mask = np.zeros(columns.capacity, bool)
        owners = columns.value_field[value_ids]
        for field_id in np.unique(owners):
            name = columns.field_names.get(int(field_id))
            if name is not None:
                mask |= columns.docs_with(name, value_ids[owners == field_id])
        return mask

    def _counter_leaf(self, node: Node) -> np.ndarray:
        columns = self.columns
        name = getattr(node, "field")
        if isinstance(node, Exists):
            return columns.alive & ~np.isnan(columns.counters[name])
        if isinstance(node, Range):
            accept = _range_test(node)
            return _counter_mask(columns, name, lambda v: accept(_format_number(v)))
        if isinstance(node, Text):
            wanted = parse_number(node.whole)
            return _counter_mask(columns, name, lambda v: v == wanted)
        if isinstance(node, Equals):
            numbers = {parse_number(v) for v in node.values}
            return _counter_mask(columns, name, lambda v: v in numbers)
        if isinstance(node, Pattern):
            regex = re.compile(fnmatch.translate(node.pattern), re.DOTALL)
            return _counter_mask(columns, name, lambda v: bool(regex.match(_format_number(v))))
        raise QueryError(f"cannot evaluate {node}")

    @staticmethod
    def _series_uids(conn: Connection, ids: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        if len(ids) > 20_000:  # one scan beats thousands of lookups
            wanted = set(ids)
            for doc_id, uid in conn.execute(select(SearchDocument.id, SearchDocument.series_uid)):
                if doc_id in wanted:
                    found[doc_id] = uid
            return found
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            found.update(conn.execute(select(SearchDocument.id, SearchDocument.series_uid).where(SearchDocument.id.in_(chunk))).all())  # type: ignore[arg-type, union-attr]
        return found


class _Reading:
    """A connection plus the columns, synced and locked for the length of one answer."""

    def __init__(self, search: SeriesSearch) -> None:
        self.search = search

    def __enter__(self) -> tuple[Connection, Columns]:
        self.conn = self.search.db.engine.connect()
        self.search.columns.lock.acquire()
        try:
            self.search.columns.sync(self.conn)
        except BaseException:
            self.__exit__()
            raise
        return self.conn, self.search.columns

    def __exit__(self, *_: Any) -> None:
        self.search.columns.lock.release()
        self.conn.close()


# --- helpers ---------------------------------------------------------------------------------


def parse_sort(sort: str | None) -> tuple[str, bool]:
    """`Field`, `-Field`, `Field:asc` or `Field:desc` → (field, descending); default newest arrival first."""
    if not sort or not sort.strip():
        return "arrived", True
    raw = sort.strip()
    descending = raw.startswith("-")
    raw = raw.lstrip("-+")
    if ":" in raw:
        raw, direction = raw.rsplit(":", 1)
        if direction.lower() not in ("asc", "desc"):
            raise QueryError(f"sort direction must be asc or desc, not {direction!r}")
        descending = direction.lower() == "desc"
    if raw.lower() in ("arrived", "updated"):
        return raw.lower(), descending
    name = canonical_field(raw)
    if name is None:
        raise QueryError(f"cannot sort by {raw!r}: not a DICOM keyword, tags, datasets, instances, arrived or updated")
    if is_identifier(name):
        raise QueryError(f"cannot sort by {name}: identifiers have no useful order")
    return name, descending


def _make_cursor(name: str, primary: float, descending: bool, sorted_keys: list[Any], doc_id: int) -> str:
    value: Any = None
    if not np.isinf(primary):
        raw = -primary if descending else primary
        value = sorted_keys[int(raw)] if sorted_keys else raw
    payload = json.dumps({"f": name, "d": descending, "v": value, "i": doc_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _cursor_threshold(cursor: str, name: str, descending: bool, sorted_keys: list[Any]) -> tuple[float, int]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value, doc_id = payload["v"], int(payload["i"])
        same = payload["f"] == name and bool(payload["d"]) == descending
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise QueryError("the cursor (after=) is not one this server gave out") from None
    if not same:
        raise QueryError("the cursor (after=) belongs to another sort order")
    if value is None:
        return np.inf, doc_id
    if sorted_keys:
        key = tuple(value) if isinstance(value, list) else value
        position = bisect.bisect_left(sorted_keys, key)
        rank = float(position) if position < len(sorted_keys) and sorted_keys[position] == key else position - 0.5
    else:
        rank = float(value)
    return (-rank if descending else rank), doc_id


def _norm(conn: Connection) -> Any:
    """The dictionary's folded value as its indexes are built: byte order (collation "C") on PostgreSQL."""
    return SearchValue.norm.collate("C") if conn.dialect.name == "postgresql" else SearchValue.norm  # type: ignore[attr-defined]


def _matches_pattern(conn: Connection, column: Any, pattern: str) -> Any:
    """`column` matches a folded Lucene wildcard pattern: GLOB on SQLite, LIKE on PostgreSQL (both case-sensitive)."""
    if conn.dialect.name == "postgresql":
        like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%").replace("?", "_")
        return column.like(like, escape="\\")
    glob = "".join("[[]" if c == "[" else c for c in pattern)  # * and ? mean the same in GLOB
    return column.op("GLOB")(glob)


def _rank_bounds(ranking: Any, node: Range) -> tuple[float, float] | None:
    """[low, high] ranks of a range over a field's sorted values, or None when only a value-by-value test is right."""
    low, high = _normal_bound(node.low), _normal_bound(node.high)
    wants_numbers = (low is None or parse_number(low) is not None) and (high is None or parse_number(high) is not None) and vr_of(node.field) not in ("DA", "DT", "TM")
    if ranking.numeric != wants_numbers or not ranking.keys:
        return None
    keys = ranking.keys if ranking.numeric else [k[0] for k in ranking.keys]
    convert = parse_number if ranking.numeric else fold
    first = 0 if low is None else (bisect.bisect_left if node.include_low else bisect.bisect_right)(keys, convert(low))
    last = len(keys) - 1 if high is None else (bisect.bisect_right if node.include_high else bisect.bisect_left)(keys, convert(high)) - 1
    return float(first), float(last)


def _aggregation_field(raw: str) -> tuple[str, str, str | None]:
    name_part, _, interval = raw.partition(":")
    name = field_name(name_part)
    if interval and interval.lower() not in DATE_INTERVALS:
        raise QueryError(f"dates are bucketed by {', '.join(DATE_INTERVALS)}, not {interval!r}")
    if is_identifier(name):
        raise QueryError(f"{name} has one value per series or study; it cannot be counted")
    if name in COUNTER_FIELDS:
        raise QueryError(f"{name} is a number per series; use a range query instead")
    return raw, name, interval.lower() or None


def _label_test(node: Node) -> Any:
    """What a tag or dataset name must look like (folded) to match a term about labels."""
    if isinstance(node, Text):
        return lambda norm: norm == node.whole or _contains(words(norm), node.words)
    if isinstance(node, Equals):
        return lambda norm: norm in node.values
    if isinstance(node, Pattern):
        regex = re.compile(fnmatch.translate(node.pattern), re.DOTALL)
        return lambda norm: bool(regex.match(norm))
    raise QueryError(f"cannot evaluate {node}")


def _contains(haystack: list[str], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    return any(tuple(haystack[i : i + n]) == needle for i in range(len(haystack) - n + 1))


def _normal_bound(value: str | None) -> str | None:
    if value is None:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value.replace("-", "")
    return value


def _range_test(node: Range) -> Any:
    low, high = _normal_bound(node.low), _normal_bound(node.high)
    low_number = parse_number(low) if low is not None else None
    high_number = parse_number(high) if high is not None else None
    numeric = (low is None or low_number is not None) and (high is None or high_number is not None) and vr_of(node.field) not in ("DA", "DT", "TM")

    def accept(display: str) -> bool:
        if numeric:
            value: Any = parse_number(display)
            if value is None:
                return False
            lo, hi = low_number, high_number
        else:
            value, lo, hi = fold(display), (fold(low) if low is not None else None), (fold(high) if high is not None else None)
        if lo is not None and (value < lo or (value == lo and not node.include_low)):
            return False
        if hi is not None and (value > hi or (value == hi and not node.include_high)):
            return False
        return True

    return accept


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _counter_mask(columns: Columns, name: str, accept: Any) -> np.ndarray:
    values = columns.counters[name]
    present = columns.alive & ~np.isnan(values)
    mask = np.zeros(columns.capacity, bool)
    for value in np.unique(values[present]):
        if accept(float(value)):
            mask |= values == value
    return mask & present


def _counter_counts(values: np.ndarray, hits: np.ndarray) -> dict[str, int]:
    selected = values[hits & ~np.isnan(values)]
    unique, counts = np.unique(selected, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {_format_number(float(unique[i])): int(counts[i]) for i in order}


__all__ = ["SeriesSearch", "Selection", "SeriesPage", "Aggregation", "UnknownDataset", "QueryError", "parse_sort"]
