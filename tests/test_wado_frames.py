"""WADO-RS frames read from the file: only the frames asked for, as stored or decoded, for native (little- and big-endian)
and encapsulated pixel data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, JPEGLSLossless, RLELossless

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


@pytest.mark.parametrize(("big_endian", "twin"), [("SC_rgb_expb_32bit_2frame.dcm", "SC_rgb_32bit_2frame.dcm"),
                                                  ("OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_2frame.dcm"), ("liver_expb.dcm", "liver.dcm")])
def test_big_endian_frames_and_bulk_data_are_sent_little_endian(big_endian: str, twin: str) -> None:
    """pydicom's big-endian files against their little-endian twins: the last frame and the whole Pixel Data, byte for byte."""
    path = Path(get_testdata_file(big_endian))
    reference = dcmread(get_testdata_file(twin))
    count = int(reference.get("NumberOfFrames") or 1)
    instance = wado.StoredInstance("1", "2", "3", ExplicitVRBigEndian, path, count)
    size = len(reference.PixelData) // count
    [last] = wado.frames(instance, [count], wado.ExplicitVRLittleEndian)
    assert last.content == reference.PixelData[(count - 1) * size : count * size] and last.transfer_syntax == wado.ExplicitVRLittleEndian
    assert wado.bulk_value(instance, ["7FE00010"]) == (reference.PixelData, False)


def test_frames_that_do_not_decode_are_refused_naming_their_syntax() -> None:
    path = Path(get_testdata_file("JPEG-lossy.dcm"))  # 12-bit JPEG Extended: no installed decoder reads it
    instance = wado.StoredInstance("1", "2", "3", "1.2.840.10008.1.2.4.51", path, 1)
    with pytest.raises(wado.CannotTranscode, match=r"JPEG Extended \(Process 2 and 4\) \(1\.2\.840\.10008\.1\.2\.4\.51\)") as refused:
        wado.frames(instance, [1], wado.ExplicitVRLittleEndian)
    assert str(path.parent) not in str(refused.value)
    [as_stored] = wado.frames(instance, [1], "1.2.840.10008.1.2.4.51")
    assert as_stored.media_type == "image/jpeg" and as_stored.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize(("keyword", "dtype"), [("FloatPixelData", np.float32), ("DoubleFloatPixelData", np.float64)])
@pytest.mark.parametrize("syntax", [wado.ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_float_pixel_data_frames_are_sent_little_endian(tmp_path: Path, keyword: str, dtype: type, syntax: str) -> None:
    """Float and Double Float Pixel Data (Parametric Maps) have frames too (PS3.18 8.3.5.1), sent little endian whatever the file's order."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    values = (np.arange(3 * ds.Rows * ds.Columns, dtype=dtype).reshape(3, ds.Rows, ds.Columns) / 3 - 50)
    ds.BitsAllocated, ds.NumberOfFrames = np.dtype(dtype).itemsize * 8, 3
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    setattr(ds, keyword, values.astype(np.dtype(dtype).newbyteorder(order)).tobytes())  # pydicom writes OF/OD bytes as given
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "map.dcm"
    dcmwrite(path, ds, implicit_vr=False, little_endian=order == "<", force_encoding=True)
    instance = wado.StoredInstance("1", "2", "3", str(syntax), path, 3)
    got = wado.frames(instance, [3, 1], wado.ExplicitVRLittleEndian)
    assert [np.array_equal(np.frombuffer(f.content, dtype=np.dtype(dtype).newbyteorder("<")).reshape(values[0].shape), values[i]) for f, i in zip(got, (2, 0))] == [True, True]
