"""The DICOM receiver against DCMTK's echoscu, storescu and dcmsend: a real sender, a real Vireo process."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian
import pytest

from tests.factories import (
    SeriesFiles,
    compress,
    write_basic_text_sr,
    write_encapsulated_pdf,
    write_enhanced_ct,
    write_multiframe_sc,
    write_secondary_capture,
    write_seg,
    write_series,
)
from tests.support.vireo import VireoProcess


def dcmsend(port: int, called: str, directory: Path, calling: str = "DCMSEND") -> str:
    """dcmsend exactly as Kaapana's manual shows it."""
    result = subprocess.run(
        ["dcmsend", "-v", "127.0.0.1", str(port), "--scan-directories", "--aetitle", calling, "--call", called,
         "--scan-pattern", "*.dcm", "--recurse", str(directory)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def storescu(port: int, called: str, files: list[Path], *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["storescu", *options, "-aec", called, "127.0.0.1", str(port), *map(str, files)], capture_output=True, text=True, timeout=300)



def pacs_files(vireo: VireoProcess) -> list[Path]:
    return [p for p in (vireo.data_dir / "pacs").rglob("*.dcm") if ".incoming" not in p.parts]


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[SeriesFiles]]:
    """Six series, 520 instances, for datasets ALPHA (3 series) and BETA (3 series)."""
    root = tmp_path_factory.mktemp("two-datasets")
    alpha, beta = root / "alpha", root / "beta"
    return {
        "ALPHA": [
            write_series(alpha, modality="CT", slices=120, rows=64, columns=64, patient_id="A1", seed=11, series_number=1),
            write_series(alpha, modality="CT", slices=100, rows=64, columns=64, patient_id="A1", seed=11, series_number=2),
            write_series(alpha, modality="MR", slices=60, rows=64, columns=64, patient_id="A2", seed=12, series_number=1),
        ],
        "BETA": [
            write_series(beta, modality="CT", slices=110, rows=64, columns=64, patient_id="B1", seed=13, series_number=1),
            write_series(beta, modality="MR", slices=70, rows=64, columns=64, patient_id="B1", seed=14, series_number=1),
            write_series(beta, modality="MR", slices=60, rows=64, columns=64, patient_id="B2", seed=15, series_number=1),
        ],
    }


def test_echo(vireo: VireoProcess) -> None:
    result = subprocess.run(["echoscu", "-v", "127.0.0.1", str(vireo.dicom_port)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "Received Echo Response (Success)" in result.stdout + result.stderr


def test_dcmsend_into_two_datasets_then_resend_stores_nothing_twice(vireo: VireoProcess, two_datasets: dict[str, list[SeriesFiles]]) -> None:
    total = sum(len(s.paths) for group in two_datasets.values() for s in group)
    assert total >= 500
    started = time.monotonic()
    for name, group in two_datasets.items():
        out = dcmsend(vireo.dicom_port, name, group[0].paths[0].parents[1])
        assert "with status SUCCESS  : " + str(sum(len(s.paths) for s in group)) in out
    page = vireo.series()
    elapsed = time.monotonic() - started
    # Success is answered only after indexing, so everything is searchable the moment dcmsend returns.
    assert page["total"] == 6, page
    assert sum(i["instances"] for i in page["items"]) == total
    assert elapsed < 120
    with vireo.client() as c:
        listed = {d["name"]: d["series"] for d in c.get("/api/datasets").json()}
        assert listed["ALPHA"] == 3 and listed["BETA"] == 3
        for name, group in two_datasets.items():
            members = {i["SeriesInstanceUID"] for i in c.get("/api/series", params={"dataset": name}).json()["items"]}
            assert members == {s.series_uid for s in group}
        one = two_datasets["ALPHA"][0]
        doc = c.get(f"/api/series/{one.series_uid}").json()
        assert doc["PatientID"] == "A1" and doc["Modality"] == "CT" and doc["instances"] == 120
        assert doc["datasets"] == ["ALPHA"] and doc["is_complete"] and doc["missing_instance_numbers"] == []
        assert doc["min_instance_number"] == 1 and doc["max_instance_number"] == 120
    assert len(pacs_files(vireo)) == total

    # Thumbnails are drawn in the background once a series is quiet.
    deadline = time.monotonic() + 30
    wanted = {s.series_uid for group in two_datasets.values() for s in group}
    while time.monotonic() < deadline and not all((vireo.data_dir / "thumbnails" / f"{u}.png").exists() for u in wanted):
        time.sleep(0.5)
    for uid in wanted:
        png = (vireo.data_dir / "thumbnails" / f"{uid}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
    with vireo.client() as c:
        response = c.get(f"/api/series/{one.series_uid}/thumbnail")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"

    # Everything again: stored once, indexed once, no second file.
    for name, group in two_datasets.items():
        dcmsend(vireo.dicom_port, name, group[0].paths[0].parents[1])
    again = vireo.series()
    assert again["total"] == 6
    assert sum(i["instances"] for i in again["items"]) == total
    assert len(pacs_files(vireo)) == total


def test_ten_concurrent_associations(vireo: VireoProcess, tmp_path: Path) -> None:
    groups = [write_series(tmp_path / f"c{n}", modality="CT", slices=20, rows=64, columns=64, patient_id=f"C{n}", seed=100 + n) for n in range(10)]
    senders = [subprocess.Popen(["storescu", "-aec", "CONCURRENT", "127.0.0.1", str(vireo.dicom_port), *map(str, g.paths)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for g in groups]
    for sender in senders:
        assert sender.wait(timeout=120) == 0, sender.stdout.read() if sender.stdout else ""
    page = vireo.series(dataset="CONCURRENT")
    assert page["total"] == 10
    assert all(item["instances"] == 20 for item in page["items"])


def test_transfer_syntaxes_are_stored_as_received(vireo: VireoProcess, tmp_path: Path) -> None:
    source = write_series(tmp_path / "src", modality="CT", slices=3, rows=64, columns=64, patient_id="TS", seed=200)
    syntaxes = ["implicit", "explicit", "deflated", "jpeg-baseline", "jpeg-lossless", "jpeg-ls", "jpeg2000", "rle"]
    files = []
    for n, syntax in enumerate(syntaxes):
        # one slice per syntax; different UIDs are needed only where compress() keeps them
        files.append(compress(source.paths[n % 3], tmp_path / "out" / f"{syntax}.dcm", syntax))
    sent: dict[str, str] = {}
    for path in files:
        ds = pydicom.dcmread(path)
        if ds.SOPInstanceUID in sent:
            continue  # lossless variants of one slice share its UID; each is sent once
        sent[ds.SOPInstanceUID] = str(ds.file_meta.TransferSyntaxUID)
        # dcmsend proposes each file's own transfer syntax
        assert "with status SUCCESS  : 1" in dcmsend(vireo.dicom_port, "SYNTAXES", path)
        stored = next((vireo.data_dir / "pacs").rglob(f"{ds.SOPInstanceUID}.dcm"))
        back = pydicom.dcmread(stored)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            # compressed data is accepted in its own encoding, byte for byte
            assert str(back.file_meta.TransferSyntaxUID) == sent[ds.SOPInstanceUID], path.name
            assert back.PixelData == ds.PixelData, path.name
        else:
            # uncompressed data may be re-encoded by the sender into the explicit VR context we prefer
            assert back.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, sent[ds.SOPInstanceUID]), path.name
            assert (back.pixel_array == ds.pixel_array).all(), path.name
    assert len(sent) >= 4


def test_storage_sop_classes(vireo: VireoProcess, tmp_path: Path) -> None:
    out = tmp_path / "objects"
    base = write_series(out, modality="CT", slices=12, rows=64, columns=64, patient_id="SOP", seed=300)
    objects = {
        "SEG": write_seg(out, base),
        "SR": write_basic_text_sr(out, base).paths[0],
        "DOC": write_encapsulated_pdf(out, base).paths[0],
        "enhanced": write_enhanced_ct(out, base).paths[0],
        "multiframe": write_multiframe_sc(out, base).paths[0],
        "rgb": write_secondary_capture(out, base, rgb=True).paths[0],
    }
    assert "with status SUCCESS  : 18" in dcmsend(vireo.dicom_port, "SOPCLASSES", out)
    page = vireo.series(dataset="SOPCLASSES")
    assert page["total"] == 7
    by_uid = {i["SeriesInstanceUID"]: i for i in page["items"]}
    seg_series = pydicom.dcmread(objects["SEG"], stop_before_pixels=True).SeriesInstanceUID
    assert by_uid[seg_series]["referenced_series"] == base.series_uid
    with vireo.client() as c:
        for uid in by_uid:
            response = c.get(f"/api/series/{uid}/thumbnail")
            assert response.status_code == 200 and response.content.startswith(b"\x89PNG"), uid


def test_seg_thumbnail_is_redrawn_when_its_reference_arrives(vireo: VireoProcess, tmp_path: Path) -> None:
    image = write_series(tmp_path / "img", modality="CT", slices=12, rows=64, columns=64, patient_id="LATE", seed=350)
    seg = write_seg(tmp_path / "seg", image)
    seg_uid = pydicom.dcmread(seg, stop_before_pixels=True).SeriesInstanceUID
    dcmsend(vireo.dicom_port, "LATEREF", seg.parent)
    thumbnail = vireo.data_dir / "thumbnails" / f"{seg_uid}.png"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not thumbnail.exists():
        time.sleep(0.2)
    alone = thumbnail.read_bytes()  # drawn once quiet: the mask on black
    dcmsend(vireo.dicom_port, "LATEREF", image.paths[0].parent)
    while time.monotonic() < deadline and thumbnail.read_bytes() == alone:
        time.sleep(0.3)
    redrawn = thumbnail.read_bytes()
    assert redrawn != alone
    rgb = np.asarray(Image.open(io.BytesIO(redrawn)).convert("RGB")).astype(int)
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2]) & (rgb[..., 0] > 40)
    assert grey.sum() > 1000  # the CT slice is now under the overlay


def test_calling_and_peer_recorded(vireo: VireoProcess, tmp_path: Path) -> None:
    series = write_series(tmp_path, modality="MR", slices=2, rows=32, columns=32, patient_id="REC", seed=400)
    dcmsend(vireo.dicom_port, "RECORDED", tmp_path, calling="MODALITY7")
    import sqlite3

    with sqlite3.connect(vireo.data_dir / "vireo.db") as db:
        rows = db.execute("select calling_aet, called_aet, peer_address from instance where series_uid=?", (series.series_uid,)).fetchall()
    assert rows and all(r == ("MODALITY7", "RECORDED", "127.0.0.1") for r in rows)


def test_unknown_series_is_404(vireo: VireoProcess) -> None:
    with vireo.client() as c:
        assert c.get("/api/series/1.2.3.4").status_code == 404
        assert c.get("/api/series/1.2.3.4/thumbnail").status_code == 404
        assert c.get("/api/series", params={"dataset": "no-such-dataset"}).status_code == 404
        assert c.get("/api/series", params={"sort": "Nonsense"}).status_code == 400
        assert c.get("/api/series", params={"limit": -1}).status_code == 400
        assert c.get("/api/series", params={"limit": "ten"}).status_code == 400
        assert c.get("/api/series", params={"limit": 5000}).status_code == 400
        # empty parameters, as a client fills API.md's template, mean "not given"
        empty = c.get("/api/series", params={"q": "", "dataset": "", "filter": "", "sort": "", "limit": "", "offset": ""})
        assert empty.status_code == 200 and empty.json()["total"] == c.get("/api/series").json()["total"]




def test_calling_ae_allow_list(start_vireo: Callable[..., VireoProcess]) -> None:
    guarded = start_vireo(VIREO_DICOM_ALLOWED_CALLING_AETS="SCANNER1,SCANNER2")
    refused = subprocess.run(["echoscu", "-aet", "STRANGER", "127.0.0.1", str(guarded.dicom_port)], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "Rejected" in refused.stdout + refused.stderr
    allowed = subprocess.run(["echoscu", "-aet", "SCANNER2", "127.0.0.1", str(guarded.dicom_port)], capture_output=True, text=True, timeout=30)
    assert allowed.returncode == 0


def test_receiver_on_postgresql(start_vireo: Callable[..., VireoProcess], postgres_url: str, small_study: list[SeriesFiles]) -> None:
    """The same process, index on a real PostgreSQL server."""
    vireo = start_vireo(VIREO_DATABASE_URL=postgres_url)
    folder = small_study[0].paths[0].parents[1]
    total = sum(len(s.paths) for s in small_study)
    assert f"with status SUCCESS  : {total}" in dcmsend(vireo.dicom_port, "ON-POSTGRES", folder)
    dcmsend(vireo.dicom_port, "ON-POSTGRES", folder)  # again: stored and counted once
    page = vireo.series(dataset="ON-POSTGRES")
    assert page["total"] == len(small_study)
    assert sum(i["instances"] for i in page["items"]) == total
    assert all(i["is_complete"] for i in page["items"])
    assert not (vireo.data_dir / "vireo.db").exists()
