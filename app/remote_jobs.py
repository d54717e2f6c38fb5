"""A job that ran on another instance, as its owner sees it: which instance ran it, the mirrored steps, logs and files.

The status updates carry a snapshot within limits (`federation.job_mirror`): log tails and a
file list. The full log of a step and the files themselves are fetched from the runner when
someone asks (`federation.fetch`): the owner's copy is never more than the limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app import workflow_actions
from app.runtime import current_services
from core.workflows.queries import logs_text
from federation import job_mirror
from federation.fetch import FetchRefused

__all__ = ["FetchRefused", "file_bytes", "files", "full_log", "is_remote", "remote_view"]


def _data_dir() -> Path:
    return Path(workflow_actions.data_dir())


def is_remote(job: dict[str, Any]) -> bool:
    """The job ran (or runs) on another instance than this one."""
    return job.get("runner_instance") not in ("", None, workflow_actions.instance_name())


def remote_view(job: dict[str, Any]) -> dict[str, Any] | None:
    """Who ran the job and what it reported beyond its status (None for a job that runs here)."""
    if not is_remote(job):
        return None
    manifest = job_mirror.manifest(_data_dir(), job["id"], job["run"]) or {}
    return {
        "runner": job["runner_instance"], "runner_job_id": manifest.get("runner_job_id", job.get("external_job_id")),
        "mirrored": manifest.get("mirrored"), "log_sizes": manifest.get("log_sizes", {}), "files": manifest.get("files", []),
        "limits": job_mirror.LIMITS,
    }


def files(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The result files the runner reported (they stay on the runner until fetched)."""
    view = remote_view(job) or {}
    return [{**f, "remote": True} for f in view.get("files", [])]


def _runner_job(job_id: int) -> dict[str, Any]:
    job = workflow_actions.job(job_id)
    if not is_remote(job):
        raise FetchRefused(f"job {job_id} runs on this instance: its logs and files are here", 400)
    return job


def full_log(job_id: int, step: str | None = None) -> str:
    """The whole log of each step (or of one step, by name or number), fetched from the runner now."""
    job = _runner_job(job_id)
    federation = current_services().federation
    parts = []
    for index, entry in enumerate(job["steps"]):
        if step is not None and entry.get("name") != step and str(index + 1) != step:
            continue
        text = federation.fetch_from_runner(job["runner_instance"], job_id, "log", step=index).decode(errors="replace")
        parts.append(f"===== step {index + 1}: {entry.get('name')} ({entry.get('state')}) =====\n{text}")
    if step is not None and not parts:
        raise FetchRefused(f"job {job_id} has no step {step!r}", 404)
    return "\n".join(parts)


def step_log(job_id: int, index: int) -> str:
    """The whole log of step `index` (0-based), fetched from the runner now."""
    job = _runner_job(job_id)
    return current_services().federation.fetch_from_runner(job["runner_instance"], job_id, "log", step=index).decode(errors="replace")


def mirrored_log(job: dict[str, Any], step: str | None = None) -> str:
    """The log tails kept here (what `GET /api/jobs/{id}/logs` gives without `full`)."""
    return logs_text(_data_dir(), job, None, step)


def file_bytes(job_id: int, name: str) -> bytes:
    """One result file, fetched from the runner now."""
    job = _runner_job(job_id)
    if name not in {f["name"] for f in files(job)}:
        raise FetchRefused(f"job {job_id} has no result file {name!r}", 404)
    return current_services().federation.fetch_from_runner(job["runner_instance"], job_id, "file", name=name)
