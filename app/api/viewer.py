"""The detail view's data: `/api/series/{uid}/viewer` (plan), `/slices/{n}` (PNG), `/overlay/{seg}/{n}` (RGBA PNG), `/attributes`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from app import series_viewing
from core.pacs_store import InvalidUID
from ingest.slice_render import SliceError, frame_shape, overlay_png, slice_png

router = APIRouter(prefix="/api/series", tags=["viewer"])

_PNG = {200: {"content": {"image/png": {}}}}
# Slices of a stored instance never change; a window is in the URL. The browser may keep them.
_CACHE = {"Cache-Control": "private, max-age=3600"}


def _not_found(exc: Exception) -> HTTPException:
    return HTTPException(404, str(exc))


@router.get("/{series_uid}/viewer")
def viewer(series_uid: str) -> dict[str, Any]:
    """The image series to show, slice count, starting slice and window, window presets, and SEG overlays with their segments."""
    try:
        return series_viewing.viewer_plan(series_uid)
    except (LookupError, InvalidUID) as exc:
        raise _not_found(exc) from exc
    except SliceError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.get("/{series_uid}/slices/{index}", response_class=Response, responses=_PNG)
def slice_image(
    series_uid: str,
    index: int,
    center: float | None = Query(None, description="window centre (modality units, e.g. HU)"),
    width: float | None = Query(None, gt=0, description="window width"),
) -> Response:
    """One slice (0-based, in slice order; frames of multi-frame objects count as slices) as a windowed PNG."""
    try:
        frame = series_viewing.frame_at(series_uid, index)
        png, aspect = slice_png(frame, center, width)
    except (LookupError, InvalidUID) as exc:
        raise _not_found(exc) from exc
    except SliceError as exc:
        raise HTTPException(422, str(exc)) from exc
    return Response(png, media_type="image/png", headers={**_CACHE, "X-Pixel-Aspect": f"{aspect:.6g}"})


@router.get("/{series_uid}/overlay/{seg_uid}/{index}", response_class=Response, responses=_PNG)
def overlay_image(series_uid: str, seg_uid: str, index: int, segments: str | None = Query(None, description="visible segment numbers, comma-separated (default: all)")) -> Response:
    """The masks of SEG `seg_uid` on slice `index` of image series `series_uid`, as a transparent PNG of the slice's size."""
    visible: set[int] | None = None
    if segments is not None:
        try:
            visible = {int(s) for s in segments.split(",") if s.strip()}
        except ValueError:
            raise HTTPException(400, f"segments must be numbers separated by commas, not {segments!r}") from None
    try:
        image = series_viewing.series_slices(series_uid)
        if not 0 <= index < len(image.frames):
            raise IndexError(f"slice {index} is outside 0–{len(image.frames) - 1}")
        layout = series_viewing.overlay_layout(seg_uid, image)
        if layout is None:
            raise LookupError(f"series {seg_uid} holds no segmentation")
        png = overlay_png(layout, index, frame_shape(image.frames[index]), visible)
    except (LookupError, InvalidUID) as exc:
        raise _not_found(exc) from exc
    except SliceError as exc:
        raise HTTPException(422, str(exc)) from exc
    return Response(png, media_type="image/png", headers=_CACHE)


@router.get("/{series_uid}/attributes")
def attributes(series_uid: str) -> list[dict[str, str]]:
    """Every attribute of the series' first instance: tag, name (sequence items flattened as `Seq[1].Keyword`), VR, value."""
    try:
        return series_viewing.attribute_rows(series_uid)
    except (LookupError, InvalidUID) as exc:
        raise _not_found(exc) from exc
