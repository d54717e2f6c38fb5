"""`/api/tags`: tag and untag many series at once (atomic per series), list, rename and delete tags."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from app import permissions
from app.auth import current_principal
from app.runtime import current_services
from core.accounts import Principal
from core import tags
from core.events import TAGS_CHANGED

router = APIRouter(prefix="/api/tags", tags=["tags"])


class TagChange(BaseModel):
    series: list[str] = Field(description="SeriesInstanceUIDs")
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class TagCount(BaseModel):
    tag: str
    count: int


class TagRename(BaseModel):
    name: str


@router.post("", response_model=dict[str, list[str]])
def change_tags(body: TagChange) -> dict[str, list[str]]:
    """Add and remove tags; answers the tags of each series afterwards (`{uid: [tag…]}`)."""
    if not body.series:
        raise HTTPException(400, "name at least one series")
    if not body.add and not body.remove:
        raise HTTPException(400, "name tags to add or remove")
    try:
        with current_services().db.engine.begin() as conn:
            result = tags.change_tags(conn, body.series, body.add, body.remove)
    except tags.TagError as exc:
        raise HTTPException(400, str(exc)) from exc
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    _published(list(result))
    return result


def _published(series_uids: list[str] | None) -> None:
    """Open Datasets pages show the change live (after the commit, so they read the new rows)."""
    current_services().bus.publish(TAGS_CHANGED, series_uids=series_uids)


@router.get("", response_model=list[TagCount])
def list_tags() -> list[dict[str, object]]:
    """Every tag with the number of series that have it, most used first."""
    return current_services().search.tag_counts()


@router.put("/{tag}")
def rename_tag(tag: str, body: TagRename, principal: Principal = Depends(current_principal)) -> dict[str, object]:
    if reason := permissions.tag_refusal(principal):
        raise HTTPException(403, reason)
    try:
        with current_services().db.engine.begin() as conn:
            count = tags.rename_tag(conn, tag, body.name)
    except tags.TagError as exc:
        raise HTTPException(400, str(exc)) from exc
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    _published(None)
    return {"tag": body.name.strip(), "series": count}


@router.delete("/{tag}")
def delete_tag(tag: str, principal: Principal = Depends(current_principal)) -> dict[str, object]:
    if reason := permissions.tag_refusal(principal):
        raise HTTPException(403, reason)
    try:
        with current_services().db.engine.begin() as conn:
            count = tags.delete_tag(conn, tag)
    except tags.TagError as exc:
        raise HTTPException(400, str(exc)) from exc
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    _published(None)
    return {"deleted": tag, "series": count}
