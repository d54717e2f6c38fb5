"""`segment-with-nnunet`: listed with the reason it cannot run, its models found with their labels; inference where nnU-Net is installed.

Nothing is trained here. The listing test always runs (Vireo's test environment does not
install the `nnunet` extra: torch is gigabytes). The inference test needs nnunetv2 and a
trained model folder named by VIREO_TEST_NNUNET_MODEL; it is skipped, with the reason, otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.analysis.nnunet_dags import EXTRA_HINT, find_models, nnunet_installed
from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job

DAG = "segment-with-nnunet"


def _model_folder(root: Path) -> Path:
    """What nnU-Net's training leaves, minus real weights: enough for the models folder to list it."""
    folder = root / "Dataset042_Phantom" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2},
                                                     "numTraining": 1, "file_ending": ".nii.gz"}))
    (folder / "plans.json").write_text("{}")
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a real checkpoint")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    root = tmp_path_factory.mktemp("nnunet")
    _model_folder(root / "models")
    process = VireoProcess(root / "data", VIREO_MODELS_DIR=str(root / "models")).start()
    yield process
    process.stop()


def test_models_are_found_with_their_labels(tmp_path: Path) -> None:
    _model_folder(tmp_path)
    (tmp_path / "half-copied").mkdir()
    (tmp_path / "half-copied" / "plans.json").write_text("{}")  # no dataset.json, no fold: not a model
    (model,) = find_models(tmp_path)
    assert model.name == "Dataset042_Phantom/nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert model.labels == {"background": 0, "liver": 1, "spleen": 2} and model.folds == ["0"]
    assert "liver, spleen" in model.describe()


@pytest.mark.skipif(nnunet_installed(), reason="nnunetv2 is installed here: the DAG is available")
def test_listed_as_unavailable_with_the_reason_and_refused(server: VireoProcess) -> None:
    with server.client() as api:
        (dag,) = [d for d in api.get("/api/dags").json() if d["dag_id"] == DAG]
        assert dag["unavailable"] == EXTRA_HINT
        model = dag["config_schema"]["properties"]["model"]
        assert model["enum"] == ["Dataset042_Phantom/nnUNetTrainer__nnUNetPlans__3d_fullres"]
        assert "labels: liver, spleen" in model["description"]
        assert "pip install 'vireo[nnunet]'" in dag["config_schema"]["description"]
        segment = next(d for d in api.get("/api/dags").json() if d["dag_id"] == "segment-body-and-lungs")
        assert segment["unavailable"] is None
        refused = api.post("/api/workflows", json={"name": "nnunet", "dag_id": DAG, "series": ["1.2.3"],
                                                    "conf": {"model": model["enum"][0]}})
        assert 400 <= refused.status_code < 500 and "vireo[nnunet]" in refused.text
        assert "/tmp" not in refused.text  # never a server path


TRAINED = os.environ.get("VIREO_TEST_NNUNET_MODEL", "")


@pytest.mark.slow
@pytest.mark.skipif(not TRAINED, reason="no trained nnU-Net model folder named by VIREO_TEST_NNUNET_MODEL (this test trains nothing)")
@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None, reason="nnunetv2 (the nnunet extra) is not installed; see README, analysis DAGs")
def test_inference_stores_a_seg_with_the_model_labels(start_vireo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from app.demo import phantoms as ph

    models = tmp_path / "models"
    shutil.copytree(TRAINED, models / Path(TRAINED).name)
    (model,) = find_models(models)
    vireo = start_vireo(VIREO_MODELS_DIR=str(models))
    study = ph.Study(ph.Patient("NN-1", "Phantom^Nnunet", "F", "19700101"), "nn-ct", "20260101", "CT", "CHEST")
    ph.write_series(ph.SeriesSpec(study, "CT", 2, "CT"), ph.ct_torso(3, False, slices=24, size=96), tmp_path / "ct")
    subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--scan-directories", "--call", "NN", str(tmp_path / "ct")], check=True, timeout=60)
    vireo.wait_for_instances(24, timeout=60)
    with vireo.client() as api:
        (job,) = create(api, name="nnunet", dag_id=DAG, dataset="NN", conf={"model": model.name})["jobs"]
        assert wait_job(api, job["id"], ENDED, timeout=1200)["status"] == "finished", api.get(f"/api/jobs/{job['id']}/logs").text
        segs = api.get("/api/series", params={"q": "Modality:SEG"}).json()["items"]
        assert len(segs) == 1 and segs[0]["SeriesDescription"].startswith("nnU-Net")
