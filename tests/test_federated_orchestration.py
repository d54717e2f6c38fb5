"""Federated orchestration across three real Vireo processes on loopback.

site-a orchestrates and is a runner too; site-b and site-c run. Each site holds a dataset
`cohort` of its own, different series. site-a requires Fernet-encrypted sync bodies, so the
runners' jobs and results travel encrypted.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from tests.factories import SeriesFiles, write_series
from tests.support.vireo import VireoProcess, start_all
from tests.support.workflows import ENDED, create, wait_job

pytestmark = pytest.mark.timeout(300)

STATISTICS = "federated-metadata-statistics"
VARIANCE = "test-federated-variance"
EDGES = [-1100.0, -500.0, -100.0, 0.0, 50.0, 100.0, 400.0, 1000.0, 2000.0]
SITES = ("site-a", "site-b", "site-c")
RUNNER_DAGS = [STATISTICS, VARIANCE]


class Sites:
    def __init__(self, processes: dict[str, VireoProcess], data: dict[str, list[SeriesFiles]]) -> None:
        self.processes = processes
        self.data = data
        self.api = {name: p.client() for name, p in processes.items()}

    def local(self, site: str) -> dict[str, Any]:
        return self.api[site].get("/api/instances/local").json()  # type: ignore[no-any-return]

    def register(self, on: str, other: str) -> None:
        definition = {k: v for k, v in self.local(other).items() if k in ("name", "protocol", "host", "port", "token", "public_key", "fernet_key", "ssl_verify")}
        response = self.api[on].post("/api/instances", json=definition)
        assert response.status_code == 201, response.text

    def stop_polling(self, site: str) -> None:
        """Turn the site's automatic sync off and let a sync already under way end: one that started before the
        change still pulls what it finds and tells the other side this site's settings (the interval here is 1 s)."""
        response = self.api[site].put("/api/instances/local", json={"automatic_sync": False})
        assert response.status_code == 200, response.text
        time.sleep(3)

    def sync(self, site: str) -> dict[str, Any]:
        response = self.api[site].post("/api/instances/sync")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def run(self, dag_id: str, conf: dict[str, Any], runners: tuple[str, ...] = SITES, timeout: float = 60) -> dict[str, Any]:
        """Start a federated workflow on site-a and wait for its orchestrator job to end; the workflow document."""
        workflow = create(self.api["site-a"], name=f"fed-{dag_id}", dag_id=dag_id, dataset="cohort", conf=conf, runners=list(runners))
        # The answer lists the jobs that exist by then: a warm orchestrator may have made its round's runner jobs already.
        (orchestrator,) = [j for j in workflow["jobs"] if j["role"] == "orchestrator"]
        assert orchestrator["runner_instance"] == "site-a"
        assert all(j["role"] == "runner" and j["parent_job_id"] == orchestrator["id"] for j in workflow["jobs"] if j is not orchestrator)
        wait_job(self.api["site-a"], orchestrator["id"], ENDED, timeout=timeout)
        return self.api["site-a"].get(f"/api/workflows/{workflow['id']}").json()  # type: ignore[no-any-return]


def orchestrator_of(workflow: dict[str, Any]) -> dict[str, Any]:
    """A federated workflow's orchestrator job (a warm orchestrator may have listed its round's jobs already)."""
    return next(j for j in workflow["jobs"] if j["role"] == "orchestrator")


def _send(process: VireoProcess, series: list[SeriesFiles]) -> None:
    files = [str(p) for s in series for p in s.paths]
    subprocess.run(["dcmsend", "-aec", "cohort", "127.0.0.1", str(process.dicom_port), *files], check=True, capture_output=True, timeout=120)
    process.wait_for_instances(len(files))


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, small_study: list[SeriesFiles]) -> Iterator[Sites]:
    root = tmp_path_factory.mktemp("federated")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(Path(__file__).parent / "federated_dags" / "federated_variance.py", dags)
    acme = write_series(root / "acme", modality="CT", slices=12, rows=48, columns=48, patient_id="PAT9", patient_name="Acme^Pat",
                        manufacturer="Acme Imaging", seed=9)
    data = {"site-a": [small_study[0], small_study[2]], "site-b": [small_study[1], acme], "site-c": [small_study[3], small_study[4]]}
    processes = {name: VireoProcess(root / name, VIREO_INSTANCE_NAME=name, VIREO_DAGS_DIR=str(dags)) for name in SITES}
    try:
        start_all(*processes.values())
        s = Sites(processes, data)
        for name in SITES:
            _send(processes[name], data[name])
        a = s.api["site-a"]
        assert a.put("/api/instances/local", json={"automatic_sync": False, "fernet_encryption": True}).status_code == 200
        for runner in ("site-b", "site-c"):
            response = s.api[runner].put("/api/instances/local", json={
                "automatic_execution": True, "sync_interval": 1, "allowed_datasets": ["cohort"], "allowed_dags": RUNNER_DAGS,
            })
            assert response.status_code == 200, response.text
            s.register("site-a", runner)
            s.register(runner, "site-a")  # with site-a's Fernet key
            assert s.sync(runner)["site-a"]["ok"]  # site-a learns what the runner allows
        # each site's first job pays for starting its job workers: a local-only run on each, so no round timeout below does
        warm = {name: create(s.api[name], dag_id=STATISTICS, dataset="cohort", conf={"histograms": False})["jobs"][0]["id"] for name in SITES}
        for name, job_id in warm.items():
            assert wait_job(s.api[name], job_id, ENDED, timeout=60)["status"] == "finished"
        yield s
    finally:
        for p in processes.values():
            p.stop()


def _central_statistics(series: list[SeriesFiles], edges: list[float]) -> dict[str, Any]:
    """The statistics of the union of every site's data, computed here from the files in one pass."""
    counts: dict[str, dict[str, int]] = {f: {} for f in ("Modality", "BodyPartExamined", "Manufacturer")}
    values: dict[str, list[np.ndarray]] = {}
    instances = 0
    for item in series:
        first = pydicom.dcmread(item.paths[0], stop_before_pixels=True)
        for field in counts:
            value = str(first.get(field, "") or "").strip() or "(none)"
            counts[field][value] = counts[field].get(value, 0) + 1
        for path in item.paths:
            ds = pydicom.dcmread(path)
            values.setdefault(ds.Modality, []).append(np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=float).ravel())
            instances += 1
    histograms = {}
    for modality, parts in values.items():
        union = np.concatenate(parts)
        histograms[modality] = {"counts": np.histogram(union, bins=edges)[0].tolist(), "below": int((union < edges[0]).sum()),
                                "above": int((union > edges[-1]).sum()), "pixels": int(union.size)}
    return {"sites": 3, "series": len(series), "instances": instances, "unreadable_instances": 0, "counts": counts,
            "histogram_edges": edges, "histograms": histograms}


def test_statistics_across_three_sites_equal_the_central_statistics_of_the_union(sites: Sites) -> None:
    workflow = sites.run(STATISTICS, {"histogram_edges": EDGES})
    orchestrator = orchestrator_of(workflow)
    assert orchestrator["status"] == "finished", orchestrator
    union = [s for site in SITES for s in sites.data[site]]
    result = workflow["result"]
    assert result["aggregate"] == _central_statistics(union, EDGES)
    assert result["status"] == "finished" and result["runners"] == list(SITES) and result["min_runners"] == 3
    (round_1,) = result["rounds"]
    assert round_1["status"] == "finished" and round_1["succeeded"] == sorted(SITES)
    assert {name: info["status"] for name, info in round_1["runners"].items()} == {name: "finished" for name in SITES}
    # the same result on the orchestrator job itself, and each runner's own statistics on its round job
    assert sites.api["site-a"].get(f"/api/jobs/{orchestrator['id']}").json()["result"] == result
    runner_jobs = {j["runner_instance"]: j for j in workflow["jobs"] if j["role"] == "runner"}
    assert set(runner_jobs) == set(SITES) and all(j["round"] == 1 and j["parent_job_id"] == orchestrator["id"] for j in runner_jobs.values())
    assert runner_jobs["site-b"]["result"]["counts"]["Manufacturer"] == {"Acme Imaging": 1, "Vireo Synthetic": 1}
    assert runner_jobs["site-b"]["series"] == []  # site-a never learns a remote's series
    # only aggregates left the sites: no UID, patient ID or name of any series in what came back
    sent = json.dumps([j["result"] for j in runner_jobs.values()] + [result])
    for item in union:
        first = pydicom.dcmread(item.paths[0], stop_before_pixels=True)
        for secret in (item.series_uid, first.StudyInstanceUID, first.SOPInstanceUID, str(first.PatientID), str(first.PatientName)):
            assert secret not in sent


def test_two_rounds_pass_the_aggregate_on(sites: Sites) -> None:
    workflow = sites.run(VARIANCE, {"rounds": 2})
    assert orchestrator_of(workflow)["status"] == "finished", orchestrator_of(workflow)
    counts = np.array([len(s.paths) for site in SITES for s in sites.data[site]], dtype=float)
    aggregate = workflow["result"]["aggregate"]
    assert aggregate["n"] == len(counts) and aggregate["mean"] == pytest.approx(counts.mean())
    assert aggregate["variance"] == pytest.approx(counts.var())
    first, second = workflow["result"]["rounds"]
    assert first["aggregate"] == {"n": len(counts), "mean": pytest.approx(counts.mean())} and second["aggregate"] == aggregate
    round_2 = [j for j in workflow["jobs"] if j["role"] == "runner" and j["round"] == 2]
    assert len(round_2) == 3 and all(j["conf"]["round_input"]["previous"] == first["aggregate"] for j in round_2)
    note = {j["runner_instance"]: base64.b64decode(j["result"]["files"]["summary.txt"]["base64"]).decode() for j in round_2}
    assert note == {site: f"{len(sites.data[site])} series around a mean of {first['aggregate']['mean']:g}\n" for site in SITES}
    assert [s["state"] for s in orchestrator_of(workflow)["steps"]] == ["finished", "finished"]  # one step per round


def test_refused_runner_fails_the_round_unless_min_runners_is_met(sites: Sites) -> None:
    """site-a still believes site-c allows the DAG; site-c checks its own permissions and refuses."""
    c = sites.api["site-c"]
    sites.stop_polling("site-c")
    # only now, with no sync running: the change must not reach site-a before the jobs do
    assert c.put("/api/instances/local", json={"allowed_dags": [VARIANCE]}).status_code == 200
    try:
        a = sites.api["site-a"]
        all_three = create(a, dag_id=STATISTICS, dataset="cohort", conf={"histograms": False}, runners=list(SITES))
        two_of_three = create(a, dag_id=STATISTICS, dataset="cohort", conf={"histograms": False, "min_runners": 2}, runners=list(SITES))
        for _ in range(2):
            sites.sync("site-c")  # receives both jobs and refuses them, then reports
        failed = wait_job(a, orchestrator_of(all_three)["id"], ENDED)
        assert failed["status"] == "failed"
        assert "round 1 of 1 failed: 2 of 3 runners" in failed["error"] and "min_runners" in failed["error"]
        assert "site-c: failed" in failed["error"] and "not allowed" in failed["error"], failed["error"]
        finished = wait_job(a, orchestrator_of(two_of_three)["id"], ENDED)
        assert finished["status"] == "finished", finished
        runners = finished["result"]["rounds"][0]["runners"]
        assert runners["site-c"]["status"] == "failed" and "not allowed" in runners["site-c"]["error"]
        assert finished["result"]["aggregate"]["sites"] == 2
        assert finished["result"]["aggregate"]["series"] == len(sites.data["site-a"]) + len(sites.data["site-b"])
    finally:
        c.put("/api/instances/local", json={"automatic_sync": True, "allowed_dags": RUNNER_DAGS})
        sites.sync("site-c")  # site-a learns it again


def test_offline_runner_times_out_the_round_unless_min_runners_is_met_across_an_orchestrator_restart(sites: Sites) -> None:
    """site-c does not poll (as if offline): its jobs stay pending until the round's timeout. Meanwhile
    site-a stops and starts again: its orchestrations pick their rounds up where they were."""
    c = sites.api["site-c"]
    sites.stop_polling("site-c")
    try:
        a = sites.api["site-a"]
        conf = {"histograms": False, "timeout": 10}
        strict = create(a, dag_id=STATISTICS, dataset="cohort", conf=conf, runners=list(SITES))
        lenient = create(a, dag_id=STATISTICS, dataset="cohort", conf={**conf, "min_runners": 2}, runners=list(SITES))
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(done) < 4:
            for workflow in (strict, lenient):
                for j in a.get(f"/api/workflows/{workflow['id']}").json()["jobs"]:
                    if j["role"] == "runner" and j["status"] == "finished":
                        done[f"{workflow['id']}/{j['runner_instance']}"] = j
            time.sleep(0.1)
        assert len(done) == 4 and all(j["runner_instance"] != "site-c" for j in done.values()), [
            (j["id"], j["role"], j["runner_instance"], j["status"], j["error"]) for w in (strict, lenient) for j in a.get(f"/api/workflows/{w['id']}").json()["jobs"]
        ]
        sites.processes["site-a"].stop()
        sites.processes["site-a"].start()
        failed = wait_job(a, orchestrator_of(strict)["id"], ENDED, timeout=30)
        assert failed["status"] == "failed" and "site-c: timed out (no result within 10 s)" in failed["error"], failed
        assert "2 of 3 runners handed back a result, 3 needed" in failed["error"]
        finished = wait_job(a, orchestrator_of(lenient)["id"], ENDED, timeout=30)
        assert finished["status"] == "finished" and finished["run"] == 1, (finished["error"], finished["result"])
        assert finished["result"]["aggregate"]["sites"] == 2
        late = finished["result"]["rounds"][0]["runners"]["site-c"]
        assert late["status"] == "timed out"
        assert a.get(f"/api/jobs/{late['job_id']}").json()["status"] == "aborted"  # the late job is withdrawn, not left pending
        for job in done.values():  # nothing ran twice
            again = a.get(f"/api/jobs/{job['id']}").json()
            assert again["status"] == "finished" and again["run"] == 1 and again["ended"] == job["ended"]
    finally:
        c.put("/api/instances/local", json={"automatic_sync": True})


def test_a_result_over_its_size_limit_fails_clearly(sites: Sites) -> None:
    workflow = sites.run(STATISTICS, {"histograms": False, "max_result_bytes": 100}, runners=("site-a", "site-b"))
    orchestrator = orchestrator_of(workflow)
    assert orchestrator["status"] == "failed" and "0 of 2 runners" in orchestrator["error"]
    assert "over the limit of 100 bytes" in orchestrator["error"], orchestrator["error"]
    # restarting the workflow restarts its orchestrator only, which makes new round jobs
    a = sites.api["site-a"]
    assert a.post(f"/api/workflows/{workflow['id']}/restart").status_code == 200
    again = wait_job(a, orchestrator["id"], ENDED)
    assert again["run"] == 2 and again["status"] == "failed" and "over the limit" in again["error"]
    jobs = a.get(f"/api/workflows/{workflow['id']}").json()["jobs"]
    assert sorted((j["runner_instance"], j["run"]) for j in jobs if j["role"] == "runner") == [("site-a", 1), ("site-a", 1), ("site-b", 1), ("site-b", 1)]


def test_bad_federated_requests_are_refused(sites: Sites) -> None:
    a = sites.api["site-a"]
    for body, reason in (
        ({"dag_id": STATISTICS, "runners": list(SITES)}, "needs a dataset by name"),
        ({"dag_id": STATISTICS, "dataset": "cohort", "conf": {"min_runners": 4}, "runners": list(SITES)}, "min_runners is 4"),
        ({"dag_id": STATISTICS, "dataset": "cohort", "conf": {"histogram_edges": [3, 2, 1]}, "runners": ["site-a"]}, "strictly increasing"),
        ({"dag_id": STATISTICS, "dataset": "cohort", "timeout": 5, "runners": ["site-a"]}, "conf.timeout"),
        ({"dag_id": STATISTICS, "series": ["1.2.3"], "runners": ["site-a"]}, "not series UIDs"),
    ):
        response = a.post("/api/workflows", json=body)
        assert response.status_code == 400 and reason in response.json()["detail"], response.text


def test_aborting_the_workflow_withdraws_the_runners_jobs(sites: Sites) -> None:
    c = sites.api["site-c"]
    sites.stop_polling("site-c")
    try:
        a = sites.api["site-a"]
        workflow = create(a, dag_id=STATISTICS, dataset="cohort", conf={"histograms": False}, runners=list(SITES))
        orchestrator = orchestrator_of(workflow)["id"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            jobs = a.get(f"/api/workflows/{workflow['id']}").json()["jobs"]
            if any(j["runner_instance"] == "site-c" and j["status"] == "pending" for j in jobs):
                break
            time.sleep(0.1)
        assert any(j["runner_instance"] == "site-c" and j["status"] == "pending" for j in jobs), jobs
        assert a.post(f"/api/workflows/{workflow['id']}/abort").status_code == 200
        assert wait_job(a, orchestrator, ENDED)["status"] == "aborted"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            jobs = a.get(f"/api/workflows/{workflow['id']}").json()["jobs"]
            if all(j["status"] in ENDED for j in jobs):
                break
            time.sleep(0.1)
        assert [j["status"] for j in jobs if j["runner_instance"] == "site-c"] == ["aborted"]
        assert all(j["status"] in ENDED for j in jobs), [(j["id"], j["runner_instance"], j["status"], j["error"]) for j in jobs]
    finally:
        c.put("/api/instances/local", json={"automatic_sync": True})
