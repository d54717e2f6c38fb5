"""Who may do what beyond reading and adding: destructive and federation actions belong to administrators.

Every signed-in user may browse, tag, make datasets, upload and start workflows. Beyond that:

* aborting, restarting or deleting a workflow or job: an administrator, or the local user
  who started it (a job another instance asked for belongs to no local user);
* confirming or rejecting a job another instance asks to run here: administrators (the
  runner's admin approves what runs on their data);
* starting a destructive DAG (`delete-series`, any DAG marked `destructive`): administrators;
* renaming or deleting a tag everywhere, renaming or deleting someone else's dataset:
  administrators (or the dataset's owner);
* instances, federation settings, users and the audit log: administrators (their routers).

Each check returns the reason in plain words (None when allowed): the API answers it with
403, the pages show it on the disabled control. The guarded actions below are what routes
and pages call, so a page event cannot do what the page would not offer.
"""

from __future__ import annotations

from typing import Any

from app import workflow_actions
from app.runtime import current_services
from core.accounts import Principal


class NotPermitted(PermissionError):
    """The signed-in user may not do this; the message says why and who may."""


def _local(owner_instance: str | None) -> bool:
    return owner_instance in (None, "", workflow_actions.instance_name())


def workflow_refusal(principal: Principal, workflow: dict[str, Any]) -> str | None:
    """Why this user may not abort, restart or delete this workflow (None: they may)."""
    if principal.is_admin:
        return None
    if workflow.get("service"):
        return "only administrators may change the platform's service workflows"
    if not _local(workflow.get("owner_instance")):
        return f"only administrators may change a workflow instance {workflow.get('owner_instance')} started"
    if workflow.get("username") == principal.username:
        return None
    return f"only administrators or {workflow.get('username') or 'its owner'}, who started it, may change this workflow"


def job_refusal(principal: Principal, job: dict[str, Any], action: str) -> str | None:
    """Why this user may not `action` (abort | restart | delete | confirm | reject) this job."""
    if action in ("confirm", "reject"):
        if principal.is_admin:
            return None
        return "only administrators of this instance may confirm or reject a job another instance asks to run here"
    if principal.is_admin:
        return None
    if not _local(job.get("owner_instance")):
        return f"only administrators may change a job instance {job.get('owner_instance')} asked to run here"
    if job.get("username") == principal.username:
        return None
    return f"only administrators or {job.get('username') or 'its owner'}, who started it, may change this job"


def start_refusal(principal: Principal, dag: dict[str, Any] | None) -> str | None:
    """Why this user may not start a workflow of this DAG (its `describe()` document)."""
    if dag is None or principal.is_admin or not dag.get("destructive"):
        return None
    return f"only administrators may run {dag['dag_id']}: it deletes data"


def tag_refusal(principal: Principal) -> str | None:
    """Renaming or deleting a tag changes every series that has it."""
    return None if principal.is_admin else "only administrators may rename or delete a tag on every series"


def dataset_refusal(principal: Principal, owner: str) -> str | None:
    """Renaming or deleting a dataset (never its series)."""
    if principal.is_admin or (owner and owner == principal.username):
        return None
    return f"only administrators or {owner or 'its owner'}, who made it, may rename or delete this dataset"


def require(reason: str | None) -> None:
    if reason:
        raise NotPermitted(reason)


# ---- guarded actions: what routes and pages call ---------------------------------------------

def act_on_job(principal: Principal, job_id: int, action: str) -> dict[str, Any]:
    require(job_refusal(principal, workflow_actions.job(job_id), action))
    return workflow_actions.act_on_job(job_id, action)


def act_on_workflow(principal: Principal, workflow_id: str, action: str) -> dict[str, Any]:
    require(workflow_refusal(principal, workflow_actions.workflow(workflow_id)))
    return workflow_actions.act_on_workflow(workflow_id, action)


def check_start(principal: Principal, dag_id: str) -> None:
    """Refuse a destructive DAG to a non-administrator (an unknown DAG is the engine's to refuse)."""
    if principal.is_admin:
        return
    registry = current_services().registry
    try:
        dag = registry.get(dag_id)
    except LookupError:
        return
    require(start_refusal(principal, {"dag_id": dag.dag_id, "destructive": dag.destructive}))


def dataset_owner(name: str) -> str:
    """Who made a dataset ('' for one a DICOM sender or an import made); LookupError when there is none."""
    from core import datasets

    with current_services().db.session() as session:
        return datasets.get_dataset(session, name).username
