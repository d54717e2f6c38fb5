"""WADO-RS frames read from the file: only the frames asked for, as stored or decoded, for native and encapsulated pixel data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless, RLELossless

from ingest import wado
from tests.factories import write_multiframe_sc, write_series


@pytest.fixture(scope="module")
def multiframe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("frames")
    ct = write_series(out, modality="CT", slices=1, rows=32, columns=32, seed=81)
    return write_multiframe_sc(out, ct, frames=6, rows=32, columns=32).paths[0]


def test_native_frames_by_offset(multiframe: Path) -> None:
    reference = dcmread(multiframe).pixel_array
    instance = wado.StoredInstance("1", "2", "3", wado.ExplicitVRLittleEndian, multiframe, 6)
    got = wado.frames(instance, [3, 1], wado.ExplicitVRLittleEndian)
    assert [np.array_equal(np.frombuffer(f.content, dtype=reference.dtype).reshape(32, 32), reference[i]) for f, i in zip(got, (2, 0))] == [True, True]
    with pytest.raises(wado.NotFound):
        wado.frames(instance, [7], wado.ExplicitVRLittleEndian)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless])
def test_encapsulated_frames_as_stored_or_decoded(multiframe: Path, tmp_path: Path, syntax: str) -> None:
    reference = dcmread(multiframe).pixel_array
    ds = dcmread(multiframe)
    ds.compress(syntax)
    path = tmp_path / "compressed.dcm"
    ds.save_as(path)
    instance = wado.StoredInstance("1", "2", "3", str(syntax), path, 6)
    as_stored = wado.frames(instance, [2, 6], str(syntax))
    assert [f.transfer_syntax for f in as_stored] == [str(syntax)] * 2
    assert as_stored[0].media_type == wado.FRAME_MEDIA_TYPES[str(syntax)]
    decoded = wado.frames(instance, [6], wado.ExplicitVRLittleEndian)
    assert np.array_equal(np.frombuffer(decoded[0].content, dtype=reference.dtype).reshape(32, 32), reference[5])
    assert wado.frame_syntax(str(syntax), [("application/octet-stream", "*")]) == str(syntax)
    assert wado.frame_syntax(str(syntax), [("application/octet-stream", "")]) == wado.ExplicitVRLittleEndian
    with pytest.raises(wado.NotAcceptable):
        wado.frame_syntax(str(syntax), [("image/jp2", "")])
