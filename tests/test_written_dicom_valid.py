"""Everything Vireo writes is valid DICOM: dciodvfy finds no error in what the import DAGs store, nor in the demo's objects.

The objects come through the real doors of a running Vireo: NIfTI in both layouts (CT, MR,
PT and OT images, SEGs over them), the demo's own NIfTI collection, and the demo phantoms
(CT, MR in three weightings, their SEGs) through the DICOM zip import. The built-in DAGs
other than the imports store no DICOM of their own. A few slices of each stored series are
checked (first, middle, last), every SEG whole; a failure names the object and dciodvfy's line.
"""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, SegmentationStorage

from app.demo import phantoms as ph
from app.demo.seeding import write_nifti_collection
from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job

NIFTI_DAG = "convert-niftis-to-dicoms-and-import-to-pacs"
ZIP_DAG = "import-dicoms-in-zip-to-internal-pacs"
SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage, "PT": SecondaryCaptureImageStorage, "OT": SecondaryCaptureImageStorage, "SEG": SegmentationStorage}


def _zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:8, 3:9, 1:3] = 1
    labels[10:14, 4:12, 2:4] = 2
    return labels


def _basic_collection(root: Path) -> None:
    """Basic layout: at the top four cases (PT by the form, MR, CT and OT by meta_data), two with SEGs; `study/` in cases/ and segs/."""
    rng = np.random.default_rng(14)
    affine = np.array([[0.9, 0.1, 0, -30], [-0.1, 0.9, 0, 20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    shape = (20, 16, 5)
    floats = lambda: (rng.normal(size=shape) * 300 + 50).astype(np.float32)  # noqa: E731 - stored with a rescale
    root.mkdir(parents=True)
    nib.save(nib.Nifti1Image(floats(), affine), root / "Case1.nii.gz")
    nib.save(nib.Nifti1Image(_labels(shape), affine), root / "Case1_segmentation.nii.gz")
    nib.save(nib.Nifti1Image(rng.integers(0, 1200, size=shape).astype(np.int16), affine), root / "Case2.nii.gz")
    nib.save(nib.Nifti1Image(floats(), affine), root / "Case3.nii.gz")
    nib.save(nib.Nifti1Image(_labels(shape), affine), root / "Case3_seg.nii.gz")
    nib.save(nib.Nifti1Image(rng.integers(0, 255, size=shape).astype(np.uint8), affine), root / "Case4.nii.gz")
    seg_info = {"algorithm": "manual", "task_body_part": "abdomen", "seg_info": [{"label_name": "liver", "label_int": 1}, {"label_name": "lesion", "label_int": 2}]}
    (root / "seg_info.json").write_text(json.dumps(seg_info))
    (root / "meta_data.json").write_text(json.dumps({"series_tags": {
        "Case2.nii": {"0008|0060": "MR"}, "Case3.nii": {"0008|0060": "CT", "0010|0010": "Doe^Jane"}, "Case4.nii": {"0008|0060": "OT"}}}))
    study = root / "study"
    (study / "cases").mkdir(parents=True)
    (study / "segs").mkdir()
    nib.save(nib.Nifti1Image(floats(), affine), study / "cases" / "Case5.nii.gz")
    nib.save(nib.Nifti1Image(_labels(shape), affine), study / "segs" / "Case5.nii.gz")
    (study / "seg_info.json").write_text(json.dumps(seg_info))


def _nnunet_dataset(root: Path) -> None:
    """nnU-Net v2: CT, MRI and PET channels, a label map for the training case, a test case without."""
    rng = np.random.default_rng(15)
    affine = np.diag([1.2, 1.2, 3.0, 1.0])
    shape = (18, 16, 4)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "Dataset014_Written", "channel_names": {"0": "CT", "1": "MRI", "2": "PET"},
                                                   "labels": {"background": 0, "organ": 1, "lesion": 2}, "file_ending": ".nii.gz"}))
    for case, folder in (("case_001", "imagesTr"), ("case_002", "imagesTs")):
        for channel in range(3):
            nib.save(nib.Nifti1Image((rng.normal(size=shape) * 100).astype(np.float32), affine), root / folder / f"{case}_{channel:04d}.nii.gz")
    nib.save(nib.Nifti1Image(_labels(shape), affine), root / "labelsTr" / "case_001.nii.gz")


def _phantom_files(out: Path) -> None:
    """The demo phantoms: a contrast CT with its organ SEG, MR heads in every weighting, the T2 with its lesion SEG."""
    patient = ph.Patient("WRITTEN-1", "Written^Phantom", "F", "19700101")
    ct = ph.SeriesSpec(ph.Study(patient, "ct", "20250101", "CT THORAX ABDOMEN", "CHEST"), "CT", 2, "Thorax-Abdomen", contrast=True)
    volume = ph.ct_torso(1, contrast=True, size=64)
    ph.write_seg(ph.write_series(ct, volume, out / "ct"), volume, ct, 302, out / "ct-seg")
    mr_study = ph.Study(patient, "mr", "20250102", "MR BRAIN", "HEAD")
    for number, weighting in enumerate(("T1", "T2", "FLAIR"), start=3):
        spec = ph.SeriesSpec(mr_study, "MR", number, f"{weighting} axial", weighting=weighting)
        volume = ph.mr_head(number, weighting, size=64, lesion=weighting == "T2")
        files = ph.write_series(spec, volume, out / weighting)
        if weighting == "T2":
            ph.write_seg(files, volume, spec, 305, out / "mr-seg")


@pytest.fixture(scope="module")
def imported(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each upload imported by its DAG (all submitted at once); the stored series per dataset."""
    work = tmp_path_factory.mktemp("written")
    _basic_collection(work / "basic")
    _nnunet_dataset(work / "nnunet" / "Dataset014_Written")
    write_nifti_collection(work / "demo-nifti.zip", ph.Patient("WRITTEN-2", "Written^Nifti", "M", "19800101"), seed=5)
    _phantom_files(work / "phantoms")
    uploads = {
        "basic-mixed.zip": (_zipped(work / "basic"), NIFTI_DAG, {"dataset": "basic", "modality": "PT"}),
        "nnunet.zip": (_zipped(work / "nnunet"), NIFTI_DAG, {"dataset": "nnunet"}),
        "demo-nifti.zip": ((work / "demo-nifti.zip").read_bytes(), NIFTI_DAG, {"dataset": "demo-nifti"}),
        "phantoms.zip": (_zipped(work / "phantoms"), ZIP_DAG, {"dataset": "phantoms"}),
    }
    with vireo.client() as api:
        jobs = []
        for name, (content, dag, conf) in uploads.items():
            assert api.post("/api/uploads", files={"file": (name, content)}, data={"path": name}).status_code == 201
            (job,) = create(api, dag_id=dag, conf={"upload": name, **conf})["jobs"]
            jobs.append(job)
        for job in jobs:
            ended = wait_job(api, job["id"], ENDED, timeout=240)
            assert ended["status"] == "finished", api.get(f"/api/jobs/{job['id']}/logs").text
        return {conf["dataset"]: _series(api, conf["dataset"]) for _, _, conf in uploads.values()}


def _series(api: httpx.Client, dataset: str) -> list[dict[str, Any]]:
    return list(api.get("/api/series", params={"dataset": dataset, "limit": 100}).json()["items"])


def _sample(vireo: VireoProcess, series: dict[str, Any]) -> list[Path]:
    (folder,) = (vireo.data_dir / "pacs").glob(f"*/{series['SeriesInstanceUID']}")
    files = sorted(folder.glob("*.dcm"), key=lambda p: int(dcmread(p, stop_before_pixels=True, specific_tags=["InstanceNumber"]).get("InstanceNumber") or 0))
    return sorted({files[0], files[len(files) // 2], files[-1]})


def _dciodvfy(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_every_stored_object_is_dciodvfy_error_free(vireo: VireoProcess, imported: dict[str, list[dict[str, Any]]]) -> None:
    checks = [(f"{dataset} {s['Modality']} {s.get('SeriesDescription', '')!r} {path.name}", path)
              for dataset, series in imported.items() for s in series for path in _sample(vireo, s)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = list(pool.map(lambda check: [f"{check[0]}: {line}" for line in _dciodvfy(check[1])], checks))
    errors = [line for lines in found for line in lines]
    assert errors == [], "\n".join(errors)


def test_each_modality_has_its_iod(vireo: VireoProcess, imported: dict[str, list[dict[str, Any]]]) -> None:
    """CT and MR as their own IODs with ImageType value 3, PT and OT as Secondary Capture saying what their rescale means, SEGs."""
    modalities = set()
    for series in (s for found in imported.values() for s in found):
        first = dcmread(_sample(vireo, series)[0], stop_before_pixels=True)
        modalities.add(first.Modality)
        assert first.SOPClassUID == SOP_CLASS[first.Modality], series
        if first.Modality in ("CT", "MR"):
            assert len(first.ImageType) >= 3, series
        if first.SOPClassUID == SecondaryCaptureImageStorage:
            assert first.RescaleType == "US", series
    assert modalities == set(SOP_CLASS)
    assert len([s for s in imported["basic"] if s["Modality"] == "SEG"]) == 3  # over PT, CT and the cases/segs PT
    assert sorted(s["Modality"] for s in imported["nnunet"]) == ["CT", "CT", "MR", "MR", "PT", "PT", "SEG"]


def test_operators_name_is_the_collection_not_the_unpacking_folder(vireo: VireoProcess, imported: dict[str, list[dict[str, Any]]]) -> None:
    operators = {}
    for series in imported["basic"]:
        if series["Modality"] != "SEG":
            ds = dcmread(_sample(vireo, series)[0], stop_before_pixels=True)
            operators[str(ds.PatientID)] = str(ds.OperatorsName)
    assert operators == {"Case1": "basic-mixed", "Case2": "basic-mixed", "Case3": "basic-mixed", "Case4": "basic-mixed", "Case5": "study"}
