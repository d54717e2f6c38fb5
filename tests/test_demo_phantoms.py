"""The demo's phantoms: valid DICOM (dciodvfy), consistent geometry, NIfTI that the importer places where DICOM is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from app.demo import phantoms as ph
from ingest.nifti_convert import NiftiCase, convert_case

PATIENT = ph.Patient("TEST-001", "Test^Phantom", "F", "19700101")


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("Error", "Warning"))]


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[ph.SeriesSpec, ph.Volume, list[Path], Path]:
    out = tmp_path_factory.mktemp("phantoms")
    spec = ph.SeriesSpec(ph.Study(PATIENT, "ct", "20250101", "CT THORAX ABDOMEN", "CHEST"), "CT", 2, "Thorax-Abdomen", contrast=True)
    volume = ph.ct_torso(1, contrast=True, size=96)
    files = ph.write_series(spec, volume, out / "ct")
    seg = ph.write_seg(files, volume, spec, 302, out / "seg")
    return spec, volume, files, seg


def test_ct_mr_and_seg_are_valid_dicom(ct, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _spec, _volume, files, seg = ct
    mr_slices = []
    for number, weighting in enumerate(ph.MR_TISSUES, start=3):  # each weighting has its own MR attributes (T1 no inversion time)
        mr_spec = ph.SeriesSpec(ph.Study(PATIENT, "mr", "20250102", "MR BRAIN", "HEAD"), "MR", number, f"{weighting} axial", weighting=weighting)
        mr_slices.append(ph.write_series(mr_spec, ph.mr_head(2, weighting, slices=6, size=64, lesion=True), tmp_path / weighting)[3])
    for path in (files[len(files) // 2], *mr_slices, seg):
        assert _dciodvfy_errors(path) == [], path


def test_tissues_and_geometry_are_realistic(ct) -> None:  # type: ignore[no-untyped-def]
    spec, volume, files, seg = ct
    slices = [dcmread(p) for p in files]
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert np.allclose(np.diff(z), -float(slices[0].SliceThickness))  # contiguous axial slices, head first
    assert {tuple(ds.ImageOrientationPatient) for ds in slices} == {(1, 0, 0, 0, 1, 0)}
    assert len({ds.FrameOfReferenceUID for ds in slices}) == 1 and len({ds.SOPInstanceUID for ds in slices}) == len(slices)
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
    liver = volume.labels["liver"]
    assert abs(float(np.median(hu[liver])) - 110) < 15  # enhanced liver
    assert float(np.median(hu[0][:3, :3])) < -900  # air around the body
    assert float(hu.max()) > 800  # cortical bone
    segmentation = dcmread(seg)
    assert segmentation.Modality == "SEG" and segmentation.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    assert [s.SegmentLabel for s in segmentation.SegmentSequence] == ["liver", "spleen", "right kidney", "left kidney"]
    assert ph.derived_uid("series", spec.study.uid, 2) == spec.uid  # derived UIDs: a second seeding stores nothing twice


def test_nifti_lands_where_the_dicom_is(ct, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _spec, volume, files, _seg = ct
    ph.write_nifti(volume, tmp_path / "Case01.nii.gz")
    converted = convert_case(NiftiCase(image=tmp_path / "Case01.nii.gz", label="Case01.nii.gz", case_id="Case01", series_number=1, modality="CT"), tmp_path / "out")
    ours, theirs = dcmread(files[5]), dcmread(converted.image_files[5])
    assert np.allclose([float(v) for v in theirs.ImagePositionPatient], [float(v) for v in ours.ImagePositionPatient], atol=1e-3)
    assert np.allclose([float(v) for v in theirs.ImageOrientationPatient], [1, 0, 0, 0, 1, 0])
    assert np.allclose([float(v) for v in theirs.PixelSpacing], [float(v) for v in ours.PixelSpacing])
    assert np.array_equal(theirs.pixel_array * float(theirs.RescaleSlope) + float(theirs.RescaleIntercept),
                          ours.pixel_array.astype(float) - 1024)
