"""What the detail view shows of a series: its slices in order, the SEGs over them, and every attribute.

A SEG is shown over the image series it references (its own masks are the overlay); an image
series lists the SEGs that reference it as toggleable overlays. Slices are (file, frame) pairs
in slice-position order, so multi-frame objects scroll through their frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName
from sqlalchemy import select

from app.runtime import current_services
from core.models import Instance, Series
from ingest.slice_render import Frame, SegmentationLayout, auto_window, default_window, segmentation_layout

PRESETS = {
    "CT lung": {"center": -600.0, "width": 1500.0},
    "CT bone": {"center": 400.0, "width": 1800.0},
    "CT soft tissue": {"center": 40.0, "width": 400.0},
    "CT brain": {"center": 40.0, "width": 80.0},
}
MAX_ATTRIBUTE_ROWS = 5000


@dataclass
class SeriesSlices:
    series_uid: str
    modality: str
    frames: list[Frame]
    sop_uids: list[str]


def _series_row(conn: Any, series_uid: str) -> Any:
    row = conn.execute(select(Series.series_uid, Series.modality, Series.referenced_series_uid).where(Series.series_uid == series_uid)).first()
    if row is None:
        raise LookupError(f"no series {series_uid}")
    return row


def series_slices(series_uid: str) -> SeriesSlices:
    """Every displayable frame of a series, in slice order."""
    services = current_services()
    with services.db.engine.connect() as conn:
        row = _series_row(conn, series_uid)
        instances = conn.execute(
            select(Instance.path, Instance.sop_instance_uid, Instance.number_of_frames)
            .where(Instance.series_uid == series_uid)
            .order_by(Instance.slice_position, Instance.instance_number, Instance.sop_instance_uid)  # type: ignore[arg-type]
        ).all()
    frames: list[Frame] = []
    uids: list[str] = []
    for path, uid, count in instances:
        full = services.store.path(path)
        for frame in range(max(1, count or 1)):
            frames.append(Frame(full, frame))
            uids.append(uid)
    return SeriesSlices(series_uid, row.modality or "", frames, uids)


def _segmentations_over(conn: Any, series_uid: str) -> list[str]:
    return list(conn.execute(select(Series.series_uid).where(Series.referenced_series_uid == series_uid, Series.modality == "SEG").order_by(Series.series_uid)).scalars())


def viewer_plan(series_uid: str) -> dict[str, Any]:
    """What the viewer shows for `series_uid`: the image series, its slice count, window, presets and SEG overlays."""
    with current_services().db.engine.connect() as conn:
        row = _series_row(conn, series_uid)
        image_uid = series_uid
        if row.modality == "SEG" and row.referenced_series_uid and _has_instances(conn, row.referenced_series_uid):
            image_uid = row.referenced_series_uid
            overlays = [series_uid]
        else:
            overlays = _segmentations_over(conn, series_uid) if row.modality != "SEG" else []
    image = series_slices(image_uid)
    middle = len(image.frames) // 2
    window = default_window(image.frames[middle]) if image.frames else None
    auto = auto_window(image.frames[middle]) if image.frames else None
    presets = dict(PRESETS) if image.modality == "CT" else {}
    if auto is not None:
        presets["Auto"] = auto
    layers = []
    for seg_uid in overlays:
        layout = overlay_layout(seg_uid, image)
        if layout is not None:
            layers.append({"series_uid": seg_uid, "segments": layout.segments, "slices": sorted(layout.by_slice)})
    return {
        "series_uid": series_uid,
        "image_series_uid": image_uid,
        "modality": image.modality,
        "slices": len(image.frames),
        "start": middle,
        "window": window,
        "presets": presets,
        "overlays": layers,
    }


def _has_instances(conn: Any, series_uid: str) -> bool:
    return conn.execute(select(Instance.sop_instance_uid).where(Instance.series_uid == series_uid).limit(1)).first() is not None


def overlay_layout(seg_uid: str, image: SeriesSlices) -> SegmentationLayout | None:
    seg = series_slices(seg_uid)
    if not seg.frames:
        return None
    return segmentation_layout(seg.frames[0].path, image.frames, image.sop_uids)


def attribute_rows(series_uid: str) -> list[dict[str, str]]:
    """Every attribute of the series' first instance, sequences flattened (`Sequence[1].Keyword`), pixel data left out."""
    slices = series_slices(series_uid)
    if not slices.frames:
        return []
    ds = dcmread(slices.frames[0].path, stop_before_pixels=True, defer_size="64 KB", force=True)
    rows: list[dict[str, str]] = []
    _flatten(ds.file_meta, "", rows) if getattr(ds, "file_meta", None) is not None else None
    _flatten(ds, "", rows)
    return rows[:MAX_ATTRIBUTE_ROWS]


def _flatten(ds: Dataset, prefix: str, rows: list[dict[str, str]]) -> None:
    for element in ds:
        name = element.keyword or element.name
        path = f"{prefix}{name}"
        tag = f"({element.tag.group:04X},{element.tag.element:04X})"
        if element.VR == "SQ":
            rows.append({"tag": tag, "name": path, "vr": "SQ", "value": f"{len(element.value)} item(s)"})
            for index, item in enumerate(element.value, start=1):
                _flatten(item, f"{path}[{index}].", rows)
            continue
        rows.append({"tag": tag, "name": path, "vr": str(element.VR), "value": _text(element.value, element.VR)})


def _text(value: Any, vr: str) -> str:
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or isinstance(value, bytes):
        return f"<{len(value) if value is not None else 0} bytes>"
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, PersonName):
        return str(value)
    text = "" if value is None else str(value)
    return text if len(text) <= 500 else text[:500] + "…"


def related_series(series_uid: str) -> dict[str, Any]:
    """The series' study and its neighbours by reference, from the index (no file is read).

    `segmentations`: the SEGs whose ReferencedSeriesSequence names this series ("results of this
    series"); `referenced`: for a SEG, the image series it annotates (when that is stored here).
    """
    columns = (Series.series_uid, Series.modality, Series.series_description, Series.series_number)
    with current_services().db.engine.connect() as conn:
        row = conn.execute(select(Series.study_uid, Series.modality, Series.series_description, Series.referenced_series_uid)
                           .where(Series.series_uid == series_uid)).first()
        if row is None:
            raise LookupError(f"no series {series_uid}")
        segmentations = conn.execute(select(*columns).where(Series.referenced_series_uid == series_uid, Series.modality == "SEG")
                                     .order_by(Series.series_number, Series.series_uid)).all()  # type: ignore[arg-type]
        referenced = conn.execute(select(*columns).where(Series.series_uid == row.referenced_series_uid)).all() if row.referenced_series_uid else []

    def brief(found: Any) -> dict[str, Any]:
        return {"series_uid": found.series_uid, "modality": found.modality or "", "description": found.series_description or "", "number": found.series_number}

    return {
        "study_uid": row.study_uid,
        "modality": row.modality or "",
        "description": row.series_description or "",
        "segmentations": [brief(s) for s in segmentations],
        "referenced": [brief(s) for s in referenced],
    }


def frame_at(series_uid: str, index: int) -> Frame:
    frames = series_slices(series_uid).frames
    if not 0 <= index < len(frames):
        raise IndexError(f"slice {index} is outside 0–{len(frames) - 1}")
    return frames[index]


def store_path(relative: str) -> Path:
    return current_services().store.path(relative)
