"""The Workflow List in real headless Chromium: live job states over the websocket, expand, abort, logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.support.browser import ARTIFACTS_DIR
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess
from tests.support.workflows import create, dags_folder, wait_job


@pytest.fixture(scope="module")
def wf_vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    root: Path = tmp_path_factory.mktemp("wf-browser")
    process = VireoProcess(root / "data", VIREO_DAGS_DIR=str(dags_folder(root / "dags")), VIREO_WORKERS="2").start()
    yield process
    process.stop()


def test_status_changes_arrive_live_and_a_job_is_aborted_from_the_list(wf_vireo: VireoProcess, browser_page) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    page.goto(f"{wf_vireo.url}/login?next=%2Fworkflows")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{wf_vireo.url}/workflows")
    page.get_by_text("0 workflows").wait_for()

    with wf_vireo.client() as api:
        workflow = create(api, name="watched", dag_id="test-sleep", conf={"seconds": 60})
        row = page.locator(f"tr[data-workflow='{workflow['id']}']")
        row.wait_for(timeout=10000)
        wait_job(api, workflow["jobs"][0]["id"], {"running"}, timeout=60)
        started = time.monotonic()
        row.locator(".workflow-count[data-status='running']").wait_for(timeout=10000)
        seen_running = time.monotonic() - started
        # the page never reloaded: the change came over the websocket
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        assert seen_running < 3, seen_running

        row.locator(".expand-workflow").click()
        job_id = workflow["jobs"][0]["id"]
        page.locator(f".job-status[data-job='{job_id}']").filter(has_text="running").wait_for()
        confirm = page.get_by_role("button", name="Yes")
        for _ in range(10):  # a live update can re-render the row under the click (a loaded machine): click again
            page.locator(f"tr[data-job='{job_id}'] .job-abort").click()
            try:
                confirm.wait_for(timeout=2000)
                break
            except PlaywrightTimeoutError:
                continue
        confirm.click()
        page.locator(f".job-status[data-job='{job_id}']").filter(has_text="aborted").wait_for(timeout=5000)
        assert wait_job(api, job_id, {"aborted"}, timeout=1)["status"] == "aborted"
        assert f"workflow={workflow['id']}" in page.url  # the expanded workflow is in the URL

        page.locator(f"tr[data-job='{job_id}'] .job-details").click()
        page.get_by_text("step sleep, attempt 1 of 1").wait_for()
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS_DIR / "workflow-list.png"), full_page=True)
