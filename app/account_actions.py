"""What a signed-in person may do with accounts and tokens, for the Settings page and `/api`.

Every action re-reads the acting user: a page left open, or a token, must not outlive a
disabled account or a lost admin role. A new password, a disabled or a removed account end
the user's browser sessions (other browsers and open tabs go to the login page).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app import browser_session
from app.auth import credentials
from app.runtime import current_services
from core import accounts
from core.accounts import AccountError, Principal
from core.models import User
from core.timeutil import isoformat


def acting_user(session: Session, principal: Principal, *, admin: bool = False) -> User:
    """The page's user as the database knows them now: a page left open must not outlive a disabled account."""
    user = session.get(User, principal.user_id)
    if user is None or user.disabled:
        raise AccountError("your account was disabled or removed: log in again")
    if admin and not user.is_admin:
        raise AccountError("only administrators may do this")
    return user


def change_password(principal: Principal, current: str, new: str, keep_session: str | None = None) -> int:
    """Set a new password; every other browser session of the user ends (`keep_session`: the one asking). Returns how many."""
    with current_services().db.session() as session:
        user = acting_user(session, principal)
        if not accounts.password_matches(user.password_hash, current):
            raise AccountError("the current password is wrong")
        accounts.set_password(session, user, new)
    credentials.clear()
    return browser_session.end_user_sessions(principal.user_id, keep=keep_session)


def sessions_of(principal: Principal) -> int:
    """How many browsers are logged in as this user."""
    return browser_session.session_count(principal.user_id)


def token_rows(principal: Principal) -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return [{"id": t.id, "name": t.name, "prefix": t.prefix + "…", "created": isoformat(t.created), "last_used": isoformat(t.last_used) or "never"}
                for t in accounts.list_tokens(session, principal.user_id)]


def create_token(principal: Principal, name: str) -> str:
    with current_services().db.session() as session:
        acting_user(session, principal)
        return accounts.create_token(session, principal.user_id, name)[1]


def revoke_token(principal: Principal, token_id: int) -> None:
    with current_services().db.session() as session:
        acting_user(session, principal)
        accounts.revoke_token(session, principal.user_id, token_id)


def user_rows() -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return [{"username": u.username, "role": "admin" if u.is_admin else "user", "status": "disabled" if u.disabled else "active",
                 "last_login": isoformat(u.last_login) or "never"} for u in accounts.list_users(session)]


def user_action(principal: Principal, action: str, username: str, password: str = "", is_admin: bool = False) -> None:
    ended: int | None = None
    with current_services().db.session() as session:
        acting_user(session, principal, admin=True)
        if action == "add":
            accounts.create_user(session, username, password, is_admin=is_admin)
        elif action in ("disable", "enable"):
            user = accounts.set_disabled(session, principal, username, action == "disable")
            ended = user.id if action == "disable" else None
        elif action == "remove":
            ended = accounts.remove_user(session, principal, username)
    credentials.clear()
    if ended is not None:
        browser_session.end_user_sessions(ended)
