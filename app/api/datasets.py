"""`/api/datasets`: list, create, change membership, delete (never deleting series)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from app.auth import current_principal
from app.runtime import current_services
from core import datasets
from core.accounts import Principal

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


class NewDataset(BaseModel):
    name: str
    series: list[str] = Field(default_factory=list)


class MembershipChange(BaseModel):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


@router.get("")
def list_datasets() -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return datasets.list_datasets(session)


@router.post("", status_code=201)
def create_dataset(body: NewDataset, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            dataset = datasets.create_dataset(session, body.name, body.series, principal.username)
            session.flush()
        except IntegrityError as exc:  # created at the same moment by a DICOM sender or another client
            raise HTTPException(409, f"dataset {body.name!r} exists already") from exc
        except datasets.DatasetExists as exc:
            raise HTTPException(409, str(exc)) from exc
        except datasets.DatasetError as exc:
            raise HTTPException(400, str(exc)) from exc
        return datasets.describe(dataset, datasets.series_count(session, dataset))


@router.get("/{name}")
def get_dataset(name: str) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            dataset = datasets.get_dataset(session, name)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        return datasets.describe(dataset, datasets.series_count(session, dataset))


@router.post("/{name}/series")
def change_members(name: str, body: MembershipChange) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            dataset = datasets.change_members(session, name, body.add, body.remove)
        except IntegrityError as exc:  # the same series added at the same moment by a DICOM sender
            raise HTTPException(409, "the dataset changed at the same time; try again") from exc
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except datasets.DatasetError as exc:
            raise HTTPException(400, str(exc)) from exc
        return datasets.describe(dataset, datasets.series_count(session, dataset))


@router.delete("/{name}")
def delete_dataset(name: str) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            datasets.delete_dataset(session, name)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
    return {"deleted": name}
