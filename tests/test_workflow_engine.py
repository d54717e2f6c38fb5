"""The workflow engine end to end through the REST API of a real Vireo, with user DAGs from VIREO_DAGS_DIR."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, dags_folder, wait_job


@pytest.fixture(scope="module")
def engine_vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    root = tmp_path_factory.mktemp("engine")
    process = VireoProcess(root / "data", VIREO_DAGS_DIR=str(dags_folder(root / "dags")), VIREO_WORKERS="2").start()
    yield process
    process.stop()


@pytest.fixture
def api(engine_vireo: VireoProcess) -> Iterator[httpx.Client]:
    with engine_vireo.client() as client:
        yield client


def test_dags_are_listed_with_their_schema_and_a_broken_file_with_its_error(api: httpx.Client) -> None:
    dags = api.get("/api/dags").json()
    by_id = {d["dag_id"]: d for d in dags if d["dag_id"]}
    for builtin in ("delete-series", "send-dicom", "tag-dataset", "generate-thumbnail", "download-series", "collect-metadata",
                    "service-process-incoming-dcm", "service-re-index-dicom-data", "test-sleep"):
        assert builtin in by_id, builtin
    schema = by_id["test-sleep"]["config_schema"]
    assert schema["type"] == "object" and schema["properties"]["seconds"]["minimum"] == 0
    assert by_id["tag-dataset"]["config_schema"]["properties"]["action"]["enum"] == ["add", "delete"]
    imports = {d["dag_id"] for d in api.get("/api/dags", params={"tag": "import"}).json()}
    assert imports == {"test-echo", "import-dicoms-in-zip-to-internal-pacs", "convert-niftis-to-dicoms-and-import-to-pacs"}
    broken = [d for d in dags if d["error"]]
    assert len(broken) == 1 and broken[0]["file"].endswith("broken_dag.py") and "sideways" in broken[0]["error"]


def test_a_job_runs_its_steps_with_logs_and_progress(api: httpx.Client, engine_vireo: VireoProcess) -> None:
    workflow = create(api, name="sleepy", dag_id="test-sleep", conf={"seconds": 0.6, "steps": 3})
    assert workflow["name"] == "sleepy" and workflow["username"] == "admin" and workflow["dataset"] is None
    (job,) = workflow["jobs"]
    assert job["status"] in ("queued", "scheduled", "running") and job["runner_instance"] == job["owner_instance"] == workflow["owner_instance"]
    seen = set()
    deadline = time.monotonic() + 30
    while job["status"] not in ENDED and time.monotonic() < deadline:
        job = api.get(f"/api/jobs/{job['id']}").json()
        seen.add(job["status"])
        time.sleep(0.02)
    assert job["status"] == "finished", job
    assert "running" in seen
    assert job["progress"] == {"done": 3, "total": 3}
    assert [(s["name"], s["state"]) for s in job["steps"]] == [("prepare", "finished"), ("sleep", "finished"), ("after", "finished")]
    assert job["duration"] >= 0.6
    logs = api.get(f"/api/jobs/{job['id']}/logs")
    assert logs.headers["content-type"].startswith("text/plain")
    assert "step 2: sleep (finished)" in logs.text and "slept 3 of 3" in logs.text and "printed to stdout" in logs.text
    assert api.get(f"/api/jobs/{job['id']}/logs", params={"step": "sleep"}).text.count("=====") == 2
    # one log file per step, in the job's own folder
    assert sorted(p.name for p in (engine_vireo.data_dir / "jobs" / str(job["id"]) / "run-1" / "logs").iterdir()) == [
        "01-prepare.log", "02-sleep.log", "03-after.log"]
    listed = api.get("/api/workflows", params={"q": "sleepy"})
    assert listed.headers["x-total-count"] == "1" and listed.json()[0]["status_counts"] == {"finished": 1}


def test_a_failing_step_fails_the_job_and_a_restart_keeps_the_old_run(api: httpx.Client) -> None:
    (job,) = create(api, dag_id="test-fail")["jobs"]
    job = wait_job(api, job["id"], ENDED)
    assert job["status"] == "failed" and "this step always fails" in job["error"]
    assert [(s["name"], s["state"]) for s in job["steps"]] == [("ok", "finished"), ("boom", "failed"), ("never", "skipped")]
    assert "ValueError: this step always fails" in api.get(f"/api/jobs/{job['id']}/logs").text

    restarted = api.post(f"/api/jobs/{job['id']}/restart").json()
    assert restarted["run"] == 2 and restarted["status"] in ("queued", "scheduled", "running")
    assert restarted["runs"][0]["status"] == "failed"
    assert api.post(f"/api/jobs/{job['id']}/restart").status_code == 409 or wait_job(api, job["id"], ENDED)
    job = wait_job(api, job["id"], ENDED)
    assert job["status"] == "failed" and job["run"] == 2
    old = api.get(f"/api/jobs/{job['id']}/logs", params={"run": 1}).text
    assert "this step always fails" in old
    assert api.get(f"/api/jobs/{job['id']}/logs", params={"run": 7}).status_code == 404


def test_a_step_is_retried(api: httpx.Client) -> None:
    (job,) = create(api, dag_id="test-flaky")["jobs"]
    job = wait_job(api, job["id"], ENDED)
    assert job["status"] == "finished" and job["steps"][0]["attempt"] == 3
    logs = api.get(f"/api/jobs/{job['id']}/logs").text
    assert "flaky failure 1" in logs and "flaky failure 2" in logs and "succeeded on attempt 3" in logs


def test_abort_kills_the_whole_process_tree_within_two_seconds(api: httpx.Client, engine_vireo: VireoProcess) -> None:
    (job,) = create(api, dag_id="test-tree")["jobs"]
    pid_file = engine_vireo.data_dir / "jobs" / str(job["id"]) / "run-1" / "work" / "child.pid"
    deadline = time.monotonic() + 20
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert _alive(child)
    started = time.monotonic()
    aborted = api.post(f"/api/jobs/{job['id']}/abort").json()
    job = wait_job(api, job["id"], ENDED, timeout=2)
    assert job["status"] == "aborted" and time.monotonic() - started < 2
    assert aborted["status"] == "aborted"
    while _alive(child) and time.monotonic() - started < 2:
        time.sleep(0.05)
    assert not _alive(child), "the job's child process outlived the abort"
    assert job["steps"][0]["state"] == "aborted"
    # aborting an ended job changes nothing
    assert api.post(f"/api/jobs/{job['id']}/abort").json()["status"] == "aborted"


def test_a_job_that_overruns_its_timeout_fails(api: httpx.Client) -> None:
    (job,) = create(api, dag_id="test-timeout", conf={"seconds": 30})["jobs"]
    job = wait_job(api, job["id"], ENDED, timeout=10)
    assert job["status"] == "failed" and job["error"] == "timed out after 1 s"
    (override,) = create(api, dag_id="test-sleep", conf={"seconds": 30}, timeout=0.5)["jobs"]
    assert wait_job(api, override["id"], ENDED, timeout=10)["error"] == "timed out after 0.5 s"


def test_a_dag_with_max_active_one_runs_its_jobs_one_at_a_time(api: httpx.Client) -> None:
    jobs = [create(api, dag_id="test-limited", conf={"seconds": 0.4, "steps": 2})["jobs"][0]["id"] for _ in range(3)]
    ended = [wait_job(api, j, ENDED) for j in jobs]
    assert [j["status"] for j in ended] == ["finished"] * 3
    spans = sorted((j["started"], j["ended"]) for j in ended)  # ISO times of one clock sort as text
    assert all(previous_end <= start for (_, previous_end), (start, _) in zip(spans, spans[1:])), spans


def test_delete_removes_work_dirs_and_hides_the_workflow(api: httpx.Client, engine_vireo: VireoProcess) -> None:
    workflow = create(api, name="to-delete", dag_id="test-sleep", conf={"seconds": 20})
    (job,) = workflow["jobs"]
    wait_job(api, job["id"], {"running"})
    folder = engine_vireo.data_dir / "jobs" / str(job["id"])
    assert folder.is_dir()
    deleted = api.delete(f"/api/workflows/{workflow['id']}").json()
    assert [j["status"] for j in deleted["jobs"]] == ["deleted"]
    assert not folder.exists()
    assert api.get("/api/workflows", params={"q": "to-delete"}).json() == []
    assert api.get(f"/api/jobs/{job['id']}").json()["status"] == "deleted"
    assert api.post(f"/api/jobs/{job['id']}/restart").status_code == 409


def test_aborting_a_workflow_aborts_queued_and_running_jobs(api: httpx.Client) -> None:
    running = [create(api, dag_id="test-sleep", conf={"seconds": 30})["jobs"][0]["id"] for _ in range(2)]
    waiting = create(api, name="waits", dag_id="test-sleep", conf={"seconds": 30})
    for job_id in running:
        wait_job(api, job_id, {"running"})
    assert waiting["jobs"][0]["status"] == "queued"  # two workers, both busy
    aborted = api.post(f"/api/workflows/{waiting['id']}/abort").json()
    assert [j["status"] for j in aborted["jobs"]] == ["aborted"]
    for job_id in running:
        job = api.get(f"/api/jobs/{job_id}").json()
        api.post(f"/api/workflows/{job['workflow_id']}/abort")
        assert wait_job(api, job_id, ENDED, timeout=2)["status"] == "aborted"


def test_a_dag_file_dropped_in_later_is_picked_up_and_a_changed_one_reloaded(api: httpx.Client, engine_vireo: VireoProcess) -> None:
    folder = Path(engine_vireo.extra_env["VIREO_DAGS_DIR"])
    late = folder / "late_dag.py"
    source = (
        "from core.workflows.dag import Dag, DagInput, Step\n"
        "def _say(ctx):\n    ctx.log.info('version {n}')\n"
        "late = Dag('late-dag', 'Arrived late.', [Step('say', _say)], input=DagInput.NONE)\n"
    )
    late.write_text(source.format(n=1))
    assert "late-dag" in [d["dag_id"] for d in api.get("/api/dags").json()]
    for version in (1, 2):
        if version == 2:
            time.sleep(0.01)
            late.write_text(source.format(n=2))
            os.utime(late, ns=(time.time_ns(), time.time_ns() + 10_000_000))
        (job,) = create(api, dag_id="late-dag")["jobs"]
        assert wait_job(api, job["id"], ENDED)["status"] == "finished"
        assert f"version {version}" in api.get(f"/api/jobs/{job['id']}/logs").text
    late.unlink()
    assert "late-dag" not in [d["dag_id"] for d in api.get("/api/dags").json()]
    assert api.post("/api/workflows", json={"dag_id": "late-dag"}).status_code == 400


def test_bad_requests_get_clear_errors(api: httpx.Client) -> None:
    cases = [
        ({"dag_id": "no-such-dag"}, 400, "no DAG"),
        ({"dag_id": "test-sleep", "conf": {"seconds": "soon"}}, 400, "seconds"),
        ({"dag_id": "test-sleep", "conf": {"seconds": 1, "unknown": 1}}, 400, "invalid configuration"),
        ({"dag_id": "test-echo-series"}, 400, "needs input"),
        ({"dag_id": "test-echo-series", "dataset": "nope"}, 400, "no dataset 'nope'"),
        ({"dag_id": "test-echo-series", "series": ["1.2.3"]}, 400, "unknown series: 1.2.3"),
        ({"dag_id": "test-echo-series", "series": ["1.2.3"], "dataset": "x"}, 400, "not both"),
        ({"dag_id": "test-echo", "dataset": "x"}, 400, "takes no input"),
        ({"dag_id": "test-echo", "runners": ["elsewhere"]}, 400, "unknown runner"),
        ({"conf": {}}, 422, "dag_id"),
    ]
    for body, status, text in cases:
        response = api.post("/api/workflows", json=body)
        assert response.status_code == status and text in response.text, (body, response.status_code, response.text)
    assert api.get("/api/jobs/999999").status_code == 404
    assert api.get("/api/workflows/no-such-id").status_code == 404
    assert api.post("/api/workflows/no-such-id/abort").status_code == 404
    assert api.get("/api/workflows", params={"status": "sleeping"}).status_code == 400
    (job,) = create(api, dag_id="test-sleep", conf={"seconds": 20})["jobs"]
    assert api.post(f"/api/jobs/{job['id']}/restart").status_code == 409
    assert api.post(f"/api/jobs/{job['id']}/confirm").status_code == 409
    api.post(f"/api/jobs/{job['id']}/abort")


def test_after_a_crash_running_jobs_fail_and_queued_jobs_go_on(tmp_path: Path, start_vireo: Callable[..., VireoProcess]) -> None:
    vireo = start_vireo(VIREO_DAGS_DIR=str(dags_folder(tmp_path / "dags")), VIREO_WORKERS="1")
    with vireo.client() as api:
        (running,) = create(api, dag_id="test-tree")["jobs"]
        (waiting,) = create(api, dag_id="test-echo")["jobs"]
        wait_job(api, running["id"], {"running"})
        assert api.get(f"/api/jobs/{waiting['id']}").json()["status"] == "queued"
    pid_file = vireo.data_dir / "jobs" / str(running["id"]) / "run-1" / "work" / "child.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    vireo.kill()
    vireo.start()
    with vireo.client() as api:
        job = api.get(f"/api/jobs/{running['id']}").json()
        assert job["status"] == "failed" and job["error"] == "interrupted by restart"
        assert wait_job(api, waiting["id"], ENDED)["status"] == "finished"
        assert not _alive(int(pid_file.read_text())), "the interrupted job's processes were left running"
        api.post(f"/api/jobs/{running['id']}/restart")
        assert wait_job(api, running["id"], {"running"})["run"] == 2
        api.post(f"/api/jobs/{running['id']}/abort")


def test_the_engine_on_postgresql(tmp_path: Path, start_vireo: Callable[..., VireoProcess], postgres_url: str) -> None:
    vireo = start_vireo(VIREO_DATABASE_URL=postgres_url, VIREO_DAGS_DIR=str(dags_folder(tmp_path / "dags")), VIREO_WORKERS="2")
    with vireo.client() as api:
        finished = create(api, name="pg-sleep", dag_id="test-sleep", conf={"seconds": 0.2, "steps": 2})["jobs"][0]
        failed = create(api, name="pg-fail", dag_id="test-fail")["jobs"][0]
        job = wait_job(api, finished["id"], ENDED)
        assert job["status"] == "finished" and job["progress"] == {"done": 2, "total": 2}
        assert wait_job(api, failed["id"], ENDED)["status"] == "failed"
        api.post(f"/api/jobs/{failed['id']}/restart")
        assert wait_job(api, failed["id"], ENDED)["run"] == 2
        listed = api.get("/api/workflows", params={"q": "PG-", "status": "failed"})
        assert [w["name"] for w in listed.json()] == ["pg-fail"] and listed.headers["x-total-count"] == "1"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


