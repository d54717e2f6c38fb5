"""Lucene syntax → Vireo's query form: the only module that knows the query language.

`parse_query` turns what a user typed into a small tree (`Node`) that every backend —
SQLite FTS5, PostgreSQL tsvector, the in-memory columns and the reference evaluator —
evaluates with the same meaning:

- a bare term matches a series when one attribute value contains its words, in order;
- a term with `*` or `?` matches whole attribute values (case- and accent-insensitive);
- `Field:…` restricts any of these to one field; `Field:*` means the field has a value;
- `[a TO b]` / `{a TO b}` are inclusive/exclusive ranges on dates and numbers;
- juxtaposed terms are ANDed (Lucene's default is OR; ours is what people expect of a filter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from luqum import tree as lq
from luqum.exceptions import IllegalCharacterError, ParseError
from luqum.parser import parser

from core.search.analysis import canonical_field, fold, suggestion, words

MAX_QUERY = 4000
MAX_NESTING = 40  # parentheses, NOT and -/+ inside one another: far beyond any typed query, far below Python's recursion limit


class QueryError(ValueError):
    """A query that cannot be run; `position` (0-based) points at the culprit when known."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message if position is None else f"{message} (at position {position})")
        self.message = message
        self.position = position


@dataclass(frozen=True)
class Everything:
    pass


@dataclass(frozen=True)
class Text:
    """Consecutive folded words inside one value of `field` (any attribute when None).

    `whole` is the folded term as typed: a value equal to it matches too, which is how a pasted
    UID finds its series (identifiers are kept whole, not split into words)."""

    field: str | None
    words: tuple[str, ...]
    whole: str = ""


@dataclass(frozen=True)
class Pattern:
    """A folded whole-value glob (`*`, `?`) on `field` (any attribute when None)."""

    field: str | None
    pattern: str

    @property
    def prefix(self) -> str | None:
        """The literal prefix when the pattern is `prefix*` (served by the keyword index)."""
        body = self.pattern[:-1]
        if self.pattern.endswith("*") and "*" not in body and "?" not in body:
            return body
        return None


@dataclass(frozen=True)
class Equals:
    """Whole values of `field`, compared folded: what a filter chip means."""

    field: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Range:
    field: str
    low: str | None
    high: str | None
    include_low: bool
    include_high: bool


@dataclass(frozen=True)
class Exists:
    field: str


@dataclass(frozen=True)
class And:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    child: "Node"


Node = Union[Everything, Text, Pattern, Equals, Range, Exists, And, Or, Not]

# A caret between letters is a DICOM person-name separator (DOE^JOHN), not Lucene's boost.
_NAME_CARET = re.compile(r"(?<=[^\s\\^])\^(?=[^\W\d_])")
_POSITION = re.compile(r"at position (\d+)")


def parse_query(text: str | None) -> Node:
    """The query tree of `text`; blank or `*` is everything. Raises QueryError with a position."""
    if text is None or not text.strip() or text.strip() == "*":
        return Everything()
    if len(text) > MAX_QUERY:
        raise QueryError(f"the query is longer than {MAX_QUERY} characters")
    prepared = _NAME_CARET.sub(r"\\^", text)
    try:
        tree = parser.parse(prepared)
    except (IllegalCharacterError, ParseError) as exc:
        unbalanced = _unbalanced(text)
        if unbalanced is not None:
            raise QueryError(*unbalanced) from None
        position = _position(str(exc))
        raise QueryError(_readable(str(exc), text), len(text) if position is None else position) from None
    _check_nesting(tree)
    return _simplify(_convert(tree, None))


def _check_nesting(tree: lq.Item) -> None:
    """QueryError for a query nested deeper than MAX_NESTING (the tree is walked with a stack, not recursion)."""
    stack: list[tuple[lq.Item, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise QueryError(f"the query nests parentheses or operators more than {MAX_NESTING} deep", getattr(node, "pos", None))
        stack.extend((child, depth + 1) for child in getattr(node, "children", ()))


def _unbalanced(text: str) -> tuple[str, int] | None:
    """The first quote, parenthesis or range bracket that is never closed (what users get wrong most)."""
    opened: list[tuple[str, int]] = []
    quote: int | None = None
    escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quote is not None:
            if char == '"':
                quote = None
        elif char == '"':
            quote = i
        elif char in "([{":
            opened.append((char, i))
        elif char in ")]}":
            if not opened or (char == ")") != (opened[-1][0] == "("):
                return f"{char!r} closes nothing", i
            opened.pop()
    if quote is not None:
        return "this quote is never closed", quote
    if opened:
        char, i = opened[-1]
        return ("this parenthesis is never closed" if char == "(" else "this range is never closed"), i
    return None


def _position(message: str) -> int | None:
    match = _POSITION.search(message)
    return int(match.group(1)) if match else None


def _readable(message: str, text: str) -> str:
    if "end of expression" in message:
        return "the query ends too early: an operator without a term, or an unclosed parenthesis or range"
    if "Illegal character" in message:
        return "unclosed quote or a character the query language does not allow"
    match = re.search(r"unexpected\s+'(.*?)'", message)
    if match:
        return f"unexpected {match.group(1)!r}: check operators, parentheses and quotes"
    return "the query is not valid Lucene syntax"


def field_name(raw: str, position: int | None = None) -> str:
    """A canonical field name, or a QueryError naming the unknown one."""
    canonical = canonical_field(raw)
    if canonical is None:
        raise QueryError(f"unknown field {raw!r}{suggestion(raw)}; fields are DICOM keywords, tags or dataset", position)
    return canonical


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _convert(node: lq.Item, field: str | None) -> Node:
    pos = getattr(node, "pos", None)
    if isinstance(node, lq.SearchField):
        if field is not None:
            raise QueryError(f"a field inside a field ({node.name}) cannot be searched", pos)
        return _convert(node.expr, field_name(node.name, pos))
    if isinstance(node, (lq.Group, lq.FieldGroup)):
        return _convert(node.expr, field)
    if isinstance(node, lq.AndOperation):
        return And(tuple(_convert(c, field) for c in node.children))
    if isinstance(node, lq.UnknownOperation):  # juxtaposition: AND, and documented as such
        return And(tuple(_convert(c, field) for c in node.children))
    if isinstance(node, lq.OrOperation):
        return Or(tuple(_convert(c, field) for c in node.children))
    if isinstance(node, (lq.Not, lq.Prohibit)):
        return Not(_convert(node.a, field))
    if isinstance(node, lq.Plus):
        return _convert(node.a, field)
    if isinstance(node, lq.Boost):  # no ranking: a boost changes nothing
        return _convert(node.expr, field)
    if isinstance(node, lq.Phrase):
        return _text(field, _unescape(node.value[1:-1]))
    if isinstance(node, lq.Word):
        return _word(field, node.value, pos)
    if isinstance(node, lq.Range):
        if field is None:
            raise QueryError("a range needs a field, e.g. StudyDate:[20200101 TO 20201231]", pos)
        low, high = _bound(node.low), _bound(node.high)
        return Range(field, low, high, bool(node.include_low), bool(node.include_high))
    if isinstance(node, lq.Regex):
        raise QueryError("regular expressions (/…/) are not supported; use * and ? wildcards", pos)
    if isinstance(node, (lq.Fuzzy, lq.Proximity)):
        raise QueryError("fuzzy (~) and proximity searches are not supported", pos)
    raise QueryError(f"unsupported query element {node!s}", pos)


def _bound(node: lq.Item) -> str | None:
    value = _unescape(str(getattr(node, "value", node))).strip('"')
    return None if value == "*" else value


def _text(field: str | None, value: str) -> Node:
    tokens = tuple(words(value))
    if not tokens:
        return Everything() if field is None else Exists(field)
    return Text(field, tokens, fold(value.strip()))


def _word(field: str | None, raw: str, pos: int | None) -> Node:
    if raw == "*":
        return Everything() if field is None else Exists(field)
    # wildcards are the unescaped * and ?; an escaped one is a literal character
    plain = re.sub(r"\\.", "", raw)
    if "*" in plain or "?" in plain:
        pattern = fold(re.sub(r"\\(.)", lambda m: "[" + m.group(1) + "]" if m.group(1) in "*?[" else m.group(1), raw))
        return Pattern(field, pattern)
    return _text(field, _unescape(raw))


def _simplify(node: Node) -> Node:
    """Flatten nested ANDs/ORs and drop `Everything` from ANDs: fewer, larger backend calls."""
    if isinstance(node, (And, Or)):
        kind = type(node)
        flat: list[Node] = []
        for child in (_simplify(c) for c in node.children):
            flat.extend(child.children if isinstance(child, kind) else (child,))
        if isinstance(node, And):
            flat = [c for c in flat if not isinstance(c, Everything)] or [Everything()]
        elif any(isinstance(c, Everything) for c in flat):
            return Everything()
        return flat[0] if len(flat) == 1 else kind(tuple(flat))
    if isinstance(node, Not):
        return Not(_simplify(node.child))
    return node


def parse_filter(text: str) -> Equals:
    """`Field:v1,v2` (values may be "quoted" to hold commas) → Equals. Raises QueryError."""
    if ":" not in text:
        raise QueryError(f"a filter is Field:value[,value…], not {text!r}")
    raw_field, raw_values = text.split(":", 1)
    field = field_name(raw_field)
    values = _split_values(raw_values)
    if not values:
        raise QueryError(f"the filter on {field} has no values")
    return Equals(field, tuple(fold(v) for v in values))


def _split_values(text: str) -> list[str]:
    values: list[str] = []
    for match in re.finditer(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^,]*))\s*(?:,|$)', text):
        quoted, plain = match.group(1), match.group(2)
        value = _unescape(quoted) if quoted is not None else (plain or "").strip()
        if value:
            values.append(value)
        if match.end() >= len(text):
            break
    return list(dict.fromkeys(values))
