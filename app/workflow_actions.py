"""What the workflow routers and pages do: one function per action, shared so both behave the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.runtime import current_services
from core.selection import Selection
from core.workflows import queries
from core.workflows.engine import WorkflowEngine


def engine() -> WorkflowEngine:
    return current_services().workflows


def data_dir() -> Path:
    return engine().config.data_dir


def dags(visible_only: bool = False) -> list[dict[str, Any]]:
    registry = current_services().registry
    registry.refresh()  # DAG files added or changed since
    described = registry.describe()
    return [d for d in described if not visible_only or (d.get("dag_id") and d.get("ui_visible"))]


def datasets() -> list[dict[str, Any]]:
    from core import datasets as dataset_store

    with current_services().db.session() as session:
        return dataset_store.list_datasets(session)


def instance_name() -> str:
    return engine().instance_name


def default_name(dag_id: str, selection: Selection | None = None, dataset: str | None = None, series: list[str] | None = None) -> str:
    """A name that says what runs on what: "collect-metadata on brain-mr", "… on 3 series", "… on query CT in brain-mr".

    The DAG id and a timestamp (the engine's fallback) told people nothing the Created column
    does not; the input is what tells two workflows of one DAG apart.
    """
    if selection is None and series:
        selection = Selection.of_series(series)
    if selection is None and dataset:
        selection = Selection.of(dataset=dataset)
    if selection is None:
        return dag_id
    if selection.explicit:
        n = len(selection.series)
        return f"{dag_id} on {n:,} series"
    described = selection.describe()
    return f"{dag_id} on {'every series' if described == 'all series' else described}"[:200]


def create(**request: Any) -> dict[str, Any]:
    """Start a workflow; a blank name becomes `default_name` of its DAG and input."""
    if not (request.get("name") or "").strip() and request.get("dag_id"):
        request["name"] = default_name(request["dag_id"], request.get("selection"), request.get("dataset"), request.get("series"))
    workflow_id = engine().create_workflow(**request)
    return workflow(workflow_id)


def workflow(workflow_id: str) -> dict[str, Any]:
    with engine().db.engine.connect() as conn:
        return queries.get_workflow(conn, workflow_id)


def workflows(f: queries.WorkflowFilter, limit: int, offset: int, with_jobs: bool = True, jobs_per_workflow: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    with engine().db.engine.connect() as conn:
        return queries.list_workflows(conn, f, limit=limit, offset=offset, with_jobs=with_jobs, jobs_per_workflow=jobs_per_workflow)


def filter_choices() -> tuple[list[str], list[str]]:
    with engine().db.engine.connect() as conn:
        return queries.usernames_and_dags(conn)


def job(job_id: int) -> dict[str, Any]:
    with engine().db.engine.connect() as conn:
        return queries.get_job(conn, job_id)


def job_logs(job_id: int, run: int | None = None, step: str | None = None) -> str:
    return queries.logs_text(data_dir(), job(job_id), run, step)


def job_steps(job_id: int, run: int | None = None) -> list[dict[str, Any]]:
    return queries.step_logs(data_dir(), job(job_id), run)


def step_log(job_id: int, run: int, index: int, name: str, offset: int = 0) -> tuple[str, int]:
    """New text of one step's log from byte `offset` on (a viewer follows a running step with it)."""
    path = queries.step_log_path(data_dir(), job_id, run, index, name)
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(2_000_000)
    except FileNotFoundError:
        return "", offset
    return data.decode(errors="replace"), offset + len(data)


def job_files(job_id: int) -> list[dict[str, Any]]:
    return queries.output_files(data_dir(), job(job_id))


def job_file(job_id: int, name: str) -> Path:
    return queries.output_path(data_dir(), job(job_id), name)


def act_on_job(job_id: int, action: str) -> dict[str, Any]:
    """abort | restart | confirm | delete one job; returns the job afterwards."""
    actions = {"abort": engine().abort_job, "restart": engine().restart_job, "confirm": engine().confirm_job, "delete": engine().delete_job,
               "reject": engine().abort_job}
    before = job(job_id)
    actions[action](job_id)
    after = job(job_id)
    if before["owner_instance"] not in ("", instance_name()) and after["status"] != before["status"]:
        _audit_remote_job(before, {"confirm": "confirmed", "reject": "rejected", "abort": "aborted"}.get(action, action))
    return after


def _audit_remote_job(job_: dict[str, Any], action: str) -> None:
    """A job another instance owns was acted on here: that goes into the federation audit log."""
    from federation.audit import record

    with current_services().db.session() as session:
        record(session, job_["owner_instance"], action, f"job {job_['id']} ({job_['dag_id']}) by this instance's user")


def act_on_workflow(workflow_id: str, action: str) -> dict[str, Any]:
    """abort | restart | delete one workflow (all its jobs); returns the workflow afterwards."""
    actions = {"abort": engine().abort_workflow, "restart": engine().restart_workflow, "delete": engine().delete_workflow}
    actions[action](workflow_id)
    return workflow(workflow_id)


def input_count(selection: Selection) -> int:
    """How many series a workflow started on `selection` now would get (the Workflow Execution page says it before Start)."""
    return selection.count(current_services().search)
