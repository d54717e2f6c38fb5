"""`segment-body-and-lungs` on a real Dask cluster (scheduler and one worker on loopback), unchanged: the SEG lands in the PACS."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from distributed import Client

from app.demo import phantoms as ph
from tests.support.dask_cluster import dask_cluster
from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job


@pytest.mark.slow
def test_segment_body_and_lungs_runs_on_dask(tmp_path: Path) -> None:
    study = ph.Study(ph.Patient("DASK-SEG", "Phantom^Dask", "M", "19800101"), "dask-seg", "20260103", "CT chest", "CHEST")
    spec = ph.SeriesSpec(study, "CT", 2, "CT chest")
    ph.write_series(spec, ph.ct_torso(4, False, slices=16, size=64), tmp_path / "ct")
    with dask_cluster(tmp_path / "dask-logs", workers=1) as address:
        vireo = VireoProcess(tmp_path / "data", VIREO_DASK_SCHEDULER=address).start()
        try:
            subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--scan-directories", "--call", "DASKSEG", str(tmp_path / "ct")],
                           check=True, capture_output=True, timeout=60)
            vireo.wait_for_instances(16, timeout=60)
            with vireo.client() as api:
                (job,) = create(api, name="dask segment", dag_id="segment-body-and-lungs", dataset="DASKSEG", conf={})["jobs"]
                job = wait_job(api, job["id"], ENDED, timeout=240)
                assert job["status"] == "finished", api.get(f"/api/jobs/{job['id']}/logs").text
                assert job["progress"] == {"done": 4, "total": 4}
                (seg,) = api.get("/api/series", params={"q": "Modality:SEG"}).json()["items"]
                assert seg["StudyInstanceUID"] == study.uid and "DASKSEG" in seg["datasets"]  # default: the dataset the job ran on
            with Client(address, timeout="10s") as client:
                events = client.get_events("vireo-jobs")
            assert {(m["job"], m["kind"]) for _, m in events} >= {(job["id"], "started"), (job["id"], "ended")}
        finally:
            vireo.stop()
