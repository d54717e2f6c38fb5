"""A NIfTI import killed half-way and restarted: the dataset ends with exactly the expected series, all slices.

Vireo is SIGKILLed (its job worker and the job with it) while the import step stores the
converted instances; after Vireo starts again the job is restarted. The restarted run
converts again, and because the UIDs come from the upload's content, case and slice, it
makes the very same instances: what the killed run stored is completed, not duplicated.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job

DAG = "convert-niftis-to-dicoms-and-import-to-pacs"
SLICES = 100
CASES = 3


def nifti_upload(folder: Path) -> bytes:
    """Three cases of SLICES slices (one with a two-label segmentation), zipped: 4 series once imported."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(14)
    affine = np.diag([0.9, 0.9, 1.5, 1.0])
    for n in range(CASES):
        nib.save(nib.Nifti1Image(rng.integers(-100, 900, size=(24, 24, SLICES)).astype(np.int16), affine), folder / f"Case{n}.nii.gz")
    labels = np.zeros((24, 24, SLICES), np.uint8)
    labels[4:12, 4:12, 10:40] = 1
    labels[14:20, 10:22, 60:90] = 2
    nib.save(nib.Nifti1Image(labels, affine), folder / "Case0_segmentation.nii.gz")
    (folder / "seg_info.json").write_text(json.dumps({"seg_info": [{"label_name": "liver", "label_int": 1}, {"label_name": "lesion", "label_int": 2}]}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return buffer.getvalue()


def _kill_during_import(vireo: VireoProcess, job_id: int, timeout: float = 120) -> dict:
    """SIGKILL Vireo once the import step has stored some, not all, of the converted instances."""
    deadline = time.monotonic() + timeout
    with vireo.client() as api:
        while time.monotonic() < deadline:
            job = api.get(f"/api/jobs/{job_id}").json()
            steps = job.get("steps") or []
            progress = job.get("progress") or {}
            importing = len(steps) > 1 and steps[1].get("state") == "running"
            if importing and 30 <= (progress.get("done") or 0) < (progress.get("total") or 0) - 60:
                vireo.kill()
                return job
            assert job["status"] not in ENDED, f"the import ended before it could be killed: {job}"
            time.sleep(0.02)
    raise AssertionError("the import step never ran")


@pytest.mark.slow
def test_a_killed_and_restarted_nifti_import_has_each_series_once_and_whole(start_vireo: Callable[..., VireoProcess], tmp_path: Path) -> None:
    vireo = start_vireo()
    with vireo.client() as api:
        assert api.post("/api/uploads", files={"file": ("cases.zip", nifti_upload(tmp_path / "cases"))}, data={"path": "cases.zip"}).status_code == 201
        (job,) = create(api, dag_id=DAG, conf={"upload": "cases.zip", "dataset": "restart", "modality": "CT"})["jobs"]
    killed_at = _kill_during_import(vireo, job["id"])
    vireo.start()
    partial = vireo.series(dataset="restart")
    stored = sum(s["instances"] for s in partial["items"])
    assert stored < CASES * SLICES + 1, (killed_at["progress"], stored)  # the kill did land mid-import

    with vireo.client() as api:
        interrupted = wait_job(api, job["id"], ENDED, timeout=60)
        assert interrupted["status"] == "failed", interrupted
        assert api.post(f"/api/jobs/{job['id']}/restart").status_code == 200
        done = wait_job(api, job["id"], ENDED, timeout=180)
        assert done["status"] == "finished", api.get(f"/api/jobs/{job['id']}/logs").text
    series = vireo.series(dataset="restart")["items"]
    counts = sorted((s["Modality"], s["instances"]) for s in series)
    assert counts == [("CT", SLICES)] * CASES + [("SEG", 1)], counts
    # and on disk: one folder per series, one file per instance, nothing left of a first conversion
    folders = [p for p in (vireo.data_dir / "pacs").glob("*/*") if p.is_dir()]
    assert sorted(len(list(p.glob("*.dcm"))) for p in folders) == [1] + [SLICES] * CASES
