#!/usr/bin/env python3
"""Federation benchmark: two Vireo processes on loopback, site-a orchestrating and site-b running.

Each figure is printed with its target from the federation issue and the ratio to it.

* submit → running on the runner: POST /api/workflows on site-a for runner site-b until the
  job's `started` on site-b (server clocks of one machine); site-b polls every `--interval`
  seconds; target ≤ interval + 1 s; median of 5.
* runner status change → owner shows it: a running job is aborted on site-b; time until
  site-a's API shows `aborted` (the runner pushes at once, not at its next poll); target ≤ 1 s;
  median of 5. Kaapana's baseline is its sync interval (the runner reports on its next sync).
* a 3-site statistics round: `federated-metadata-statistics` (counts and intensity histograms)
  on site-a, site-b and a third Vireo, site-c, each holding `--series` series of its own; time
  from POST /api/workflows to the merged result, against the same statistics computed on one
  instance over the union of the data (a local-only run on site-a): the price of federation.
* 1,000 jobs synced: 1,000 remote jobs written into site-a's database, then one "sync now" on
  site-b: time until site-b holds all 1,000 and site-a has received the acknowledgement of
  each (its `external_job_id` set); target ≤ 10 s.

Usage (from the repository root):
    .venv/bin/python bench/federation.py [--interval 2] [--jobs 1000] [--series 4]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.db import Database  # noqa: E402
from core.timeutil import utcnow  # noqa: E402
from core.workflows.models import Job, Workflow  # noqa: E402
from tests.factories import write_series  # noqa: E402
from tests.support.vireo import VireoProcess  # noqa: E402

BENCH_DAGS = ROOT / "bench" / "dags"
DEFINITION = ("name", "protocol", "host", "port", "token", "public_key", "fernet_key", "ssl_verify")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def verdict(value: float, target: float) -> str:
    return f"target ≤ {target:g} → {value / target:.2f}× target  {'PASS' if value <= target else 'FAIL'}"


def wait(client: httpx.Client, job_id: int, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in states:
            return job  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise RuntimeError(f"job {job_id} not {states} after {timeout} s")


def runner_job(client: httpx.Client, owner_job_id: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in client.get("/api/workflows", params={"limit": 20}).json():
            for j in w["jobs"]:
                full = client.get(f"/api/jobs/{j['id']}").json()
                if full["owner_instance"] == "site-a" and full["external_job_id"] == owner_job_id:
                    return full  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise RuntimeError(f"site-b never received site-a's job {owner_job_id}")


def pair(a: VireoProcess, b: VireoProcess, interval: int) -> tuple[httpx.Client, httpx.Client]:
    ca, cb = a.client(), b.client()
    cb.put("/api/instances/local", json={"automatic_sync": True, "sync_interval": interval, "automatic_execution": True,
                                         "allowed_dags": ["bench-noop-once", "bench-sleep"]}).raise_for_status()
    ca.put("/api/instances/local", json={"automatic_sync": False}).raise_for_status()
    for on, other in ((ca, cb), (cb, ca)):
        local = other.get("/api/instances/local").json()
        on.post("/api/instances", json={k: local[k] for k in DEFINITION}).raise_for_status()
    cb.post("/api/instances/sync").raise_for_status()  # site-a learns what site-b allows
    return ca, cb


def submit_to_running(ca: httpx.Client, cb: httpx.Client, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        time.sleep(0.37)  # not in step with the runner's poll
        created = ca.post("/api/workflows", json={"dag_id": "bench-noop-once", "runners": ["site-b"]})
        created.raise_for_status()
        workflow = created.json()
        (job,) = workflow["jobs"]
        theirs = runner_job(cb, job["id"])
        theirs = wait(cb, theirs["id"], {"running", "finished", "failed"})
        samples.append((when(theirs["started"]) - when(workflow["created"])).total_seconds())
    return statistics.median(samples)


def status_to_owner(ca: httpx.Client, cb: httpx.Client, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        (job,) = ca.post("/api/workflows", json={"dag_id": "bench-sleep", "runners": ["site-b"]}).json()["jobs"]
        wait(ca, job["id"], {"running"})
        theirs = runner_job(cb, job["id"])
        start = time.monotonic()
        cb.post(f"/api/jobs/{theirs['id']}/abort").raise_for_status()
        wait(ca, job["id"], {"aborted"}, timeout=30)
        samples.append(time.monotonic() - start)
    return statistics.median(samples)


def send(process: VireoProcess, dataset: str, files: list[str]) -> None:
    subprocess.run(["dcmsend", "-aec", dataset, "127.0.0.1", str(process.dicom_port), *files], check=True, capture_output=True, timeout=300)
    process.wait_for_instances(len(files), timeout=120, dataset=dataset)


def orchestrated(client: httpx.Client, dataset: str, runners: list[str]) -> float:
    """Seconds from submitting a federated statistics workflow to its orchestrator job's end (which must be finished)."""
    start = time.monotonic()
    created = client.post("/api/workflows", json={"dag_id": "federated-metadata-statistics", "dataset": dataset, "runners": runners})
    created.raise_for_status()
    (job,) = created.json()["jobs"]
    done = wait(client, job["id"], {"finished", "failed", "aborted"}, timeout=600)
    if done["status"] != "finished":
        raise RuntimeError(f"statistics run {done['status']}: {done['error']}")
    return time.monotonic() - start


def statistics_round(root: Path, a: VireoProcess, b: VireoProcess, ca: httpx.Client, cb: httpx.Client, per_site: int) -> tuple[float, float]:
    """(3-site federated round, the same statistics on one instance over the union), seconds."""
    c = VireoProcess(root / "site-c", VIREO_INSTANCE_NAME="site-c", VIREO_DAGS_DIR=str(BENCH_DAGS))
    c.start()
    try:
        cc = c.client()
        sites = {"site-a": (a, ca), "site-b": (b, cb), "site-c": (c, cc)}
        union: list[str] = []
        for index, (name, (process, _)) in enumerate(sites.items()):
            files = [str(p) for n in range(per_site) for p in write_series(
                root / "series" / name, modality="CT" if n % 2 == 0 else "MR", slices=40, rows=128, columns=128,
                patient_id=f"BENCH{index}{n}", seed=index * 100 + n, series_number=n + 1).paths]
            send(process, "cohort", files)
            union += files
        send(a, "union", union)
        allowed = ["bench-noop-once", "bench-sleep", "federated-metadata-statistics"]
        for runner, client in (("site-b", cb), ("site-c", cc)):
            client.put("/api/instances/local", json={"automatic_sync": True, "sync_interval": 1, "allowed_dags": allowed,
                                                     "allowed_datasets": ["cohort"]}).raise_for_status()
        local = cc.get("/api/instances/local").json()
        ca.post("/api/instances", json={k: local[k] for k in DEFINITION}).raise_for_status()
        local = ca.get("/api/instances/local").json()
        cc.post("/api/instances", json={k: local[k] for k in DEFINITION}).raise_for_status()
        for client in (cb, cc):
            client.post("/api/instances/sync").raise_for_status()
        orchestrated(ca, "union", ["site-a"])  # warm-up: job processes, imports
        federated = statistics.median(orchestrated(ca, "cohort", list(sites)) for _ in range(3))
        central = statistics.median(orchestrated(ca, "union", ["site-a"]) for _ in range(3))
        cb.put("/api/instances/local", json={"sync_interval": 2}).raise_for_status()
        return federated, central
    finally:
        c.stop()


def sync_many(a: VireoProcess, ca: httpx.Client, cb: httpx.Client, jobs: int) -> float:
    cb.put("/api/instances/local", json={"automatic_sync": False, "automatic_execution": False}).raise_for_status()
    time.sleep(1)
    db = Database(f"sqlite:///{(a.data_dir / 'vireo.db').resolve()}")
    now = utcnow()
    workflow_id = str(uuid.uuid4())
    with db.engine.begin() as conn:
        conn.execute(Workflow.__table__.insert(), [{"id": workflow_id, "name": "bench-sync", "dag_id": "bench-noop-once", "dataset": None,
                                                     "conf": {}, "username": "admin", "owner_instance": "site-a", "service": False,
                                                     "deleted": False, "created": now, "updated": now}])
        conn.execute(Job.__table__.insert(), [{"workflow_id": workflow_id, "dag_id": "bench-noop-once", "status": "pending", "run": 1,
                                               "conf": {}, "series": [], "dataset": None, "username": "admin", "runner_instance": "site-b",
                                               "owner_instance": "site-a", "progress_done": 0, "progress_total": 0, "steps": [], "error": "",
                                               "created": now, "updated": now} for _ in range(jobs)])
    start = time.monotonic()
    cb.post("/api/instances/sync").raise_for_status()  # receives the jobs
    cb.post("/api/instances/sync").raise_for_status()  # reports them (if the push did not already)
    select = Job.__table__.select().with_only_columns(Job.__table__.c.id).where(
        Job.__table__.c.workflow_id == workflow_id, Job.__table__.c.external_job_id.is_(None))
    while True:
        with db.engine.connect() as conn:
            if conn.execute(select).first() is None:
                break
        if time.monotonic() - start > 120:
            raise RuntimeError("1,000 jobs not synced within 2 minutes")
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    db.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=int, default=2, help="site-b's sync interval, seconds")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--series", type=int, default=4, help="series per site for the statistics round (0: skip it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vireo-federation-bench-") as tmp:
        env = {"VIREO_DAGS_DIR": str(BENCH_DAGS)}
        a = VireoProcess(Path(tmp) / "site-a", VIREO_INSTANCE_NAME="site-a", **env)
        b = VireoProcess(Path(tmp) / "site-b", VIREO_INSTANCE_NAME="site-b", **env)
        try:
            a.start()
            b.start()
            ca, cb = pair(a, b, args.interval)
            log("submit → running")
            running = submit_to_running(ca, cb, args.repeat)
            log("runner status → owner")
            pushed = status_to_owner(ca, cb, args.repeat)
            if args.series:
                log("3-site statistics round")
                federated, central = statistics_round(Path(tmp), a, b, ca, cb, args.series)
            log(f"{args.jobs} jobs")
            many = sync_many(a, ca, cb, args.jobs)
        finally:
            b.stop()
            a.stop()
    print(f"submit → running on the runner (interval {args.interval} s), median of {args.repeat}: {running:.2f} s  "
          f"{verdict(running, args.interval + 1)}")
    print(f"runner status change → owner shows it, median of {args.repeat}: {pushed:.3f} s  {verdict(pushed, 1.0)}  "
          f"(Kaapana: next sync, up to {args.interval} s here → {pushed / args.interval:.2f}× that)")
    if args.series:
        print(f"3-site statistics round ({args.series} series per site, sync interval 1 s), median of 3: {federated:.2f} s  "
              f"(one instance over the union: {central:.2f} s → {federated / central:.2f}× that)")
    print(f"sync {args.jobs} jobs between two instances: {many:.2f} s  {verdict(many, 10.0 * args.jobs / 1000)}")


if __name__ == "__main__":
    main()
