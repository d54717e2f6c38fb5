"""The audit log of remote actions: jobs received, confirmed, refused, aborted; signatures and tokens refused."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from core.timeutil import isoformat, utcnow
from federation.models import AuditEvent


def record(session: Session, peer: str, action: str, detail: str = "") -> None:
    """Add one event (the caller commits; a refused request's claimed peer is kept as given)."""
    session.add(AuditEvent(time=utcnow(), peer=(peer or "")[:128], action=action[:64], detail=detail[:2000]))


def recent(session: Session, limit: int = 200, peer: str | None = None) -> list[dict[str, Any]]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)  # type: ignore[union-attr]
    if peer:
        query = query.where(AuditEvent.peer == peer)
    return [
        {"id": e.id, "time": isoformat(e.time), "peer": e.peer, "action": e.action, "detail": e.detail}
        for e in session.exec(query)
    ]
