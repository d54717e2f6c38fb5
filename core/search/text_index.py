"""The words of every series, in the database's own full-text index: FTS5 on SQLite, GIN on PostgreSQL.

Both hold the same pre-analysed tokens (core.search.analysis) in two columns:
`body` has every value's words plus its whole-value keyword token; `fielded` has the same
prefixed with the field's id (`f12_lung`, `f12__<hex>`), so `Field:term` is one index
lookup. Neither engine's own analyser ever sees DICOM text, so both answer alike.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Connection, bindparam, text

from core.db import executemany
from core.search.analysis import fold, folded_words, is_identifier, keyword
from core.search.query import And, Equals, Node, Not, Or, Pattern, Text, is_label

Row = tuple[int, dict[str, list[str]], dict[str, int]]  # doc id, values by field, field ids
MAX_POSITION = 16383


def document_tokens(values: dict[str, list[str]], fields: dict[str, int]) -> tuple[list[str], list[str]]:
    """(body, fielded) token lists of one document; each value ends with its keyword token."""
    body: list[str] = []
    fielded: list[str] = []
    for field, strings in values.items():
        field_id = fields[field]
        for value in strings:
            plain, qualified = _value_tokens(field_id, value)
            body.extend(plain)
            fielded.extend(qualified)
    return body, fielded


@lru_cache(maxsize=262144)
def _value_tokens(field_id: int, value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tokens of one value, plain and field-qualified (values repeat a lot: cached)."""
    folded = fold(value)
    tokens = (*folded_words(folded), keyword(folded))
    prefix = f"f{field_id}_"
    return tokens, tuple(prefix + t for t in tokens)


def is_textual(node: Node) -> bool:
    """Can the text index answer `node` on its own?"""
    if isinstance(node, Text):
        return not is_label(node.field)
    if isinstance(node, Pattern):
        return node.prefix is not None and not is_label(node.field)
    if isinstance(node, Equals):
        return is_identifier(node.field)
    if isinstance(node, (And, Or)):
        if isinstance(node, Or):
            return all(is_textual(c) for c in node.children)
        positive = [c for c in node.children if not isinstance(c, Not)]
        negated = [c.child for c in node.children if isinstance(c, Not)]
        return bool(positive) and all(is_textual(c) for c in (*positive, *negated))
    if isinstance(node, Not):
        return False  # only inside an AND with something positive (handled by And above)
    return False


class TextIndex(Protocol):
    def insert(self, conn: Connection, rows: list[Row]) -> None: ...
    def delete(self, conn: Connection, rows: list[Row]) -> None: ...
    def match(self, conn: Connection, node: Node, fields: dict[str, int]) -> np.ndarray: ...


class NoMatch(Exception):
    """A leaf that can match nothing (a field the index has never seen)."""


class SqliteTextIndex:
    """FTS5, contentless: a delete repeats the document's tokens, which come from search_document."""

    def insert(self, conn: Connection, rows: list[Row]) -> None:
        params = [(doc_id, " ".join(b), " ".join(f)) for doc_id, values, fields in rows for b, f in [document_tokens(values, fields)]]
        executemany(conn, "INSERT INTO search_text (rowid, body, fielded) VALUES (?, ?, ?)", params)

    def delete(self, conn: Connection, rows: list[Row]) -> None:
        params = [(doc_id, " ".join(b), " ".join(f)) for doc_id, values, fields in rows for b, f in [document_tokens(values, fields)]]
        executemany(conn, "INSERT INTO search_text (search_text, rowid, body, fielded) VALUES ('delete', ?, ?, ?)", params)

    def match(self, conn: Connection, node: Node, fields: dict[str, int]) -> np.ndarray:
        try:
            expression = self._compile(node, fields)
        except NoMatch:
            return np.empty(0, dtype=np.int64)
        cursor = conn.exec_driver_sql("SELECT rowid FROM search_text WHERE search_text MATCH ?", (expression,))
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)

    def _compile(self, node: Node, fields: dict[str, int]) -> str:
        if isinstance(node, Text):
            column, prefix = self._column(node.field, fields)
            return f'{column} : "{" ".join(prefix + w for w in node.words)}"'
        if isinstance(node, Pattern):
            column, prefix = self._column(node.field, fields)
            return f'{column} : "{prefix}{keyword(node.prefix or "")}" *'
        if isinstance(node, Equals):
            column, prefix = self._column(node.field, fields)
            return f"{column} : (" + " OR ".join(f'"{prefix}{keyword(v)}"' for v in node.values) + ")"
        if isinstance(node, Or):
            parts = []
            for child in node.children:
                try:
                    parts.append(self._compile(child, fields))
                except NoMatch:
                    continue
            if not parts:
                raise NoMatch
            return "(" + " OR ".join(parts) + ")"
        if isinstance(node, And):
            positive = [self._compile(c, fields) for c in node.children if not isinstance(c, Not)]
            expression = "(" + " AND ".join(positive) + ")"
            for child in node.children:
                if isinstance(child, Not):
                    try:
                        expression = f"({expression} NOT {self._compile(child.child, fields)})"
                    except NoMatch:
                        continue
            return expression
        raise TypeError(f"not a text query: {node}")

    @staticmethod
    def _column(field: str | None, fields: dict[str, int]) -> tuple[str, str]:
        if field is None:
            return "body", ""
        if field not in fields:
            raise NoMatch
        return "fielded", f"f{fields[field]}_"


class PostgresTextIndex:
    """tsvector columns built from our tokens (never `to_tsvector`), GIN-indexed; tsquery built the same way."""

    def insert(self, conn: Connection, rows: list[Row]) -> None:
        params = [(doc_id, _tsvector(b), _tsvector(f)) for doc_id, values, fields in rows for b, f in [document_tokens(values, fields)]]
        executemany(
            conn,
            "INSERT INTO search_text (id, body, fielded) VALUES (?, CAST(? AS tsvector), CAST(? AS tsvector)) "
            "ON CONFLICT (id) DO UPDATE SET body = excluded.body, fielded = excluded.fielded",
            params,
        )

    def delete(self, conn: Connection, rows: list[Row]) -> None:
        if rows:
            conn.execute(text("DELETE FROM search_text WHERE id IN :ids").bindparams(bindparam("ids", expanding=True)), {"ids": [r[0] for r in rows]})

    def match(self, conn: Connection, node: Node, fields: dict[str, int]) -> np.ndarray:
        params: dict[str, Any] = {}
        try:
            condition = self._compile(node, fields, params)
        except NoMatch:
            return np.empty(0, dtype=np.int64)
        cursor = conn.execute(text(f"SELECT id FROM search_text WHERE {condition}"), params)
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)

    def _compile(self, node: Node, fields: dict[str, int], params: dict[str, Any]) -> str:
        if isinstance(node, Text):
            column, prefix = SqliteTextIndex._column(node.field, fields)
            return self._param(column, " <-> ".join(f"'{prefix}{w}'" for w in node.words), params)
        if isinstance(node, Pattern):
            column, prefix = SqliteTextIndex._column(node.field, fields)
            return self._param(column, f"'{prefix}{keyword(node.prefix or '')}':*", params)
        if isinstance(node, Equals):
            column, prefix = SqliteTextIndex._column(node.field, fields)
            return self._param(column, " | ".join(f"'{prefix}{keyword(v)}'" for v in node.values), params)
        if isinstance(node, Or):
            parts = []
            for child in node.children:
                try:
                    parts.append(self._compile(child, fields, params))
                except NoMatch:
                    continue
            if not parts:
                raise NoMatch
            return "(" + " OR ".join(parts) + ")"
        if isinstance(node, And):
            parts = [self._compile(c, fields, params) for c in node.children if not isinstance(c, Not)]
            for child in node.children:
                if isinstance(child, Not):
                    try:
                        parts.append("NOT " + self._compile(child.child, fields, params))
                    except NoMatch:
                        continue
            return "(" + " AND ".join(parts) + ")"
        raise TypeError(f"not a text query: {node}")

    @staticmethod
    def _param(column: str, tsquery: str, params: dict[str, Any]) -> str:
        name = f"q{len(params)}"
        params[name] = tsquery
        return f"({column} @@ CAST(:{name} AS tsquery))"


def _tsvector(tokens: list[str]) -> str:
    positions: dict[str, list[int]] = {}
    for position, token in enumerate(tokens[:MAX_POSITION], start=1):
        entry = positions.setdefault(token, [])
        if len(entry) < 256:
            entry.append(position)
    return " ".join(f"'{token}':{','.join(map(str, p))}" for token, p in positions.items())


_SQLITE = SqliteTextIndex()
_POSTGRES = PostgresTextIndex()


def text_index_for(conn: Connection) -> TextIndex:
    return _POSTGRES if conn.dialect.name == "postgresql" else _SQLITE
