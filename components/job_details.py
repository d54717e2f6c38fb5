"""A job's details in a dialog: its steps, a log viewer that follows a running job, its configuration, files and result.

The log viewer opens at the failed step (or the running one) and, while the job runs, adds
what its step writes once a second (only while the dialog is open).
"""

from __future__ import annotations

from typing import Any

from nicegui import run, ui

from app import permissions
from app import workflow_actions as actions
from components.federated_result import job_result
from components.status import colour, duration, short_time

STEP_COLUMNS = [
    {"name": "index", "label": "#", "field": "number"},
    {"name": "name", "label": "Step", "field": "name", "align": "left"},
    {"name": "state", "label": "State", "field": "state", "align": "left"},
    {"name": "attempt", "label": "Attempts", "field": "attempt"},
    {"name": "started", "label": "Started", "field": "started_text", "align": "left"},
    {"name": "duration", "label": "Duration", "field": "duration", "align": "left"},
]


def _step_rows(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from datetime import datetime

    rows = []
    for index, step in enumerate(steps):
        seconds = None
        if step.get("started"):
            start = datetime.fromisoformat(step["started"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(step["ended"].replace("Z", "+00:00")) if step.get("ended") else datetime.now(start.tzinfo)
            seconds = (end - start).total_seconds()
        rows.append({**step, "number": index + 1, "started_text": short_time(step.get("started")), "duration": duration(seconds)})
    return rows


def initial_step(steps: list[dict[str, Any]]) -> int:
    """The step a log viewer opens at: the failed one, else the running one, else the last that ran."""
    for wanted in ("failed", "aborted", "running"):
        for index, step in enumerate(steps):
            if step.get("state") == wanted:
                return index
    ran = [i for i, s in enumerate(steps) if s.get("state") not in (None, "waiting", "skipped")]
    return ran[-1] if ran else 0


def _confirmation(job: dict[str, Any], dialog: ui.dialog) -> None:
    """A job another instance asks to run here waits for Confirm or Reject; say what it will run on which data."""
    data = f"dataset {job['dataset']} ({len(job['series'])} series)" if job["dataset"] else "no input series"
    with ui.row().classes("items-center gap-3 w-full bg-orange-1 p-2").mark("remote-confirmation"):
        ui.label(f"{job['owner_instance']} asks to run {job['dag_id']} on {data}.")
        ui.space()

        principal = ui.context.client.request.state.principal
        why_not = permissions.job_refusal(principal, job, "confirm")

        async def act(action: str) -> None:
            try:
                await run.io_bound(permissions.act_on_job, principal, job["id"], action)
            except permissions.NotPermitted as exc:
                ui.notify(str(exc), type="negative")
                return
            ui.notify(f"Job {job['id']} {'confirmed' if action == 'confirm' else 'rejected'}")
            dialog.close()

        with ui.element("span") as buttons:  # the title sits on a wrapper: a disabled button shows no tooltip
            confirm = ui.button("Confirm", icon="check", on_click=lambda: act("confirm")).mark("confirm-remote-job")
            reject = ui.button("Reject", icon="block", on_click=lambda: act("reject")).props("color=negative").classes("q-ml-sm").mark("reject-remote-job")
        if why_not:  # say so, rather than offer what the server would refuse
            buttons._props["title"] = why_not
            confirm.disable()
            reject.disable()
            ui.label(why_not).classes("text-caption text-grey-8").mark("confirm-why-not")


async def open_job_details(job_id: int, container: ui.element) -> None:
    """Open the dialog (built inside `container`, an element of the page that stays)."""
    job = await run.io_bound(actions.job, job_id)
    with container:
        _build(job, await run.io_bound(actions.job_files, job_id))


def _build(job: dict[str, Any], files: list[dict[str, Any]]) -> None:
    job_id = job["id"]
    state: dict[str, Any] = {"step": initial_step(job["steps"]), "offset": 0, "job": job}

    with ui.dialog().props("maximized=false") as dialog, ui.card().classes("w-full").style("max-width: 1100px").mark("job-dialog"):
        with ui.row().classes("items-center gap-3 w-full"):
            ui.label(f"Job {job['id']} · {job['dag_id']} · run {job['run']}").classes("text-lg")
            status = ui.badge(job["status"], color=colour(job["status"])).mark("job-dialog-status")
            ui.space()
            ui.button(icon="close", on_click=dialog.close).props("flat round dense")
        error = ui.label(job["error"]).classes("text-negative").mark("job-error")
        if job["status"] == "pending" and job["owner_instance"] not in ("", actions.instance_name()):
            _confirmation(job, dialog)
        with ui.tabs() as tabs:
            logs_tab = ui.tab("Logs")
            steps_tab = ui.tab("Steps")
            conf_tab = ui.tab("Configuration")
            files_tab = ui.tab(f"Files ({len(files)})")
            result_tab = ui.tab("Result").mark("result-tab") if job.get("result") is not None else None
        first = result_tab if result_tab is not None and job.get("role") == "orchestrator" else logs_tab
        with ui.tab_panels(tabs, value=first).classes("w-full"):
            with ui.tab_panel(logs_tab):
                options = {i: f"{i + 1}. {s.get('name')} ({s.get('state')})" for i, s in enumerate(job["steps"])}
                chooser = ui.select(options, value=state["step"] if options else None, label="Step").classes("w-96").mark("log-step")
                viewer = ui.log(max_lines=20000).classes("w-full h-96 font-mono text-xs").mark("log-viewer")
            with ui.tab_panel(steps_tab):
                steps_table = ui.table(columns=STEP_COLUMNS, rows=_step_rows(job["steps"]), row_key="number").classes("w-full").mark("step-table")
            with ui.tab_panel(conf_tab):
                ui.json_editor({"content": {"json": job["conf"]}, "readOnly": True, "mainMenuBar": False}).classes("w-full").mark("job-conf")
            with ui.tab_panel(files_tab):
                if not files:
                    ui.label("This job made no files to download.").classes("text-grey-7")
                for item in files:
                    ui.link(f"{item['name']} ({item['size']:,} bytes)", f"/api/jobs/{job['id']}/files/{item['name']}", new_tab=True).mark("job-file")
            if result_tab is not None:
                with ui.tab_panel(result_tab):

                    @ui.refreshable
                    def result_view(current: dict[str, Any]) -> None:
                        job_result(current)

                    result_view(job)

    async def load_more() -> None:
        current = state["job"]
        if not current["steps"] or state["step"] is None:
            return
        step = current["steps"][state["step"]]
        text, state["offset"] = await run.io_bound(actions.step_log, current["id"], current["run"], state["step"], step.get("name", ""), state["offset"])
        if text:
            for line in text.rstrip("\n").split("\n"):
                viewer.push(line)

    async def show_step(index: int | None) -> None:
        state["step"] = index
        state["offset"] = 0
        viewer.clear()
        await load_more()

    async def follow() -> None:
        if state["job"]["status"] not in ("queued", "scheduled", "running", "pending"):
            return
        fresh = await run.io_bound(actions.job, job_id)
        if fresh["run"] != state["job"]["run"]:
            return
        if result_tab is not None and fresh.get("result") != state["job"].get("result"):
            result_view.refresh(fresh)  # a federated orchestration's rounds and runners as they progress
        state["job"] = fresh
        status.set_text(fresh["status"])
        status.props(f"color={colour(fresh['status'])}")
        error.set_text(fresh["error"])
        steps_table.rows = _step_rows(fresh["steps"])
        steps_table.update()
        chooser.set_options({i: f"{i + 1}. {s.get('name')} ({s.get('state')})" for i, s in enumerate(fresh["steps"])}, value=state["step"])
        await load_more()

    chooser.on_value_change(lambda e: show_step(e.value))
    ui.timer(0, lambda: show_step(state["step"] if job["steps"] else None), once=True)
    timer = ui.timer(1.0, follow)
    dialog.on("hide", lambda: (timer.cancel(), dialog.delete()))
    dialog.open()
