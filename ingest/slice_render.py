"""Slices for the Datasets page's viewer: one frame as a windowed PNG, a SEG's masks as a coloured overlay.

The browser asks for one slice at a time (wheel, slider, arrow keys), so a request decodes one
frame. Decoded frames are kept in a small LRU cache: scrolling back and dragging the window
re-use them, and the next slice shows well within 150 ms. Windowing, colours and the
SEG geometry are the thumbnail painter's (ingest.thumbnails), so viewer and thumbnails agree.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from ingest.thumbnails import (
    ThumbnailError,
    _attribute,
    _decode_frame,
    _display_pixels,
    _first_float,
    _fraction_scale,
    _frame_count,
    _frame_segment_number,
    _has_pixel_data,
    _header_positions,
    _is_segmentation,
    _iter_frames,
    _modality_values,
    _percentile_window,
    _pixel_aspect,
    _read_dataset,
    _reference_header,
    _segments,
    _slice_ref,
    _resize_mask,
    _POSITION_TOLERANCE_MM,
)

__all__ = ["Frame", "SegmentationLayout", "SliceError", "default_window", "is_segmentation_file", "overlay_png", "segmentation_layout", "slice_png"]

OVERLAY_ALPHA = 0.5


class SliceError(Exception):
    """A slice that cannot be shown (unreadable file, no pixels, frame out of range)."""


@dataclass(frozen=True)
class Frame:
    """One displayable slice: a file and a frame in it (0-based)."""

    path: Path
    frame: int = 0


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: Any, value: Any) -> Any:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


_datasets = _Lru(16)
_values = _Lru(48)
_layouts = _Lru(8)


def _dataset(path: Path) -> Dataset:
    key = str(path)
    ds = _datasets.get(key)
    if ds is None:
        try:
            ds = _datasets.put(key, _read_dataset(path))
        except ThumbnailError as exc:
            raise SliceError(exc.reason) from exc  # the reason, not the message: it names no server path
    return ds


def frames_of(path: Path, count: int) -> list[Frame]:
    return [Frame(path, i) for i in range(max(1, count))]


def _values_of(target: Frame) -> tuple[np.ndarray, bool]:
    """Modality values (float32, H×W) or display RGB (uint8, H×W×3) of a frame; True when RGB."""
    key = (str(target.path), target.frame)
    cached = _values.get(key)
    if cached is not None:
        return cached
    ds = _dataset(target.path)
    if not _has_pixel_data(ds):
        raise SliceError(f"{target.path.name} holds no pixel data")
    if not 0 <= target.frame < _frame_count(ds):
        raise SliceError(f"frame {target.frame + 1} is beyond the {_frame_count(ds)} frames of {target.path.name}")
    try:
        photometric = str(ds.get("PhotometricInterpretation", "")).upper()
        if photometric == "PALETTE COLOR" or (int(ds.get("SamplesPerPixel") or 1) > 1):
            result = (_display_pixels(target.path, ds, target.frame), True)
        else:
            raw = _decode_frame(target.path, ds, target.frame)
            values = _modality_values(raw, ds, target.frame)
            if photometric == "MONOCHROME1":
                values = -values  # inverted: a wider value is darker; windows are then on the negated scale
            result = (values, False)
    except ThumbnailError as exc:
        raise SliceError(exc.reason) from exc  # the reason, not the message: it names no server path
    return _values.put(key, result)


def default_window(target: Frame) -> dict[str, float] | None:
    """The stored window of a frame, else a 0.5–99.5 % percentile window ("auto"); None for colour images."""
    values, rgb = _values_of(target)
    if rgb:
        return None
    ds = _dataset(target.path)
    center = _first_float(_attribute(ds, target.frame, "FrameVOILUTSequence", "WindowCenter"))
    width = _first_float(_attribute(ds, target.frame, "FrameVOILUTSequence", "WindowWidth"))
    if center is not None and width is not None and width > 0 and str(ds.get("PhotometricInterpretation", "")).upper() != "MONOCHROME1":
        return {"center": center, "width": width}
    return auto_window(target)


def auto_window(target: Frame) -> dict[str, float] | None:
    values, rgb = _values_of(target)
    if rgb:
        return None
    step = max(1, int(math.sqrt(values.size / 65536)))
    low, high = np.percentile(values[::step, ::step], (0.5, 99.5))
    width = max(float(high - low), 1.0)
    return {"center": float(low) + width / 2, "width": width}


def slice_png(target: Frame, center: float | None = None, width: float | None = None) -> tuple[bytes, float]:
    """PNG of one frame windowed to center/width (default: stored or auto window), and its pixel aspect."""
    values, rgb = _values_of(target)
    ds = _dataset(target.path)
    if rgb:
        pixels = values
    else:
        if center is None or width is None or width <= 0:
            window = default_window(target) or {"center": 0.0, "width": 1.0}
            center, width = window["center"], window["width"]
        low = np.float32(center - width / 2)
        unit = np.clip((values - low) / np.float32(width), 0.0, 1.0) if width > 0 else _percentile_window(values)
        pixels = (unit * 255.0 + 0.5).astype(np.uint8)
    return _png(Image.fromarray(pixels), compress=1), _pixel_aspect(ds, target.frame)


def _png(image: Image.Image, compress: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress)
    return buffer.getvalue()


# --------------------------------------------------------------------------- SEG overlays


def is_segmentation_file(path: Path) -> bool:
    return _is_segmentation(_dataset(path))


@dataclass
class SegmentationLayout:
    """Which SEG frames lie on which slice of the referenced series, and the segments' names and colours."""

    path: Path
    segments: list[dict[str, Any]]
    by_slice: dict[int, list[int]] = field(default_factory=dict)
    labelmap: bool = False
    scale: float = 1.0


def segmentation_layout(seg_path: Path, reference: Sequence[Frame], reference_uids: Sequence[str]) -> SegmentationLayout:
    """Map every SEG frame to a slice of the reference (by source SOP Instance UID and frame, else by position)."""
    key = (str(seg_path), tuple(str(f.path) for f in reference), tuple(f.frame for f in reference))
    cached = _layouts.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    ds = _dataset(seg_path)
    if not _is_segmentation(ds):
        raise SliceError(f"{seg_path.name} is not a segmentation")
    segments = _segments(ds)
    layout = SegmentationLayout(
        path=seg_path,
        segments=[{"number": s.number, "label": s.label, "colour": "#%02x%02x%02x" % s.colour} for s in segments.values()],
        labelmap=str(ds.get("SegmentationType", "")).upper() == "LABELMAP",
        scale=_fraction_scale(ds),
    )
    by_uid: dict[tuple[str, int], int] = {}
    for index, (frame, uid) in enumerate(zip(reference, reference_uids)):
        by_uid[(uid, frame.frame)] = index
    positions: list[tuple[int, tuple[float, float, float]]] | None = None
    for seg_frame in range(_frame_count(ds)):
        ref = _slice_ref(ds, seg_frame)
        index = None
        if ref.sop_instance_uid:
            index = by_uid.get((ref.sop_instance_uid, (ref.frame_number or 1) - 1))
        if index is None and ref.position is not None:
            if positions is None:
                positions = _reference_positions(reference)
            best = min(positions, key=lambda item: math.dist(item[1], ref.position), default=None)  # type: ignore[arg-type]
            if best is not None and math.dist(best[1], ref.position) <= _POSITION_TOLERANCE_MM * 10:
                index = best[0]
        if index is not None:
            layout.by_slice.setdefault(index, []).append(seg_frame)
    return _layouts.put(key, layout)  # type: ignore[no-any-return]


def _reference_positions(reference: Sequence[Frame]) -> list[tuple[int, tuple[float, float, float]]]:
    found: list[tuple[int, tuple[float, float, float]]] = []
    headers: dict[str, Dataset | None] = {}
    for index, frame in enumerate(reference):
        key = str(frame.path)
        if key not in headers:
            headers[key] = _reference_header(frame.path)
        header = headers[key]
        if header is None:
            continue
        for number, position in _header_positions(frame.path, header, _frame_count(header)):
            if number == frame.frame:
                found.append((index, position))
    return found


def overlay_png(layout: SegmentationLayout, slice_index: int, shape: tuple[int, int], visible: set[int] | None) -> bytes:
    """RGBA PNG (rows×columns of the reference slice): each visible segment in its colour, transparent elsewhere."""
    rows, columns = shape
    rgba = np.zeros((rows, columns, 4), np.float32)
    frames = layout.by_slice.get(slice_index, [])
    if frames:
        ds = _dataset(layout.path)
        colours = {s["number"]: tuple(int(s["colour"][i : i + 2], 16) for i in (1, 3, 5)) for s in layout.segments}
        try:
            decoded = list(zip(frames, _iter_frames(layout.path, ds, indices=frames)))
        except ThumbnailError as exc:
            raise SliceError(exc.reason) from exc  # the reason, not the message: it names no server path
        for seg_frame, pixels in decoded:
            masks: dict[int, np.ndarray] = {}
            if layout.labelmap:
                for number in np.unique(pixels):
                    if number:
                        masks[int(number)] = (pixels == number).astype(np.float32)
            else:
                masks[_frame_segment_number(ds, seg_frame)] = pixels.astype(np.float32) * np.float32(layout.scale)
            for number, mask in masks.items():
                if visible is not None and number not in visible:
                    continue
                coverage = np.clip(_resize_mask(mask, (rows, columns)), 0.0, 1.0)[..., None]
                colour = np.asarray(colours.get(number, (255, 0, 0)), np.float32)
                rgba[..., :3] = np.where(coverage > 0, colour, rgba[..., :3])
                rgba[..., 3:] = np.maximum(rgba[..., 3:], coverage * OVERLAY_ALPHA * 255)
    return _png(Image.fromarray(np.clip(rgba + 0.5, 0, 255).astype(np.uint8), mode="RGBA"), compress=1)


def frame_shape(target: Frame) -> tuple[int, int]:
    values, _ = _values_of(target)
    return int(values.shape[0]), int(values.shape[1])
