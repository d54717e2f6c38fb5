"""A job's details in a dialog: its steps, a log viewer that follows a running job, its configuration, files and result.

The log viewer opens at the failed step (or the running one) and, while the job runs, adds
what its step writes once a second (only while the dialog is open). A failed job says why in
one line first; the traceback (from the failed step's log) is folded under "details".
A job that ran on another instance shows the same, as its runner mirrored it back (log tails,
the file list: `federation.job_mirror`), names the runner, and fetches a full log or a file
from the runner on demand.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import Any
from urllib.parse import quote

from nicegui import run, ui

from app import permissions, remote_jobs, viewers
from app import workflow_actions as actions
from components.federated_result import job_result
from components.local_time import browser_zone, time_text
from components.status import colour, duration, short_time
from core.timeutil import parse_time

REASON_CHARS = 240

STEP_COLUMNS = [
    {"name": "index", "label": "#", "field": "number"},
    {"name": "name", "label": "Step", "field": "name", "align": "left"},
    {"name": "state", "label": "State", "field": "state", "align": "left"},
    {"name": "attempt", "label": "Attempts", "field": "attempt"},
    {"name": "started", "label": "Started", "field": "started_text", "align": "left"},
    {"name": "duration", "label": "Duration", "field": "duration", "align": "left"},
]


def _step_rows(steps: list[dict[str, Any]], zone: tzinfo = UTC) -> list[dict[str, Any]]:
    from datetime import datetime

    rows = []
    for index, step in enumerate(steps):
        seconds = None
        if step.get("started"):
            start = datetime.fromisoformat(step["started"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(step["ended"].replace("Z", "+00:00")) if step.get("ended") else datetime.now(start.tzinfo)
            seconds = (end - start).total_seconds()
        rows.append({**step, "number": index + 1, "started_text": short_time(step.get("started"), zone), "duration": duration(seconds)})
    return rows


def initial_step(steps: list[dict[str, Any]]) -> int:
    """The step a log viewer opens at: the failed one, else the running one, else the last that ran."""
    for wanted in ("failed", "aborted", "running"):
        for index, step in enumerate(steps):
            if step.get("state") == wanted:
                return index
    ran = [i for i, s in enumerate(steps) if s.get("state") not in (None, "waiting", "skipped")]
    return ran[-1] if ran else 0


def failure_parts(error: str, log_text: str = "") -> tuple[str, str]:
    """A failed job's one-line reason and what goes under "details" (the rest of the message, the step's traceback)."""
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    if not lines:
        return "", ""
    reason = lines[0].strip()
    if reason.startswith("Traceback") and len(lines) > 1:
        reason = lines[-1].strip()
    details = "\n".join(lines[1:]) if lines[0].strip() == reason else "\n".join(lines)
    if len(reason) > REASON_CHARS:
        details, reason = reason + ("\n" + details if details else ""), reason[:REASON_CHARS - 1] + "…"
    start = log_text.rfind("Traceback (most recent call last)")
    if start >= 0:
        details = (details + "\n\n" if details else "") + log_text[start:].strip()
    return reason, details


def _failure(job: dict[str, Any]) -> None:
    """The reason in one line, first; the technical rest under "details"."""
    log_text = ""
    if job["steps"]:
        index = initial_step(job["steps"])
        step = job["steps"][index]
        if step.get("state") == "failed":
            log_text, _ = actions.step_log(job["id"], job["run"], index, step.get("name", ""), 0)
    reason, details = failure_parts(job["error"], log_text)
    ui.label(reason).classes("text-negative font-medium").style("overflow-wrap: anywhere").props("data-testid=job-error").mark("job-error")
    if details:
        with ui.expansion("details").classes("w-full text-grey-8").props("dense data-testid=job-error-details").mark("job-error-details"):
            ui.label(details).classes("font-mono text-xs whitespace-pre-wrap").style("overflow-wrap: anywhere").props("data-testid=job-error-traceback").mark("job-error-traceback")


def _runner_line(job: dict[str, Any], remote: dict[str, Any], zone: Any) -> None:
    """Which instance ran the job, and when it last told us about it."""
    theirs = f" (its job {remote['runner_job_id']})" if remote.get("runner_job_id") else ""
    mirrored = parse_time(remote.get("mirrored"))
    when = f" · steps, logs and files as it reported them {time_text(mirrored, zone)}" if mirrored else " · it has not reported steps yet"
    with ui.row().classes("items-center gap-2 w-full bg-blue-1 p-2").props("data-testid=job-runner").mark("job-runner"):
        ui.icon("lan")
        ui.label(f"Ran on {remote['runner']}{theirs}{when}").style("overflow-wrap: anywhere")


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
    remote = await run.io_bound(remote_jobs.remote_view, job)
    files = remote["files"] if remote is not None else await run.io_bound(actions.job_files, job_id)
    zone = await browser_zone()
    ohif_links = await run.io_bound(viewers.job_result_links, list(job.get("series") or []))
    with container:
        _build(job, files, remote, zone, ohif_links=ohif_links)


def _ohif_links(links: list[dict[str, str]]) -> None:
    """'Open in OHIF' for the job's series, each with the SEGs made from it drawn over it (app/viewers.py)."""
    with ui.row().classes("items-center gap-2 w-full text-sm").mark("job-ohif-links"):
        ui.label("Open in OHIF:").classes("text-grey-8")
        for link in links:
            shown = ui.link(link["label"], link["url"], new_tab=True).props("data-testid=job-open-ohif").mark("job-open-ohif")
            shown._props["title"] = f"Series {link['series_uid']}"  # untrusted text: set as a value, not parsed as props


def _build(job: dict[str, Any], files: list[dict[str, Any]], remote: dict[str, Any] | None = None, zone: Any = None,
           ohif_links: list[dict[str, str]] | None = None) -> None:
    job_id = job["id"]
    state: dict[str, Any] = {"step": initial_step(job["steps"]), "offset": 0, "job": job, "full": False}

    with ui.dialog().props("maximized=false") as dialog, ui.card().classes("w-full").style("max-width: 1100px").mark("job-dialog"):
        with ui.row().classes("items-center gap-3 w-full"):
            ui.label(f"Job {job['id']} · {job['dag_id']} · run {job['run']}").classes("text-lg")
            status = ui.badge(job["status"], color=colour(job["status"])).mark("job-dialog-status")
            ui.space()
            ui.button(icon="close", on_click=dialog.close).props("flat round dense")
        if remote is not None:
            _runner_line(job, remote, zone)
        failure = ui.column().classes("w-full gap-0")
        with failure:
            if job["error"]:
                _failure(job)
        if job["status"] == "pending" and job["owner_instance"] not in ("", actions.instance_name()):
            _confirmation(job, dialog)
        if ohif_links:
            _ohif_links(ohif_links)
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
                with ui.row().classes("items-center gap-3 w-full"):
                    chooser = ui.select(options, value=state["step"] if options else None, label="Step").classes("w-96 max-w-full").mark("log-step")
                    if remote is not None:
                        tail_note = ui.label("").classes("text-caption text-grey-8").mark("log-tail-note")
                        full_button = ui.button("Load the full log", icon="download", on_click=lambda: load_full()).props("flat dense").mark("load-full-log")
                viewer = ui.log(max_lines=20000).classes("w-full h-96 font-mono text-xs").mark("log-viewer")
            with ui.tab_panel(steps_tab):
                steps_table = ui.table(columns=STEP_COLUMNS, rows=_step_rows(job["steps"], zone or UTC), row_key="number").classes("w-full").mark("step-table")
            with ui.tab_panel(conf_tab):
                ui.json_editor({"content": {"json": job["conf"]}, "readOnly": True, "mainMenuBar": False}).classes("w-full").mark("job-conf")
            with ui.tab_panel(files_tab):
                if not files:
                    ui.label("This job made no files to download.").classes("text-grey-7")
                elif remote is not None:
                    ui.label(f"These files stay on {remote['runner']}; each is fetched from it when you open it.").classes("text-grey-7")
                for item in files:
                    ui.link(f"{item['name']} ({item['size']:,} bytes)", f"/api/jobs/{job['id']}/files/{quote(item['name'])}", new_tab=True).mark("job-file")
            if result_tab is not None:
                with ui.tab_panel(result_tab):

                    @ui.refreshable
                    def result_view(current: dict[str, Any]) -> None:
                        job_result(current)

                    result_view(job)

    def note_tail() -> None:
        """Say how much of a remote step's log is mirrored here, and offer the rest."""
        if remote is None or state["step"] is None:
            return
        size = int((remote.get("log_sizes") or {}).get(str(state["step"]), 0))
        shown = state["offset"]
        if state["full"]:
            tail_note.set_text(f"The whole log, fetched from {remote['runner']}")
            full_button.set_visibility(False)
        elif size > shown:
            tail_note.set_text(f"The last {shown / 1024:,.0f} KB of {size / 1024:,.0f} KB, as {remote['runner']} reported them")
            full_button.set_visibility(True)
        else:
            tail_note.set_text(f"As {remote['runner']} reported it")
            full_button.set_visibility(True)

    async def load_full() -> None:
        index = state["step"]
        if remote is None or index is None:
            return
        try:
            text = await run.io_bound(remote_jobs.step_log, job_id, index)
        except remote_jobs.FetchRefused as exc:
            ui.notify(exc.message, type="negative", multi_line=True)
            return
        state["full"] = True
        viewer.clear()
        for line in text.rstrip("\n").split("\n"):
            viewer.push(line)
        note_tail()

    async def load_more() -> None:
        current = state["job"]
        if not current["steps"] or state["step"] is None or state["full"]:
            return
        step = current["steps"][state["step"]]
        text, state["offset"] = await run.io_bound(actions.step_log, current["id"], current["run"], state["step"], step.get("name", ""), state["offset"])
        if text:
            for line in text.rstrip("\n").split("\n"):
                viewer.push(line)
        note_tail()

    async def show_step(index: int | None) -> None:
        state["step"] = index
        state["offset"] = 0
        state["full"] = False
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
        previous, state["job"] = state["job"], fresh
        status.set_text(fresh["status"])
        status.props(f"color={colour(fresh['status'])}")
        if fresh["error"] != state.get("error", job["error"]):
            state["error"] = fresh["error"]
            failure.clear()
            with failure:
                if fresh["error"]:
                    _failure(fresh)
        steps_table.rows = _step_rows(fresh["steps"], zone or UTC)
        steps_table.update()
        if state["step"] is None and fresh["steps"]:
            state["step"] = initial_step(fresh["steps"])
        chooser.set_options({i: f"{i + 1}. {s.get('name')} ({s.get('state')})" for i, s in enumerate(fresh["steps"])}, value=state["step"])
        if remote is None:
            await load_more()
        elif (fresh["steps"], fresh["status"]) != (previous["steps"], previous["status"]) and not state["full"]:
            await show_step(state["step"])  # the runner sent a new snapshot: its tail replaces the one shown

    chooser.on_value_change(lambda e: show_step(e.value))
    ui.timer(0, lambda: show_step(state["step"] if job["steps"] else None), once=True)
    timer = ui.timer(1.0, follow)
    dialog.on("hide", lambda: (timer.cancel(), dialog.delete()))
    dialog.open()
