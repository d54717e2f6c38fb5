"""Workflow Execution and Workflow List through NiceGUI's simulated `user` (in-process Vireo, test DAGs)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nicegui.testing import User

from tests.support.vireo import ADMIN_PASSWORD, free_port
from tests.support.workflows import dags_folder
from tests.test_pages import log_in


@pytest.fixture(autouse=True)
def vireo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("VIREO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIREO_DAGS_DIR", str(dags_folder(tmp_path / "dags")))
    monkeypatch.setenv("VIREO_WORKERS", "2")
    monkeypatch.setenv("VIREO_DICOM_PORT", str(free_port()))
    monkeypatch.setenv("VIREO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    yield


def element(user: User, marker: str) -> Any:
    (found,) = user.find(marker=marker).elements
    return found


async def until(condition: Any, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def row_named(user: User, name: str) -> dict[str, Any] | None:
    return next((r for r in element(user, "workflow-table").rows if r["name"] == name), None)


def counts(row: dict[str, Any] | None) -> dict[str, int]:
    return {c["status"]: c["n"] for c in (row or {}).get("counts", [])}


async def test_execution_page_validates_and_starts_a_workflow_that_the_list_follows_live(user: User) -> None:
    await log_in(user)
    await user.should_see(marker="user-menu", retries=100)
    await user.open("/workflows/execute?dag=test-sleep")
    await user.should_see(marker="conf-seconds", retries=50)
    await user.should_see("Sleeps, reporting progress.")
    await user.should_see(marker="no-input")
    element(user, "conf-seconds").value = 1.0
    element(user, "conf-steps").value = 5000
    user.find(marker="submit-workflow").click()
    await until(lambda: element(user, "conf-steps").error is not None)
    assert "less than or equal to 1000" in element(user, "conf-steps").error

    element(user, "conf-steps").value = 2
    user.find(marker="workflow-name").type("from-the-page")
    user.find(marker="submit-workflow").click()
    await user.should_see(marker="workflow-table", retries=100)
    await until(lambda: row_named(user, "from-the-page") is not None)
    # the list shows it running, then finished, without being reloaded
    await until(lambda: "running" in counts(row_named(user, "from-the-page")))
    await until(lambda: counts(row_named(user, "from-the-page")) == {"finished": 1})
    (job,) = row_named(user, "from-the-page")["jobs"]  # type: ignore[index]
    assert job["progress"] == 1.0 and job["progress_text"] == "2 of 2" and job["duration"].endswith(" s")


async def test_list_filters_and_aborts_with_confirmation(user: User) -> None:
    from app import workflow_actions

    await log_in(user)
    await user.should_see(marker="user-menu", retries=100)
    long_running = workflow_actions.create(dag_id="test-sleep", name="long-one", conf={"seconds": 60}, username="admin")
    workflow_actions.create(dag_id="test-fail", name="broken-one", username="admin")
    await user.open("/workflows")
    await user.should_see(marker="workflow-table", retries=100)
    await until(lambda: "running" in counts(row_named(user, "long-one")) and counts(row_named(user, "broken-one")) == {"failed": 1})

    element(user, "filter-status").value = ["failed"]
    await until(lambda: [r["name"] for r in element(user, "workflow-table").rows] == ["broken-one"])
    element(user, "filter-status").value = []
    element(user, "filter-text").value = "long"
    await until(lambda: [r["name"] for r in element(user, "workflow-table").rows] == ["long-one"])

    job_id = long_running["jobs"][0]["id"]
    user.find(marker="workflow-table").trigger("job_action", {"id": job_id, "action": "abort"})
    await user.should_see(marker="confirm-dialog", retries=50)
    user.find(marker="confirm-yes").click()
    await until(lambda: counts(row_named(user, "long-one")) == {"aborted": 1}, timeout=5)

    user.find(marker="workflow-table").trigger("job_details", job_id)
    await user.should_see(marker="job-dialog", retries=50)
    assert element(user, "job-dialog-status").text == "aborted"
    # the log viewer opens at the step that was running when the job was aborted
    assert element(user, "log-step").value == 1
    await until(lambda: any("step sleep, attempt 1" in line.text for line in element(user, "log-viewer").default_slot.children))


async def test_the_datasets_page_opens_the_execution_page_with_its_dataset(user: User) -> None:
    from app.runtime import current_services
    from core import datasets
    from core.models import Patient, Series, Study
    from core.search.indexing import index_series
    from core.timeutil import utcnow

    await log_in(user)
    await user.should_see(marker="user-menu", retries=100)
    services = current_services()
    now = utcnow()
    with services.db.session() as session:  # two indexed series (no files needed to tag them)
        patient = Patient(patient_id="P1", patient_name="Doe^Jane")
        session.add(patient)
        session.flush()
        session.add(Study(study_uid="1.2.3", patient_pk=patient.id, created=now))  # type: ignore[arg-type]
        session.flush()
        session.add_all([Series(series_uid=f"1.2.3.{i}", study_uid="1.2.3", modality="CT") for i in (1, 2)])
        session.flush()
        datasets.create_dataset(session, "cohort", ["1.2.3.1", "1.2.3.2"], "admin")
        index_series(session.connection(), ["1.2.3.1", "1.2.3.2"])  # searchable, as received series are: the action row acts on matches

    await user.open("/?dataset=cohort")
    await user.should_see(marker="action-workflow", retries=50)
    user.find(marker="action-workflow").click()
    await user.should_see(marker="dag-select", retries=50)
    element(user, "dag-select").value = "tag-dataset"
    await user.should_see(marker="dataset-select", retries=50)
    assert element(user, "dataset-select").value == "cohort"
    assert element(user, "dataset-select").options["cohort"] == "cohort (2 series)"
    element(user, "conf-tags").value = ["from-ui"]
    user.find(marker="submit-workflow").click()
    await user.should_see(marker="workflow-table", retries=100)
    await until(lambda: bool(element(user, "workflow-table").rows) and counts(element(user, "workflow-table").rows[0]) == {"finished": 1})
    from core.tags import tags_of

    with services.db.engine.connect() as conn:
        assert tags_of(conn, ["1.2.3.1", "1.2.3.2"]) == {"1.2.3.1": ["from-ui"], "1.2.3.2": ["from-ui"]}
    # a selection of series (as the Datasets page passes it) instead of a dataset
    await user.open("/workflows/execute?dag=tag-dataset&series=1.2.3.2")
    await user.should_see(marker="selection-count", retries=50)
    assert element(user, "selection-count").text == "1 selected series"
    element(user, "conf-tags").value = ["picked"]
    user.find(marker="submit-workflow").click()
    await user.should_see(marker="workflow-table", retries=100)
    await until(lambda: any(r["jobs"] and r["jobs"][0]["dag_id"] == "tag-dataset" and counts(r) == {"finished": 1} and r["dataset"] == ""
                            for r in element(user, "workflow-table").rows))
    with services.db.engine.connect() as conn:
        assert tags_of(conn, ["1.2.3.1", "1.2.3.2"]) == {"1.2.3.1": ["from-ui"], "1.2.3.2": ["from-ui", "picked"]}


async def test_job_details_show_a_federated_orchestration_and_its_merged_result(user: User, small_study: list[Any]) -> None:
    import os
    import subprocess

    from app import workflow_actions

    await log_in(user)
    await user.should_see(marker="user-menu", retries=100)
    files = [str(p) for p in small_study[0].paths]
    await asyncio.to_thread(subprocess.run, ["dcmsend", "-aec", "cohort", "127.0.0.1", os.environ["VIREO_DICOM_PORT"], *files],
                            check=True, capture_output=True, timeout=60)
    await until(lambda: any(d["name"] == "cohort" and d["series"] == 1 for d in workflow_actions.datasets()))
    workflow = workflow_actions.create(dag_id="federated-metadata-statistics", name="fed-stats", dataset="cohort",
                                       conf={"histograms": False}, username="admin")
    job_id = workflow["jobs"][0]["id"]
    # meanwhile: the execution page offers the federated DAG's own settings, not the orchestrator's round input
    await user.open("/workflows/execute?dag=federated-metadata-statistics")
    for name in ("min_runners", "rounds", "timeout", "max_result_bytes", "histogram_edges"):
        await user.should_see(marker=f"conf-{name}", retries=50)
    await user.should_not_see(marker="conf-round_input")
    await until(lambda: workflow_actions.job(job_id)["status"] == "finished", timeout=30)
    await user.open("/workflows")
    await user.should_see(marker="workflow-table", retries=100)
    user.find(marker="workflow-table").trigger("job_details", job_id)
    await user.should_see(marker="federated-runners", retries=50)
    assert element(user, "federated-status").text == "finished"
    (runner,) = element(user, "federated-runners").rows
    assert runner["round"] == 1 and runner["runner"] == workflow_actions.instance_name() and runner["status"] == "finished"
    assert element(user, "result-counts-Modality").rows == [{"value": "CT", "n": 1}]
    assert "series: 1" in element(user, "result-totals").text
