#!/usr/bin/env python3
"""Workflow engine benchmark: engine overhead, draining 1,000 queued jobs (local and Dask), live
status in the browser, the Workflow List with 10,000 workflows, abort latency.

Each figure is printed with its target from the Workflows issue and the ratio to it. The
browser figure also names Kaapana's baseline: its workflow list refreshes every 15 s.

* engine overhead per trivial job: sequential no-op jobs; (job ended − job created) − the
  step's own run time, from the server's timestamps; median.
* 1,000 trivial queued jobs drained: one per-series workflow on a 1,000-series dataset
  (seeded into the index), wall time from the POST until every job is finished; with the
  local executor (one worker process per core) and on a Dask cluster of two single-thread
  workers started here (`dask scheduler` / `dask worker` on loopback).
* status change visible in a browser: headless Chromium shows the Workflow List; a running
  job is aborted through the API; time until the page shows `aborted` (median of 5).
* Workflow List first page with 10,000 workflows and 50,000 jobs (seeded): the API's first
  page (median of 5) and the page in the browser until its rows are shown.
* abort latency: POST abort on a running job until its state is `aborted` and its process
  is gone (median of 5).

Usage (from the repository root):
    .venv/bin/python bench/workflows.py            # full run (~5 min on 2 cores)
    .venv/bin/python bench/workflows.py --small    # 200 jobs, 2,000 workflows, no Dask (~1 min)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.db import Database  # noqa: E402
from core.models import Dataset, DatasetSeries, Patient, Series, Study  # noqa: E402
from core.timeutil import utcnow  # noqa: E402
from core.workflows.models import Job, Workflow  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_executable  # noqa: E402
from tests.support.dask_cluster import dask_cluster  # noqa: E402
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess  # noqa: E402

BENCH_DAGS = ROOT / "bench" / "dags"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def verdict(value: float, target: float) -> str:
    return f"target ≤ {target:g} → {value / target:.2f}× target  {'PASS' if value <= target else 'FAIL'}"


# ---- seeding ---------------------------------------------------------------------------------

def seed(data_dir: Path, series: int, workflows: int, jobs_per_workflow: int) -> None:
    """A 1,000-series dataset and many ended workflows, written straight into a migrated index."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{(data_dir / 'vireo.db').resolve()}")
    db.migrate()
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(Patient.__table__.insert(), [{"patient_id": "BENCH", "patient_name": "Bench^Mark", "attributes": {}, "created": now}])
        patient = conn.execute(Patient.__table__.select()).first().id
        conn.execute(Study.__table__.insert(), [{"study_uid": "1.2.826.0.1.3680043.10.999.1", "patient_pk": patient, "study_date": "20260101",
                                                 "study_description": "bench", "attributes": {}, "created": now}])
        uids = [f"1.2.826.0.1.3680043.10.999.1.{i}" for i in range(series)]
        conn.execute(Series.__table__.insert(), [{
            "series_uid": uid, "study_uid": "1.2.826.0.1.3680043.10.999.1", "modality": "CT", "series_description": f"s{i}",
            "series_number": i, "attributes": {}, "arrived": now, "updated": now, "instance_count": 0, "size_bytes": 0,
            "missing_instance_numbers": [], "is_complete": True} for i, uid in enumerate(uids)])
        conn.execute(Dataset.__table__.insert(), [{"name": "bench-1000", "username": "admin", "created": now, "updated": now}])
        dataset_id = conn.execute(Dataset.__table__.select()).first().id
        conn.execute(DatasetSeries.__table__.insert(), [{"dataset_id": dataset_id, "series_uid": uid, "added": now} for uid in uids])
        states = ["finished", "finished", "finished", "failed", "aborted"]
        for start in range(0, workflows, 1000):
            wf_rows, job_rows = [], []
            for i in range(start, min(start + 1000, workflows)):
                wid = str(uuid.UUID(int=i + 1))
                created = now - timedelta(minutes=workflows - i + 60)
                wf_rows.append({"id": wid, "name": f"seeded-{i}", "dag_id": "bench-noop-once", "dataset": None, "conf": {},
                                "username": "admin" if i % 3 else "carol", "owner_instance": "bench", "service": False, "deleted": False,
                                "created": created, "updated": created})
                for j in range(jobs_per_workflow):
                    job_rows.append({"workflow_id": wid, "dag_id": "bench-noop-once", "status": states[(i + j) % 5], "run": 1, "conf": {},
                                     "series": [], "dataset": None, "username": "admin", "runner_instance": "bench", "owner_instance": "bench",
                                     "progress_done": 1, "progress_total": 1, "error": "", "created": created, "updated": created,
                                     "started": created, "ended": created + timedelta(seconds=2),
                                     "steps": [{"name": "nothing", "state": "finished"}]})
            conn.execute(Workflow.__table__.insert(), wf_rows)
            conn.execute(Job.__table__.insert(), job_rows)
    db.dispose()


def start_vireo(root: Path, series: int, workflows: int, jobs_per_workflow: int, **env: str) -> VireoProcess:
    data_dir = root / "data"
    seed(data_dir, series, workflows, jobs_per_workflow)
    dags = root / "dags"
    dags.mkdir(exist_ok=True)
    shutil.copy(BENCH_DAGS / "bench_dags.py", dags)
    return VireoProcess(data_dir, VIREO_DAGS_DIR=str(dags), VIREO_INSTANCE_NAME="bench", **env).start(timeout=120)


# ---- measurements ----------------------------------------------------------------------------

def wait_status(api: Any, job_id: int, states: set[str], timeout: float = 60, pause: float = 0.005) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/api/jobs/{job_id}").json()
        if job["status"] in states:
            return job  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} stuck in {job['status']}")
        time.sleep(pause)


def engine_overhead(api: Any, n: int) -> list[float]:
    overheads = []
    for _ in range(n):
        job = api.post("/api/workflows", json={"dag_id": "bench-noop-once"}).json()["jobs"][0]
        job = wait_status(api, job["id"], {"finished", "failed"})
        assert job["status"] == "finished", job
        (step,) = job["steps"]
        step_time = (when(step["ended"]) - when(step["started"])).total_seconds()
        overheads.append((when(job["ended"]) - when(job["created"])).total_seconds() - step_time)
    return overheads


def drain(api: Any, expected: int) -> float:
    started = time.monotonic()
    response = api.post("/api/workflows", json={"name": "drain", "dag_id": "bench-noop", "dataset": "bench-1000"})
    assert response.status_code == 201, response.text
    workflow = response.json()
    assert len(workflow["jobs"]) == expected, len(workflow["jobs"])
    # Poll one job at a time (the whole workflow document, 1,000 jobs, would load the server being measured).
    pending = sorted(job["id"] for job in workflow["jobs"])
    while pending:
        wait_status(api, pending[-1], {"finished", "failed", "aborted"}, timeout=1200, pause=0.1)
        pending = [job_id for job_id in pending if api.get(f"/api/jobs/{job_id}").json()["status"] not in ("finished", "failed", "aborted")]
    elapsed = time.monotonic() - started
    counts = api.get(f"/api/workflows/{workflow['id']}").json()["status_counts"]
    assert counts == {"finished": expected}, counts
    return elapsed


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def abort_latency(api: Any, vireo: VireoProcess, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        job = api.post("/api/workflows", json={"dag_id": "bench-sleep"}).json()["jobs"][0]
        wait_status(api, job["id"], {"running"})
        pid_file = vireo.data_dir / "jobs" / str(job["id"]) / "run-1" / "pid"
        while not pid_file.exists():
            time.sleep(0.01)
        pid = int(pid_file.read_text())
        started = time.monotonic()
        api.post(f"/api/jobs/{job['id']}/abort")
        wait_status(api, job["id"], {"aborted"}, timeout=10)
        while alive(pid) and time.monotonic() - started < 10:
            time.sleep(0.005)
        latencies.append(time.monotonic() - started)
    return latencies


def browser_figures(vireo: VireoProcess, api: Any, n: int) -> tuple[list[float], tuple[float, float]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{vireo.url}/login")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{vireo.url}/")
        first_pages, plain_pages = [], []
        for _ in range(3):
            started = time.monotonic()
            page.goto(f"{vireo.url}/workflows")
            page.locator("tr[data-workflow]").first.wait_for()
            first_pages.append(time.monotonic() - started)
            started = time.monotonic()
            page.goto(f"{vireo.url}/settings")
            page.get_by_text("API tokens").wait_for()
            plain_pages.append(time.monotonic() - started)
        page.goto(f"{vireo.url}/workflows")
        page.locator("tr[data-workflow]").first.wait_for()
        latencies = []
        for _ in range(n):
            workflow = api.post("/api/workflows", json={"dag_id": "bench-sleep"}).json()
            job_id = workflow["jobs"][0]["id"]
            row = page.locator(f"tr[data-workflow='{workflow['id']}']")
            row.locator(".workflow-count[data-status='running']").wait_for(timeout=30000)
            started = time.monotonic()
            api.post(f"/api/jobs/{job_id}/abort")
            row.locator(".workflow-count[data-status='aborted']").wait_for(timeout=30000)
            latencies.append(time.monotonic() - started)
        browser.close()
    return latencies, (statistics.median(first_pages), statistics.median(plain_pages))


def list_first_page(api: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.monotonic()
        response = api.get("/api/workflows", params={"limit": 20})
        times.append(time.monotonic() - started)
        assert response.status_code == 200 and len(response.json()) == 20
    return times


def local_figures(root: Path, jobs: int, workflows: int, per_workflow: int, cores: int, results: list[str]) -> None:
    log(f"seeding {jobs} series and {workflows:,} workflows / {workflows * per_workflow:,} jobs, starting Vireo (local executor)")
    vireo = start_vireo(root / "local", jobs, workflows, per_workflow)
    try:
        with vireo.client() as api:
            engine_overhead(api, 3)  # warm-up
            overhead = engine_overhead(api, 30)
            results.append(f"engine overhead per trivial job: median {statistics.median(overhead) * 1000:.1f} ms "
                           f"(p90 {sorted(overhead)[26] * 1000:.1f} ms, n=30)  {verdict(statistics.median(overhead) * 1000, 50)}")
            log("draining the queue (local executor)")
            seconds = drain(api, jobs)
            results.append(f"{jobs:,} trivial queued jobs drained, local executor ({cores} worker processes): {seconds:.1f} s "
                           f"({jobs / seconds:.1f} jobs/s)  {verdict(seconds * 1000 / jobs, 120)} [per 1,000 jobs: {seconds * 1000 / jobs:.1f} s]")
            log("Workflow List with the seeded workflows")
            api_times = list_first_page(api, 5)
            log("browser: live status and first page")
            live, (first_page, plain_page) = browser_figures(vireo, api, 5)
            results.append(f"status change visible in the browser (Workflow List, abort → 'aborted'): median {statistics.median(live):.3f} s "
                           f"(max {max(live):.3f} s, n=5)  {verdict(statistics.median(live), 1)}; "
                           f"Kaapana's list refreshes every 15 s → {15 / statistics.median(live):.0f}× sooner")
            total_workflows = int(api.get("/api/workflows", params={"limit": 1}).headers["x-total-count"])
            results.append(f"Workflow List first page with {total_workflows:,} workflows / {workflows * per_workflow + jobs:,}+ jobs: "
                           f"API median {statistics.median(api_times) * 1000:.0f} ms; browser, navigation until rows shown: median "
                           f"{first_page:.2f} s (a page without data, /settings: {plain_page:.2f} s → {first_page / plain_page:.1f}×)  "
                           f"{verdict(first_page, 1)}")
            log("abort latency")
            aborts = abort_latency(api, vireo, 5)
            results.append(f"abort latency (POST abort until 'aborted' and the job's process gone): median {statistics.median(aborts):.3f} s "
                           f"(max {max(aborts):.3f} s, n=5)  {verdict(max(aborts), 2)}")
    finally:
        vireo.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="200 jobs, 2,000 workflows / 10,000 jobs, no Dask")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask drain")
    parser.add_argument("--no-local", action="store_true", help="only the Dask drain")
    args = parser.parse_args()
    jobs = 200 if args.small else 1000
    workflows, per_workflow = (2000, 5) if args.small else (10_000, 5)
    cores = os.cpu_count() or 1
    results: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="vireo-wf-bench-"))
    try:
        if not args.no_local:
            local_figures(root, jobs, workflows, per_workflow, cores, results)
        if not (args.small or args.no_dask):
            log("Dask: starting a scheduler and two single-thread workers on loopback")
            with dask_cluster(root / "dask-logs", workers=2) as address:
                vireo = start_vireo(root / "dask", jobs, 0, 0, VIREO_DASK_SCHEDULER=address)
                try:
                    with vireo.client() as api:
                        engine_overhead(api, 2)
                        log("draining the queue (Dask)")
                        seconds = drain(api, jobs)
                        results.append(f"{jobs:,} trivial queued jobs drained, Dask cluster (2 workers): {seconds:.1f} s "
                                       f"({jobs / seconds:.1f} jobs/s)  {verdict(seconds * 1000 / jobs, 120)} [per 1,000 jobs: {seconds * 1000 / jobs:.1f} s]")
                finally:
                    vireo.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"Vireo workflow benchmark ({cores} cores{', --small' if args.small else ''})")
    for line in results:
        print("  " + line)


if __name__ == "__main__":
    main()
