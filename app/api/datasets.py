"""`/api/datasets`: list, create (from series or from a query), change membership, rename, delete (never deleting series)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from app.api.search_params import SelectionBody, search_errors
from app import permissions
from app.auth import current_principal
from app.runtime import current_services
from core import datasets
from core.accounts import Principal

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


class DatasetModel(BaseModel):
    name: str
    series: int
    created: str
    updated: str
    username: str


class NewDataset(BaseModel):
    name: str
    series: list[str] = Field(default_factory=list, description="SeriesInstanceUIDs")
    query: SelectionBody | None = Field(None, description="also every series matching this query (all of them, not a page)")


class MembershipChange(BaseModel):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)
    add_query: SelectionBody | None = Field(None, description="add every series matching this query")
    remove_query: SelectionBody | None = Field(None, description="remove every series matching this query")


class DatasetRename(BaseModel):
    name: str


def _matching(query: SelectionBody | None) -> list[str]:
    if query is None:
        return []
    with search_errors():
        return current_services().search.series_uids(query.selection())


def _require_owner(principal: Principal, name: str) -> None:
    """Renaming or deleting: administrators or the user who made the dataset (app/permissions.py)."""
    try:
        reason = permissions.dataset_refusal(principal, permissions.dataset_owner(name))
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    if reason:
        raise HTTPException(403, reason)


@router.get("", response_model=list[DatasetModel])
def list_datasets() -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return datasets.list_datasets(session)


@router.post("", status_code=201, response_model=DatasetModel)
def create_dataset(body: NewDataset, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    matching = _matching(body.query)
    with current_services().db.session() as session:
        try:
            dataset = datasets.create_dataset(session, body.name, body.series, principal.username)
            if matching:
                datasets.change_members(session, body.name, matching, [], checked=True)
            session.flush()
        except IntegrityError as exc:  # created at the same moment by a DICOM sender or another client
            raise HTTPException(409, f"dataset {body.name!r} exists already") from exc
        except datasets.DatasetExists as exc:
            raise HTTPException(409, str(exc)) from exc
        except datasets.DatasetError as exc:
            raise HTTPException(400, str(exc)) from exc
        return datasets.describe(dataset, datasets.series_count(session, dataset))


@router.get("/{name}", response_model=DatasetModel)
def get_dataset(name: str) -> dict[str, Any]:
    with current_services().db.session() as session:
        try:
            dataset = datasets.get_dataset(session, name)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        return datasets.describe(dataset, datasets.series_count(session, dataset))


@router.post("/{name}/series", response_model=DatasetModel)
def change_members(name: str, body: MembershipChange) -> dict[str, Any]:
    add_matching, remove_matching = _matching(body.add_query), _matching(body.remove_query)
    with current_services().db.session() as session:
        try:
            dataset = datasets.change_members(session, name, body.add, body.remove + remove_matching)
            if add_matching:
                datasets.change_members(session, name, add_matching, [], checked=True)
        except IntegrityError as exc:  # the same series added at the same moment by a DICOM sender
            raise HTTPException(409, "the dataset changed at the same time; try again") from exc
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except datasets.DatasetError as exc:
            raise HTTPException(400, str(exc)) from exc
        return datasets.describe(dataset, datasets.series_count(session, dataset))


@router.put("/{name}", response_model=DatasetModel)
def rename_dataset(name: str, body: DatasetRename, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    _require_owner(principal, name)
    with current_services().db.session() as session:
        try:
            dataset = datasets.rename_dataset(session, name, body.name)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except datasets.DatasetExists as exc:
            raise HTTPException(409, str(exc)) from exc
        except datasets.DatasetError as exc:
            raise HTTPException(400, str(exc)) from exc
        return datasets.describe(dataset, datasets.series_count(session, dataset))


@router.delete("/{name}")
def delete_dataset(name: str, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    _require_owner(principal, name)
    with current_services().db.session() as session:
        try:
            datasets.delete_dataset(session, name)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
    return {"deleted": name, "series_kept": True}
