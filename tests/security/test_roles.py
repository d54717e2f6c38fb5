"""A normal user tries every destructive and federation route: each is 403 with a reason, and nothing changed.

The table below is the list of such routes; what a normal user *may* do (their own workflows
and datasets, ordinary work) is checked after it, so the rules are not simply "admins only".
The Workflow List and Workflow Execution pages say the same on the controls, in a real Chromium.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.factories import SeriesFiles
from tests.security.browser_login import log_in
from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, dags_folder, wait_job

pytestmark = pytest.mark.slow

NORA = ("nora", "nora-password")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, small_study: list[SeriesFiles]) -> Iterator[dict[str, Any]]:
    """A Vireo with two series in dataset `cohort` (the admin's), a tag, a finished admin workflow, and user nora."""
    root = tmp_path_factory.mktemp("roles")
    vireo = VireoProcess(root / "data", VIREO_DAGS_DIR=str(dags_folder(root / "dags"))).start()
    files = [str(p) for s in small_study[:2] for p in s.paths]
    subprocess.run(["storescu", "-aec", "incoming", "127.0.0.1", str(vireo.dicom_port), *files], check=True, capture_output=True, timeout=120)
    vireo.wait_for_instances(len(files))
    uids = [s.series_uid for s in small_study[:2]]
    with vireo.client() as admin:
        assert admin.post("/api/users", json={"username": NORA[0], "password": NORA[1]}).status_code == 201
        assert admin.post("/api/datasets", json={"name": "cohort", "series": uids}).status_code == 201
        assert admin.post("/api/tags", json={"series": uids, "add": ["reviewed"]}).status_code == 200
        workflow = create(admin, dag_id="test-echo", name="admin's workflow")
        wait_job(admin, workflow["jobs"][0]["id"], ENDED)
    yield {"vireo": vireo, "workflow": workflow["id"], "job": workflow["jobs"][0]["id"], "series": uids}
    vireo.stop()


# (method, path, body, words the reason must contain)
ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/api/jobs/{job}/confirm", None, "confirm or reject"),
    ("POST", "/api/jobs/{job}/reject", None, "confirm or reject"),
    ("POST", "/api/jobs/{job}/abort", None, "who started it"),
    ("POST", "/api/jobs/{job}/restart", None, "who started it"),
    ("DELETE", "/api/jobs/{job}", None, "who started it"),
    ("POST", "/api/workflows/{workflow}/abort", None, "who started it"),
    ("POST", "/api/workflows/{workflow}/restart", None, "who started it"),
    ("DELETE", "/api/workflows/{workflow}", None, "who started it"),
    ("POST", "/api/workflows", {"dag_id": "delete-series", "selection": {"q": "*"}}, "deletes data"),
    ("POST", "/api/workflows", {"dag_id": "delete-series", "dataset": "cohort"}, "deletes data"),
    ("PUT", "/api/tags/reviewed", {"name": "renamed"}, "rename or delete a tag"),
    ("DELETE", "/api/tags/reviewed", None, "rename or delete a tag"),
    ("PUT", "/api/datasets/cohort", {"name": "taken-over"}, "who made it"),
    ("DELETE", "/api/datasets/cohort", None, "who made it"),
    ("GET", "/api/instances", None, "administrators"),
    ("PUT", "/api/instances/local", {"automatic_execution": False}, "administrators"),
    ("POST", "/api/instances", {"name": "rogue", "host": "127.0.0.1", "port": 1, "token": "x"}, "administrators"),
    ("POST", "/api/instances/sync", None, "administrators"),
    ("DELETE", "/api/instances/anything", None, "administrators"),
    ("GET", "/api/audit", None, "administrators"),
    ("GET", "/api/users", None, "administrators"),
    ("POST", "/api/users", {"username": "mallory", "password": "mallory-password", "is_admin": True}, "administrators"),
    ("PUT", "/api/users/admin", {"disabled": True}, "administrators"),
    ("DELETE", "/api/users/admin", None, "administrators"),
]


@pytest.mark.parametrize(("method", "path", "body", "reason"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_a_normal_user_is_refused_with_a_reason(site: dict[str, Any], method: str, path: str, body: dict[str, Any] | None, reason: str) -> None:
    vireo: VireoProcess = site["vireo"]
    url = path.format(job=site["job"], workflow=site["workflow"])
    response = httpx.request(method, f"{vireo.url}{url}", auth=NORA, json=body, timeout=30)
    assert response.status_code == 403, (response.status_code, response.text)
    assert reason in response.json()["detail"], response.json()


def test_nothing_the_refused_requests_touched_changed(site: dict[str, Any]) -> None:
    vireo: VireoProcess = site["vireo"]
    for method, path, body, _ in ROUTES:  # again, in one go, before looking
        httpx.request(method, f"{vireo.url}{path.format(job=site['job'], workflow=site['workflow'])}", auth=NORA, json=body, timeout=30)
    with vireo.client() as admin:
        job = admin.get(f"/api/jobs/{site['job']}").json()
        assert job["status"] == "finished" and job["run"] == 1
        assert admin.get(f"/api/workflows/{site['workflow']}").status_code == 200
        assert {w["dag_id"] for w in admin.get("/api/workflows", params={"service": False}).json()} == {"test-echo"}
        assert admin.get("/api/datasets/cohort").json()["series"] == 2
        assert {t["tag"] for t in admin.get("/api/tags").json()} == {"reviewed"}
        assert [i["name"] for i in admin.get("/api/instances").json() if i["remote"]] == []
        assert admin.get("/api/instances/local").json()["automatic_execution"] is True
        assert {u["username"] for u in admin.get("/api/users").json()} == {"admin", "nora"}
    assert vireo.series()["total"] == 2


def test_what_a_normal_user_may_do(site: dict[str, Any]) -> None:
    vireo: VireoProcess = site["vireo"]
    with vireo.client(auth=NORA) as nora:
        own = create(nora, dag_id="test-echo", name="nora's workflow")
        wait_job(nora, own["jobs"][0]["id"], ENDED)
        assert nora.post(f"/api/jobs/{own['jobs'][0]['id']}/restart").status_code == 200
        wait_job(nora, own["jobs"][0]["id"], ENDED)
        assert nora.delete(f"/api/workflows/{own['id']}").status_code == 200
        assert nora.post("/api/datasets", json={"name": "noras", "series": site["series"][:1]}).status_code == 201
        assert nora.put("/api/datasets/noras", json={"name": "noras-renamed"}).status_code == 200
        assert nora.delete("/api/datasets/noras-renamed").status_code == 200
        assert nora.post("/api/tags", json={"series": site["series"], "add": ["seen-by-nora"]}).status_code == 200
        assert nora.get(f"/api/jobs/{site['job']}").status_code == 200  # reading stays open
    with vireo.client() as admin:  # and an administrator may do what nora may not
        assert admin.delete("/api/tags/seen-by-nora").status_code == 200


def test_the_pages_say_why_a_control_is_disabled(site: dict[str, Any], browser_page: Any) -> None:
    vireo: VireoProcess = site["vireo"]
    page = browser_page
    log_in(page, vireo, *NORA, target="/workflows")
    row = page.locator(f"tr[data-workflow='{site['workflow']}']")
    delete = row.locator(".workflow-delete")
    delete.wait_for()
    assert delete.get_attribute("data-disabled") == "true"
    assert "who started it" in (delete.get_attribute("title") or "")
    assert delete.is_disabled()  # a disabled button: a click cannot reach it, so no dialog asks to confirm
    delete.click(force=True)
    page.wait_for_timeout(500)
    assert page.get_by_text("Delete 1 workflow?").count() == 0

    page.goto(f"{vireo.url}/workflows/execute?dag=delete-series")
    why = page.get_by_test_id("start-why-not")
    why.wait_for()
    assert "deletes data" in why.inner_text()
    assert page.get_by_test_id("submit-workflow").is_disabled()
