"""Issue 15 items 6-8: a job that ran on another instance is no black box on its owner; instance health tells the truth.

Two real Vireo processes on loopback: site-a owns the workflows, site-b runs them (it polls site-a
every second). What site-b reports with each status (steps, log tails, file list) is checked on
site-a through its API and in the job dialog in Chromium; the full log and a result file are
fetched from site-b through the signed channel; a fetch for a job site-b does not run for site-a
is refused. Then site-a gets a wrong Fernet key for site-b: site-b is "failing" with the reason in
plain words, on the API and on the Instance Overview, which fits 1280×800 and 1920×1080.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from federation import envelope
from federation.fetch import FETCH_PATH
from federation.identity import KEY_FILE, InstanceKey
from federation.job_mirror import LOG_TAIL_BYTES
from federation.signing import sign_request
from tests.support.browser import ARTIFACTS_DIR
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess, start_all
from tests.support.workflows import ENDED, create, dags_folder, wait_job

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
DEFINITION = ("name", "protocol", "host", "port", "token", "public_key", "fernet_key", "ssl_verify")
SIZES = ((1280, 800), (1920, 1080))

# a DAG that logs more than the mirrored tail and leaves a result file
REPORT_DAG = '''
from core.workflows.dag import Dag, DagInput, Step


def _write(ctx):
    for i in range(1500):
        ctx.log.info("line %04d of a long report log, padded to make it longer than the tail", i)
    ctx.output_file("report.csv").write_text("series,count\\nall,3\\n")


remote_report = Dag("remote-report", "Logs a long report and leaves a file.", [Step("write", _write)], input=DagInput.NONE)
'''


class Pair:
    def __init__(self, a: VireoProcess, b: VireoProcess) -> None:
        self.a, self.b = a, b
        self.api = {"site-a": a.client(), "site-b": b.client()}

    def local(self, site: str) -> dict[str, Any]:
        return self.api[site].get("/api/instances/local").json()  # type: ignore[no-any-return]

    def definition(self, site: str) -> dict[str, Any]:
        return {k: v for k, v in self.local(site).items() if k in DEFINITION}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("remote-details")
    dags = dags_folder(root / "dags")
    (dags / "remote_report_dag.py").write_text(REPORT_DAG)
    a = VireoProcess(root / "site-a", VIREO_INSTANCE_NAME="site-a", VIREO_DAGS_DIR=str(dags))
    b = VireoProcess(root / "site-b", VIREO_INSTANCE_NAME="site-b", VIREO_DAGS_DIR=str(dags))
    try:
        start_all(a, b)
        p = Pair(a, b)
        response = p.api["site-b"].put("/api/instances/local", json={
            "automatic_execution": True, "sync_interval": 1, "fernet_encryption": True,
            "allowed_dags": ["test-fail", "remote-report", "test-echo"]})
        assert response.status_code == 200, response.text
        assert p.api["site-a"].put("/api/instances/local", json={"automatic_sync": False}).status_code == 200
        assert p.api["site-a"].post("/api/instances", json=p.definition("site-b")).status_code == 201
        assert p.api["site-b"].post("/api/instances", json=p.definition("site-a")).status_code == 201
        assert p.api["site-a"].post("/api/instances/sync").json()["site-b"]["ok"] is True  # site-a learns what site-b allows
        yield p
    finally:
        b.stop()
        a.stop()


@pytest.fixture(scope="module")
def remote_jobs(pair: Pair) -> dict[str, dict[str, Any]]:
    """A failed and a finished job site-b ran for site-a, as site-a sees them once their steps arrived."""
    a = pair.api["site-a"]
    (failing,) = create(a, dag_id="test-fail", runners=["site-b"])["jobs"]
    (report,) = create(a, dag_id="remote-report", runners=["site-b"])["jobs"]
    jobs = {}
    for key, job in (("failed", failing), ("finished", report)):
        assert wait_job(a, job["id"], ENDED, timeout=90)["status"] == key
        deadline = time.monotonic() + 30
        while not (doc := a.get(f"/api/jobs/{job['id']}").json()).get("remote", {}).get("mirrored"):
            assert time.monotonic() < deadline, doc
            time.sleep(0.1)
        jobs[key] = doc
    return jobs


def test_a_remote_jobs_steps_log_and_files_are_mirrored_to_its_owner(pair: Pair, remote_jobs: dict[str, dict[str, Any]]) -> None:
    a = pair.api["site-a"]
    failed = remote_jobs["failed"]
    assert failed["runner_instance"] == "site-b" and failed["remote"]["runner"] == "site-b"
    assert failed["remote"]["runner_job_id"] == failed["external_job_id"]
    assert [(s["name"], s["state"]) for s in failed["steps"]][:2] == [("ok", "finished"), ("boom", "failed")]
    log = a.get(f"/api/jobs/{failed['id']}/logs", params={"step": "boom"}).text
    assert "about to fail" in log and "ValueError: this step always fails" in log

    report = remote_jobs["finished"]
    assert a.get(f"/api/jobs/{report['id']}/files").json() == [{"name": "report.csv", "size": 19, "remote": True}]
    size = report["remote"]["log_sizes"]["0"]
    tail = a.get(f"/api/jobs/{report['id']}/logs").text
    assert size > LOG_TAIL_BYTES and len(tail.encode()) <= LOG_TAIL_BYTES + 200  # only the tail travels with the status
    assert "line 1499" in tail and "line 0000" not in tail


def test_the_full_log_and_a_file_are_fetched_from_the_runner_on_demand(pair: Pair, remote_jobs: dict[str, dict[str, Any]]) -> None:
    a = pair.api["site-a"]
    report = remote_jobs["finished"]
    full = a.get(f"/api/jobs/{report['id']}/logs", params={"full": "true"})
    assert full.status_code == 200 and "line 0000" in full.text and "line 1499" in full.text
    assert len(full.text.encode()) >= report["remote"]["log_sizes"]["0"]
    data = a.get(f"/api/jobs/{report['id']}/files/report.csv")
    assert data.status_code == 200 and data.content == b"series,count\nall,3\n"
    assert a.get(f"/api/jobs/{report['id']}/files/other.csv").status_code == 404
    # site-b's copy is encrypted on the way (it requires Fernet): the answer was opened with its key, not read as plaintext
    assert pair.local("site-b")["fernet_encryption"] is True
    # a job that ran here has its whole log here already
    (local_job,) = create(a, dag_id="test-echo")["jobs"]
    wait_job(a, local_job["id"], ENDED)
    refused = a.get(f"/api/jobs/{local_job['id']}/logs", params={"full": "true"})
    assert refused.status_code == 400 and "runs on this instance" in refused.json()["detail"]


def test_the_runner_refuses_a_fetch_for_a_job_it_does_not_run_for_the_asker(pair: Pair) -> None:
    """site-a signs (with its own key, as its fetches do) a request for a job site-b runs for itself: refused and audited."""
    b = pair.api["site-b"]
    (own,) = create(b, dag_id="test-echo")["jobs"]
    wait_job(b, own["id"], ENDED)
    key = InstanceKey.load_or_create(pair.a.data_dir / KEY_FILE)
    b_local = pair.local("site-b")
    for job_id in (own["id"], 987654):
        body, kind = envelope.seal({"job_id": job_id, "what": "log", "step": 0}, b_local["fernet_key"])
        headers = sign_request(key, b_local["token"], "site-a", "site-b", "POST", FETCH_PATH, body)
        answer = httpx.post(f"{pair.b.url}{FETCH_PATH}", content=body, headers={**headers, "Content-Type": kind})
        assert answer.status_code == 403 and f"job {job_id} is not a job site-b runs for site-a" in answer.json()["detail"], answer.text
    audit = b.get("/api/audit", params={"peer": "site-a"}).json()
    assert any(e["action"] == "fetch refused" for e in audit), audit
    unsigned = httpx.post(f"{pair.b.url}{FETCH_PATH}", content=b"{}", headers={"Content-Type": "application/json"})
    assert unsigned.status_code in (400, 401, 403) and "traceback" not in unsigned.text.lower()


def _log_in(page: Any, vireo: VireoProcess, target: str) -> None:
    page.goto(f"{vireo.url}/login?next={target.replace('/', '%2F')}")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{vireo.url}{target}", timeout=30000)


def _no_sideways_scrolling(page: Any) -> None:
    wide = page.evaluate("""() => [document.scrollingElement, ...document.querySelectorAll('.q-table__middle, .q-table__container')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => (e.className || e.tagName) + ' ' + e.scrollWidth + '>' + e.clientWidth)""")
    assert wide == [], wide


def test_the_job_dialog_shows_the_runner_the_reason_first_and_the_full_log_on_demand(
    pair: Pair, remote_jobs: dict[str, dict[str, Any]], browser_page: Any
) -> None:
    page = browser_page
    failed, report = remote_jobs["failed"], remote_jobs["finished"]
    _log_in(page, pair.a, "/workflows")
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    for job, name in ((failed, "failed"), (report, "report")):
        page.goto(f"{pair.a.url}/workflows?workflow={job['workflow_id']}")
        page.locator(f"tr[data-job='{job['id']}'] .job-details").click(timeout=30000)
        dialog = page.locator(".q-dialog")
        dialog.get_by_text(f"Ran on site-b (its job {job['external_job_id']})").wait_for(timeout=30000)
        if name == "failed":
            reason = page.get_by_test_id("job-error")
            reason.wait_for()
            assert reason.inner_text() == "step boom failed: this step always fails"  # one line, first
            traceback = page.get_by_test_id("job-error-traceback")
            assert not traceback.is_visible()  # folded under "details"
            page.get_by_test_id("job-error-details").get_by_text("details", exact=True).click()
            traceback.wait_for(timeout=10000)
            assert "Traceback (most recent call last)" in traceback.inner_text() and "ValueError" in traceback.inner_text()
            dialog.get_by_role("tab", name="Steps").click()
            dialog.get_by_text("boom").first.wait_for()
        else:
            note = dialog.get_by_text("The last 16 KB of", exact=False)  # "… of 1xx KB, as site-b reported them"
            note.wait_for(timeout=10000)
            assert "as site-b reported them" in note.inner_text()
            assert "line 0000" not in dialog.locator(".nicegui-log").inner_text()
            page.screenshot(path=str(ARTIFACTS_DIR / "remote-job-log-tail.png"))
            dialog.get_by_role("button", name="Load the full log").click()
            dialog.get_by_text("The whole log, fetched from site-b").wait_for(timeout=30000)
            page.wait_for_function("document.querySelector('.nicegui-log').innerText.includes('line 0000')", timeout=30000)
            dialog.get_by_role("tab", name="Files (1)").click()
            dialog.get_by_text("report.csv (19 bytes)").wait_for()
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(100)
            _no_sideways_scrolling(page)
            page.screenshot(path=str(ARTIFACTS_DIR / f"remote-job-{name}-{width}x{height}.png"))
        page.keyboard.press("Escape")


def test_a_wrong_fernet_key_shows_failing_with_the_reason_in_plain_words(pair: Pair, browser_page: Any) -> None:
    a = pair.api["site-a"]
    good = pair.definition("site-b")["fernet_key"]
    before = a.get("/api/instances/site-b").json()
    assert before["health"] == "online" and before["last_success"]
    try:
        assert a.put("/api/instances/site-b", json={"fernet_key": Fernet.generate_key().decode()}).status_code == 200
        outcome = a.post("/api/instances/sync").json()["site-b"]
        expected = "site-b refused our request: the Fernet key does not match"
        assert outcome["ok"] is False and outcome["error"].startswith(expected), outcome
        doc = a.get("/api/instances/site-b").json()
        assert doc["health"] == "failing" and doc["last_error"].startswith(expected) and "Error" not in doc["last_error"]
        assert doc["last_failure"] and doc["last_success"] == before["last_success"]

        page = browser_page
        _log_in(page, pair.a, "/instances")
        page.locator("[data-testid='health-site-b']").filter(has_text="failing").wait_for(timeout=30000)
        assert page.locator("[data-testid='reason-site-b']").inner_text().startswith(expected)
        token = page.locator("[data-testid='token-site-b']")
        assert before["token"] not in token.inner_text() and token.inner_text().endswith(before["token"][-4:])
        page.locator("[data-testid='reveal-site-b']").click()
        page.locator("[data-testid='token-site-b']").filter(has_text=before["token"]).wait_for(timeout=10000)
        page.get_by_text("the name is locked because remote instances are registered (site-b)", exact=False).wait_for()
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(200)
            _no_sideways_scrolling(page)
            page.screenshot(path=str(ARTIFACTS_DIR / f"instances-failing-{width}x{height}.png"), full_page=True)
    finally:
        a.put("/api/instances/site-b", json={"fernet_key": good})
    assert a.post("/api/instances/sync").json()["site-b"]["ok"] is True
    assert a.get("/api/instances/site-b").json()["health"] == "online"


def test_renaming_is_refused_once_a_remote_is_registered(pair: Pair) -> None:
    refused = pair.api["site-a"].put("/api/instances/local", json={"name": "site-z"})
    assert refused.status_code == 400 and "locked because remote instances are registered (site-b)" in refused.json()["detail"]
    assert pair.local("site-a")["name"] == "site-a"
    assert json.loads(json.dumps(pair.local("site-a")))["name_locked"]
