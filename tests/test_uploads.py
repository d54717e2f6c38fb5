"""The upload area (chunked, resumable) and the DICOM-zip import DAG, against a real Vireo."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Iterator

import httpx
import pytest

from tests.factories import SeriesFiles
from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    process = VireoProcess(tmp_path_factory.mktemp("uploads") / "data").start()
    yield process
    process.stop()


@pytest.fixture
def api(server: VireoProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def put(api: httpx.Client, path: str, content: bytes, **form: object) -> httpx.Response:
    return api.post("/api/uploads", files={"file": ("blob", content)}, data={"path": path, **{k: str(v) for k, v in form.items()}})


def run_import(api: httpx.Client, dag_id: str, conf: dict) -> tuple[dict, str]:
    (job,) = create(api, dag_id=dag_id, conf=conf)["jobs"]
    job = wait_job(api, job["id"], ENDED, timeout=120)
    return job, api.get(f"/api/jobs/{job['id']}/logs").text


def report_of(api: httpx.Client, job: dict) -> dict:
    return api.get(f"/api/jobs/{job['id']}/files/import-report.json").json()


def test_single_and_chunked_resumable_uploads(api: httpx.Client, server: VireoProcess) -> None:
    response = put(api, "one/small.bin", b"hello")
    assert response.status_code == 201 and response.json()["complete"] is True
    content = os.urandom(3 * 1024 * 1024 + 17)
    chunk = 1024 * 1024
    assert put(api, "big/data.bin", content[:chunk], offset=0, total=len(content)).json() == {
        "path": "big/data.bin", "offset": chunk, "size": chunk, "total": len(content), "complete": False}
    # not listed and not downloadable while partial; the resume offset is reported
    assert [f["path"] for f in api.get("/api/uploads").json()] == ["one/small.bin"]
    assert api.get("/api/uploads/big/data.bin", params={"resume": "true"}).json()["offset"] == chunk
    # a chunk at the wrong offset (a lost response, a second tab) is refused with where to resume
    wrong = put(api, "big/data.bin", content[3 * chunk :], offset=3 * chunk, total=len(content))
    assert wrong.status_code == 409 and wrong.json()["offset"] == chunk
    for start in range(chunk, len(content), chunk):
        last = put(api, "big/data.bin", content[start : start + chunk], offset=start, total=len(content))
        assert last.status_code == 201, last.text
    assert last.json()["complete"] is True
    listed = {f["path"]: f for f in api.get("/api/uploads").json()}
    assert listed["big/data.bin"]["size"] == len(content) and listed["big/data.bin"]["name"] == "data.bin" and listed["big/data.bin"]["modified"]
    assert api.get("/api/uploads/big/data.bin").content == content
    assert (server.data_dir / "uploads" / "big" / "data.bin").read_bytes() == content
    assert api.delete("/api/uploads/big/data.bin").status_code == 200
    assert api.get("/api/uploads/big/data.bin").status_code == 404
    assert api.delete("/api/uploads/big/data.bin").status_code == 404
    assert not (server.data_dir / "uploads" / "big").exists()
    # a file name alone is enough
    assert api.post("/api/uploads", files={"file": ("named.txt", b"x")}).json()["path"] == "named.txt"


def test_raw_chunks_by_put(api: httpx.Client, server: VireoProcess) -> None:
    content = os.urandom(2 * 1024 * 1024 + 3)
    half = len(content) // 2
    first = api.put("/api/uploads/raw/data.bin", params={"offset": 0, "total": len(content)}, content=content[:half])
    assert first.status_code == 201 and first.json()["complete"] is False and first.json()["offset"] == half
    wrong = api.put("/api/uploads/raw/data.bin", params={"offset": half + 10, "total": len(content)}, content=content[half:])
    assert wrong.status_code == 409 and wrong.json()["offset"] == half
    too_long = api.put("/api/uploads/raw/data.bin", params={"offset": half, "total": len(content)}, content=content[half:] + b"extra")
    assert too_long.status_code == 400 and "beyond the declared total" in too_long.json()["detail"]
    assert api.get("/api/uploads/raw/data.bin", params={"resume": "true"}).json()["offset"] == half  # the bad chunk left nothing
    last = api.put("/api/uploads/raw/data.bin", params={"offset": half, "total": len(content)}, content=content[half:])
    assert last.json()["complete"] is True
    assert (server.data_dir / "uploads" / "raw" / "data.bin").read_bytes() == content
    assert api.put("/api/uploads/../x.bin", content=b"x").status_code in (400, 404)
    assert api.put("/api/uploads/%2E%2E/x.bin", content=b"x").status_code == 400


@pytest.mark.parametrize("path", ["../escape.bin", "/etc/passwd", "a/../../b", ".hidden", "a/.partial/x"])
def test_upload_paths_outside_the_area_are_refused(api: httpx.Client, server: VireoProcess, path: str) -> None:
    response = put(api, path, b"x")
    assert response.status_code == 400 and response.json()["detail"], response.text
    assert not (server.data_dir / "escape.bin").exists()


def test_uploads_require_login(server: VireoProcess) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/api/uploads").status_code == 401
        assert anonymous.post("/api/uploads", files={"file": ("a", b"x")}).status_code == 401


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_of_dicom_folders_imports_into_a_dataset_and_lists_skipped_files(api: httpx.Client, server: VireoProcess, small_study: list[SeriesFiles]) -> None:
    first, second = small_study[0], small_study[2]
    entries = {f"patient/ct/{p.stem}.DCM": p.read_bytes() for p in first.paths}
    entries.update({f"patient/mr/{p.stem}": p.read_bytes() for p in second.paths})  # no extension: only `*` takes them
    entries["patient/notes.txt"] = b"not dicom"
    entries["__MACOSX/patient/._x.dcm"] = b"resource fork"
    assert put(api, "study.zip", _zip(entries)).status_code == 201

    job, log = run_import(api, "import-dicoms-in-zip-to-internal-pacs", {"upload": "study.zip", "dataset": "zipped"})
    assert job["status"] == "finished", log
    report = report_of(api, job)
    assert report["series"] == [first.series_uid] and report["instances"] == len(first.paths)
    skipped = {s["file"]: s["reason"] for s in report["skipped"]}
    assert skipped["patient/notes.txt"] == "does not end in .dcm" and "macOS" in skipped["__MACOSX/patient/._x.dcm"]
    assert "skipped patient/notes.txt" in log

    job, log = run_import(api, "import-dicoms-in-zip-to-internal-pacs", {"upload": "study.zip", "dataset": "zipped", "extension": "*", "delete_original_file": True})
    assert job["status"] == "finished", log
    report = report_of(api, job)
    assert sorted(report["series"]) == sorted([first.series_uid, second.series_uid])
    assert report["instances"] == len(first.paths) + len(second.paths)
    assert {s["file"] for s in report["skipped"]} == {"patient/notes.txt", "__MACOSX/patient/._x.dcm"}
    # the same de-duplication as the receiver: importing twice keeps one copy of each instance
    items = api.get("/api/series", params={"dataset": "zipped"}).json()["items"]
    assert sorted((s["SeriesInstanceUID"], s["instances"]) for s in items) == sorted([(first.series_uid, 30), (second.series_uid, 20)])
    assert "study.zip" not in [f["path"] for f in api.get("/api/uploads").json()]
    assert (server.data_dir / "thumbnails" / f"{second.series_uid}.png").exists()


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("link.dcm")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("slip.zip", _zip({"ok.dcm": b"x", "../../evil.dcm": b"x"}), "zip-slip"),
        ("absolute.zip", _zip({"/tmp/evil.dcm": b"x"}), "absolute path"),
        ("link.zip", _symlink_zip(), "symbolic link"),
        ("bomb.zip", _zip({"zeros.dcm": bytes(64 * 1024 * 1024)}), "zip bomb"),
        ("broken.zip", b"PK\x03\x04 this is not really a zip", "not a readable zip"),
    ],
)
def test_unsafe_or_broken_archives_are_refused_with_a_clear_message(api: httpx.Client, name: str, content: bytes, message: str) -> None:
    assert put(api, name, content).status_code == 201
    before = api.get("/api/series").json()["total"]
    job, log = run_import(api, "import-dicoms-in-zip-to-internal-pacs", {"upload": name, "dataset": "unsafe", "delete_original_file": True})
    assert job["status"] == "failed" and message in log, log
    assert api.get("/api/series").json()["total"] == before
    assert name in [f["path"] for f in api.get("/api/uploads").json()]  # nothing lost


def test_import_of_a_missing_upload_fails_clearly(api: httpx.Client) -> None:
    job, log = run_import(api, "import-dicoms-in-zip-to-internal-pacs", {"upload": "nowhere.zip"})
    assert job["status"] == "failed" and "there is no upload 'nowhere.zip'" in log
    dags = {d["dag_id"]: d for d in api.get("/api/dags").json()}
    assert "import" in dags["import-dicoms-in-zip-to-internal-pacs"]["tags"]
    assert set(dags["import-dicoms-in-zip-to-internal-pacs"]["config_schema"]["properties"]) >= {"upload", "dataset", "extension"}
