"""What the Datasets page does to a selection: resolve it to series, tag, group into datasets.

Each action takes a `core.selection.Selection`: the picked series or, when nothing is picked (or
"all matching" is), every series the current search matches — never just the cards loaded in the browser.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from app.runtime import current_services
from core import datasets, tags
from core.events import TAGS_CHANGED
from core.search.query import QueryError
from core.selection import Selection


class ActionError(ValueError):
    """An action that could not be done; the message is for the user."""


def series_count(selection: Selection) -> int:
    """How many series an action on `selection` would act on (the count its dialog shows)."""
    try:
        return selection.count(current_services().search)
    except (QueryError, LookupError) as exc:  # the search went bad meanwhile (a dataset deleted in another tab)
        raise ActionError(str(exc)) from exc


def resolve(selection: Selection) -> list[str]:
    """The series UIDs an action on `selection` acts on: all of them, not a page."""
    try:
        return selection.resolve(current_services().search)
    except (QueryError, LookupError) as exc:
        raise ActionError(str(exc)) from exc


def toggle_tags(series_uid: str, active: list[str]) -> list[str]:
    """Each active tag is removed from the series if it has it, else added; returns its tags afterwards."""
    with current_services().db.engine.begin() as conn:
        current = set(tags.tags_of(conn, [series_uid])[series_uid])
        add = [t for t in active if t not in current]
        remove = [t for t in active if t in current]
        try:
            result = tags.change_tags(conn, [series_uid], add, remove)[series_uid]
        except (tags.TagError, LookupError) as exc:
            raise ActionError(str(exc)) from exc
    tags_published([series_uid])
    return result


def remove_tag(series_uid: str, tag: str) -> list[str]:
    """A card chip's X: take `tag` off this one series (one transaction); returns its tags afterwards."""
    try:
        with current_services().db.engine.begin() as conn:
            result = tags.change_tags(conn, [series_uid], [], [tag])[series_uid]
    except (tags.TagError, LookupError) as exc:
        raise ActionError(str(exc)) from exc
    tags_published([series_uid])
    return result


def tags_published(series_uids: list[str] | None) -> None:
    """Tell open pages (other tabs, other users) that these series' tags changed — after the commit, so they read the new rows."""
    current_services().bus.publish(TAGS_CHANGED, series_uids=series_uids)


def current_tags(series_uids: list[str]) -> dict[str, list[str]]:
    with current_services().db.engine.connect() as conn:
        return tags.tags_of(conn, series_uids)


def tag_counts() -> list[dict[str, Any]]:
    return current_services().search.tag_counts()


def dataset_list() -> list[dict[str, Any]]:
    with current_services().db.session() as session:
        return datasets.list_datasets(session)


def create_dataset(name: str, selection: Selection, username: str) -> int:
    uids = resolve(selection)
    try:
        with current_services().db.session() as session:
            dataset = datasets.create_dataset(session, name.strip(), uids, username, checked=True)
            return datasets.series_count(session, dataset)
    except (datasets.DatasetError, IntegrityError) as exc:
        raise ActionError(str(exc) if isinstance(exc, datasets.DatasetError) else f"dataset {name!r} exists already") from exc


def change_members(name: str, selection: Selection, *, add: bool) -> int:
    """Add the selection's series to dataset `name`, or remove them from it (the series stay in the PACS)."""
    uids = resolve(selection)
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
