"""`federated-logistic-regression` across three real Vireo processes, against a numpy fit on the union.

Each site holds CTs of its own patients with a SEG each (balls whose size depends, noisily, on
PatientSex). The federated model must equal the model fitted here, in one place, on every
site's rows (features recomputed here from the masks and the slices' HU) within 1e-3, and what
every runner handed back must be model-sized sums and counts only.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from federation import learning
from ingest.results_writeback import Algorithm, Segment, build_seg, sort_spatially
from tests.factories import write_series
from tests.support.vireo import VireoProcess
from tests.test_federated_orchestration import Sites, orchestrator_of

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

DAG = "federated-logistic-regression"
SITES = ("site-a", "site-b", "site-c")
SHAPE = (4, 20, 20)
L2 = 0.1
FEATURES = ["volume_ml", "mean"]


def _ball(rng: np.random.Generator, radius: float) -> np.ndarray:
    z, y, x = np.indices(SHAPE, dtype=float)
    cy, cx = rng.uniform(8, 12, size=2)
    return ((z - 1.5) * 2.5) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2


def _site_data(out: Path, site: int) -> tuple[list[Path], list[list[float]], list[float], list[str]]:
    """A site's files (CTs and their SEGs), and the rows and labels computed here from the masks."""
    rng = np.random.default_rng(100 + site)
    paths, rows, labels, secrets = [], [], [], []
    for k in range(3):
        sex = "M" if (k + site) % 2 else "F"
        ct = write_series(out / f"ct{k}", slices=SHAPE[0], rows=SHAPE[1], columns=SHAPE[2], patient_id=f"S{site}P{k}", patient_name=f"Site{site}^P{k}",
                          patient_sex=sex, pixel_spacing=(1.0, 1.0), slice_thickness=2.5, seed=10 * site + k)
        images = sort_spatially([pydicom.dcmread(p) for p in ct.paths])
        hu = np.stack([apply_modality_lut(ds.pixel_array, ds).astype(float) for ds in images])
        masks = [_ball(rng, (4.5 if sex == "M" else 3.5) + rng.normal(0, 0.8)) for _ in range(2)]
        seg = build_seg(images, [Segment(f"ball {i + 1}", m) for i, m in enumerate(masks)], algorithm=Algorithm("test balls"),
                        series_description="Balls", uid_seed=f"balls/{site}/{k}")
        seg_path = out / f"seg{k}.dcm"
        seg.save_as(seg_path, enforce_file_format=True)
        paths += [*ct.paths, seg_path]
        for m in masks:
            rows.append([m.sum() * 1.0 * 1.0 * 2.5 / 1000.0, hu[m].mean()])
            labels.append(1.0 if sex == "M" else 0.0)
        secrets += [ct.series_uid, ct.study_uid, f"S{site}P{k}", str(seg.SeriesInstanceUID)]
    return paths, rows, labels, secrets


def _numpy_fit(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Penalised logistic regression on standardised rows, by plain iteratively reweighted least squares."""
    z = (rows - rows.mean(0)) / rows.std(0)
    x = np.column_stack([np.ones(len(z)), z])
    w = np.zeros(x.shape[1])
    penalty = L2 * np.diag([0.0] + [1.0] * z.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (p - labels) / len(labels) + penalty @ w
        hessian = (x.T * (p * (1 - p))) @ x / len(labels) + penalty
        w = w - np.linalg.solve(hessian, gradient)
    return w


class Federation(Sites):
    rows: np.ndarray
    labels: np.ndarray
    secrets: list[str]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("learning")
    processes = {name: VireoProcess(root / name, VIREO_INSTANCE_NAME=name) for name in SITES}
    try:
        with ThreadPoolExecutor(3) as pool:  # three start-ups side by side
            list(pool.map(lambda p: p.start(timeout=180), processes.values()))  # generous: three start-ups share 2 cores
        s = Federation(processes, {})
        all_rows, all_labels, secrets = [], [], []
        for i, name in enumerate(SITES):
            paths, rows, labels, site_secrets = _site_data(root / f"data-{name}", i)
            subprocess.run(["dcmsend", "-aec", "cohort", "127.0.0.1", str(processes[name].dicom_port), *map(str, paths)],
                           check=True, capture_output=True, timeout=120)
            processes[name].wait_for_instances(len(paths))
            all_rows += rows
            all_labels += labels
            secrets += site_secrets
        s.rows, s.labels, s.secrets = np.asarray(all_rows), np.asarray(all_labels), secrets
        a = s.api["site-a"]
        assert a.put("/api/instances/local", json={"automatic_sync": False}).status_code == 200
        for runner in ("site-b", "site-c"):
            response = s.api[runner].put("/api/instances/local", json={
                "automatic_execution": True, "sync_interval": 1, "allowed_datasets": ["cohort"], "allowed_dags": [DAG],
            })
            assert response.status_code == 200, response.text
            s.register("site-a", runner)
            s.register(runner, "site-a")
            assert s.sync(runner)["site-a"]["ok"]
        yield s
    finally:
        for p in processes.values():
            p.stop()


def test_fedavg_and_newton_merges_equal_central_steps() -> None:
    """The merges are exact: three sites' FedAvg steps are the union's gradient steps, and Newton reaches the central fit."""
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(45, 2)) * [5, 40] + [20, 10]
    labels = (rows[:, 0] + rng.normal(0, 4, 45) > 20).astype(float)
    parts = [(rows[:10], labels[:10]), (rows[10:30], labels[10:30]), (rows[30:], labels[30:])]
    start = learning.merge_standardisation([learning.site_sums(r) for r, _ in parts], 2)
    fedavg, newton = start, start
    z = np.column_stack([np.ones(45), (rows - rows.mean(0)) / rows.std(0)])
    w = np.zeros(3)
    for _ in range(5):
        fedavg = learning.merge_fedavg([learning.site_fedavg(r, y, fedavg, 0.5, L2, 45) for r, y in parts], fedavg)
        w = w - 0.5 * (z.T @ (1 / (1 + np.exp(-(z @ w))) - labels) / 45 + L2 * np.r_[0.0, w[1:]])
        newton = learning.merge_newton([learning.site_newton(r, y, newton) for r, y in parts], newton, L2)
    assert fedavg["weights"] == pytest.approx(list(w), abs=1e-12)
    assert newton["weights"] == pytest.approx(list(_numpy_fit(rows, labels)), abs=1e-9)


def _numbers_only(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_numbers_only(v) for v in value.values())
    if isinstance(value, list):
        return all(_numbers_only(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_federated_model_equals_the_fit_on_the_union(federation: Federation) -> None:
    rounds = 4  # standardisation, then three Newton steps (5e-6 from the optimum on this data)
    workflow = federation.run(DAG, {"rounds": rounds, "features": FEATURES, "l2": L2, "target_tag": "PatientSex", "positive_value": "M"},
                              timeout=240)
    orchestrator = orchestrator_of(workflow)
    assert orchestrator["status"] == "finished", orchestrator
    model = workflow["result"]["aggregate"]
    assert model["n"] == len(federation.labels) == 18 and model["features"] == FEATURES and model["step"] == rounds - 1
    assert model["mean"] == pytest.approx(list(federation.rows.mean(0)), abs=1e-6)
    expected = _numpy_fit(federation.rows, federation.labels)
    assert np.max(np.abs(np.asarray(model["weights"]) - expected)) < 1e-3, (model["weights"], expected)
    assert [r["term"] for r in model["tables"][0]["rows"]] == ["intercept", *FEATURES]
    # what each runner handed back: counts and model-sized sums only, no identifier of any kind
    runner_jobs = [j for j in workflow["jobs"] if j["role"] == "runner"]
    assert len(runner_jobs) == 3 * rounds
    d = len(FEATURES)
    for job in runner_jobs:
        result = job["result"]
        assert _numbers_only(result), result
        if job["round"] == 1:
            assert set(result) == {"n", "sum", "sum_squares"} and len(result["sum"]) == d
        else:
            assert set(result) == {"n", "gradient", "hessian"} and len(result["gradient"]) == d + 1
            assert np.asarray(result["hessian"]).shape == (d + 1, d + 1)
        assert result["n"] == 6
    sent = json.dumps([j["result"] for j in runner_jobs])
    assert not any(secret in sent for secret in federation.secrets)


def test_a_bad_configuration_is_refused_in_plain_words(federation: Federation) -> None:
    response = federation.api["site-a"].post("/api/workflows", json={"dag_id": DAG, "dataset": "cohort", "conf": {"features": ["shoe size"]},
                                                                     "runners": list(SITES)})
    assert response.status_code in (400, 422) and "features" in response.text


def test_the_dag_is_listed_as_federated(federation: Federation) -> None:
    (dag,) = [d for d in federation.api["site-b"].get("/api/dags").json() if d["dag_id"] == DAG]
    assert dag["federated"] and "features" in dag["config_schema"]["properties"]
