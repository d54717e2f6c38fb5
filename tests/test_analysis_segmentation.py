"""`segment-body-and-lungs` end to end: phantoms sent with dcmsend, the DAG run through POST /api/workflows, the SEG read back.

The truth is the phantoms' own geometry (app/demo/phantom_truth.py replays `ct_torso`'s
organs; the MR head is its outer shell), never the algorithm's thresholds. The stored SEG is
read with highdicom, checked with dciodvfy, found by search, and linked to its source
(core.derived_series). pydicom-seg is not used: its last release (0.4.1) requires
numpy < 2 and jsonschema < 4, so it cannot be installed beside Vireo's dependencies.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import pytest
from pydicom import dcmread
from sqlalchemy import create_engine

from app.demo import phantom_truth as truth
from app.demo import phantoms as ph
from core.derived_series import results_of, source_of
from ingest.results_writeback import Algorithm, build_measurement_sr, part10_bytes, seg_masks, sort_spatially
from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job

DAG = "segment-body-and-lungs"
CT_SEED, CT_SLICES, CT_SIZE = 11, 40, 128
MR_SLICES, MR_SIZE = 20, 96
DATASET = "SEGTEST"


@dataclass
class Phantoms:
    ct_uid: str
    mr_uid: str
    ct_truth: dict[str, np.ndarray]
    mr_truth: np.ndarray


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def phantoms(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> Phantoms:
    out = tmp_path_factory.mktemp("seg-phantoms")
    patient = ph.Patient("SEG-P1", "Phantom^Segment", "F", "19700101")
    ct_study = ph.Study(patient, "seg-ct", "20260101", "CT chest", "CHEST")
    mr_study = ph.Study(patient, "seg-mr", "20260102", "MR head", "HEAD")
    ct_spec, mr_spec = ph.SeriesSpec(ct_study, "CT", 2, "CT chest"), ph.SeriesSpec(mr_study, "MR", 3, "T1 head", weighting="T1")
    ph.write_series(ct_spec, ph.ct_torso(CT_SEED, False, slices=CT_SLICES, size=CT_SIZE), out / "ct")
    ph.write_series(mr_spec, ph.mr_head(5, "T1", slices=MR_SLICES, size=MR_SIZE), out / "mr")
    subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--scan-directories", "--recurse", "--call", DATASET, str(out)],
                   check=True, capture_output=True, timeout=120)
    vireo.wait_for_instances(CT_SLICES + MR_SLICES, timeout=60)
    return Phantoms(ct_spec.uid, mr_spec.uid, truth.ct_torso_truth(CT_SEED, CT_SLICES, CT_SIZE), truth.mr_head_truth(MR_SLICES, MR_SIZE))


@pytest.fixture(scope="module")
def api(vireo: VireoProcess) -> Iterator[httpx.Client]:
    with vireo.client() as client:
        yield client


@pytest.fixture(scope="module")
def finished(api: httpx.Client, phantoms: Phantoms) -> list[dict]:
    workflow = create(api, name="segment phantoms", dag_id=DAG, dataset=DATASET, conf={"results_dataset": "seg-results"})
    assert len(workflow["jobs"]) == 2  # one job per series
    return [wait_job(api, job["id"], ENDED, timeout=240) for job in workflow["jobs"]]


def _series_files(vireo: VireoProcess, series_uid: str) -> list[Path]:
    (folder,) = (vireo.data_dir / "pacs").glob(f"*/{series_uid}")
    return sorted(folder.glob("*.dcm"))


def _seg_of(api: httpx.Client, source_uid: str) -> dict:
    """The one SEG in the source series' study (the CT and the MR are in studies of their own)."""
    study = api.get(f"/api/series/{source_uid}").json()["StudyInstanceUID"]
    found = api.get("/api/series", params={"q": "Modality:SEG", "dataset": "seg-results", "limit": 50}).json()["items"]
    (seg,) = [s for s in found if s["StudyInstanceUID"] == study]
    return seg


def test_jobs_finish_with_progress_and_tables(api: httpx.Client, finished: list[dict]) -> None:
    for job in finished:
        assert job["status"] == "finished", api.get(f"/api/jobs/{job['id']}/logs").text
        assert job["progress"] == {"done": 4, "total": 4}
        table = api.get(f"/api/jobs/{job['id']}/files/segments.json").json()["segments"]
        assert table and all(row["voxels"] > 0 and row["volume_ml"] > 0 for row in table)
        assert api.get(f"/api/jobs/{job['id']}/files/segments.csv").text.startswith("source_series,seg_series,segment_number,label")


def test_ct_seg_matches_the_phantom_body_and_lungs(vireo: VireoProcess, api: httpx.Client, phantoms: Phantoms, finished: list[dict]) -> None:
    seg_doc = _seg_of(api, phantoms.ct_uid)
    assert "body" in seg_doc["SeriesDescription"].lower()
    (seg_path,) = _series_files(vireo, seg_doc["SeriesInstanceUID"])
    seg = hd.seg.segread(seg_path)
    assert seg.StudyInstanceUID == api.get(f"/api/series/{phantoms.ct_uid}").json()["StudyInstanceUID"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == phantoms.ct_uid
    labels = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    assert [labels[n].SegmentLabel for n in sorted(labels)] == ["body", "right lung", "left lung"]
    for item in labels.values():
        assert item.SegmentAlgorithmType == "AUTOMATIC" and item.SegmentAlgorithmName and "RecommendedDisplayCIELabValue" in item
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion
    images = sort_spatially([dcmread(p) for p in _series_files(vireo, phantoms.ct_uid)])
    order = [int(ds.InstanceNumber) - 1 for ds in images]  # phantom slice k is InstanceNumber k + 1
    masks = seg_masks(seg, images)
    for number, name in ((1, "body"), (2, "right lung"), (3, "left lung")):
        assert _dice(masks[number], phantoms.ct_truth[name][order]) >= 0.95, name
    errors = [line for line in subprocess.run(["dciodvfy", str(seg_path)], capture_output=True, text=True, timeout=120).stderr.splitlines()
              if line.startswith("Error")]
    assert errors == []


def test_mr_head_mask_matches_the_phantom(vireo: VireoProcess, api: httpx.Client, phantoms: Phantoms, finished: list[dict]) -> None:
    seg_doc = _seg_of(api, phantoms.mr_uid)
    (seg_path,) = _series_files(vireo, seg_doc["SeriesInstanceUID"])
    images = sort_spatially([dcmread(p) for p in _series_files(vireo, phantoms.mr_uid)])
    masks = seg_masks(dcmread(seg_path), images)
    assert list(masks) == [1]
    assert _dice(masks[1], phantoms.mr_truth[[int(ds.InstanceNumber) - 1 for ds in images]]) >= 0.95


def test_results_are_searchable_and_linked_to_their_source(vireo: VireoProcess, api: httpx.Client, phantoms: Phantoms, finished: list[dict]) -> None:
    found = api.get("/api/series", params={"q": "Modality:SEG AND SeriesDescription:*body*"}).json()
    assert found["total"] == 1
    seg_uid = found["items"][0]["SeriesInstanceUID"]
    assert "seg-results" in found["items"][0]["datasets"]
    engine = create_engine(f"sqlite:///{vireo.data_dir / 'vireo.db'}")
    try:
        with engine.connect() as conn:
            assert [r.series_uid for r in results_of(conn, phantoms.ct_uid)] == [seg_uid]
            assert source_of(conn, seg_uid) == phantoms.ct_uid
            assert source_of(conn, phantoms.ct_uid) is None
    finally:
        engine.dispose()


def test_running_again_stores_nothing_twice(api: httpx.Client, phantoms: Phantoms, finished: list[dict]) -> None:
    before = api.get("/api/series", params={"q": "Modality:SEG", "limit": 50}).json()["total"]
    (job,) = create(api, name="again", dag_id=DAG, series=[phantoms.ct_uid], conf={"results_dataset": "seg-results"})["jobs"]
    assert wait_job(api, job["id"], ENDED, timeout=240)["status"] == "finished"
    assert api.get("/api/series", params={"q": "Modality:SEG", "limit": 50}).json()["total"] == before


def test_a_bad_results_dataset_is_refused_in_plain_words(api: httpx.Client, phantoms: Phantoms) -> None:
    response = api.post("/api/workflows", json={"name": "bad", "dag_id": DAG, "series": [phantoms.ct_uid], "conf": {"results_dataset": "x" * 65}})
    assert 400 <= response.status_code < 500 and "results_dataset" in response.text


def test_measurement_sr_is_valid_and_linked_to_its_images(vireo: VireoProcess, api: httpx.Client, phantoms: Phantoms, finished: list[dict],
                                                          tmp_path: Path) -> None:
    """The TID 1500 builder other analysis DAGs call: dciodvfy-clean, read back by highdicom, indexed as a result of the CT."""
    seg_doc = _seg_of(api, phantoms.ct_uid)
    (seg_path,) = _series_files(vireo, seg_doc["SeriesInstanceUID"])
    seg = hd.seg.segread(seg_path)
    images = sort_spatially([dcmread(p) for p in _series_files(vireo, phantoms.ct_uid)])
    volume_mm3 = float(phantoms.ct_truth["body"].sum()) * (400 / CT_SIZE) ** 2 * 6.0
    measurements = [{"segment_number": 1, "label": "body", "measurements": [
        {"name": "Volume", "value": volume_mm3, "unit": "mm3"}, {"name": "Mean", "value": -12.5, "unit": "[hnsf'U]"},
        {"name": "Voxel count", "value": int(phantoms.ct_truth["body"].sum()), "unit": "1"}]}]
    sr = build_measurement_sr(images, measurements, seg=seg, algorithm=Algorithm("test measurements", "2"), series_description="Body measurements",
                              uid_seed="test-sr")
    path = tmp_path / "sr.dcm"
    path.write_bytes(part10_bytes(sr))
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    assert [line for line in result.stderr.splitlines() if line.startswith("Error")] == []
    report = hd.sr.srread(path)
    (group,) = report.content.get_volumetric_roi_measurement_groups()
    volume = [m for m in group.get_measurements() if m.name.meaning == "Volume"][0]
    assert volume.value == pytest.approx(volume_mm3) and volume.unit.value == "mm3"
    assert group.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber == 1
    assert group.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--call", "seg-results", str(path)], check=True, capture_output=True, timeout=60)
    vireo.wait_for_instances(1, timeout=30, q="Modality:SR")
    engine = create_engine(f"sqlite:///{vireo.data_dir / 'vireo.db'}")
    try:
        with engine.connect() as conn:
            assert {r.modality for r in results_of(conn, phantoms.ct_uid)} == {"SEG", "SR"}
            assert source_of(conn, str(sr.SeriesInstanceUID)) == phantoms.ct_uid
    finally:
        engine.dispose()
