"""`/api/settings/datasets`: the calling user's Datasets page settings (view, card, sort, field display)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException
from pydantic import ValidationError

from app import gallery_settings
from app.auth import current_principal
from core.accounts import Principal

router = APIRouter(prefix="/api/settings", tags=["settings"])


@router.get("/datasets", response_model=gallery_settings.GallerySettings)
def get_settings(principal: Principal = Depends(current_principal)) -> gallery_settings.GallerySettings:
    return gallery_settings.load(principal.username)


@router.put("/datasets", response_model=gallery_settings.GallerySettings)
def put_settings(body: dict[str, Any] = Body(...), principal: Principal = Depends(current_principal)) -> gallery_settings.GallerySettings:
    try:
        return gallery_settings.save(principal.username, body)
    except ValidationError as exc:
        raise HTTPException(400, "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from exc


@router.delete("/datasets", response_model=gallery_settings.GallerySettings)
def reset_settings(principal: Principal = Depends(current_principal)) -> gallery_settings.GallerySettings:
    """Back to the defaults."""
    return gallery_settings.reset(principal.username)
