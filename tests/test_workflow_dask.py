"""Jobs on a real Dask cluster (scheduler and two workers on loopback): steps, logs, progress, abort, built-in DAGs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from tests.factories import SeriesFiles
from tests.support.dask_cluster import dask_cluster
from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, dags_folder, wait_job


@pytest.fixture(scope="module")
def dask_vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    root: Path = tmp_path_factory.mktemp("dask")
    with dask_cluster(root / "dask-logs") as address:
        process = VireoProcess(root / "data", VIREO_DAGS_DIR=str(dags_folder(root / "dags")), VIREO_DASK_SCHEDULER=address).start()
        process.extra_env["address"] = address
        yield process
        process.stop()


def test_jobs_run_on_the_dask_cluster_with_logs_progress_retries_and_failures(dask_vireo: VireoProcess) -> None:
    with dask_vireo.client() as api:
        sleepy = create(api, dag_id="test-sleep", conf={"seconds": 0.5, "steps": 2})["jobs"][0]
        flaky = create(api, dag_id="test-flaky")["jobs"][0]
        failing = create(api, dag_id="test-fail")["jobs"][0]
        job = wait_job(api, sleepy["id"], ENDED, timeout=60)
        assert job["status"] == "finished" and job["progress"] == {"done": 2, "total": 2}, job
        logs = api.get(f"/api/jobs/{job['id']}/logs").text
        assert "slept 2 of 2" in logs and "printed to stdout" in logs
        assert wait_job(api, flaky["id"], ENDED, timeout=60)["steps"][0]["attempt"] == 3
        failed = wait_job(api, failing["id"], ENDED, timeout=60)
        assert failed["status"] == "failed" and "this step always fails" in failed["error"]
        # the jobs ran as Dask tasks: the scheduler kept their events
        with Client(dask_vireo.extra_env["address"], timeout="10s") as client:
            events = client.get_events("vireo-jobs")
        assert {(m["job"], m["kind"]) for _, m in events} >= {(sleepy["id"], "started"), (sleepy["id"], "ended"), (failing["id"], "ended")}


def test_abort_on_dask_kills_the_job_tree_within_two_seconds(dask_vireo: VireoProcess) -> None:
    with dask_vireo.client() as api:
        (job,) = create(api, dag_id="test-tree")["jobs"]
        pid_file = dask_vireo.data_dir / "jobs" / str(job["id"]) / "run-1" / "work" / "child.pid"
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        started = time.monotonic()
        api.post(f"/api/jobs/{job['id']}/abort")
        assert wait_job(api, job["id"], ENDED, timeout=2)["status"] == "aborted"
        while _alive(child) and time.monotonic() - started < 2:
            time.sleep(0.05)
        assert not _alive(child)
        # the slot is free again: the next job runs
        (after,) = create(api, dag_id="test-echo")["jobs"]
        assert wait_job(api, after["id"], ENDED, timeout=30)["status"] == "finished"


def test_a_builtin_dag_on_dask_sees_the_shared_data_dir(dask_vireo: VireoProcess, small_study: list[SeriesFiles]) -> None:
    files = [str(p) for p in small_study[2].paths]
    subprocess.run(["storescu", "-aec", "dasked", "127.0.0.1", str(dask_vireo.dicom_port), *files], check=True, capture_output=True, timeout=60)
    with dask_vireo.client() as api:
        (job,) = create(api, dag_id="tag-dataset", dataset="dasked", conf={"tags": "on-dask"})["jobs"]
        assert wait_job(api, job["id"], ENDED, timeout=60)["status"] == "finished"
        assert api.get(f"/api/series/{small_study[2].series_uid}").json()["tags"] == ["on-dask"]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split()[2] != "Z"
