"""The audit log of remote actions: in full for proven peers, counted for everyone else, and kept bounded.

A proven peer (its key signed the request) is accountable, so each of its actions gets a row:
jobs received, confirmed, refused, aborted, impersonations and updates refused. A request
nobody is proven to have sent (unsigned, a bad signature, an unknown key, a replay) costs an
attacker nothing to repeat, so those are only counted: one row per source address, kind and
minute, its `count` brought up to date every few seconds — a flood adds a handful of rows, not
one per request. `prune` keeps the table within a number of rows and an age.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy import select as select_columns
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from core.timeutil import isoformat, utcnow
from federation.models import AuditEvent

SUMMARY_WINDOW = 60.0  # seconds one summary row stands for
WRITE_EVERY = 2.0  # a summary row's count is written at most this often (and by `flush`)
MAX_SUMMARIES = 512  # distinct (source, kind) pairs tracked per window; beyond, they share one row
MANY_SOURCES = "(many sources)"


def record(session: Session, peer: str, action: str, detail: str = "", source: str = "") -> None:
    """Add one event about a proven peer or this instance's own doing (the caller commits)."""
    session.add(AuditEvent(time=utcnow(), peer=(peer or "")[:128], action=action[:64], detail=detail[:2000], verified=True,
                           source=(source or "")[:64]))


def recent(session: Session, limit: int = 200, peer: str | None = None) -> list[dict[str, Any]]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)  # type: ignore[union-attr]
    if peer:
        query = query.where(AuditEvent.peer == peer)
    return [
        {"id": e.id, "time": isoformat(e.time), "peer": e.peer, "action": e.action, "detail": e.detail,
         "verified": e.verified, "source": e.source, "count": e.count}
        for e in session.exec(query)
    ]


def prune(engine: Engine, max_rows: int, max_age: timedelta) -> int:
    """Delete events older than `max_age` and all but the newest `max_rows`; how many went."""
    table = AuditEvent.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        gone = conn.execute(delete(table).where(table.c.time < utcnow() - max_age)).rowcount or 0
        cutoff = conn.execute(select_columns(table.c.id).order_by(table.c.id.desc()).offset(max(0, max_rows)).limit(1)).scalar()
        if cutoff is not None:
            gone += conn.execute(delete(table).where(table.c.id <= cutoff)).rowcount or 0
    return int(gone)


@dataclass
class _Summary:
    row_id: int
    started: float
    count: int = 1
    written: int = 1
    written_at: float = field(default_factory=time.monotonic)
    kinds: Counter[str] = field(default_factory=Counter)
    claimed: set[str] = field(default_factory=set)

    def detail(self, source: str) -> str:
        kinds = ", ".join(f"{kind} ×{n}" for kind, n in self.kinds.most_common(8))
        claimed = ", ".join(sorted(self.claimed)[:10]) or "nobody"
        return (f"{self.count} request(s) from {source} within {int(SUMMARY_WINDOW)} s that no registered instance is proven to have sent "
                f"({kinds}); claimed to be: {claimed}")[:2000]


class RefusalTally:
    """Counts refused, unproven requests per source, kind and minute into a few summary rows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._summaries: dict[tuple[str, str], _Summary] = {}

    def add(self, source: str, action: str, kind: str, claimed: str = "") -> None:
        """One refused request from `source` (an address) that nobody is proven to have sent."""
        source = (source or "unknown")[:64]
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            key = (source, action)
            if key not in self._summaries and len(self._summaries) >= MAX_SUMMARIES:
                key = (MANY_SOURCES, action)
            summary = self._summaries.get(key)
            first = summary is None
            if summary is None:
                summary = self._summaries[key] = _Summary(row_id=0, started=now)
            else:
                summary.count += 1
            summary.kinds[kind] += 1
            if claimed and len(summary.claimed) < 50:
                summary.claimed.add(claimed[:128])
            if first:  # the first of its minute is written at once, so an admin sees it
                summary.row_id = self._insert(key[0], action, summary.detail(key[0]))
            elif summary.count != summary.written and now - summary.written_at >= WRITE_EVERY:
                self._write(key[0], summary, now)

    def flush(self) -> None:
        """Bring every summary row's count up to date (the scheduler calls this every few seconds)."""
        now = time.monotonic()
        with self._lock:
            for (source, _), summary in self._summaries.items():
                if summary.count != summary.written:
                    self._write(source, summary, now)
            self._expire(now)

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._summaries.items() if now - s.started >= SUMMARY_WINDOW]:
            summary = self._summaries.pop(key)
            if summary.count != summary.written:
                self._write(key[0], summary, now)

    def _insert(self, source: str, action: str, detail: str) -> int:
        table = AuditEvent.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            result = conn.execute(insert(table).values(time=utcnow(), peer="", action=action[:64], detail=detail, verified=False,
                                                       source=source, count=1))
            return int(result.inserted_primary_key[0])

    def _write(self, source: str, summary: _Summary, now: float) -> None:
        table = AuditEvent.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == summary.row_id).values(count=summary.count, detail=summary.detail(source)))
        summary.written, summary.written_at = summary.count, now
