"""Instance Overview and remote runners on Workflow Execution, through NiceGUI's simulated `user` (in-process Vireo)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nicegui.testing import User

from tests.support.vireo import ADMIN_PASSWORD, free_port
from tests.support.workflows import dags_folder
from tests.test_pages import log_in
from tests.test_workflow_pages import element, until


@pytest.fixture(autouse=True)
def vireo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("VIREO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIREO_DAGS_DIR", str(dags_folder(tmp_path / "dags")))
    monkeypatch.setenv("VIREO_DICOM_PORT", str(free_port()))
    monkeypatch.setenv("VIREO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("VIREO_INSTANCE_NAME", "site-a")
    yield


def _definition(name: str) -> dict:
    return {"name": name, "protocol": "http", "host": "127.0.0.1", "port": free_port(), "token": str(uuid.uuid4()),
            "fernet_key": None, "ssl_verify": True}


async def test_instance_overview_changes_settings_and_adds_remotes(user: User) -> None:
    from app import federation_actions

    await log_in(user)
    await user.should_see(marker="user-menu", retries=100)
    await user.open("/instances")
    await user.should_see(marker="local-name", retries=50)
    await user.should_see("site-a")
    before = federation_actions.local_instance()
    element(user, "local-fernet").value = True
    element(user, "local-allowed-dags").value = ["test-echo"]
    user.find(marker="save-local").click()
    await until(lambda: federation_actions.local_instance()["fernet_encryption"])
    local = federation_actions.local_instance()
    assert len(local["fernet_key"]) == 44 and local["allowed_dags"] == ["test-echo"]
    await user.should_see(f"Key: {local['fernet_key']}")
    await user.should_see(f"Public key: {local['public_key']}")  # what a remote's admin registers, with its fingerprint
    await user.should_see(f"Fingerprint {local['key_fingerprint']}: the remote's admin should see the same")
    user.find(marker="copy-public-key").click()
    await user.should_see("Public key copied")
    user.find(marker="regenerate-token").click()
    await until(lambda: federation_actions.local_instance()["token"] != before["token"])
    user.find(marker="copy-definition").click()
    await user.should_see("Instance definition copied")

    element(user, "local-interval").value = 0
    user.find(marker="save-local").click()
    await until(lambda: "sync_interval" in element(user, "local-message").text)

    element(user, "remote-definition").value = json.dumps(_definition("site-b"))
    user.find(marker="add-remote").click()
    await until(lambda: any(r["name"] == "site-b" for r in element(user, "remote-table").rows))
    (row,) = element(user, "remote-table").rows
    assert row["health"] == "never synced" and row["last_seen"] == "never"
    element(user, "remote-definition").value = "{not json"
    user.find(marker="add-remote").click()
    await until(lambda: "not a JSON object" in element(user, "remote-message").text)
    element(user, "remote-definition").value = json.dumps(_definition("site-b"))
    user.find(marker="add-remote").click()
    await until(lambda: "registered already" in element(user, "remote-message").text)


async def test_workflow_execution_offers_remotes_with_what_they_allow(user: User) -> None:
    from app import federation_actions, workflow_actions
    from app.runtime import current_services
    from core.workflows.queries import WorkflowFilter
    from federation import instances

    await log_in(user)
    await user.should_see(marker="user-menu", retries=100)
    federation_actions.add_remote(_definition("site-b"))
    with current_services().db.session() as session:  # as site-b's last sync told us
        remote = instances.remote(session, "site-b")
        remote.allowed_dags, remote.allowed_datasets = ["test-echo", "collect-metadata"], ["their-cohort"]
        session.add(remote)
    await user.open("/workflows/execute")
    await user.should_see(marker="runners", retries=50)
    assert "site-b" in element(user, "runners").options
    element(user, "runners").value = ["site-b"]
    await until(lambda: set(element(user, "dag-select").options) == {"test-echo", "collect-metadata"})
    element(user, "dag-select").value = "collect-metadata"
    await user.should_see(marker="dataset-select", retries=50)
    assert list(element(user, "dataset-select").options) == ["their-cohort"]  # the remote's dataset, by name
    element(user, "dag-select").value = "test-echo"
    await user.should_see(marker="no-input", retries=50)
    user.find(marker="workflow-name").type("remote-echo")
    user.find(marker="submit-workflow").click()
    await user.should_see(marker="workflow-table", retries=100)
    _, items = workflow_actions.workflows(WorkflowFilter(text="remote-echo"), 10, 0)
    (job,) = items[0]["jobs"]
    assert job["runner_instance"] == "site-b" and job["status"] == "pending"


async def test_pending_remote_jobs_show_what_they_run_with_confirm_and_reject(user: User) -> None:
    from app import federation_actions, workflow_actions
    from app.runtime import current_services
    from core.workflows.engine import RemoteJob
    from core.workflows.states import JobState

    await log_in(user)
    await user.should_see(marker="user-menu", retries=100)
    federation_actions.add_remote(_definition("site-b"))
    federation_actions.change_local({"allowed_dags": ["test-echo"]})  # checked again right before the job runs
    adopted = current_services().workflows.adopt_remote_jobs("site-b", [
        RemoteJob(external_job_id=n, workflow_id=f"00000000-0000-4000-8000-00000000000{n}", workflow_name=f"asked-{n}", dag_id="test-echo",
                  dataset=None, series=[], conf={}, username="bob@site-b", status=JobState.PENDING)
        for n in (1, 2)
    ])
    (confirmed, _), (rejected, _) = adopted
    for job_id, button, end in ((confirmed, "confirm-remote-job", "finished"), (rejected, "reject-remote-job", "aborted")):
        await user.open("/workflows")
        await user.should_see(marker="workflow-table", retries=100)
        user.find(marker="workflow-table").trigger("job_details", job_id)
        await user.should_see(marker="remote-confirmation", retries=50)
        await user.should_see("site-b asks to run test-echo on no input series.")
        user.find(marker=button).click()
        try:
            await until(lambda: workflow_actions.job(job_id)["status"] == end)
        except AssertionError:
            raise AssertionError(f"{button}: {workflow_actions.job(job_id)}") from None
    actions = [e["action"] for e in federation_actions.audit_log()]
    assert "confirmed" in actions and "rejected" in actions
