"""`/api/instances`: the local instance, the registered remotes, and "sync now" (administrators only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app import federation_actions
from app.auth import admin_principal
from federation.instances import DuplicateInstance, InstanceError, UnknownInstance

router = APIRouter(prefix="/api/instances", tags=["instances"], dependencies=[Depends(admin_principal)])


class LocalChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    protocol: str | None = None
    host: str | None = None
    port: int | None = None
    token: str | None = None
    fernet_key: str | None = None
    ssl_verify: bool | None = None
    automatic_sync: bool | None = None
    sync_interval: int | None = None
    automatic_execution: bool | None = None
    fernet_encryption: bool | None = None
    allowed_dags: list[str] | None = None
    allowed_datasets: list[str] | None = None
    regenerate_token: bool = Field(False, description="give this instance a new token (remotes must be told)")
    rotate_fernet_key: bool = Field(False, description="give this instance a new Fernet key (remotes must be told)")
    created: Any = None  # read-only fields a client may send back unchanged
    updated: Any = None
    remote: Any = None
    public_key: Any = Field(None, description="read-only: comes from this instance's key file")
    key_fingerprint: Any = None
    name_locked: Any = Field(None, description="read-only: why the name cannot change now (null: it can, until the first remote)")


class RemoteDefinition(BaseModel):
    """An instance definition as the other instance's "copy instance definition" gives it (Kaapana's names accepted)."""

    name: str = Field(validation_alias=AliasChoices("name", "instance_name"))
    protocol: str = "http"
    host: str
    port: int
    token: str
    public_key: str | None = Field(None, description="ed25519:… as the remote's definition shows it; without it no sync happens")
    fernet_key: str | None = None
    ssl_verify: bool = Field(True, validation_alias=AliasChoices("ssl_verify", "ssl_check"))
    ca_bundle: str | None = Field(None, description="PEM certificates to verify the remote's TLS certificate with")


class RemoteChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    protocol: str | None = None
    host: str | None = None
    port: int | None = None
    token: str | None = None
    public_key: str | None = None
    fernet_key: str | None = None
    ssl_verify: bool | None = None
    ca_bundle: str | None = None


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except UnknownInstance as exc:
        raise HTTPException(404, str(exc)) from exc
    except DuplicateInstance as exc:
        raise HTTPException(409, str(exc)) from exc
    except InstanceError as exc:
        raise HTTPException(400, str(exc)) from exc


@router.get("")
def list_instances() -> list[dict[str, Any]]:
    """The local instance first (`remote: false`), then the remotes with their health and last synced settings."""
    return _call(federation_actions.all_instances)  # type: ignore[no-any-return]


@router.get("/local")
def get_local() -> dict[str, Any]:
    return _call(federation_actions.local_instance)  # type: ignore[no-any-return]


@router.put("/local")
def put_local(body: LocalChanges) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True, exclude={"created", "updated", "remote", "key_fingerprint", "name_locked"})
    return _call(federation_actions.change_local, changes)  # type: ignore[no-any-return]


@router.post("", status_code=201)
def add_remote(body: RemoteDefinition) -> dict[str, Any]:
    return _call(federation_actions.add_remote, body.model_dump())  # type: ignore[no-any-return]


@router.post("/sync")
def sync_now() -> dict[str, Any]:
    """Poll every remote now; answers with each remote's outcome."""
    return _call(federation_actions.sync_now)  # type: ignore[no-any-return]


@router.get("/{name}")
def get_remote(name: str) -> dict[str, Any]:
    return _call(federation_actions.remote_instance, name)  # type: ignore[no-any-return]


@router.put("/{name}")
def put_remote(name: str, body: RemoteChanges) -> dict[str, Any]:
    return _call(federation_actions.change_remote, name, body.model_dump(exclude_unset=True))  # type: ignore[no-any-return]


@router.delete("/{name}")
def delete_remote(name: str) -> dict[str, Any]:
    return _call(federation_actions.delete_remote, name)  # type: ignore[no-any-return]


audit_router = APIRouter(prefix="/api/audit", tags=["instances"], dependencies=[Depends(admin_principal)])


@audit_router.get("")
def audit_log(limit: int = Query(200, ge=1, le=5000), peer: str | None = None) -> list[dict[str, Any]]:
    """Remote actions, newest first: jobs received, confirmed, refused, aborted; refused signatures and envelopes."""
    return federation_actions.audit_log(limit, peer)
