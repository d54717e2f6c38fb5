"""Datasets: named groups of series. A series can be in many; deleting a dataset never deletes series."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import select
from sqlmodel import Session

from core.catalog import unknown_series
from core.db import insert_ignoring_duplicates
from core.models import Dataset, DatasetSeries
from core.search.indexing import note_changed
from core.timeutil import isoformat, utcnow

_FORBIDDEN = re.compile(r"[/\\\x00-\x1f]")


class DatasetError(ValueError):
    """A dataset request that cannot be honoured; the message says why."""


class DatasetExists(DatasetError):
    pass


def check_name(name: str) -> str:
    if not name or name != name.strip() or len(name) > 128 or _FORBIDDEN.search(name) or name.startswith("."):
        raise DatasetError("a dataset name is 1–128 characters, without slashes, control characters, surrounding spaces or a leading dot")
    return name


def _counts(session: Session) -> dict[int, int]:
    query = select(DatasetSeries.dataset_id, func.count()).group_by(DatasetSeries.dataset_id)  # type: ignore[arg-type]
    return dict(session.execute(query).all())  # type: ignore[arg-type]


def describe(dataset: Dataset, series_count: int) -> dict[str, Any]:
    return {"name": dataset.name, "series": series_count, "created": isoformat(dataset.created), "updated": isoformat(dataset.updated), "username": dataset.username}


def list_datasets(session: Session) -> list[dict[str, Any]]:
    counts = _counts(session)
    return [describe(d, counts.get(d.id or 0, 0)) for d in session.exec(select(Dataset).order_by(Dataset.name))]


def get_dataset(session: Session, name: str) -> Dataset:
    dataset = session.exec(select(Dataset).where(Dataset.name == name)).first()
    if dataset is None:
        raise LookupError(f"no dataset {name!r}")
    return dataset


def series_count(session: Session, dataset: Dataset) -> int:
    return session.execute(select(func.count()).select_from(DatasetSeries).where(DatasetSeries.dataset_id == dataset.id)).scalar_one()


def _check_series(session: Session, uids: list[str]) -> None:
    problem = unknown_series(session, uids)
    if problem:
        raise DatasetError(problem)


def _add_members(session: Session, dataset: Dataset, uids: list[str]) -> None:
    """Bulk membership insert (a dataset made from a query can hold a million series)."""
    conn = session.connection()
    insert = insert_ignoring_duplicates(conn.engine, DatasetSeries.__table__)  # type: ignore[arg-type]
    now = utcnow()
    for start in range(0, len(uids), 1000):
        conn.execute(insert, [{"dataset_id": dataset.id, "series_uid": uid, "added": now} for uid in uids[start : start + 1000]])
    note_changed(conn, uids)


def create_dataset(session: Session, name: str, series: list[str], username: str = "", *, checked: bool = False) -> Dataset:
    """A new dataset holding `series` (`checked`: the UIDs come from the index itself, skip the lookup)."""
    check_name(name)
    if session.exec(select(Dataset).where(Dataset.name == name)).first() is not None:
        raise DatasetExists(f"dataset {name!r} exists already")
    uids = list(dict.fromkeys(series))
    if not checked:
        _check_series(session, uids)
    dataset = Dataset(name=name, username=username)
    session.add(dataset)
    session.flush()
    _add_members(session, dataset, uids)
    return dataset


def change_members(session: Session, name: str, add: list[str], remove: list[str], *, checked: bool = False) -> Dataset:
    dataset = get_dataset(session, name)
    add = list(dict.fromkeys(add))
    remove = [uid for uid in dict.fromkeys(remove) if uid not in set(add)]
    if not checked:
        _check_series(session, add)
    _add_members(session, dataset, add)
    for start in range(0, len(remove), 1000):
        chunk = remove[start : start + 1000]
        session.execute(delete(DatasetSeries).where(DatasetSeries.dataset_id == dataset.id, DatasetSeries.series_uid.in_(chunk)))  # type: ignore[attr-defined]
    note_changed(session.connection(), remove)
    dataset.updated = utcnow()
    session.add(dataset)
    session.flush()
    return dataset


def rename_dataset(session: Session, name: str, new_name: str) -> Dataset:
    dataset = get_dataset(session, name)
    check_name(new_name)
    if new_name != name and session.exec(select(Dataset).where(Dataset.name == new_name)).first() is not None:
        raise DatasetExists(f"dataset {new_name!r} exists already")
    dataset.name = new_name
    dataset.updated = utcnow()
    session.add(dataset)
    session.flush()
    members = list(session.execute(select(DatasetSeries.series_uid).where(DatasetSeries.dataset_id == dataset.id)).scalars())
    note_changed(session.connection(), members)
    return dataset


def delete_dataset(session: Session, name: str) -> None:
    """Remove the dataset; its series stay in the PACS (and in any other dataset)."""
    dataset = get_dataset(session, name)
    members = list(session.execute(select(DatasetSeries.series_uid).where(DatasetSeries.dataset_id == dataset.id)).scalars())
    session.execute(delete(DatasetSeries).where(DatasetSeries.dataset_id == dataset.id))  # type: ignore[arg-type]
    session.delete(dataset)
    session.flush()
    note_changed(session.connection(), members)
