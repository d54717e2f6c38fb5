"""Reading workflows and jobs: the documents the API returns and the Workflow List page shows.

The list is paged on the server: one query for the page of workflows (with filters by job
status, user, DAG and text), one for their job-state counts, one for their jobs.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.engine import Connection

from core.timeutil import isoformat, utcnow
from core.workflows.context import run_dir
from core.workflows.models import Job, JobRun, Workflow
from core.workflows.runner import step_log_name
from core.workflows.states import ALL_STATES

MAX_PAGE = 10_000


@dataclass(frozen=True)
class WorkflowFilter:
    status: list[str] | None = None
    username: str | None = None
    dag_id: str | None = None
    text: str | None = None
    service: bool | None = None

    def check(self) -> None:
        bad = [s for s in self.status or [] if s not in ALL_STATES]
        if bad:
            raise ValueError(f"unknown status {', '.join(bad)}; one of {', '.join(ALL_STATES)}")


def _duration(started: datetime | None, ended: datetime | None) -> float | None:
    if started is None:
        return None
    return round(((ended or utcnow()) - started).total_seconds(), 3)


def job_document(job: Any, runs: list[Any] | None = None) -> dict[str, Any]:
    doc = {
        "id": job.id,
        "workflow_id": job.workflow_id,
        "dag_id": job.dag_id,
        "status": job.status,
        "run": job.run,
        "runner_instance": job.runner_instance,
        "owner_instance": job.owner_instance,
        "external_job_id": job.external_job_id,
        "conf": job.conf,
        "dataset": job.dataset,
        "series": job.series,
        "username": job.username,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "steps": job.steps,
        "error": job.error,
        "timeout": job.timeout,
        "role": job.role or None,
        "parent_job_id": job.parent_job_id,
        "round": job.round,
        "result": job.result,
        "created": isoformat(job.created),
        "updated": isoformat(job.updated),
        "started": isoformat(job.started),
        "ended": isoformat(job.ended),
        "duration": _duration(job.started, job.ended),
    }
    if runs is not None:
        doc["runs"] = [
            {"run": r.run, "status": r.status, "error": r.error, "steps": r.steps, "started": isoformat(r.started), "ended": isoformat(r.ended)}
            for r in runs
        ]
    return doc


def workflow_document(workflow: Any, jobs: list[Any]) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for job in jobs:
        counts[job.status] += 1
    orchestrator = next((j for j in jobs if j.role == "orchestrator"), None)
    return {
        "id": workflow.id,
        "name": workflow.name,
        "dag_id": workflow.dag_id,
        "dataset": workflow.dataset,
        # what it was started on (a search or picked series, as JSON) and the series that resolved to; older
        # workflows recorded neither, so their series are their jobs' (of the jobs read)
        "selection": workflow.selection,
        "series": workflow.series if workflow.series is not None else list(dict.fromkeys(uid for j in jobs for uid in (j.series or []))),
        "conf": workflow.conf,
        "username": workflow.username,
        "owner_instance": workflow.owner_instance,
        "service": workflow.service,
        "created": isoformat(workflow.created),
        "updated": isoformat(workflow.updated),
        "status_counts": dict(counts),
        # a federated workflow's merged result and per-round, per-runner status: its orchestrator job's result
        "result": orchestrator.result if orchestrator is not None else None,
        "jobs": [job_document(j) for j in jobs],
    }


def get_workflow(conn: Connection, workflow_id: str) -> dict[str, Any]:
    workflow = conn.execute(select(Workflow.__table__).where(Workflow.id == workflow_id)).first()  # type: ignore[attr-defined]
    if workflow is None:
        raise LookupError(f"no workflow {workflow_id}")
    jobs = conn.execute(select(Job.__table__).where(Job.workflow_id == workflow_id).order_by(Job.id)).all()  # type: ignore[attr-defined]
    return workflow_document(workflow, jobs)


def get_job(conn: Connection, job_id: int) -> dict[str, Any]:
    job = conn.execute(select(Job.__table__).where(Job.id == job_id)).first()  # type: ignore[attr-defined]
    if job is None:
        raise LookupError(f"no job {job_id}")
    runs = conn.execute(select(JobRun.__table__).where(JobRun.job_id == job_id).order_by(JobRun.run)).all()  # type: ignore[attr-defined]
    return job_document(job, runs)


def _filtered(query: Any, f: WorkflowFilter) -> Any:
    query = query.where(Workflow.deleted == False)  # noqa: E712
    if f.status:
        query = query.where(exists().where(Job.workflow_id == Workflow.id, Job.status.in_(f.status)))  # type: ignore[attr-defined]
    if f.username:
        query = query.where(Workflow.username == f.username)
    if f.dag_id:
        query = query.where(Workflow.dag_id == f.dag_id)
    if f.service is not None:
        query = query.where(Workflow.service == f.service)
    if f.text:
        pattern = "%" + re.sub(r"([%_\\])", r"\\\1", f.text.strip()) + "%"
        query = query.where(or_(Workflow.name.ilike(pattern, escape="\\"), Workflow.id.ilike(pattern, escape="\\"),  # type: ignore[attr-defined]
                                Workflow.dataset.ilike(pattern, escape="\\"), Workflow.dag_id.ilike(pattern, escape="\\")))  # type: ignore[union-attr, attr-defined]
    return query


def list_workflows(
    conn: Connection, f: WorkflowFilter, *, limit: int = 100, offset: int = 0, with_jobs: bool = True, jobs_per_workflow: int | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """One page of workflows, newest first, each with its job-state counts (and jobs)."""
    f.check()
    limit = max(0, min(limit, MAX_PAGE))
    total = conn.execute(_filtered(select(func.count()).select_from(Workflow), f)).scalar_one()
    rows = conn.execute(_filtered(select(Workflow.__table__), f).order_by(Workflow.created.desc(), Workflow.id.desc()).limit(limit).offset(max(0, offset))).all()  # type: ignore[attr-defined]
    ids = [r.id for r in rows]
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    jobs: dict[str, list[Any]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for workflow_id, status, n in conn.execute(
            select(Job.workflow_id, Job.status, func.count()).where(Job.workflow_id.in_(chunk)).group_by(Job.workflow_id, Job.status)  # type: ignore[attr-defined]
        ):
            counts[workflow_id][status] = n
        if with_jobs:
            for job in conn.execute(select(Job.__table__).where(Job.workflow_id.in_(chunk)).order_by(Job.id)):  # type: ignore[attr-defined]
                if jobs_per_workflow is None or len(jobs[job.workflow_id]) < jobs_per_workflow:
                    jobs[job.workflow_id].append(job)
    items = []
    for row in rows:
        doc = workflow_document(row, jobs[row.id])
        doc["status_counts"] = counts[row.id]
        if not with_jobs:
            doc.pop("jobs")
        items.append(doc)
    return total, items


def usernames_and_dags(conn: Connection) -> tuple[list[str], list[str]]:
    """The users and DAG ids that have workflows (the list page's filter choices)."""
    users = [u for u in conn.execute(select(Workflow.username).distinct().order_by(Workflow.username)).scalars() if u]
    dags = list(conn.execute(select(Workflow.dag_id).distinct().order_by(Workflow.dag_id)).scalars())
    return users, dags


# ---- logs and output files -------------------------------------------------------------------

def step_logs(data_dir: Path, job: dict[str, Any], run: int | None = None) -> list[dict[str, Any]]:
    """The current (or given) run's steps, each with its log file's text."""
    run = run or job["run"]
    if run == job["run"]:
        steps = job["steps"]
    else:
        past = next((r for r in job.get("runs", []) if r["run"] == run), None)
        if past is None:
            raise LookupError(f"job {job['id']} has no run {run}")
        steps = past["steps"]
    folder = run_dir(data_dir, job["id"], run) / "logs"
    out = []
    for index, step in enumerate(steps):
        path = folder / step_log_name(index, step.get("name", ""))
        text = path.read_text(errors="replace") if path.exists() else ""
        out.append({**step, "index": index, "log": text})
    return out


def step_log_path(data_dir: Path, job_id: int, run: int, index: int, name: str) -> Path:
    return run_dir(data_dir, job_id, run) / "logs" / step_log_name(index, name)


def logs_text(data_dir: Path, job: dict[str, Any], run: int | None = None, step: str | None = None) -> str:
    parts = []
    for entry in step_logs(data_dir, job, run):
        if step is not None and entry.get("name") != step and str(entry["index"] + 1) != step:
            continue
        parts.append(f"===== step {entry['index'] + 1}: {entry.get('name')} ({entry.get('state')}) =====\n{entry['log']}")
    return "\n".join(parts)


def output_files(data_dir: Path, job: dict[str, Any]) -> list[dict[str, Any]]:
    folder = run_dir(data_dir, job["id"], job["run"]) / "output"
    if not folder.is_dir():
        return []
    return [{"name": p.name, "size": p.stat().st_size} for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith(".part")]


def output_path(data_dir: Path, job: dict[str, Any], name: str) -> Path:
    if "/" in name or "\\" in name or name.startswith("."):
        raise LookupError(f"no file {name!r}")
    path = run_dir(data_dir, job["id"], job["run"]) / "output" / name
    if not path.is_file():
        raise LookupError(f"job {job['id']} has no output file {name!r}")
    return path


