"""The built-in DAGs end to end on real DICOM received by a real Vireo, and the service workflows."""

from __future__ import annotations

import csv
import io
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import SimpleITK as sitk

from tests.factories import SeriesFiles
from tests.support.isolated import isolated_storescp
from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, small_study: list[SeriesFiles]) -> Iterator[VireoProcess]:
    """A Vireo holding the small study: series 0–2 in dataset `first`, 3–4 in `second`."""
    process = VireoProcess(tmp_path_factory.mktemp("dags") / "data").start()
    for called, series in (("first", small_study[:3]), ("second", small_study[3:])):
        files = [str(p) for s in series for p in s.paths]
        subprocess.run(["storescu", "-aec", called, "127.0.0.1", str(process.dicom_port), *files], check=True, capture_output=True, timeout=120)
    process.wait_for_instances(sum(len(s.paths) for s in small_study))
    yield process
    process.stop()


@pytest.fixture
def api(loaded: VireoProcess) -> Iterator[httpx.Client]:
    with loaded.client() as client:
        yield client


def run(api: httpx.Client, **body: object) -> dict:
    (job,) = create(api, **body)["jobs"]
    job = wait_job(api, job["id"], ENDED, timeout=60)
    assert job["status"] == "finished", (job, api.get(f"/api/jobs/{job['id']}/logs").text)
    return job


def test_incoming_dicom_shows_as_a_service_workflow_and_restarts_through_the_engine(api: httpx.Client, small_study: list[SeriesFiles]) -> None:
    deadline = time.monotonic() + 30
    while True:
        services = api.get("/api/workflows", params={"service": "true", "dag_id": "service-process-incoming-dcm"}).json()
        jobs = [j for w in services for j in w["jobs"]]
        if jobs and all(j["status"] == "finished" for j in jobs) and len({u for j in jobs for u in j["series"]}) == 5:
            break
        assert time.monotonic() < deadline, services
        time.sleep(0.2)
    assert services[0]["service"] and services[0]["username"] == "system"
    assert {u for j in jobs for u in j["series"]} == {s.series_uid for s in small_study}
    assert all([s["state"] for s in j["steps"]] == ["finished", "finished"] for j in jobs)
    assert all(j["progress"]["done"] == j["progress"]["total"] == len(j["series"]) for j in jobs)
    # a restart runs the DAG itself: the files are indexed again (idempotent) and thumbnails redrawn
    job = jobs[0]
    api.post(f"/api/jobs/{job['id']}/restart")
    job = wait_job(api, job["id"], ENDED, timeout=60)
    assert job["status"] == "finished" and job["run"] == 2, api.get(f"/api/jobs/{job['id']}/logs").text
    assert "indexed" in api.get(f"/api/jobs/{job['id']}/logs").text
    assert sum(s["instances"] for s in api.get("/api/series").json()["items"]) == 130


def test_tag_dataset_adds_and_deletes_tags(api: httpx.Client) -> None:
    run(api, dag_id="tag-dataset", dataset="first", conf={"action": "add", "tags": "reviewed, train"})
    tagged = api.get("/api/series", params={"dataset": "first"}).json()["items"]
    assert [s["tags"] for s in tagged] == [["reviewed", "train"]] * 3
    run(api, dag_id="tag-dataset", dataset="first", conf={"action": "delete", "tags": ["train"]})
    assert [s["tags"] for s in api.get("/api/series", params={"dataset": "first"}).json()["items"]] == [["reviewed"]] * 3
    assert all(s["tags"] == [] for s in api.get("/api/series", params={"dataset": "second"}).json()["items"])
    assert api.post("/api/workflows", json={"dag_id": "tag-dataset", "dataset": "first", "conf": {"action": "paint", "tags": "x"}}).status_code == 400


def test_generate_thumbnail_draws_them_again(api: httpx.Client, loaded: VireoProcess, small_study: list[SeriesFiles]) -> None:
    folder = loaded.data_dir / "thumbnails"
    uid = small_study[0].series_uid
    deadline = time.monotonic() + 20
    while not (folder / f"{uid}.png").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    (folder / f"{uid}.png").unlink()
    job = run(api, dag_id="generate-thumbnail", series=[uid])
    assert (folder / f"{uid}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert job["progress"] == {"done": 1, "total": 1}


def test_collect_metadata_makes_a_downloadable_csv(api: httpx.Client) -> None:
    job = run(api, dag_id="collect-metadata", dataset="first", conf={"attributes": "PatientID,Modality,SeriesDescription,instances", "format": "csv"})
    (listed,) = api.get(f"/api/jobs/{job['id']}/files").json()
    response = api.get(f"/api/jobs/{job['id']}/files/{listed['name']}")
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 3 and set(rows[0]) == {"PatientID", "Modality", "SeriesDescription", "instances"}
    assert sorted(r["instances"] for r in rows) == ["20", "30", "30"]
    assert api.get(f"/api/jobs/{job['id']}/files/..%2Fvireo.db").status_code == 404


def test_download_series_as_dicom_and_as_nifti(api: httpx.Client, small_study: list[SeriesFiles], tmp_path: Path) -> None:
    job = run(api, dag_id="download-series", dataset="second")
    (listed,) = api.get(f"/api/jobs/{job['id']}/files").json()
    with api.stream("GET", f"/api/jobs/{job['id']}/files/{listed['name']}") as response:
        data = b"".join(response.iter_bytes())
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert len(names) == sum(len(s.paths) for s in small_study[3:]) == 50

    job = run(api, dag_id="download-series", series=[small_study[0].series_uid], conf={"format": "nifti"})
    (listed,) = api.get(f"/api/jobs/{job['id']}/files").json()
    archive = zipfile.ZipFile(io.BytesIO(api.get(f"/api/jobs/{job['id']}/files/{listed['name']}").content))
    (name,) = archive.namelist()
    assert name.endswith(f"{small_study[0].series_uid}.nii.gz")
    target = tmp_path / "volume.nii.gz"
    target.write_bytes(archive.read(name))
    assert sitk.ReadImage(str(target)).GetSize() == (64, 64, 30)


def test_send_dicom_to_a_real_storescp(api: httpx.Client, small_study: list[SeriesFiles], tmp_path: Path) -> None:
    out = tmp_path / "received"
    out.mkdir()
    with isolated_storescp(out, "ARCHIVE") as port:
        job = run(api, dag_id="send-dicom", dataset="second", conf={"host": "127.0.0.1", "port": port, "called_ae_title": "ARCHIVE"})
        assert job["progress"] == {"done": 50, "total": 50}
        assert len(list(out.iterdir())) == 50
    (job,) = create(api, dag_id="send-dicom", series=[small_study[4].series_uid], conf={"host": "127.0.0.1", "port": port})["jobs"]
    job = wait_job(api, job["id"], ENDED, timeout=60)
    assert job["status"] == "failed" and "could not associate" in job["error"] and job["steps"][0]["attempt"] == 2


def test_reindex_and_delete_series(api: httpx.Client, loaded: VireoProcess, small_study: list[SeriesFiles]) -> None:
    # a file lost on disk: the re-index service workflow drops its row
    victim = small_study[2]
    files = sorted((loaded.data_dir / "pacs" / victim.study_uid / victim.series_uid).glob("*.dcm"))
    files[0].unlink()
    job = run(api, dag_id="service-re-index-dicom-data")
    assert api.get(f"/api/series/{victim.series_uid}").json()["instances"] == len(files) - 1
    assert api.get(f"/api/workflows/{job['workflow_id']}").json()["service"] is True

    # delete one series: files, index, thumbnail and dataset membership go; the study's other series stay
    first = small_study[0]
    run(api, dag_id="delete-series", series=[first.series_uid])
    assert api.get(f"/api/series/{first.series_uid}").status_code == 404
    assert not (loaded.data_dir / "pacs" / first.study_uid / first.series_uid).exists()
    assert not (loaded.data_dir / "thumbnails" / f"{first.series_uid}.png").exists()
    assert api.get("/api/datasets/first").json()["series"] == 2
    assert api.get(f"/api/series/{small_study[1].series_uid}").status_code == 200

    # the complete study of series 3 (series 2 is in the same study)
    assert small_study[2].study_uid == small_study[3].study_uid != small_study[4].study_uid
    run(api, dag_id="delete-series", series=[small_study[3].series_uid], conf={"delete_complete_study": True})
    remaining = {s["SeriesInstanceUID"] for s in api.get("/api/series").json()["items"]}
    assert remaining == {small_study[1].series_uid, small_study[4].series_uid}
    assert not (loaded.data_dir / "pacs" / small_study[3].study_uid).exists()

    # a deleted series sent again is indexed anew, with its attributes
    subprocess.run(["storescu", "-aec", "again", "127.0.0.1", str(loaded.dicom_port), *map(str, first.paths)], check=True, capture_output=True, timeout=60)
    doc = api.get(f"/api/series/{first.series_uid}").json()
    assert doc["instances"] == 30 and doc["SeriesDescription"] and doc["datasets"] == ["again"]


