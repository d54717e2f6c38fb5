"""NIfTI (basic and nnU-Net v2) to DICOM and DICOM SEG, checked with independent tools: dciodvfy, dcm2niix, highdicom."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import httpx
import nibabel as nib
import numpy as np
import pytest
from pydicom import dcmread

from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job

DAG = "convert-niftis-to-dicoms-and-import-to-pacs"


def oblique_affine(spacing: tuple[float, float, float], angle: float, origin: tuple[float, float, float]) -> np.ndarray:
    """A rotated (about z, then x), scaled RAS affine: what an oblique acquisition looks like."""
    c, s = np.cos(angle), np.sin(angle)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    process = VireoProcess(tmp_path_factory.mktemp("nifti") / "data").start()
    yield process
    process.stop()


@pytest.fixture
def api(server: VireoProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def run_import(api: httpx.Client, name: str, folder: Path, **conf: object) -> tuple[dict, str, dict | None]:
    assert api.post("/api/uploads", files={"file": (name, zipped(folder))}, data={"path": name}).status_code == 201
    (job,) = create(api, dag_id=DAG, conf={"upload": name, **conf})["jobs"]
    job = wait_job(api, job["id"], ENDED, timeout=180)
    log = api.get(f"/api/jobs/{job['id']}/logs").text
    report = api.get(f"/api/jobs/{job['id']}/files/import-report.json")
    return job, log, report.json() if report.status_code == 200 else None


def series_files(server: VireoProcess, series_uid: str) -> list[Path]:
    (folder,) = (server.data_dir / "pacs").glob(f"*/{series_uid}")
    return sorted(folder.glob("*.dcm"))


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def dcm2niix_volume(files: list[Path], tmp: Path) -> nib.Nifti1Image:
    source, out = tmp / "dcm", tmp / "nii"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy(path, source / path.name)
    subprocess.run(["dcm2niix", "-z", "n", "-f", "volume", "-o", str(out), str(source)], check=True, capture_output=True, timeout=120)
    return nib.load(str(out / "volume.nii"))


def canonical(image: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    image = nib.as_closest_canonical(image)
    return np.asarray(image.dataobj, dtype=np.float64), image.affine


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Basic format, flat: a float CT with a 3-label segmentation beside it, an int16 MR without, meta_data and seg_info."""
    root = tmp_path_factory.mktemp("basic") / "collection"
    root.mkdir()
    rng = np.random.default_rng(7)
    affine = oblique_affine((0.7, 0.8, 2.5), 0.3, (-40.0, 25.0, 12.5))
    ct = (rng.normal(size=(48, 40, 14)) * 250.5 - 100.25).astype(np.float32)
    labels = np.zeros(ct.shape, dtype=np.uint8)
    labels[5:20, 5:15, 2:7] = 1
    labels[25:40, 10:30, 5:11] = 2
    labels[30:35, 2:6, 9:13] = 5
    nib.save(nib.Nifti1Image(ct, affine), root / "Case11.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "Case11_segmentation.nii.gz")
    plain = rng.integers(-500, 1500, size=(32, 32, 6)).astype(np.int16)
    nib.save(nib.Nifti1Image(plain, oblique_affine((1.0, 1.0, 3.0), -0.2, (0.0, 0.0, 0.0))), root / "Case1.nii.gz")
    (root / "seg_info.json").write_text(json.dumps({"algorithm": "manual", "task_body_part": "abdomen", "seg_info": [
        {"label_name": "background", "label_int": "0"}, {"label_name": "liver", "label_int": "1"},
        {"label_name": "spleen", "label_int": "2"}, {"label_name": "tumour", "label_int": "5"}]}))
    (root / "meta_data.json").write_text(json.dumps({
        "global_tags": {"0008|0080": "Vireo Hospital"},
        "series_tags": {"Case11.nii": {"0010|0010": "Doe^Jane", "0010|0020": "PAT-11"}}}))
    return {"root": root, "ct": ct, "labels": labels, "affine": affine, "plain": plain}


def test_basic_format_makes_valid_images_and_a_seg_that_round_trip(api: httpx.Client, server: VireoProcess, basic: dict, tmp_path: Path) -> None:
    job, log, report = run_import(api, "basic.zip", basic["root"], dataset="nifti", modality="CT")
    assert job["status"] == "finished", log
    assert report is not None and len(report["series"]) == 3 and report["skipped"] == []
    assert "dciodvfy Case11.nii.gz (seg.dcm): Warning" in log  # its warnings go to the job log
    items = {s["SeriesInstanceUID"]: s for s in api.get("/api/series", params={"dataset": "nifti", "limit": 50}).json()["items"]}
    ct_series = next(s for s in items.values() if s.get("PatientID") == "PAT-11" and s["Modality"] == "CT")
    seg_series = next(s for s in items.values() if s["Modality"] == "SEG")
    other = next(s for s in items.values() if s.get("PatientID") == "Case1")
    assert ct_series["instances"] == 14 and other["instances"] == 6

    ct_files = series_files(server, ct_series["SeriesInstanceUID"])
    first = dcmread(ct_files[0])
    assert first.PatientName == "Doe^Jane" and first.InstitutionName == "Vireo Hospital" and first.StudyID == "Case11"
    assert dcmread(series_files(server, other["SeriesInstanceUID"])[0]).InstitutionName == "Vireo Hospital"
    for path in (ct_files[3], series_files(server, other["SeriesInstanceUID"])[0], *series_files(server, seg_series["SeriesInstanceUID"])):
        assert dciodvfy_errors(path) == [], path

    # dcm2niix reads back the voxel values (within the rescale step) and the geometry (within 1e-3 mm)
    data, affine = canonical(dcm2niix_volume(ct_files, tmp_path))
    want, want_affine = canonical(nib.Nifti1Image(basic["ct"], basic["affine"]))
    assert data.shape == want.shape
    assert np.abs(data - want).max() <= float(first.RescaleSlope) / 2 + 1e-3
    assert np.abs(affine - want_affine).max() < 1e-3
    data, affine = canonical(dcm2niix_volume(series_files(server, other["SeriesInstanceUID"]), tmp_path / "plain"))
    assert np.array_equal(data, canonical(nib.Nifti1Image(basic["plain"], affine))[0])

    # highdicom decodes the SEG to the original label map: one segment per seg_info label, referencing the image series
    (seg_path,) = series_files(server, seg_series["SeriesInstanceUID"])
    seg = hd.seg.segread(seg_path)
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert [seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()] == ["liver", "spleen", "tumour"]
    assert seg.get_segment_description(1).algorithm_identification[0].AlgorithmName == "manual"
    assert seg.BodyPartExamined == "ABDOMEN" and "abdomen" in seg.SeriesDescription
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {dcmread(p).SOPInstanceUID for p in ct_files}
    by_position = sorted(ct_files, key=lambda p: dcmread(p).InstanceNumber)
    uids = [dcmread(p).SOPInstanceUID for p in by_position]
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    decoded = np.array([0, 1, 2, 5])[pixels].transpose(2, 1, 0)
    assert np.array_equal(decoded, basic["labels"])
    assert (server.data_dir / "thumbnails" / f"{seg_series['SeriesInstanceUID']}.png").exists()


def test_cases_and_segs_folders(api: httpx.Client, basic: dict, tmp_path: Path) -> None:
    root = tmp_path / "upload" / "study"
    (root / "cases").mkdir(parents=True)
    (root / "segs").mkdir()
    shutil.copy(basic["root"] / "Case11.nii.gz", root / "cases" / "Case11.nii.gz")
    shutil.copy(basic["root"] / "Case11_segmentation.nii.gz", root / "segs" / "Case11.nii.gz")
    shutil.copy(basic["root"] / "Case1.nii.gz", root / "cases" / "Case1.nii.gz")
    shutil.copy(basic["root"] / "seg_info.json", root / "seg_info.json")
    job, log, report = run_import(api, "layout-b.zip", tmp_path / "upload", dataset="layout-b", modality="mri")
    assert job["status"] == "finished", log
    modalities = sorted(s["Modality"] for s in api.get("/api/series", params={"dataset": "layout-b"}).json()["items"])
    assert modalities == ["MR", "MR", "SEG"]


def test_nnunet_v2_dataset(api: httpx.Client, server: VireoProcess, tmp_path: Path) -> None:
    root = tmp_path / "Dataset001_Brain"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "BrainTumour", "channel_names": {"0": "FLAIR", "1": "CT"},
                                                   "labels": {"background": 0, "edema": 1, "tumor": 2}, "file_ending": ".nii.gz", "numTraining": 1}))
    rng = np.random.default_rng(3)
    affine = oblique_affine((1.0, 1.0, 1.5), 0.1, (10.0, -5.0, 3.0))
    label = np.zeros((24, 20, 8), dtype=np.uint8)
    label[4:10, 4:10, 2:5] = 1
    label[12:16, 8:14, 3:6] = 2
    for case, folder in (("BRATS_001", "imagesTr"), ("BRATS_002", "imagesTs")):
        for channel in (0, 1):
            nib.save(nib.Nifti1Image(rng.integers(0, 900, size=label.shape).astype(np.int16), affine), root / folder / f"{case}_{channel:04d}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / "BRATS_001.nii.gz")
    job, log, report = run_import(api, "brats.zip", root, dataset="brats")
    assert job["status"] == "finished", log
    items = api.get("/api/series", params={"dataset": "brats", "limit": 50}).json()["items"]
    assert sorted((s["PatientID"], s["Modality"]) for s in items) == [
        ("BRATS_001", "CT"), ("BRATS_001", "MR"), ("BRATS_001", "SEG"), ("BRATS_002", "CT"), ("BRATS_002", "MR")]
    case1 = [s for s in items if s["PatientID"] == "BRATS_001"]
    assert len({s["StudyInstanceUID"] for s in case1}) == 1
    flair = next(s for s in case1 if s["Modality"] == "MR")
    assert flair["SeriesDescription"] == "FLAIR"
    seg_item = next(s for s in case1 if s["Modality"] == "SEG")
    seg = hd.seg.segread(series_files(server, seg_item["SeriesInstanceUID"])[0])
    flair_uids = {dcmread(p).SOPInstanceUID for p in series_files(server, flair["SeriesInstanceUID"])}
    assert {uid for _, _, uid in seg.get_source_image_uids()} == flair_uids
    assert seg.get_segment_description(1).algorithm_identification[0].AlgorithmName == "BrainTumour"
    assert [seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()] == ["edema", "tumor"]


def test_bad_cases_fail_the_job_with_the_file_named_or_are_skipped(api: httpx.Client, basic: dict, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    shutil.copy(basic["root"] / "Case1.nii.gz", root / "Case1.nii.gz")
    shutil.copy(basic["root"] / "Case11.nii.gz", root / "Case11.nii.gz")
    shutil.copy(basic["root"] / "Case11_segmentation.nii.gz", root / "Case11_segmentation.nii.gz")
    (root / "seg_info.json").write_text(json.dumps({"algorithm": "x", "seg_info": [{"label_name": "liver", "label_int": 1}]}))
    job, log, _ = run_import(api, "bad-labels.zip", root, dataset="bad")
    assert job["status"] == "failed" and "Case11_segmentation.nii.gz: label values [2, 5] are not in seg_info.json" in log, log
    assert api.get("/api/series", params={"dataset": "bad"}).status_code == 404  # nothing half-imported: not even the dataset

    job, log, report = run_import(api, "bad-labels-skip.zip", root, dataset="bad", skip_bad_cases=True)
    assert job["status"] == "finished", log
    assert [s["file"] for s in report["skipped"]] == ["Case11.nii.gz"]
    assert [s["PatientID"] for s in api.get("/api/series", params={"dataset": "bad"}).json()["items"]] == ["Case1"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Case2.nii.gz").write_bytes(gzip.compress(b"not a nifti at all")[:20])
    job, log, _ = run_import(api, "broken.zip", broken)
    assert job["status"] == "failed" and "Case2.nii.gz: not a readable NIfTI file" in log, log

    (broken / "Case2.nii.gz").unlink()
    shutil.copy(basic["root"] / "Case1.nii.gz", broken / "Case3.nii.gz")
    (broken / "meta_data.json").write_text("{not json")
    job, log, _ = run_import(api, "badjson.zip", broken)
    assert job["status"] == "failed" and "meta_data.json: not valid JSON" in log, log
    (broken / "meta_data.json").write_text(json.dumps({"global_tags": {"0008-0080": "x"}}))
    job, log, _ = run_import(api, "badkey.zip", broken)
    assert job["status"] == "failed" and "tag key '0008-0080' is not of the form gggg|eeee" in log, log
    assert api.post("/api/workflows", json={"dag_id": DAG, "conf": {"upload": "badkey.zip", "modality": "XYZ"}}).status_code == 400


def test_nifti_to_dicom_to_nnunet_export_round_trip(api: httpx.Client, tmp_path: Path) -> None:
    root = tmp_path / "Dataset002_Liver"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "Liver", "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "lesion": 3},
                                                   "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(11)
    affine = oblique_affine((0.8, 0.9, 2.0), 0.25, (-12.0, 40.0, -7.5))
    originals: dict[str, nib.Nifti1Image] = {}
    label = np.zeros((30, 26, 7), dtype=np.uint8)
    label[3:12, 4:20, 1:5] = 1
    label[15:22, 6:9, 2:6] = 3
    for name, folder in (("LIV_001_0000", "imagesTr"), ("LIV_002_0000", "imagesTs")):
        originals[f"{folder}/{name}"] = nib.Nifti1Image(rng.integers(-1000, 2000, size=label.shape).astype(np.int16), affine)
    originals["labelsTr/LIV_001"] = nib.Nifti1Image(label, affine)
    for key, image in originals.items():
        nib.save(image, root / f"{key}.nii.gz")
    job, log, _ = run_import(api, "liver.zip", root, dataset="liver")
    assert job["status"] == "finished", log

    (job,) = create(api, dag_id="export-nnunet-dataset", dataset="liver", conf={"name": "Dataset002_Liver"})["jobs"]
    job = wait_job(api, job["id"], ENDED, timeout=120)
    assert job["status"] == "finished", api.get(f"/api/jobs/{job['id']}/logs").text
    archive = zipfile.ZipFile(io.BytesIO(api.get(f"/api/jobs/{job['id']}/files/Dataset002_Liver.zip").content))
    archive.extractall(tmp_path / "export")
    exported = tmp_path / "export" / "Dataset002_Liver"
    spec = json.loads((exported / "dataset.json").read_text())
    assert spec["labels"] == {"background": 0, "liver": 1, "lesion": 3} and spec["channel_names"] == {"0": "CT"} and spec["numTraining"] == 1
    assert sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*.nii.gz")) == sorted(f"{k}.nii.gz" for k in originals)
    for key, original in originals.items():
        back = nib.load(str(exported / f"{key}.nii.gz"))
        assert np.array_equal(np.asarray(back.dataobj), np.asarray(original.dataobj)), key
        assert np.allclose(back.affine, original.affine, atol=1e-4), (key, back.affine, original.affine)
