"""The words of every distinct value, in the database's full-text index: FTS5 on SQLite, GIN on PostgreSQL.

Search asks "which values contain these words, in order" of the value dictionary — hundreds of
thousands of distinct values — not of every series; the in-memory columns then turn value ids
into series at numpy speed. Both backends hold the same pre-analysed words (core.search.analysis),
so neither engine's own analyser ever decides what `LUNG1-0042` means.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from sqlalchemy import Connection

from core.db import executemany

MAX_POSITION = 16383


class ValueWords(Protocol):
    def add(self, conn: Connection, values: list[tuple[int, list[str]]]) -> None:
        """Index new values: (value id, folded words)."""

    def matching(self, conn: Connection, words: tuple[str, ...]) -> np.ndarray:
        """Ids of the values containing `words` consecutively."""


class SqliteValueWords:
    """A contentless FTS5 table keyed by value id (values never change, so rows are never rewritten)."""

    def add(self, conn: Connection, values: list[tuple[int, list[str]]]) -> None:
        executemany(conn, "INSERT INTO search_value_text (rowid, words) VALUES (?, ?)", [(i, " ".join(w)) for i, w in values if w])

    def matching(self, conn: Connection, words: tuple[str, ...]) -> np.ndarray:
        phrase = '"' + " ".join(words) + '"'
        cursor = conn.exec_driver_sql("SELECT rowid FROM search_value_text WHERE search_value_text MATCH ?", (phrase,))
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)


class PostgresValueWords:
    """`search_value.words`, a tsvector Vireo builds itself (never `to_tsvector`), GIN-indexed."""

    def add(self, conn: Connection, values: list[tuple[int, list[str]]]) -> None:
        executemany(conn, "UPDATE search_value SET words = CAST(? AS tsvector) WHERE id = ?", [(tsvector(w), i) for i, w in values if w])

    def matching(self, conn: Connection, words: tuple[str, ...]) -> np.ndarray:
        query = " <-> ".join(f"'{w}'" for w in words)
        cursor = conn.exec_driver_sql("SELECT id FROM search_value WHERE words @@ CAST(%s AS tsquery)", (query,))
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)


def tsvector(words: list[str]) -> str:
    """A tsvector literal with positions (phrases need them); words are letters and digits only."""
    positions: dict[str, list[int]] = {}
    for position, word in enumerate(words[:MAX_POSITION], start=1):
        entry = positions.setdefault(word, [])
        if len(entry) < 256:
            entry.append(position)
    return " ".join(f"'{word}':{','.join(map(str, p))}" for word, p in positions.items())


_SQLITE = SqliteValueWords()
_POSTGRES = PostgresValueWords()


def value_words_for(conn: Connection) -> ValueWords:
    return _POSTGRES if conn.dialect.name == "postgresql" else _SQLITE
