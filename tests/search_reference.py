"""The search semantics in plain Python, one document at a time: what every backend must agree with."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from core import person_names
from core.search.analysis import COUNTER_FIELDS, LABEL_FIELDS, fold, is_identifier, vr_of, words
from core.search.query import And, Equals, Everything, Exists, Node, Not, Or, Pattern, Range, Text, parse_filter, parse_query
from core.search.service import _range_test

def values_of(doc: dict[str, Any], field: str) -> list[str]:
    if field in LABEL_FIELDS:
        return list(doc[field])
    if field in COUNTER_FIELDS:
        return [str(doc[field])]
    return list(doc["values"].get(field, []))


def matches(doc: dict[str, Any], node: Node) -> bool:
    if isinstance(node, Everything):
        return True
    if isinstance(node, And):
        return all(matches(doc, c) for c in node.children)
    if isinstance(node, Or):
        return any(matches(doc, c) for c in node.children)
    if isinstance(node, Not):
        return not matches(doc, node.child)
    if isinstance(node, Exists):
        return bool(values_of(doc, node.field))
    fields = [node.field] if node.field else list(doc["values"])  # type: ignore[union-attr]
    if isinstance(node, Text):
        # words in order inside one value (identifiers are not split into words), or the whole value as typed
        n = len(node.words)
        return any(
            fold(v) == node.whole or (not is_identifier(f) and any(tuple(w[i : i + n]) == node.words for i in range(len(w) - n + 1)))
            for f in fields for v in values_of(doc, f) for w in [words(v)]
        )
    if isinstance(node, Pattern):
        regex = re.compile(fnmatch.translate(node.pattern), re.DOTALL)
        by_group = node.field is not None and vr_of(node.field) == "PN"  # names match by any component group too
        return any(regex.match(fold(v)) or (by_group and person_names.matches(node.pattern, v)) for f in fields for v in values_of(doc, f))
    if isinstance(node, Equals):
        return any(fold(v) in node.values for v in values_of(doc, node.field))
    if isinstance(node, Range):
        accept = _range_test(node)
        return any(accept(v) for v in values_of(doc, node.field))
    raise TypeError(node)


def reference_hits(docs: dict[str, dict[str, Any]], q: str | None, filters: list[str] = (), dataset: str | None = None) -> set[str]:  # type: ignore[assignment]
    node = parse_query(q)
    chips = [parse_filter(f) for f in filters]
    return {
        uid for uid, doc in docs.items()
        if matches(doc, node) and all(matches(doc, c) for c in chips) and (dataset is None or dataset in doc["datasets"])
    }
