"""Checks that tests/factories.py emits standard-conformant, readable DICOM.

Why: every other test and the benchmarks trust these generators; if they
drift into invalid IODs, ingest bugs get masked (or invented).  dciodvfy is
the external referee for IOD conformance, dcmdump for DCMTK readability, and
pydicom (with the pylibjpeg/pyjpegls decoders) for our own read path.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories import (  # noqa: E402
    COMPRESS_SYNTAXES,
    SeriesFiles,
    compress,
    not_dicom,
    truncate,
    without_sop_instance_uid,
    write_basic_text_sr,
    write_dataset,
    write_encapsulated_pdf,
    write_enhanced_ct,
    write_multiframe_sc,
    write_secondary_capture,
    write_seg,
    write_series,
)

HAVE_DCIODVFY = shutil.which("dciodvfy") is not None
HAVE_DCMTK = all(shutil.which(t) for t in ("dcmdump", "dcmcjpeg", "dcmcjpls", "dcmcrle", "dcmconv"))

EXPECTED_TS = {
    "jpeg-baseline": "1.2.840.10008.1.2.4.50",
    "jpeg-extended": "1.2.840.10008.1.2.4.51",
    "jpeg-lossless": "1.2.840.10008.1.2.4.70",
    "jpeg-lossless-p14": "1.2.840.10008.1.2.4.57",
    "jpeg-ls": "1.2.840.10008.1.2.4.80",
    "jpeg-ls-near": "1.2.840.10008.1.2.4.81",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
    "jpeg2000-lossy": "1.2.840.10008.1.2.4.91",
    "rle": "1.2.840.10008.1.2.5",
    "deflated": "1.2.840.10008.1.2.1.99",
    "implicit": "1.2.840.10008.1.2",
    "explicit": "1.2.840.10008.1.2.1",
}
LOSSLESS = {"jpeg-lossless", "jpeg-lossless-p14", "jpeg-ls", "jpeg2000", "rle",
            "deflated", "implicit", "explicit"}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("factories")


@pytest.fixture(scope="module")
def ct(out: Path) -> SeriesFiles:
    return write_series(out / "ct", slices=8, rows=96, columns=96)


@pytest.fixture(scope="module")
def mr(out: Path) -> SeriesFiles:
    return write_series(out / "mr", modality="MR", slices=5, mr_contrast="FLAIR",
                        patient_name="Müller^Jürgen")


def _dciodvfy_errors(path: Path) -> list[str]:
    """Lines dciodvfy flags as errors (it reports on stderr)."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


# -- IOD conformance ------------------------------------------------------

OBJECTS = {
    "ct": lambda out, ct, mr: ct.paths[len(ct.paths) // 2],
    "mr": lambda out, ct, mr: mr.paths[len(mr.paths) // 2],
    "seg": lambda out, ct, mr: write_seg(out / "seg", ct, labels={1: "liver", 2: "spleen"}),
    "sc": lambda out, ct, mr: write_secondary_capture(out / "sc", ct).paths[0],
    "sc-rgb": lambda out, ct, mr: write_secondary_capture(out / "sc", mr, rgb=True).paths[0],
    "multiframe-sc": lambda out, ct, mr: write_multiframe_sc(out / "mf", ct).paths[0],
    "enhanced-ct": lambda out, ct, mr: write_enhanced_ct(out / "enh", ct, frames=4).paths[0],
    "sr": lambda out, ct, mr: write_basic_text_sr(out / "sr", ct).paths[0],
    "pdf": lambda out, ct, mr: write_encapsulated_pdf(out / "pdf", mr).paths[0],
}


@pytest.mark.skipif(not HAVE_DCIODVFY, reason="dicom3tools not installed")
@pytest.mark.parametrize("kind", list(OBJECTS))
def test_dciodvfy_reports_no_errors(kind: str, out: Path, ct: SeriesFiles, mr: SeriesFiles) -> None:
    path = OBJECTS[kind](out, ct, mr)
    assert _dciodvfy_errors(path) == []


def test_derived_objects_stay_in_source_study(out: Path, ct: SeriesFiles, mr: SeriesFiles) -> None:
    for series in (write_basic_text_sr(out / "s1", ct), write_secondary_capture(out / "s2", ct),
                   write_encapsulated_pdf(out / "s3", ct)):
        ds = dcmread(series.paths[0])
        assert ds.StudyInstanceUID == ct.study_uid and ds.PatientID == ct.patient_id
        assert ds.SeriesInstanceUID != ct.series_uid
    pdf = dcmread(write_encapsulated_pdf(out / "s4", mr).paths[0])
    doc = bytes(pdf.EncapsulatedDocument)[: int(pdf.EncapsulatedDocumentLength)]
    assert doc.startswith(b"%PDF-") and doc.rstrip().endswith(b"%%EOF")


def test_seg_references_source(out: Path, ct: SeriesFiles) -> None:
    seg = dcmread(write_seg(out / "seg2", ct, labels={1: "liver", 2: "kidney"}))
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == ct.study_uid
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "kidney"]
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence if series.SeriesInstanceUID == ct.series_uid
        for item in series.ReferencedInstanceSequence
    }
    assert referenced and referenced <= set(ct.sop_uids)
    assert int(seg.NumberOfFrames) >= 2


# -- content sanity -------------------------------------------------------


def test_ct_series_geometry_and_phantom(ct: SeriesFiles) -> None:
    headers = [dcmread(p, stop_before_pixels=True) for p in ct.paths]
    assert len({h.SOPInstanceUID for h in headers}) == len(ct.paths)
    assert [h.SOPInstanceUID for h in headers] == ct.sop_uids
    z = [float(h.ImagePositionPatient[2]) for h in headers]
    assert np.allclose(np.diff(z), -float(headers[0].SliceThickness))
    assert [int(h.InstanceNumber) for h in headers] == list(range(1, len(headers) + 1))
    mid = dcmread(ct.paths[len(ct.paths) // 2])
    assert mid.pixel_array.dtype == np.int16
    hu = apply_modality_lut(mid.pixel_array, mid)
    assert (hu < -700).mean() > 0.2  # air and lungs
    assert ((hu > -200) & (hu < 200)).mean() > 0.15  # soft tissue
    assert (hu > 500).mean() > 0.005  # bone


def test_mr_is_uint16_with_utf8_name(mr: SeriesFiles) -> None:
    ds = dcmread(mr.paths[0])
    assert ds.pixel_array.dtype == np.uint16 and ds.SOPClassUID.name == "MR Image Storage"
    assert str(ds.PatientName) == "Müller^Jürgen" and "InversionTime" in ds


def test_write_series_can_encode_directly(out: Path) -> None:
    series = write_series(out / "rle", slices=2, transfer_syntax_uid=RLELossless)
    ds = dcmread(series.paths[0])
    assert ds.file_meta.TransferSyntaxUID == RLELossless and ds.pixel_array.shape == (64, 64)


def test_enhanced_ct_is_multiframe(out: Path, ct: SeriesFiles) -> None:
    ds = dcmread(write_enhanced_ct(out / "enh2", ct, frames=5).paths[0])
    assert int(ds.NumberOfFrames) == 5 and ds.pixel_array.shape == (5, 96, 96)
    assert len(ds.PerFrameFunctionalGroupsSequence) == 5


# -- transfer syntaxes ----------------------------------------------------


@pytest.mark.skipif(not HAVE_DCMTK, reason="DCMTK not installed")
@pytest.mark.parametrize("syntax", COMPRESS_SYNTAXES)
@pytest.mark.parametrize("source", ["ct", "mr"])
def test_compress_readable(syntax: str, source: str, out: Path, ct: SeriesFiles,
                           mr: SeriesFiles) -> None:
    series = ct if source == "ct" else mr
    src = series.paths[len(series.paths) // 2]
    result = compress(src, out / "compressed" / f"{source}-{syntax}.dcm", syntax)
    dump = subprocess.run(["dcmdump", str(result)], capture_output=True, check=False)
    assert dump.returncode == 0, dump.stderr
    ds = dcmread(result)
    assert ds.file_meta.TransferSyntaxUID == EXPECTED_TS[syntax]
    original = dcmread(src)
    pixels = ds.pixel_array
    assert pixels.shape == original.pixel_array.shape
    if syntax in LOSSLESS:
        assert np.array_equal(pixels, original.pixel_array)
        assert ds.SOPInstanceUID == original.SOPInstanceUID
    elif syntax != "jpeg-baseline":  # baseline is a windowed 8-bit rendering
        diff = (apply_modality_lut(pixels, ds).astype(float)
                - apply_modality_lut(original.pixel_array, original).astype(float))
        assert np.abs(diff).mean() < 10


def test_compress_rejects_unknown_syntax(ct: SeriesFiles, out: Path) -> None:
    with pytest.raises(ValueError):
        compress(ct.paths[0], out / "x.dcm", "explicit-big")


# -- broken inputs --------------------------------------------------------


def test_broken_inputs(ct: SeriesFiles, out: Path) -> None:
    src = ct.paths[0]
    cut = truncate(src, out / "bad" / "truncated.dcm", keep_fraction=0.6)
    assert cut.stat().st_size == int(src.stat().st_size * 0.6)
    with pytest.raises(Exception):
        dcmread(cut).pixel_array  # noqa: B018
    anonymous = dcmread(without_sop_instance_uid(src, out / "bad" / "nouid.dcm"))
    assert "SOPInstanceUID" not in anonymous
    stripped = dcmread(without_sop_instance_uid(src, out / "bad" / "nouid2.dcm", strip_meta=True))
    assert "MediaStorageSOPInstanceUID" not in stripped.file_meta
    for kind in ("text", "random", "empty"):
        with pytest.raises(InvalidDicomError):
            dcmread(not_dicom(out / "bad" / f"{kind}.dcm", kind=kind))


# -- the benchmark dataset ------------------------------------------------


def test_write_dataset_counts_and_determinism(tmp_path: Path) -> None:
    kwargs = dict(patients=2, studies_per_patient=2, series_per_study=3, ct_slices=(3, 5),
                  mr_slices=(2, 3), ct_size=32, mr_size=32, seed=7)
    first = write_dataset(tmp_path / "a", **kwargs)
    assert len(first) == 2 * 2 * 3
    assert [s.modality for s in first[:6]] == ["CT"] * 3 + ["MR"] * 3
    assert len({s.study_uid for s in first}) == 4 and len({s.patient_id for s in first}) == 2
    assert len({s.series_uid for s in first}) == 12
    for s in first:
        lo, hi = (3, 5) if s.modality == "CT" else (2, 3)
        assert lo <= len(s.paths) <= hi and len(s.sop_uids) == len(s.paths)
        assert all(p.is_file() for p in s.paths)
    all_uids = [u for s in first for u in s.sop_uids]
    assert len(set(all_uids)) == len(all_uids)
    again = write_dataset(tmp_path / "b", **kwargs)
    assert [s.sop_uids for s in again] == [s.sop_uids for s in first]
    assert first[0].paths[0].read_bytes() == again[0].paths[0].read_bytes()
