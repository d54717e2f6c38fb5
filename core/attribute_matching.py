"""DICOM attribute matching (PS3.4 C.2.2.2): the rules, as SQL over the index and in Python over documents.

QIDO-RS and C-FIND ask the same question of the same data, so one module says what a matching
value means — single value, list of UIDs or codes, universal, wildcard `*`/`?` (case-sensitive,
except person names: core.person_names, and text attributes under fuzzy matching:
core.fuzzy_text), date and time ranges, empty value, sequences — as SQL
for the attributes the index holds, and in Python for what only the instance documents hold
(attributes of no index column, and the items of sequences).

Universal and empty value matching differ: a zero-length value (and `*`) matches everything and
asks for the attribute back; two QUOTATION MARKs (`""`, PS3.4 C.2.2.2.7, QIDO-RS's
`AccessionNumber=""`) match only entities whose attribute is empty or absent.

Sequence matching (PS3.4 C.2.2.2.6): a sequence key holds one item of item keys; an entity matches
when one item of its sequence matches every item key; with no item keys to match on (universal),
every entity matches and the whole sequence is returned.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Union

from sqlalchemy import and_, func, or_, select, union_all
from sqlalchemy.sql.elements import ColumnElement

from core import fuzzy_text, person_names
from core.dicom_json import key_of, vr_of
from core.fuzzy_text import FUZZY_VRS, fuzzy_regex

EMPTY_VALUE = '""'
NUMERIC_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "DS", "FL", "FD", "SV", "UV"})
LIST_VRS = frozenset({"UI", "CS", "AE"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
TEXT_LIST_VRS = frozenset({"SH", "LO", "UC", "AS"})

SequenceKey = dict[str, Union[str, "SequenceKey"]]  # item keyword → matching value, or a nested sequence key


class QueryError(ValueError):
    """A query that cannot be run as given; the message says why."""


def is_universal(value: str) -> bool:
    """A zero-length value or a lone `*`: every entity matches (and the attribute is returned)."""
    return value.strip() in ("", "*")


def is_empty_value(value: str) -> bool:
    return value.strip() == EMPTY_VALUE


def split_values(value: str) -> list[str]:
    """A list of UIDs or codes: `\\`-separated in C-FIND, `,`-separated in QIDO-RS."""
    return [v for v in re.split(r"[\\,]", value) if v != ""]


def alternatives(value: str, vr: str) -> list[str]:
    """The values a matching value lists (UID list matching, PS3.4 C.2.2.2.2, and multiple value matching,
    C.2.2.2.8): UIDs and codes by `\\` or `,`; short texts, where `\\` can only separate values, by `\\`."""
    if vr in LIST_VRS:
        return split_values(value) or [value]
    if vr in TEXT_LIST_VRS:
        return [v for v in value.split("\\") if v] or [value]
    return [value]


def is_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def glob_pattern(value: str) -> str:
    return value.replace("[", "[[]")


def range_bounds(value: str, vr: str) -> tuple[str, str]:
    low, _, high = value.partition("-")
    if vr == "TM":
        low = low.split(".")[0].ljust(6, "0") if low else ""
        high = (high.split(".")[0].ljust(6, "0") + ".999999") if high else ""
    elif vr == "DT":
        high = high + "\uffff" if high else ""
    return low, high


def _numbers(keyword: str, value: str) -> list[float]:
    try:
        return [float(v) for v in split_values(value)]
    except ValueError:
        raise QueryError(f"{keyword} takes numbers, not {value!r}") from None


# --------------------------------------------------------------------------- SQL


class SqlMatcher:
    """SQL conditions for one dialect (SQLite wildcards are GLOB, to stay case-sensitive as DICOM is)."""

    def __init__(self, dialect: str, fuzzy: bool) -> None:
        self.dialect = dialect
        self.sqlite = dialect == "sqlite"
        self.fuzzy = fuzzy

    def condition(self, expr: Any, keyword: str, value: str, numeric: bool = False) -> ColumnElement[bool] | None:
        """`expr` (the attribute's column or JSON text) matches `value`; None when every entity does."""
        vr = vr_of(keyword)
        value = value.strip()
        if is_universal(value):
            return None
        if is_empty_value(value):
            return expr.is_(None) if numeric or vr in NUMERIC_VRS else func.coalesce(expr, "") == ""
        if numeric or vr in NUMERIC_VRS:
            numbers = _numbers(keyword, value)
            return expr.in_(numbers) if len(numbers) > 1 else expr == numbers[0]
        if vr in RANGE_VRS and "-" in value:
            low, high = range_bounds(value, vr)
            parts = [c for c in ((expr >= low) if low else None, (expr <= high) if high else None) if c is not None]
            return and_(*parts, expr != "") if parts else None
        options = alternatives(value, vr)
        if self.fuzzy and vr in FUZZY_VRS:  # case and accents ignored, as asked (core/fuzzy_text.py)
            return or_(*(expr.regexp_match(fuzzy_regex(option)) for option in options))
        if len(options) > 1 and not any(is_wildcard(o) for o in options):
            return expr.in_(options)
        return or_(*(self._single(expr, option) for option in options))

    def _single(self, expr: Any, value: str) -> ColumnElement[bool]:
        if is_wildcard(value):
            if self.sqlite:
                return expr.op("GLOB")(glob_pattern(value))
            return expr.like(like_pattern(value), escape="\\")
        return expr == value

    def person_name(self, full: Any, groups: Any | None, value: str, key: Any | None = None) -> ColumnElement[bool] | None:
        """A PN attribute, through its folded form (`full`, and `groups` for names of several groups).

        With the table's `key`, a match of several parts becomes `key IN (… UNION ALL …)`: each part
        then runs on its own index, where an OR of them would read every candidate row."""
        value = value.strip()
        if is_universal(value):
            return None
        if is_empty_value(value):
            return person_names.empty_condition(full)
        if self.fuzzy:
            return person_names.fuzzy_condition(full, value)
        parts = person_names.name_parts(full, groups, value, self.dialect)
        if parts is None:
            return None
        if len(parts) == 1 or key is None:
            return or_(*parts)
        return key.in_(union_all(*(select(key).where(part).correlate(None) for part in parts)))


# --------------------------------------------------------------------------- Python (documents, sequence items)


def _present(values: list[Any]) -> list[Any]:
    return [v for v in values if v is not None and v != ""]


def element_matches(keyword: str, element: dict[str, Any] | None, wanted: str, fuzzy: bool = False) -> bool:
    """Whether a DICOM JSON element (absent: None) matches a matching value, by the rules the SQL follows."""
    wanted = wanted.strip()
    if is_universal(wanted):
        return True
    values = _present(list((element or {}).get("Value") or []))
    vr = (element or {}).get("vr") or vr_of(keyword)
    if vr == "PN":
        if is_empty_value(wanted):
            return not person_names.fold_name(values)  # `^^^^` is an empty name
        return bool(values) and person_names.matches(wanted, values, fuzzy)
    if is_empty_value(wanted):
        return not values
    if not values:
        return False
    if vr in NUMERIC_VRS:
        numbers = set(_numbers(keyword, wanted))
        return any(_as_number(v) in numbers for v in values)
    texts = [str(v) for v in values]
    if vr in RANGE_VRS and "-" in wanted:
        low, high = range_bounds(wanted, vr)
        return any((not low or t >= low) and (not high or t <= high) for t in texts)
    if fuzzy and vr in FUZZY_VRS:
        return any(fuzzy_text.text_matches(t, option) for option in alternatives(wanted, vr) for t in texts)
    return any(_text_matches(t, option) for option in alternatives(wanted, vr) for t in texts)


def _text_matches(text: str, wanted: str) -> bool:
    return fnmatch.fnmatchcase(text, glob_pattern(wanted)) if is_wildcard(wanted) else text == wanted


def _as_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def is_universal_sequence(keys: SequenceKey) -> bool:
    """A sequence key that matches nothing in particular: every entity matches, every item is returned."""
    return all(is_universal_sequence(v) if isinstance(v, dict) else is_universal(v) for v in keys.values())


def _item_element(item: dict[str, Any], keyword: str) -> dict[str, Any] | None:
    key = key_of(keyword)
    return item.get(key[0]) if key is not None else None


def item_matches(item: dict[str, Any], keys: SequenceKey, fuzzy: bool = False) -> bool:
    """A sequence item (DICOM JSON) matches every one of the item keys."""
    for keyword, wanted in keys.items():
        element = _item_element(item, keyword)
        if isinstance(wanted, dict):
            if not is_universal_sequence(wanted) and not matching_items(element, wanted, fuzzy):
                return False
        elif not element_matches(keyword, element, wanted, fuzzy):
            return False
    return True


def matching_items(element: dict[str, Any] | None, keys: SequenceKey, fuzzy: bool = False) -> list[dict[str, Any]]:
    """The items of a sequence element that match the item keys (all of them for a universal key)."""
    items = [item for item in (element or {}).get("Value") or [] if isinstance(item, dict)]
    if is_universal_sequence(keys):
        return items
    return [item for item in items if item_matches(item, keys, fuzzy)]


def document_matches(document: dict[str, Any], filters: dict[str, str], sequences: dict[str, SequenceKey], fuzzy: bool = False) -> bool:
    """An instance's DICOM JSON matches every attribute filter and has a matching item in every sequence key."""
    for keyword, wanted in filters.items():
        key = key_of(keyword)
        if not element_matches(keyword, document.get(key[0]) if key else None, wanted, fuzzy):
            return False
    for keyword, keys in sequences.items():
        if not is_universal_sequence(keys) and not matching_items(_item_element(document, keyword), keys, fuzzy):
            return False
    return True


def returned_sequence(element: dict[str, Any] | None, keys: SequenceKey, fuzzy: bool = False) -> dict[str, Any]:
    """A sequence as a result carries it: the matching items, without bulk data (only a retrieve can fetch that)."""
    items = [_without_bulk(item) for item in matching_items(element, keys, fuzzy)]
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}


def _without_bulk(item: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for tag, element in item.items():
        if "BulkDataURI" in element:
            continue
        if element.get("vr") == "SQ" and element.get("Value"):
            element = {**element, "Value": [_without_bulk(i) for i in element["Value"] if isinstance(i, dict)]}
        kept[tag] = element
    return kept
