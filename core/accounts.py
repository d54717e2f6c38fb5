"""Users, passwords (argon2) and API tokens.

Passwords are hashed with argon2id; API tokens are random and only their SHA-256 is
stored, so a copy of the database gives nobody a way in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from core.models import ApiToken, User
from core.timeutil import utcnow

ADMIN = "admin"
TOKEN_PREFIX = "vireo_"
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()


class AccountError(ValueError):
    """A request about accounts that cannot be honoured; the message is for the person who made it."""


@dataclass(frozen=True)
class Principal:
    """Who is making a request: what the rest of the app needs to know about a user."""

    user_id: int
    username: str
    is_admin: bool


def principal(user: User) -> Principal:
    assert user.id is not None
    return Principal(user.id, user.username, user.is_admin)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def find_user(session: Session, username: str) -> User | None:
    return session.exec(select(User).where(User.username == username)).first()


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    if not USERNAME_PATTERN.match(username):
        raise AccountError("a user name is 1–64 letters, digits or . _ @ -")
    _check_password(password)
    if find_user(session, username) is not None:
        raise AccountError(f"user {username!r} exists already")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def ensure_admin(session: Session, password: str) -> str | None:
    """Create `admin` on first start; returns the generated password when none was given."""
    if find_user(session, ADMIN) is not None:
        return None
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    user = User(username=ADMIN, password_hash=hash_password(password), is_admin=True)
    session.add(user)
    return generated


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The enabled user with these credentials, or None. Always spends one hash, to not leak which names exist."""
    user = find_user(session, username)
    if user is None:
        password_matches(_DUMMY_HASH, password)
        return None
    if not password_matches(user.password_hash, password) or user.disabled:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login = utcnow()
    session.add(user)
    return user


def set_password(session: Session, user: User, new_password: str) -> None:
    _check_password(new_password)
    user.password_hash = hash_password(new_password)
    session.add(user)


def set_disabled(session: Session, acting: Principal, username: str, disabled: bool) -> User:
    user = _other_user(session, acting, username)
    user.disabled = disabled
    session.add(user)
    return user


def remove_user(session: Session, acting: Principal, username: str) -> int:
    """Remove another user; returns the id they had (their sessions and tokens go with them)."""
    user = _other_user(session, acting, username)
    assert user.id is not None
    removed = user.id
    session.delete(user)
    return removed


def _other_user(session: Session, acting: Principal, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise LookupError(f"no user {username!r}")
    if user.id == acting.user_id:
        raise AccountError("you cannot disable or remove your own account")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(User.username)))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user_id: int, name: str) -> tuple[ApiToken, str]:
    """A new API token; the plain token is returned once and never stored."""
    name = name.strip()
    if not name or len(name) > 128:
        raise AccountError("a token needs a name of 1–128 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user_id, name=name, token_hash=_token_hash(token), prefix=token[: len(TOKEN_PREFIX) + 4])
    session.add(row)
    session.flush()
    return row, token


def list_tokens(session: Session, user_id: int) -> list[ApiToken]:
    query = select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked.is_(None)).order_by(ApiToken.created)  # type: ignore[union-attr]
    return list(session.exec(query))


def revoke_token(session: Session, user_id: int, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user_id or row.revoked is not None:
        raise LookupError(f"no token {token_id}")
    row.revoked = utcnow()
    session.add(row)


def user_for_token(session: Session, token: str) -> User | None:
    """The enabled owner of a live token, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == _token_hash(token))).first()
    if row is None or row.revoked is not None:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    now = utcnow()
    if row.last_used is None or (now - row.last_used).total_seconds() > 60:
        row.last_used = now  # at most once a minute: a busy script must not compete with ingest for writes
        session.add(row)
    return user


_DUMMY_HASH = hash_password(secrets.token_hex(8))
