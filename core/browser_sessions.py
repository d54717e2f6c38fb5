"""Browser login sessions, one row each, so that ending them is a database fact, not a hope.

A session is a random token in an HttpOnly cookie; only its SHA-256 is stored, so a copy of
the database opens no browser. Each login makes a new token (an id planted in a browser
before login never becomes a logged-in session), and logout, "log out everywhere", a
disabled account and a new password end rows here, which every later request and every
event of an open tab checks. Each session also carries its own CSRF token, which Vireo's
pages send with their state-changing requests (app/csrf.py).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import Column, ForeignKey, delete
from sqlmodel import Field, Session, SQLModel, select

from core.models import User
from core.timeutil import UTCDateTime, utcnow


class BrowserSession(SQLModel, table=True):
    """One logged-in browser: who, until when, and the CSRF token its pages carry."""

    __tablename__ = "browser_session"
    id: Optional[int] = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(sa_column=Column(ForeignKey("user.id", ondelete="CASCADE"), nullable=False, index=True))
    csrf_token: str = Field(max_length=64)
    created: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    expires: datetime = Field(sa_type=UTCDateTime, nullable=False)


@dataclass(frozen=True)
class LiveSession:
    """What a request needs to know about the session its cookie names."""

    token_hash: str
    user_id: int
    username: str
    is_admin: bool
    csrf_token: str
    expires: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, user_id: int, hours: float) -> tuple[LiveSession, str]:
    """A new session for this user; the plain token (for the cookie) is returned once and never stored."""
    token = secrets.token_urlsafe(32)
    row = BrowserSession(token_hash=token_hash(token), user_id=user_id, csrf_token=secrets.token_urlsafe(32),
                         expires=utcnow() + timedelta(hours=hours))
    session.add(row)
    session.flush()
    user = session.get(User, user_id)
    assert user is not None
    return _live(row, user), token


def find_live(session: Session, hashed: str) -> LiveSession | None:
    """The session with this token hash if it has not ended or expired and its user may still log in."""
    found = session.exec(select(BrowserSession, User).join(User, User.id == BrowserSession.user_id)  # type: ignore[arg-type]
                         .where(BrowserSession.token_hash == hashed)).first()
    if found is None:
        return None
    row, user = found
    if row.expires <= utcnow() or user.disabled:
        return None
    return _live(row, user)


def end_session(session: Session, hashed: str) -> None:
    session.exec(delete(BrowserSession).where(BrowserSession.token_hash == hashed))  # type: ignore[call-overload]


def end_user_sessions(session: Session, user_id: int, *, keep: str | None = None) -> list[str]:
    """End every session of a user (but `keep`, the one asking, if given); returns the ended token hashes."""
    query = select(BrowserSession.token_hash).where(BrowserSession.user_id == user_id)
    if keep is not None:
        query = query.where(BrowserSession.token_hash != keep)
    ended = list(session.exec(query))
    if ended:
        session.exec(delete(BrowserSession).where(BrowserSession.token_hash.in_(ended)))  # type: ignore[call-overload,attr-defined]
    return ended


def count_sessions(session: Session, user_id: int) -> int:
    now = utcnow()
    return len(list(session.exec(select(BrowserSession.id).where(BrowserSession.user_id == user_id, BrowserSession.expires > now))))


def prune_expired(session: Session) -> int:
    """Drop rows past their expiry (they are refused anyway): the table holds live sessions only."""
    result = session.exec(delete(BrowserSession).where(BrowserSession.expires <= utcnow()))  # type: ignore[call-overload]
    return int(result.rowcount or 0)


def _live(row: BrowserSession, user: User) -> LiveSession:
    assert user.id is not None
    return LiveSession(row.token_hash, user.id, user.username, user.is_admin, row.csrf_token, row.expires)
