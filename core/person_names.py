"""Person names (PN): how they are folded and matched — one definition for search, QIDO-RS and C-FIND.

A PN value has up to three component groups, `Alphabetic=Ideographic=Phonetic`
(`Yamada^Tarou=山田^太郎=やまだ^たろう`, PS3.5 6.2), and an attribute may hold several values
(`\\`). Names are compared folded (`core.search.analysis.fold`: Unicode case, compatibility forms,
accents), so `ÄNEAS^RÜDIGER`, `äneas^rüdiger` and `Aneas^Rudiger` are one name on SQLite and
PostgreSQL alike. The index keeps the folded form, written at ingest (`names_folded`, see
`folded_names`), so no database function folds at query time: SQLite's lower() knows only ASCII.

Matching (PS3.4 C.2.2.2.1 and C.2.2.2.4; PS3.4 lets PN matching ignore case and accents): a query
of one component group matches when any group of any value matches it, so `山田*`, `Yamada*` and
`やまだ^たろう` all find the name above; a query of several groups matches group by group (an empty
query group matches anything, groups the query leaves out are not looked at). `*` and `?` never
match across a group or value boundary. Alternatives are separated by `\\`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, func, literal_column, or_
from sqlalchemy.sql.elements import ColumnElement

from core.search.analysis import fold, vr_of

GROUP = "="
VALUE = "\\"
_BOUNDARY = "[=\\\\]"  # a regex class: a group or value boundary
_INSIDE = "[^=\\\\]"  # a regex class: any character inside one group
_GLOB_INSIDE = "[^=\\]"  # the same as a SQLite GLOB class (GLOB has no escape character)
_GROUP_NAMES = ("Alphabetic", "Ideographic", "Phonetic")


def groups_key(keyword: str) -> str:
    """The `names_folded` key holding every group of a name that has more than one (`=g1=g2=…=`)."""
    return f"{keyword}:groups"


def name_text(value: Any) -> str:
    """A PN value as DICOM text: a str or pydicom PersonName as it is, a DICOM JSON object
    (`{"Alphabetic": …, "Ideographic": …}`) joined with `=`, several values with `\\`."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        groups = [str(value.get(name, "") or "") for name in _GROUP_NAMES]
        return GROUP.join(groups).rstrip(GROUP)
    if isinstance(value, (list, tuple)):
        return VALUE.join(name_text(v) for v in value)
    return str(value)


def _fold_group(group: str) -> str:
    """One component group folded; trailing empty components go (PS3.5 6.2: `Doe^John^^` is `Doe^John`, `^^^^` is empty)."""
    return fold(group.strip()).rstrip("^ ")


@lru_cache(maxsize=65536)
def _fold_text(text: str) -> str:
    values = [GROUP.join(_fold_group(group) for group in value.split(GROUP)).rstrip(GROUP) for value in text.split(VALUE)]
    while values and not values[-1]:
        values.pop()
    return VALUE.join(values)


def fold_name(value: Any) -> str:
    """The folded form of a PN value: each group folded, trailing empty groups dropped, separators kept."""
    return _fold_text(name_text(value))


def entries(folded: str) -> list[str]:
    """Every non-empty group of every value of a folded name."""
    return [part for part in re.split(_BOUNDARY, folded) if part]


def all_groups(folded: str) -> str | None:
    """`=g1=g2=…=` for a name with more than one group or value (what `groups_key` holds), else None."""
    if GROUP not in folded and VALUE not in folded:
        return None
    return GROUP + GROUP.join(entries(folded)) + GROUP


def folded_names(attributes: Mapping[str, Any]) -> dict[str, str]:
    """The `names_folded` column of an index row: every PN attribute folded, and its groups when it has several."""
    names: dict[str, str] = {}
    for keyword, value in attributes.items():
        if vr_of(keyword) != "PN" or value in (None, "", []):
            continue
        folded = fold_name(value)
        if not folded:
            continue
        names[keyword] = folded
        groups = all_groups(folded)
        if groups is not None:
            names[groups_key(keyword)] = groups
    return names


# --------------------------------------------------------------------------- queries


def alternatives(query: str) -> list[str]:
    """The folded alternatives of a PN matching value (`\\`-separated)."""
    return [fold_name(part.strip()) for part in query.split(VALUE) if part.strip()]


def _is_universal(alternative: str) -> bool:
    return all(group in ("", "*") for group in alternative.split(GROUP))


def _body(group: str) -> str:
    """A query group as a regex: `*` and `?` stay inside one group."""
    return "".join(_INSIDE + "*" if c == "*" else _INSIDE if c == "?" else re.escape(c) for c in group)


@lru_cache(maxsize=1024)
def name_regex(alternative: str) -> str:
    """The regex (Python and PostgreSQL ARE alike) a folded name matches when it matches `alternative`."""
    if GROUP not in alternative:
        return f"(?:^|{_BOUNDARY}){_body(alternative)}(?:{_BOUNDARY}|$)"
    groups = [_body(g) if g else _INSIDE + "*" for g in alternative.split(GROUP)]
    return f"(?:^|\\\\){GROUP.join(groups)}(?:={_INSIDE}*)*(?:\\\\|$)"


@lru_cache(maxsize=1024)
def _compiled(alternative: str) -> re.Pattern[str]:
    return re.compile(name_regex(alternative))


def matches(query: str, value: Any, fuzzy: bool = False) -> bool:
    """Whether a PN value (text, PersonName, DICOM JSON object or a list of them) matches a query value."""
    folded = fold_name(value)
    if fuzzy:
        return fuzzy_matches(query, folded)
    for alternative in alternatives(query):
        if _is_universal(alternative) or _compiled(alternative).search(folded):
            return True
    return False


def fuzzy_words(query: str) -> list[str]:
    """The folded words of a fuzzy query: each must start some name component."""
    return [w for w in re.split(r"[\s^=\\,*?]+", fold(query)) if w]


def fuzzy_matches(query: str, folded: str) -> bool:
    starts = re.split(r"[\s^=\\]+", folded)
    return all(any(part.startswith(word) for part in starts) for word in fuzzy_words(query))


# --------------------------------------------------------------------------- SQL


def _glob(text: str) -> str:
    """A folded query group as a SQLite GLOB pattern: `?` stays inside a group, `[` is literal."""
    return "".join("[[]" if c == "[" else _GLOB_INSIDE if c == "?" else c for c in text)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _interior_star(alternative: str) -> bool:
    """`a*b`: a star with literal text on both sides, which GLOB/LIKE would let run across a group boundary."""
    return "*" in alternative.strip("*")


def _regex_condition(expr: Any, pattern: str) -> ColumnElement[bool]:
    """`expr` matches a regex: `~` on PostgreSQL, REGEXP on SQLite (Python's re, which SQLAlchemy's SQLite dialect registers)."""
    return expr.regexp_match(pattern)


def _after(prefix: str) -> str:
    """The smallest text greater than every text starting with `prefix` (code point order is UTF-8 byte order)."""
    following = ord(prefix[-1]) + 1
    return prefix[:-1] + chr(0xE000 if 0xD800 <= following < 0xE000 else following)


def name_parts(full: Any, groups: Any | None, query: str, dialect: str) -> list[ColumnElement[bool]] | None:
    """SQL for "the folded name in `full` matches `query`", as conditions any of which suffices (None: every
    name matches). `groups` is the same name's `all_groups` form (None where the index keeps no such
    column: then every group is looked for in `full`).

    Exact values and prefixes of the first group are index ranges on `full`; later groups are looked
    for only in names that have them (`groups > ''`), so names of one group never pay for them. Parts
    that filter rows beyond an index range come apart: callers with a key run them as a UNION (each
    on its own index), since an OR of them reads every candidate row of the table.
    """
    sqlite = dialect == "sqlite"
    parts: list[ColumnElement[bool]] = []
    for alternative in alternatives(query):
        if _is_universal(alternative):
            return None
        parts.extend(_alternative_parts(full, groups, alternative, sqlite))
    return parts or None


def name_condition(full: Any, groups: Any | None, query: str, dialect: str) -> ColumnElement[bool] | None:
    """`name_parts` as one condition."""
    parts = name_parts(full, groups, query, dialect)
    return None if parts is None else parts[0] if len(parts) == 1 else or_(*parts)


def _literal_prefix(alternative: str) -> str:
    return re.split(r"[*?]", alternative, maxsplit=1)[0]


def _regex_parts(full: Any, groups: Any | None, alternative: str, sqlite: bool) -> list[ColumnElement[bool]]:
    """Several groups, or `a*b`: the regex decides, after a cheap first cut (an index range on a literal
    prefix, else SQLite's native GLOB) so that it runs on few rows (on SQLite it is Python's re)."""
    regex = _regex_condition(full, name_regex(alternative))
    prefix = _literal_prefix(alternative)
    if GROUP not in alternative and prefix and groups is not None:
        first_cut = [full.op("GLOB")(_glob(alternative) + "*")] if sqlite else []
        later_cut = groups.op("GLOB")("*=" + _glob(alternative) + "*") if sqlite else groups.like("%=" + _like(prefix) + "%", escape="\\")
        return [
            and_(full >= prefix, full < _after(prefix), *first_cut, regex),
            and_(groups > literal_column("''"), later_cut, _regex_condition(groups, name_regex(alternative))),
        ]
    if sqlite:
        return [and_(full.op("GLOB")("*" + _glob(alternative) + "*"), regex)]
    return [regex]


def _alternative_parts(full: Any, groups: Any | None, alternative: str, sqlite: bool) -> list[ColumnElement[bool]]:
    if GROUP in alternative or _interior_star(alternative):
        return _regex_parts(full, groups, alternative, sqlite)
    if len(alternative) > 2 and alternative[0] == alternative[-1] == "*":
        # `*x*`: x holds no boundary, so any text containing it has a group containing it
        return [full.op("GLOB")(_glob(alternative)) if sqlite else _regex_condition(full, _body(alternative.strip("*")))]
    literal = "*" not in alternative and "?" not in alternative
    prefix = alternative[:-1] if alternative.endswith("*") and "*" not in alternative[:-1] and "?" not in alternative else None
    if literal:
        first = full == alternative
    elif prefix is not None:
        first = and_(full >= prefix, full < _after(prefix))
    elif sqlite:
        first = full.op("GLOB")(_glob(alternative))
    else:
        first = _regex_condition(full, "^" + _body(alternative) + "$")
    if groups is None:
        return [or_(first, _regex_condition(full, name_regex(alternative)))]
    if sqlite:
        later = groups.op("GLOB")("*=" + _glob(alternative) + ("=*" if not alternative.endswith("*") else ""))
    elif literal or prefix is not None:
        later = groups.like("%=" + _like(prefix if prefix is not None else alternative) + ("=%" if literal else "%"), escape="\\")
    else:
        later = _regex_condition(groups, GROUP + _body(alternative) + GROUP)
    # One part: both sides are index ranges, which an OR unites as cheaply as a UNION would. `> ''` is a
    # literal, not a bound parameter, so that SQLite's planner takes the partial index of names with groups.
    return [or_(first, and_(groups > literal_column("''"), later))]


def fuzzy_condition(full: Any, query: str) -> ColumnElement[bool]:
    """Fuzzy PN matching (PS3.4 C.2.2.2.1.1) as Vireo does it: each query word starts some component of the name."""
    clauses = []
    for word in fuzzy_words(query):
        pattern = _like(word)
        starts = [pattern + "%"] + [f"%{sep}{pattern}%" for sep in ("^", " ", "=", "\\\\")]
        clauses.append(or_(*(full.like(p, escape="\\") for p in starts)))
    return and_(*clauses) if clauses else full.is_not(None)


def empty_condition(full: Any) -> ColumnElement[bool]:
    """Empty value matching (`""`): the name is absent or zero length."""
    return func.coalesce(full, "") == ""


