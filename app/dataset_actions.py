"""What the Datasets page does to a selection: resolve it to series, tag, group into datasets.

A selection is either explicit series UIDs or, when nothing is selected (or "all matching" is),
every series the current search matches — never just the cards loaded in the browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.runtime import current_services
from core import datasets, tags
from core.search.service import Selection


@dataclass(frozen=True)
class Target:
    """The series an action hits: `uids` when some are selected, else everything `search` matches."""

    search: Selection
    uids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def explicit(self) -> bool:
        return bool(self.uids)

    def resolve(self) -> list[str]:
        return list(self.uids) if self.uids else current_services().search.series_uids(self.search)

    def count(self) -> int:
        return len(self.uids) if self.uids else current_services().search.count(self.search)


class ActionError(ValueError):
    """An action that could not be done; the message is for the user."""


def toggle_tags(series_uid: str, active: list[str]) -> list[str]:
    """Each active tag is removed from the series if it has it, else added; returns its tags afterwards."""
    with current_services().db.engine.begin() as conn:
        current = set(tags.tags_of(conn, [series_uid])[series_uid])
        add = [t for t in active if t not in current]
        remove = [t for t in active if t in current]
        try:
            return tags.change_tags(conn, [series_uid], add, remove)[series_uid]
        except (tags.TagError, LookupError) as exc:
            raise ActionError(str(exc)) from exc


def tag_counts() -> list[dict[str, Any]]:
    return current_services().search.tag_counts()


def dataset_list() -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return datasets.list_datasets(session)


def create_dataset(name: str, target: Target, username: str) -> int:
    uids = target.resolve()
    try:
        with current_services().db.session() as session:
            dataset = datasets.create_dataset(session, name.strip(), uids, username, checked=True)
            return datasets.series_count(session, dataset)
    except (datasets.DatasetError, IntegrityError) as exc:
        raise ActionError(str(exc) if isinstance(exc, datasets.DatasetError) else f"dataset {name!r} exists already") from exc


def change_members(name: str, target: Target, *, add: bool) -> int:
    """Add the target's series to dataset `name`, or remove them from it (the series stay in the PACS)."""
    uids = target.resolve()
    try:
        with current_services().db.session() as session:
            dataset = datasets.change_members(session, name, uids if add else [], [] if add else uids, checked=True)
            return datasets.series_count(session, dataset)
    except LookupError as exc:
        raise ActionError(str(exc)) from exc
    except IntegrityError as exc:
        raise ActionError("the dataset changed at the same time; try again") from exc


def rename_dataset(name: str, new_name: str) -> None:
    try:
        with current_services().db.session() as session:
            datasets.rename_dataset(session, name, new_name.strip())
    except (LookupError, datasets.DatasetError) as exc:
        raise ActionError(str(exc)) from exc


def delete_dataset(name: str) -> None:
    try:
        with current_services().db.session() as session:
            datasets.delete_dataset(session, name)
    except LookupError as exc:
        raise ActionError(str(exc)) from exc
