"""`/api/jobs/{id}`: one job, its logs and output files; abort, restart, confirm, reject, delete.

Changing a job is for administrators or the user who started it; confirming or rejecting a
job another instance asks to run here is for administrators (app/permissions.py): 403 with why.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, PlainTextResponse, Response

from app import permissions, remote_jobs, workflow_actions
from app.api.workflows import http_error
from app.auth import current_principal
from core.accounts import Principal
from core.workflows.engine import Conflict

router = APIRouter(prefix="/api/jobs", tags=["workflows"])


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except permissions.NotPermitted as exc:
        raise HTTPException(403, str(exc)) from exc
    except (LookupError, Conflict, ValueError) as exc:
        raise http_error(exc) from exc


def _fetched(fn: Any, *args: Any) -> Any:
    """What a remote job's runner gave (through the signed channel), or its refusal in plain words."""
    try:
        return _call(fn, *args)
    except remote_jobs.FetchRefused as exc:
        raise HTTPException(exc.status, exc.message) from exc


@router.get("/{job_id}")
def get_job(job_id: int) -> dict[str, Any]:
    """The job; one that ran on another instance also has `remote`: the runner, its job id, what it mirrored back."""
    job = _call(workflow_actions.job, job_id)
    view = remote_jobs.remote_view(job)
    return {**job, "remote": view} if view is not None else job  # type: ignore[no-any-return]


@router.get("/{job_id}/logs", response_class=PlainTextResponse)
def get_logs(job_id: int, run: int | None = Query(None, ge=1, description="an earlier run (default: the current one)"),
             step: str | None = Query(None, description="one step, by name or number"),
             full: bool = Query(False, description="a remote job: the whole logs, fetched from its runner now "
                                                   "(without: the mirrored tails)")) -> str:
    if full:
        return _fetched(remote_jobs.full_log, job_id, step)  # type: ignore[no-any-return]
    return _call(workflow_actions.job_logs, job_id, run, step)  # type: ignore[no-any-return]


@router.get("/{job_id}/steps")
def get_steps(job_id: int, run: int | None = Query(None, ge=1)) -> list[dict[str, Any]]:
    """Each step's state, attempts, times and log text."""
    return _call(workflow_actions.job_steps, job_id, run)  # type: ignore[no-any-return]


@router.get("/{job_id}/files")
def list_files(job_id: int) -> list[dict[str, Any]]:
    """Files the job produced for download (download-series, collect-metadata); a remote job's as its runner reported them."""
    job = _call(workflow_actions.job, job_id)
    if remote_jobs.is_remote(job):
        return remote_jobs.files(job)
    return _call(workflow_actions.job_files, job_id)  # type: ignore[no-any-return]


@router.get("/{job_id}/files/{name}", response_model=None)
def get_file(job_id: int, name: str) -> FileResponse | Response:
    """One output file; a remote job's is fetched from its runner now."""
    job = _call(workflow_actions.job, job_id)
    if remote_jobs.is_remote(job):
        data = _fetched(remote_jobs.file_bytes, job_id, name)
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})
    path = _call(workflow_actions.job_file, job_id, name)
    return FileResponse(path, filename=name)


@router.post("/{job_id}/abort")
def abort_job(job_id: int, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _call(permissions.act_on_job, principal, job_id, "abort")  # type: ignore[no-any-return]


@router.post("/{job_id}/restart")
def restart_job(job_id: int, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _call(permissions.act_on_job, principal, job_id, "restart")  # type: ignore[no-any-return]


@router.post("/{job_id}/confirm")
def confirm_job(job_id: int, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _call(permissions.act_on_job, principal, job_id, "confirm")  # type: ignore[no-any-return]


@router.post("/{job_id}/reject")
def reject_job(job_id: int, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    """The runner's admin refuses a job another instance asked to run here (it ends `aborted`)."""
    return _call(permissions.act_on_job, principal, job_id, "reject")  # type: ignore[no-any-return]


@router.delete("/{job_id}")
def delete_job(job_id: int, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _call(permissions.act_on_job, principal, job_id, "delete")  # type: ignore[no-any-return]
