"""Small hostile inputs that once gave 500s or unclear errors, against a real Vireo: each a 4xx or failed job with a reason.

A query nested a thousand deep, upload names longer than a file system allows, uploads that
collide with an existing file, nnU-Net channel names that are not numbers, a label value in
the billions, and a dashboard value with quotes (once shown as `&quot;`, in real Chromium).
"""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.factories import write_series
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess
from tests.support.workflows import ENDED, create, wait_job

NIFTI = "convert-niftis-to-dicoms-and-import-to-pacs"
QUOTED = 'Say "cheese" & it\'s <b>ok</b>'


@pytest.fixture
def api(vireo: VireoProcess) -> Iterator[httpx.Client]:
    with vireo.client() as client:
        yield client


def assert_reason(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str) and all(w in detail for w in words), detail
    assert "Traceback" not in detail and "/tmp/" not in detail and "/work/" not in detail, detail


def test_deeply_nested_queries_are_refused_with_400(api: httpx.Client) -> None:
    for query in ("(" * 1000 + "x" + ")" * 1000, "-" * 1000 + "x", "NOT " * 900 + "x", "(a OR (b AND " * 150 + "c" + "))" * 150):
        assert_reason(api.get("/api/series", params={"q": query}), 400, "nests")
    assert api.get("/api/series", params={"q": "((Modality:CT OR Modality:MR) AND NOT tags:x)"}).status_code == 200


def test_upload_names_too_long_for_a_file_system_are_refused_with_400(api: httpx.Client) -> None:
    long_name = "n" * 300 + ".zip"
    assert_reason(api.post("/api/uploads", files={"file": ("a", b"x")}, data={"path": long_name}), 400, "longer than 250 bytes")
    assert_reason(api.put(f"/api/uploads/dir/{long_name}", content=b"x"), 400, "longer than 250 bytes")
    assert_reason(api.get(f"/api/uploads/{long_name}", params={"resume": "true"}), 400, "longer than 250 bytes")
    assert_reason(api.delete(f"/api/uploads/{long_name}"), 400, "longer than 250 bytes")
    wide = "é" * 130  # 260 bytes in UTF-8, 130 characters
    assert_reason(api.post("/api/uploads", files={"file": ("a", b"x")}, data={"path": wide}), 400, "longer than 250 bytes")
    assert api.post("/api/uploads", files={"file": ("a", b"x")}, data={"path": "n" * 240 + ".zip"}).status_code == 201


def test_uploads_that_collide_with_an_existing_file_get_409(api: httpx.Client) -> None:
    assert api.post("/api/uploads", files={"file": ("a", b"zip")}, data={"path": "taken.zip"}).status_code == 201
    assert_reason(api.post("/api/uploads", files={"file": ("a", b"x")}, data={"path": "taken.zip/inner.bin"}), 409, "taken.zip is a file")
    assert_reason(api.put("/api/uploads/taken.zip/deeper/inner.bin", content=b"x"), 409, "taken.zip is a file")
    assert api.post("/api/uploads", files={"file": ("a", b"x")}, data={"path": "folder/inside.bin"}).status_code == 201
    assert_reason(api.post("/api/uploads", files={"file": ("a", b"x")}, data={"path": "folder"}), 409, "folder is a folder")
    # an upload to an existing file's own path replaces it (documented), whole
    assert api.post("/api/uploads", files={"file": ("a", b"new")}, data={"path": "taken.zip"}).status_code == 201
    assert api.get("/api/uploads/taken.zip").content == b"new"


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _nii(tmp_path: Path, name: str, data: np.ndarray) -> bytes:
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / name)
    return (tmp_path / name).read_bytes()


def _import(api: httpx.Client, name: str, content: bytes) -> dict[str, Any]:
    assert api.post("/api/uploads", files={"file": (name, content)}, data={"path": name}).status_code == 201
    (job,) = create(api, dag_id=NIFTI, conf={"upload": name, "dataset": "small-inputs"})["jobs"]
    return wait_job(api, job["id"], ENDED, timeout=120)


def test_nnunet_channel_names_that_are_not_numbers_fail_with_a_reason(api: httpx.Client, tmp_path: Path) -> None:
    image = _nii(tmp_path, "img.nii.gz", np.zeros((8, 8, 4), np.int16))
    for channels, words in (({"zero": "CT"}, "'zero' is not a channel number"), ({"0": "CT", "1.5": "MR"}, "'1.5' is not a channel number"),
                            ({"0": {"name": "CT"}}, "needs a name")):
        spec = {"channel_names": channels, "labels": {"background": 0}, "file_ending": ".nii.gz", "name": "Bad"}
        job = _import(api, "channels.zip", _zip({"Bad/dataset.json": json.dumps(spec).encode(), "Bad/imagesTr/c1_0000.nii.gz": image}))
        assert job["status"] == "failed" and words in job["error"] and "invalid literal" not in job["error"], job["error"]


def test_huge_label_values_fail_with_a_reason(api: httpx.Client, tmp_path: Path) -> None:
    image = _nii(tmp_path, "img.nii.gz", np.zeros((8, 8, 4), np.int16))
    labels = _nii(tmp_path, "seg.nii.gz", np.ones((8, 8, 4), np.uint8))
    for huge in (10**12, "1" + "0" * 40, 1e308 * 10):
        # the label map holds only 1s, so a huge value once got as far as a lookup table of that many entries
        seg_info = json.dumps({"seg_info": [{"label_name": "liver", "label_int": 1}, {"label_name": "huge", "label_int": huge}]}).encode()
        job = _import(api, "labels.zip", _zip({"Case.nii.gz": image, "Case_seg.nii.gz": labels, "seg_info.json": seg_info}))
        assert job["status"] == "failed" and ("label_int from 1 to 65535" in job["error"] or "integer 'label_int'" in job["error"]), job["error"]
    spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 10**12}, "file_ending": ".nii.gz"}
    job = _import(api, "nnlabels.zip", _zip({"D/dataset.json": json.dumps(spec).encode(), "D/imagesTr/c1_0000.nii.gz": image,
                                             "D/labelsTr/c1.nii.gz": labels}))
    assert job["status"] == "failed" and "label values run from 0 to 65535" in job["error"], job["error"]


@pytest.fixture(scope="module")
def quoted_series(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("quoted")
    series = write_series(out, modality="CT", slices=2, patient_id="QUOTES", seed=15)
    for path in series.paths:
        ds = pydicom.dcmread(path)
        ds.Manufacturer = QUOTED
        ds.save_as(path)
    subprocess.run(["storescu", "-aec", "quoted", "127.0.0.1", str(vireo.dicom_port), *map(str, series.paths)], check=True, capture_output=True, timeout=60)
    vireo.wait_for_instances(2, dataset="quoted")
    return series.series_uid


def test_dashboard_shows_quotes_as_they_are(vireo: VireoProcess, quoted_series: str, browser_page: Any) -> None:
    page = browser_page
    page.goto(f"{vireo.url}/login?next=%2F")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{vireo.url}/")
    chart = page.get_by_test_id("chart-Manufacturer")
    chart.wait_for(timeout=30_000)
    page.wait_for_function("document.querySelectorAll('[data-testid=chart-Manufacturer] .ytick text').length > 0", timeout=30_000)
    labels = chart.locator(".ytick text").all_text_contents()
    assert QUOTED in labels, labels
    assert not any("&quot;" in label or "&#x27;" in label or "&amp;" in label for label in labels), labels
    assert chart.locator("b").count() == 0  # the tag stays text
