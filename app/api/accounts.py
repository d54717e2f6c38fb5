"""`/api/me`, `/api/users` (administrators) and `/api/tokens`: accounts, browser sessions and API tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from app import account_actions, browser_session
from app.auth import admin_principal, credentials, current_principal
from app.runtime import current_services
from core import accounts
from core.accounts import AccountError, Principal
from core.models import ApiToken, User
from core.timeutil import isoformat

router = APIRouter(prefix="/api", tags=["accounts"])


class NewUser(BaseModel):
    username: str
    password: str
    is_admin: bool = False


class UserChange(BaseModel):
    disabled: bool | None = None
    password: str | None = None


class PasswordChange(BaseModel):
    current_password: str
    new_password: str


class NewToken(BaseModel):
    name: str


def user_json(user: User) -> dict[str, Any]:
    return {
        "username": user.username, "is_admin": user.is_admin, "disabled": user.disabled,
        "created": isoformat(user.created), "last_login": isoformat(user.last_login),
    }


def token_json(token: ApiToken) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "prefix": token.prefix, "created": isoformat(token.created), "last_used": isoformat(token.last_used)}


@router.get("/me")
def me(principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return {"username": principal.username, "is_admin": principal.is_admin}


@router.post("/me/password")
def change_password(body: PasswordChange, request: Request, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    """A new password ends the user's other browser sessions (the asking browser's own stays)."""
    try:
        ended = account_actions.change_password(principal, body.current_password, body.new_password, browser_session.cookie_hash(request))
    except AccountError as exc:
        raise HTTPException(400, str(exc)) from exc
    return {"status": "password changed", "sessions_ended": ended}


@router.get("/me/sessions")
def my_sessions(principal: Principal = Depends(current_principal)) -> dict[str, int]:
    """How many browsers are logged in as you."""
    return {"sessions": account_actions.sessions_of(principal)}


@router.delete("/me/sessions")
def log_out_everywhere(principal: Principal = Depends(current_principal)) -> dict[str, int]:
    """End every browser session of yours, this browser's too: open tabs go to the login page."""
    return {"sessions_ended": browser_session.end_user_sessions(principal.user_id)}


@router.get("/users")
def list_users(_: Principal = Depends(admin_principal)) -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return [user_json(u) for u in accounts.list_users(session)]


@router.post("/users", status_code=201)
def add_user(body: NewUser, _: Principal = Depends(admin_principal)) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            user = accounts.create_user(session, body.username, body.password, is_admin=body.is_admin)
        except AccountError as exc:
            raise HTTPException(409 if "exists" in str(exc) else 400, str(exc)) from exc
        return user_json(user)


@router.put("/users/{username}")
def change_user(username: str, body: UserChange, principal: Principal = Depends(admin_principal)) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            user = accounts.find_user(session, username)
            if user is None:
                raise LookupError(f"no user {username!r}")
            if body.disabled is not None:
                user = accounts.set_disabled(session, principal, username, body.disabled)
            if body.password is not None:
                accounts.set_password(session, user, body.password)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except AccountError as exc:
            raise HTTPException(400, str(exc)) from exc
        result = user_json(user)
        changed_id = user.id
    credentials.clear()
    if body.disabled or body.password is not None:  # a disabled account or a new password: its browsers log in again
        assert changed_id is not None
        browser_session.end_user_sessions(changed_id)
    return result


@router.delete("/users/{username}")
def remove_user(username: str, principal: Principal = Depends(admin_principal)) -> dict[str, str]:
    with current_services().db.session() as session:
        try:
            removed = accounts.remove_user(session, principal, username)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except AccountError as exc:
            raise HTTPException(400, str(exc)) from exc
    credentials.clear()
    browser_session.end_user_sessions(removed)  # the rows went with the user; open tabs must notice at once
    return {"deleted": username}


@router.get("/tokens")
def list_tokens(principal: Principal = Depends(current_principal)) -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return [token_json(t) for t in accounts.list_tokens(session, principal.user_id)]


@router.post("/tokens", status_code=201)
def create_token(body: NewToken, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            row, token = accounts.create_token(session, principal.user_id, body.name)
        except AccountError as exc:
            raise HTTPException(400, str(exc)) from exc
        return {**token_json(row), "token": token}


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: int, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            accounts.revoke_token(session, principal.user_id, token_id)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
    return {"revoked": token_id}
