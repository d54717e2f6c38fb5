"""`/api/workflows`: create, list, read, abort, restart and delete workflows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field

from app import permissions, workflow_actions
from app.api.search_params import SelectionBody
from app.auth import current_principal
from core.accounts import Principal
from core.selection import SelectionError
from core.workflows.engine import Conflict, NotFound, WorkflowError
from core.workflows.queries import MAX_PAGE, WorkflowFilter

router = APIRouter(prefix="/api/workflows", tags=["workflows"])


class NewWorkflow(BaseModel):
    name: str = Field("", max_length=200)
    dag_id: str
    dataset: str | None = Field(None, description="a whole dataset, by name")
    series: list[str] | None = Field(None, description="these SeriesInstanceUIDs")
    selection: SelectionBody | None = Field(None, description="instead of dataset/series: a search (dataset, q, filter) or picked series")
    conf: dict[str, Any] = Field(default_factory=dict)
    runners: list[str] | None = None
    timeout: float | None = Field(None, description="seconds a job may run (default: the DAG's)")


def http_error(exc: Exception) -> HTTPException:
    if isinstance(exc, NotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, Conflict):
        return HTTPException(409, str(exc))
    if isinstance(exc, LookupError):
        return HTTPException(404, str(exc).strip("'\""))
    return HTTPException(400, str(exc))


@router.post("", status_code=201)
def create_workflow(body: NewWorkflow, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    try:
        permissions.check_start(principal, body.dag_id)
    except permissions.NotPermitted as exc:
        raise HTTPException(403, str(exc)) from exc
    try:
        selection = body.selection.selection() if body.selection is not None else None
        return workflow_actions.create(
            dag_id=body.dag_id, name=body.name, dataset=body.dataset or None, series=body.series, selection=selection, conf=body.conf,
            runners=body.runners, username=principal.username, timeout=body.timeout,
        )
    except (WorkflowError, SelectionError) as exc:
        raise HTTPException(400, str(exc)) from exc


@router.get("")
def list_workflows(
    response: Response,
    status: list[str] | None = Query(None, description="only workflows with a job in this state (may repeat)"),
    user: str | None = Query(None, description="only this user's workflows"),
    dag_id: str | None = Query(None, description="only workflows of this DAG"),
    q: str | None = Query(None, description="text in the name, id, dataset or DAG id"),
    service: bool | None = Query(None, description="only service (true) or user (false) workflows"),
    limit: int = Query(1000, ge=0, le=MAX_PAGE),
    offset: int = Query(0, ge=0),
) -> list[dict[str, Any]]:
    """Workflows, newest first; the total is in the `X-Total-Count` header."""
    statuses = [s for part in status or [] for s in part.split(",") if s]
    try:
        total, items = workflow_actions.workflows(
            WorkflowFilter(status=statuses or None, username=user or None, dag_id=dag_id or None, text=q or None, service=service), limit, offset
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    response.headers["X-Total-Count"] = str(total)
    return items


@router.get("/{workflow_id}")
def get_workflow(workflow_id: str) -> dict[str, Any]:
    try:
        return workflow_actions.workflow(workflow_id)
    except LookupError as exc:
        raise http_error(exc) from exc


def _act(principal: Principal, workflow_id: str, action: str) -> dict[str, Any]:
    """Administrators, or the user who started the workflow (app/permissions.py): 403 with why for anyone else."""
    try:
        return permissions.act_on_workflow(principal, workflow_id, action)
    except permissions.NotPermitted as exc:
        raise HTTPException(403, str(exc)) from exc
    except (LookupError, Conflict, ValueError) as exc:
        raise http_error(exc) from exc


@router.post("/{workflow_id}/abort")
def abort_workflow(workflow_id: str, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _act(principal, workflow_id, "abort")


@router.post("/{workflow_id}/restart")
def restart_workflow(workflow_id: str, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _act(principal, workflow_id, "restart")


@router.delete("/{workflow_id}")
def delete_workflow(workflow_id: str, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _act(principal, workflow_id, "delete")
