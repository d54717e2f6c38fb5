"""The viewer's slice rendering on files from the factories: windows, multi-frame objects, SEG overlays."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from ingest.slice_render import Frame, SliceError, auto_window, default_window, frame_shape, overlay_png, segmentation_layout, slice_png
from tests.factories import write_enhanced_ct, write_seg, write_series


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_windowing_changes_the_picture_and_is_fast(tmp_path: Path) -> None:
    ct = write_series(tmp_path, modality="CT", slices=4, rows=128, columns=128, seed=3)
    frame = Frame(ct.paths[1])
    assert default_window(frame) is not None
    soft, _ = slice_png(frame, 40, 400)
    bone, _ = slice_png(frame, 400, 1800)
    assert _pixels(soft).shape == (128, 128)
    assert not np.array_equal(_pixels(soft), _pixels(bone))
    began = time.perf_counter()
    for path in ct.paths:
        slice_png(Frame(path), -600, 1500)
    assert (time.perf_counter() - began) / len(ct.paths) < 0.15


def test_mr_auto_window_and_multiframe_frames(tmp_path: Path) -> None:
    mr = write_series(tmp_path / "mr", modality="MR", slices=2, seed=4)
    window = auto_window(Frame(mr.paths[0]))
    assert window is not None and window["width"] > 0
    enhanced = write_enhanced_ct(tmp_path / "enhanced", frames=6)
    path = enhanced.paths[0]
    pictures = [_pixels(slice_png(Frame(path, index))[0]) for index in range(6)]
    assert len({p.tobytes() for p in pictures}) > 1  # the frames differ
    with pytest.raises(SliceError):
        slice_png(Frame(path, 6))


def test_seg_overlay_on_its_reference_slices(tmp_path: Path) -> None:
    ct = write_series(tmp_path, modality="CT", slices=12, rows=64, columns=64, seed=5)
    seg = write_seg(tmp_path, ct, labels={1: "liver", 2: "spleen"}, frames=3)
    frames = [Frame(p) for p in ct.paths]
    uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct.paths]
    layout = segmentation_layout(seg, frames, uids)
    assert [s["label"] for s in layout.segments] == ["liver", "spleen"]
    assert sorted(layout.by_slice) == [4, 5, 6]  # the three middle slices
    middle = _pixels(overlay_png(layout, 5, frame_shape(frames[5]), None))
    assert middle.shape == (64, 64, 4)
    colours = {tuple(c) for c in middle[middle[..., 3] > 0][:, :3]}
    assert len(colours) == 2
    only_liver = _pixels(overlay_png(layout, 5, (64, 64), {1}))
    assert len({tuple(c) for c in only_liver[only_liver[..., 3] > 0][:, :3]}) == 1
    assert not _pixels(overlay_png(layout, 0, (64, 64), None))[..., 3].any()  # no masks off the SEG's slices
