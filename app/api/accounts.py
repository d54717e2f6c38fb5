"""`/api/me`, `/api/users` (administrators) and `/api/tokens`: accounts and API tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from app import account_actions
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
def change_password(body: PasswordChange, principal: Principal = Depends(current_principal)) -> dict[str, str]:
    try:
        account_actions.change_password(principal, body.current_password, body.new_password)
    except AccountError as exc:
        raise HTTPException(400, str(exc)) from exc
    return {"status": "password changed"}


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
    credentials.clear()
    return result


@router.delete("/users/{username}")
def remove_user(username: str, principal: Principal = Depends(admin_principal)) -> dict[str, str]:
    with current_services().db.session() as session:
        try:
            accounts.remove_user(session, principal, username)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except AccountError as exc:
            raise HTTPException(400, str(exc)) from exc
    credentials.clear()
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
