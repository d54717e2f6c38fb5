"""What the instance routers and the Instance Overview page do: one function per action."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import Session

from app.runtime import current_services
from core.workflows.models import Job, Workflow
from federation import audit, instances
from federation.sync import Federation


def federation() -> Federation:
    return current_services().federation


def _known() -> tuple[set[str], set[str]]:
    services = current_services()
    dags = {d["dag_id"] for d in services.registry.describe() if d.get("dag_id")}
    from core import datasets as dataset_store

    with services.db.session() as session:
        names = {d["name"] for d in dataset_store.list_datasets(session)}
    return dags, names


def _local_doc(session: Session) -> dict[str, Any]:
    return {**instances.describe(instances.local(session)), "name_locked": instances.name_lock(session)}


def all_instances() -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return [_local_doc(session)] + [instances.describe(r) for r in instances.remotes(session)]


def local_instance() -> dict[str, Any]:
    with current_services().db.session() as session:
        return _local_doc(session)


def change_local(changes: dict[str, Any]) -> dict[str, Any]:
    """Change the local instance's settings; a new name (only while no remote is registered) carries its jobs along."""
    dags, datasets = _known()
    with current_services().db.session() as session:
        me = instances.local(session)
        before, old_name = me.sync_interval, me.name
        row = instances.change_local(session, dags, datasets, changes)
        if row.name != old_name:
            for table in (Job, Workflow):
                session.execute(update(table).where(table.owner_instance == old_name).values(owner_instance=row.name))  # type: ignore[arg-type]
            session.execute(update(Job).where(Job.runner_instance == old_name).values(runner_instance=row.name))  # type: ignore[arg-type]
        doc = _local_doc(session)
        session.commit()
    if doc["name"] != old_name:
        federation().renamed(old_name, doc["name"])
    if doc["sync_interval"] != before:
        federation().reschedule(doc["sync_interval"])
    return doc


def add_remote(definition: dict[str, Any]) -> dict[str, Any]:
    with current_services().db.session() as session:
        doc = instances.describe(instances.add_remote(session, definition))
        session.commit()
        return doc


def remote_instance(name: str) -> dict[str, Any]:
    with current_services().db.session() as session:
        return instances.describe(instances.remote(session, name))


def change_remote(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    with current_services().db.session() as session:
        doc = instances.describe(instances.change_remote(session, name, changes))
        session.commit()
        return doc


def delete_remote(name: str) -> dict[str, Any]:
    with current_services().db.session() as session:
        doc = instances.delete_remote(session, name)
        session.commit()
        return doc


def sync_now() -> dict[str, Any]:
    """Poll every remote now; {remote name: outcome}."""
    return federation().sync_all()


def audit_log(limit: int = 200, peer: str | None = None) -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return audit.recent(session, limit, peer)


def remote_runners() -> dict[str, dict[str, list[str]]]:
    """Each registered remote with the DAGs and datasets it allows (as of its last sync): what it may be asked to run."""
    with current_services().db.session() as session:
        return {r.name: {"dags": list(r.allowed_dags), "datasets": list(r.allowed_datasets)} for r in instances.remotes(session)}
