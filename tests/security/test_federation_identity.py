"""Issue 17, item 1: an instance speaks only for itself — site-c, holding every token, cannot act as site-b.

Three Vireos on loopback: site-a orchestrates, site-b and site-c run for it. site-c's admin
has site-a's definition (token included, as any peer of site-a) and site-b's too. The test
plays site-c's admin: it signs with site-c's own private key, read from site-c's data dir —
the one secret site-c holds that no other instance has. Every attempt to take site-b's job,
report it finished or read what site-a has for site-b is refused, and site-a's audit log
names the sender its signature proves: site-c.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from federation import signing
from federation.identity import KEY_FILE, InstanceKey
from federation.sync import SYNC_PATH
from tests.support.vireo import VireoProcess, start_all
from tests.support.workflows import ENDED, create, dags_folder, wait_job

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

DEFINITION = ("name", "protocol", "host", "port", "token", "public_key", "fernet_key", "ssl_verify")
SITES = ("site-a", "site-b", "site-c")


class Sites:
    def __init__(self, processes: dict[str, VireoProcess]) -> None:
        self.processes = processes
        self.api = {name: p.client() for name, p in processes.items()}

    def local(self, site: str) -> dict[str, Any]:
        return self.api[site].get("/api/instances/local").json()  # type: ignore[no-any-return]

    def register(self, on: str, other: str) -> None:
        response = self.api[on].post("/api/instances", json={k: self.local(other)[k] for k in DEFINITION})
        assert response.status_code == 201, response.text

    def audit(self, site: str) -> list[dict[str, Any]]:
        return self.api[site].get("/api/audit", params={"limit": 5000}).json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    root = tmp_path_factory.mktemp("identity")
    dags = str(dags_folder(root / "dags"))
    processes = {name: VireoProcess(root / name, VIREO_INSTANCE_NAME=name, VIREO_DAGS_DIR=dags) for name in SITES}
    try:
        start_all(*processes.values())
        f = Sites(processes)
        assert f.api["site-a"].put("/api/instances/local", json={"automatic_sync": False}).status_code == 200
        for runner in ("site-b", "site-c"):
            response = f.api[runner].put("/api/instances/local", json={
                "automatic_sync": False, "automatic_execution": True, "allowed_dags": ["test-echo"]})
            assert response.status_code == 200, response.text
            f.register("site-a", runner)
            f.register(runner, "site-a")
            assert f.api[runner].post("/api/instances/sync").json()["site-a"]["ok"]  # site-a learns what the runner allows
        f.register("site-c", "site-b")  # site-c knows site-b's definition (and token) too
        yield f
    finally:
        for p in processes.values():
            p.stop()


def _as_site_c(f: Sites, claim: str, payload: dict[str, Any], *, token: str | None = None, key_header: str | None = None) -> httpx.Response:
    """One sync request to site-a, signed with site-c's own key, claiming to be `claim`."""
    key = InstanceKey.load_or_create(f.processes["site-c"].data_dir / KEY_FILE)
    body = json.dumps(payload).encode()
    headers = signing.sign_request(key, token or f.local("site-a")["token"], claim, "site-a", "POST", SYNC_PATH, body)
    if key_header:
        headers[signing.KEY_HEADER] = key_header
    return httpx.post(f.processes["site-a"].url + SYNC_PATH, content=body, headers={**headers, "Content-Type": "application/json"})


def _job_at_a(f: Sites, job_id: int) -> dict[str, Any]:
    return f.api["site-a"].get(f"/api/jobs/{job_id}").json()  # type: ignore[no-any-return]


def test_site_c_cannot_take_report_or_read_site_b_s_job(sites: Sites) -> None:
    f = sites
    (job,) = create(f.api["site-a"], dag_id="test-echo", runners=["site-b"])["jobs"]
    assert job["status"] == "pending"
    b_key = f.local("site-b")["public_key"]
    idle = {"instance": {"name": "site-b"}, "updates": []}

    # 1. take site-b's job: claim site-b's name, with site-a's token (as any peer of site-a holds it), then with site-b's token
    for token in (None, f.local("site-b")["token"]):
        taken = _as_site_c(f, "site-b", idle, token=token)
        assert taken.status_code == 403 and "signed with the key of 'site-c', not of 'site-b'" in taken.json()["detail"], taken.text
        assert "jobs" not in taken.json() and str(job["id"]) not in taken.text
    # ... or name site-b's public key, signing with site-c's own
    borrowed = _as_site_c(f, "site-b", idle, key_header=b_key)
    assert borrowed.status_code == 401 and "signature does not match" in borrowed.json()["detail"], borrowed.text
    mine = _job_at_a(f, job["id"])
    assert mine["status"] == "pending" and mine["external_job_id"] is None  # nobody took it

    # 2. report site-b's job finished with a forged result: as site-b (refused), and as itself (not its job to report on)
    forged = {"instance": {}, "updates": [{"job_id": job["id"], "runner_job_id": 999, "status": "finished", "result": {"forged": True}}]}
    assert _as_site_c(f, "site-b", forged).status_code == 403
    as_itself = _as_site_c(f, "site-c", forged)
    assert as_itself.status_code == 200, as_itself.text
    answer = as_itself.json()
    assert job["id"] not in answer["acknowledged"]
    # 3. read what site-a holds for site-b: its own sync shows site-c only its own jobs
    assert all(j["id"] != job["id"] for j in answer["jobs"])
    mine = _job_at_a(f, job["id"])
    assert mine["status"] == "pending" and mine["result"] is None and mine["external_job_id"] is None

    # every attempt is in site-a's audit log under the sender its signature proves
    events = f.audit("site-a")
    by_c = [e for e in events if e["peer"] == "site-c" and e["verified"]]
    impersonations = [e for e in by_c if e["action"] == "impersonation refused"]
    assert len(impersonations) == 3 and all("site-b" in e["detail"] for e in impersonations), by_c
    assert any(e["action"] == "update refused" and str(job["id"]) in e["detail"] for e in by_c), by_c
    unproven = [e for e in events if e["action"] == "signature refused"]
    assert unproven and all(not e["verified"] and e["peer"] == "" and "site-b" in e["detail"] for e in unproven)
    assert not any(e["peer"] == "site-b" and e["verified"] for e in events if "refused" in e["action"])  # nothing pinned on site-b

    # site-b itself still takes its job, runs it, and its report is the one site-a keeps
    assert f.api["site-b"].post("/api/instances/sync").json()["site-a"]["ok"]
    deadline = time.monotonic() + 30
    while _job_at_a(f, job["id"])["status"] not in ENDED and time.monotonic() < deadline:
        f.api["site-b"].post("/api/instances/sync")
        time.sleep(0.5)
    done = wait_job(f.api["site-a"], job["id"], ENDED, timeout=5)
    assert done["status"] == "finished" and done["result"] != {"forged": True}, done
    assert any(e["action"] == "job received" and e["peer"] == "site-a" and e["verified"] for e in f.audit("site-b"))


def test_a_request_for_one_instance_is_no_good_at_another(sites: Sites) -> None:
    """site-c's request to site-a, replayed by site-a (which saw it) to site-b, which also knows site-c: refused."""
    f = sites
    f.register("site-b", "site-c")
    key = InstanceKey.load_or_create(f.processes["site-c"].data_dir / KEY_FILE)
    body = b'{"instance": {}, "updates": []}'
    headers = {**signing.sign_request(key, f.local("site-b")["token"], "site-c", "site-a", "POST", SYNC_PATH, body),
               "Content-Type": "application/json"}
    replayed = httpx.post(f.processes["site-b"].url + SYNC_PATH, content=body, headers=headers)
    assert replayed.status_code == 401 and "signature does not match" in replayed.json()["detail"]
    headers = {**signing.sign_request(key, f.local("site-b")["token"], "site-c", "site-b", "POST", SYNC_PATH, body),
               "Content-Type": "application/json"}
    assert httpx.post(f.processes["site-b"].url + SYNC_PATH, content=body, headers=headers).status_code == 200  # meant for site-b: fine
