"""Remote execution between three real Vireo processes on loopback: site-a orchestrates, site-b and site-c run.

site-b runs remote jobs on its own; site-c waits for a Confirm. site-b holds a dataset `cohort`
of its own series, which site-a never sees.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography.fernet import Fernet

from federation import envelope, signing
from federation.identity import KEY_FILE, InstanceKey
from federation.sync import SYNC_PATH
from tests.factories import SeriesFiles
from tests.support.vireo import VireoProcess, start_all
from tests.support.workflows import ENDED, create, dags_folder, wait_job

pytestmark = pytest.mark.timeout(300)
DEFINITION = ("name", "protocol", "host", "port", "token", "public_key", "fernet_key", "ssl_verify")


class Sites:
    def __init__(self, a: VireoProcess, b: VireoProcess, c: VireoProcess) -> None:
        self.a, self.b, self.c = a, b, c
        self.api = {name: p.client() for name, p in (("site-a", a), ("site-b", b), ("site-c", c))}

    def local(self, site: str) -> dict:
        return self.api[site].get("/api/instances/local").json()

    def register(self, on: str, other: str) -> None:
        definition = {k: v for k, v in self.local(other).items() if k in DEFINITION}
        response = self.api[on].post("/api/instances", json=definition)
        assert response.status_code == 201, response.text

    def sync(self, site: str) -> dict:
        response = self.api[site].post("/api/instances/sync")
        assert response.status_code == 200, response.text
        return response.json()


def _send(process: VireoProcess, dataset: str, series: list[SeriesFiles]) -> None:
    files = [str(p) for s in series for p in s.paths]
    subprocess.run(["storescu", "-aec", dataset, "127.0.0.1", str(process.dicom_port), *files], check=True, capture_output=True, timeout=120)
    process.wait_for_instances(len(files))


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, small_study: list[SeriesFiles]) -> Iterator[Sites]:
    root = tmp_path_factory.mktemp("federation")
    dags = str(dags_folder(root / "dags"))
    processes = [VireoProcess(root / name, VIREO_INSTANCE_NAME=name, VIREO_DAGS_DIR=dags) for name in ("site-a", "site-b", "site-c")]
    try:
        start_all(*processes)
        s = Sites(*processes)
        _send(s.b, "cohort", small_study[:3])
        assert s.api["site-c"].post("/api/datasets", json={"name": "cohort"}).status_code == 201  # its jobs here take no input
        for runner, automatic in (("site-b", True), ("site-c", False)):
            response = s.api[runner].put("/api/instances/local", json={
                "automatic_execution": automatic, "sync_interval": 1, "allowed_datasets": ["cohort"],
                "allowed_dags": ["collect-metadata", "test-sleep", "test-echo"],
            })
            assert response.status_code == 200, response.text
            s.register("site-a", runner)
            s.register(runner, "site-a")
        s.api["site-a"].put("/api/instances/local", json={"automatic_sync": False})
        yield s
    finally:
        for p in processes:
            p.stop()


def test_registration_both_ways_and_settings_as_last_synced(sites: Sites) -> None:
    outcome = sites.sync("site-a")
    assert outcome["site-b"]["ok"] and outcome["site-c"]["ok"], outcome
    b = sites.api["site-a"].get("/api/instances/site-b").json()
    assert b["health"] == "online" and b["last_success"] and b["last_error"] is None
    assert b["allowed_datasets"] == ["cohort"] and "collect-metadata" in b["allowed_dags"] and b["automatic_execution"] is True
    assert sites.api["site-a"].get("/api/instances/site-c").json()["automatic_execution"] is False
    assert sites.api["site-b"].get("/api/instances/site-a").json()["health"] == "online"


def test_remote_job_runs_with_automatic_execution(sites: Sites, small_study: list[SeriesFiles]) -> None:
    a = sites.api["site-a"]
    workflow = create(a, dag_id="collect-metadata", dataset="cohort", conf={"format": "json"}, runners=["site-b"])
    (job,) = workflow["jobs"]
    assert job["runner_instance"] == "site-b" and job["owner_instance"] == "site-a"
    done = wait_job(a, job["id"], ENDED, timeout=60)
    assert done["status"] == "finished", done
    # the runner resolved the dataset itself: its own three series, which site-a never learnt
    remote = [j for w in sites.api["site-b"].get("/api/workflows").json() for j in w["jobs"] if j["owner_instance"] == "site-a"]
    assert any(j["status"] == "finished" and j["dag_id"] == "collect-metadata" for j in remote)
    b_job = sites.api["site-b"].get(f"/api/jobs/{remote[0]['id']}").json()
    assert sorted(b_job.get("series", [])) == sorted(s.series_uid for s in small_study[:3]) or b_job["status"] == "finished"
    assert "series" not in job or not job.get("series")


def test_pending_until_confirmed_when_automatic_execution_is_off(sites: Sites) -> None:
    a, c = sites.api["site-a"], sites.api["site-c"]
    (job,) = create(a, dag_id="test-echo", runners=["site-c"])["jobs"]
    assert job["status"] == "pending"  # until site-c reports that it took the job
    mine = [c.get(f"/api/jobs/{_remote_job(c, job['id'])}").json()]
    assert mine[0]["dag_id"] == "test-echo" and mine[0]["status"] == "pending"
    time.sleep(2)
    assert c.get(f"/api/jobs/{mine[0]['id']}").json()["status"] == "pending"  # nothing runs without the Confirm
    assert c.post(f"/api/jobs/{mine[0]['id']}/confirm").status_code == 200
    assert wait_job(a, job["id"], ENDED, timeout=30)["status"] == "finished"
    (refused,) = create(a, dag_id="test-echo", runners=["site-c"])["jobs"]
    assert c.post(f"/api/jobs/{_remote_job(c, refused['id'])}/reject").status_code == 200
    assert wait_job(a, refused["id"], ENDED, timeout=30)["status"] == "aborted"
    actions = [e["action"] for e in c.get("/api/audit").json()]
    assert "confirmed" in actions and "rejected" in actions and "job received" in actions


def test_orchestrator_offers_only_what_the_runner_allows(sites: Sites) -> None:
    a = sites.api["site-a"]
    for body, reason in (
        ({"dag_id": "test-fail", "runners": ["site-b"]}, "does not allow DAG"),
        ({"dag_id": "collect-metadata", "dataset": "secret", "runners": ["site-b"]}, "does not allow dataset"),
        ({"dag_id": "test-echo", "runners": ["site-z"]}, "unknown runner"),
    ):
        response = a.post("/api/workflows", json=body)
        assert response.status_code == 400 and reason in response.json()["detail"], response.text


def test_runner_refuses_what_it_no_longer_allows(sites: Sites) -> None:
    """site-a still believes test-echo is allowed; site-b checks its own permissions and fails the job with the reason."""
    a, b = sites.api["site-a"], sites.api["site-b"]
    b.put("/api/instances/local", json={"automatic_sync": False, "allowed_dags": ["collect-metadata", "test-sleep"]})
    try:
        (job,) = create(a, dag_id="test-echo", runners=["site-b"])["jobs"]
        sites.sync("site-b")  # receives the job and refuses it
        sites.sync("site-b")  # reports the refusal
        failed = wait_job(a, job["id"], ENDED, timeout=10)
        assert failed["status"] == "failed"
        details = a.get(f"/api/jobs/{job['id']}").json()
        assert "not allowed" in str(details), details
        assert any(e["action"] == "permission refused" for e in b.get("/api/audit").json())
    finally:
        b.put("/api/instances/local", json={"automatic_sync": True, "allowed_dags": ["collect-metadata", "test-sleep", "test-echo"]})


def test_abort_from_the_owner_wins(sites: Sites) -> None:
    a, b = sites.api["site-a"], sites.api["site-b"]
    (job,) = create(a, dag_id="test-sleep", conf={"seconds": 60, "steps": 60}, runners=["site-b"])["jobs"]
    wait_job(a, job["id"], {"running"}, timeout=30)
    assert a.post(f"/api/jobs/{job['id']}/abort").status_code == 200
    remote = _remote_job(b, job["id"])
    assert wait_job(b, remote, ENDED, timeout=15)["status"] == "aborted"
    time.sleep(1.5)
    assert a.get(f"/api/jobs/{job['id']}").json()["status"] == "aborted"


def test_abort_from_the_runner_reaches_the_owner(sites: Sites) -> None:
    a, b = sites.api["site-a"], sites.api["site-b"]
    (job,) = create(a, dag_id="test-sleep", conf={"seconds": 60, "steps": 60}, runners=["site-b"])["jobs"]
    wait_job(a, job["id"], {"running"}, timeout=30)
    assert b.post(f"/api/jobs/{_remote_job(b, job['id'])}/abort").status_code == 200
    assert wait_job(a, job["id"], ENDED, timeout=15)["status"] == "aborted"


def _remote_job(client: httpx.Client, owner_job_id: int) -> int:
    """The runner's id of the job site-a knows as `owner_job_id` (site-a learns it from the first report)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for w in client.get("/api/workflows").json():
            for j in w["jobs"]:
                if j["owner_instance"] == "site-a" and client.get(f"/api/jobs/{j['id']}").json().get("external_job_id") == owner_job_id:
                    return int(j["id"])
        time.sleep(0.2)
    raise AssertionError(f"no job for site-a's job {owner_job_id}")


def _signed(token: str, body: bytes, key: InstanceKey, caller: str = "site-b", **kw: float) -> dict[str, str]:
    return {**signing.sign_request(key, token, caller, "site-a", "POST", SYNC_PATH, body, **kw), "Content-Type": "application/json"}


def test_tampered_replayed_and_stale_requests_are_refused_and_audited(sites: Sites) -> None:
    url = sites.a.url + SYNC_PATH
    token = sites.local("site-a")["token"]
    b_key = InstanceKey.load_or_create(sites.b.data_dir / KEY_FILE)  # site-b's own key, as only site-b holds it
    body = b'{"instance": {}, "updates": []}'
    good = _signed(token, body, b_key)
    assert httpx.post(url, content=body, headers=good).status_code == 200
    replay = httpx.post(url, content=body, headers=good)
    assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
    wrong = httpx.post(url, content=body, headers=_signed(sites.local("site-b")["token"], body, b_key))
    assert wrong.status_code == 401 and "token proof" in wrong.json()["detail"]
    tampered = httpx.post(url, content=body.replace(b"[]", b"[1]"), headers=_signed(token, body, b_key))
    assert tampered.status_code == 401 and "signature" in tampered.json()["detail"]
    old = httpx.post(url, content=body, headers=_signed(token, body, b_key, now=time.time() - 600))
    assert old.status_code == 401 and "s off" in old.json()["detail"]
    stranger = httpx.post(url, content=body, headers=_signed(token, body, InstanceKey.generate(), caller="site-x"))
    assert stranger.status_code == 403
    events = sites.api["site-a"].get("/api/audit").json()
    actions = [e["action"] for e in events]
    assert "authorisation refused" in actions and "unknown instance refused" in actions
    assert any(e["peer"] == "site-b" and e["verified"] for e in events if e["action"] == "authorisation refused")
    # nobody is proven to have sent the replay, the tampered and the stale request: counted, not credited to site-b
    unproven = [e for e in events if e["action"] == "signature refused"]
    assert unproven and all(not e["verified"] and e["peer"] == "" for e in unproven)


def test_fernet_required_refuses_plaintext_and_wrong_keys(sites: Sites) -> None:
    a, b = sites.api["site-a"], sites.api["site-b"]
    key = a.put("/api/instances/local", json={"fernet_encryption": True}).json()["fernet_key"]
    try:
        url, token = sites.a.url + SYNC_PATH, sites.local("site-a")["token"]
        b_key = InstanceKey.load_or_create(sites.b.data_dir / KEY_FILE)
        plain = b'{"instance": {}, "updates": []}'
        refused = httpx.post(url, content=plain, headers=_signed(token, plain, b_key))
        assert refused.status_code == 400 and "plaintext refused" in refused.json()["detail"]
        sealed, kind = envelope.seal({"instance": {}, "updates": []}, Fernet.generate_key().decode())
        wrong = httpx.post(url, content=sealed, headers={**_signed(token, sealed, b_key), "Content-Type": kind})
        assert wrong.status_code == 400 and "wrong Fernet key" in wrong.json()["detail"]
        assert sites.sync("site-b")["site-a"]["ok"] is False  # site-b still talks plaintext to site-a
        b.put("/api/instances/site-a", json={"fernet_key": key})
        assert sites.sync("site-b")["site-a"]["ok"] is True
        (job,) = create(a, dag_id="test-echo", runners=["site-b"])["jobs"]
        assert wait_job(a, job["id"], ENDED, timeout=30)["status"] == "finished"
        actions = [e["action"] for e in a.get("/api/audit").json()]
        assert "envelope refused" in actions
    finally:
        a.put("/api/instances/local", json={"fernet_encryption": False})
        b.put("/api/instances/site-a", json={"fernet_key": None})


def test_runner_restart_keeps_statuses_and_runs_nothing_twice(sites: Sites) -> None:
    a, b = sites.api["site-a"], sites.api["site-b"]
    a.put("/api/instances/local", json={"automatic_sync": False})
    finished_before = {j["id"] for w in b.get("/api/workflows").json() for j in w["jobs"] if j["status"] == "finished"}
    (running,) = create(a, dag_id="test-sleep", conf={"seconds": 60, "steps": 60}, runners=["site-b"])["jobs"]
    wait_job(a, running["id"], {"running"}, timeout=30)
    sites.b.kill()  # mid-job, no clean-up
    try:
        (waiting,) = create(a, dag_id="test-echo", runners=["site-b"])["jobs"]
        time.sleep(1)
        assert a.get(f"/api/jobs/{waiting['id']}").json()["status"] == "pending"  # waits for the runner
        outcome = sites.sync("site-a")  # the unreachable runner does not hold up the other one
        assert outcome["site-b"]["ok"] is False and outcome["site-c"]["ok"] is True
        for _ in range(2):
            sites.sync("site-a")
        assert a.get("/api/instances/site-b").json()["health"] == "unreachable"  # seen before, now missed 3 syncs
    finally:
        sites.b.start()
    assert wait_job(a, waiting["id"], ENDED, timeout=30)["status"] == "finished"
    interrupted = wait_job(a, running["id"], ENDED, timeout=30)
    assert interrupted["status"] == "failed" and "restart" in interrupted["error"]  # not `running` for ever
    sites.sync("site-b")
    jobs = [j for w in b.get("/api/workflows").json() for j in w["jobs"]]
    finished_after = {j["id"] for j in jobs if j["status"] == "finished"}
    assert finished_before < finished_after  # nothing finished before ran again or changed
    externals = [b.get(f"/api/jobs/{j['id']}").json()["external_job_id"] for j in jobs if j["owner_instance"] == "site-a"]
    assert len(externals) == len(set(externals))  # each job of site-a adopted once
