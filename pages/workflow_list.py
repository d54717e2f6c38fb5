"""`/workflows`: every workflow, newest first, paged on the server, with live job states.

Filters (status, user, DAG, text) and the expanded workflow live in the URL. Job state
changes arrive from the engine on the event bus; the page re-reads the rows it shows
(at most four times a second) and NiceGUI pushes them over its websocket — the browser
never polls.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

from nicegui import background_tasks, run, ui

from app import permissions
from app import workflow_actions as actions
from components.frame import current_principal, frame
from components.local_time import zone_now_or_later
from components.job_details import open_job_details
from components.status import STATUS_ORDER
from components.workflow_table import JOBS_SHOWN, workflow_row, workflow_table
from core.events import JOB_CHANGED, WORKFLOW_CHANGED
from core.workflows.engine import Conflict
from core.workflows.queries import WorkflowFilter

ROWS_PER_PAGE = 20
MIN_REFRESH_INTERVAL = 0.25


def register() -> None:
    @ui.page("/workflows")
    async def workflow_list_page(status: str = "", user: str = "", dag: str = "", q: str = "", workflow: str = "", page: int = 1) -> None:
        users, dag_ids = await run.io_bound(actions.filter_choices)
        principal = current_principal()
        state: dict[str, Any] = {"page": max(1, page), "rows_per_page": ROWS_PER_PAGE, "expanded": [workflow] if workflow else []}

        with frame("Workflow List"):
            with ui.row().classes("items-end gap-4 w-full"):
                status_filter = ui.select(STATUS_ORDER, multiple=True, value=[s for s in status.split(",") if s in STATUS_ORDER],
                                          label="Job status").classes("w-64").mark("filter-status")
                user_filter = ui.select(["", *users], value=user if user in users else "", label="User").classes("w-40").mark("filter-user")
                dag_filter = ui.select(["", *dag_ids], value=dag if dag in dag_ids else "", label="DAG").classes("w-64").mark("filter-dag")
                text_filter = ui.input("Search", value=q or workflow).props("clearable debounce=300").classes("w-64").mark("filter-text")
                ui.space()
                summary = ui.label("").mark("workflow-summary")
            with ui.row().classes("gap-2"):
                abort_selected = ui.button("Abort selected", icon="stop", on_click=lambda: act_on_selection("abort")).props("outline").mark("abort-selected")
                restart_selected = ui.button("Restart selected", icon="replay", on_click=lambda: act_on_selection("restart")).props("outline").mark("restart-selected")
                delete_selected = ui.button("Delete selected", icon="delete", on_click=lambda: act_on_selection("delete")).props("outline color=negative").mark("delete-selected")
                ui.button("New workflow", icon="add", on_click=lambda: ui.navigate.to("/workflows/execute")).props("flat")
            table = workflow_table(ROWS_PER_PAGE)
            dialogs = ui.element("div")
        table._props["expanded"] = state["expanded"]

        def selection_changed() -> None:
            """Buttons for the selection are live only when they would do something."""
            chosen = table.selected or []
            for button in (restart_selected, delete_selected):
                button.set_enabled(bool(chosen))
            abort_selected.set_enabled(any(row.get("abortable") for row in chosen))

        table.on_select(lambda _: selection_changed())
        selection_changed()

        async def redraw_in(zone: Any) -> None:
            state["zone"] = zone
            await refresh()

        state["zone"] = zone_now_or_later(redraw_in)

        def current_filter() -> WorkflowFilter:
            return WorkflowFilter(status=list(status_filter.value or []) or None, username=user_filter.value or None,
                                  dag_id=dag_filter.value or None, text=(text_filter.value or "").strip() or None)

        async def refresh() -> None:
            offset = (state["page"] - 1) * state["rows_per_page"]
            total, items = await run.io_bound(actions.workflows, current_filter(), state["rows_per_page"], offset, True, JOBS_SHOWN)
            if not items and total and state["page"] > 1:
                state["page"] = 1
                return await refresh()
            table.rows = [workflow_row(w, permissions.workflow_refusal(principal, w), state["zone"]) for w in items]
            table.show_page(state["page"], state["rows_per_page"], total)
            shown = {row["id"]: row for row in table.rows}
            table.selected = [shown.get(row["id"], row) for row in table.selected or []]  # keep states (abortable) current
            table.update()
            selection_changed()
            summary.set_text(f"{total:,} workflow{'' if total == 1 else 's'}")

        def remember_in_url() -> None:
            query = {"status": ",".join(status_filter.value or []), "user": user_filter.value or "", "dag": dag_filter.value or "",
                     "q": text_filter.value or "", "workflow": state["expanded"][0] if state["expanded"] else "",
                     "page": str(state["page"]) if state["page"] > 1 else ""}
            query = {k: v for k, v in query.items() if v}
            ui.navigate.history.replace(f"/workflows?{urlencode(query)}" if query else "/workflows")

        async def filters_changed() -> None:
            state["page"] = 1
            remember_in_url()
            await refresh()

        for element in (status_filter, user_filter, dag_filter, text_filter):
            element.on_value_change(filters_changed)

        async def on_request(event: Any) -> None:
            pagination = event.args["pagination"]
            state["page"] = int(pagination.get("page") or 1)
            state["rows_per_page"] = int(pagination.get("rowsPerPage") or ROWS_PER_PAGE) or ROWS_PER_PAGE
            remember_in_url()
            await refresh()

        def on_expanded(event: Any) -> None:
            state["expanded"] = list(event.args or [])
            table._props["expanded"] = state["expanded"]
            remember_in_url()

        table.on("request", on_request)
        table.on("update:expanded", on_expanded)

        async def confirm(question: str) -> bool:
            with dialogs, ui.dialog() as dialog, ui.card().mark("confirm-dialog"):
                ui.label(question)
                with ui.row():
                    ui.button("Yes", on_click=lambda: dialog.submit(True)).mark("confirm-yes")
                    ui.button("No", on_click=lambda: dialog.submit(False)).props("flat").mark("confirm-no")
            answer = await dialog
            dialog.delete()
            return bool(answer)

        async def act(kind: str, ids: list[Any], action: str) -> None:
            noun = "job" if kind == "job" else "workflow"
            if not ids or not await confirm(f"{action.capitalize()} {len(ids)} {noun}{'s' if len(ids) > 1 else ''}?"):
                return
            problems = []
            for item in ids:
                try:
                    if kind == "job":
                        await run.io_bound(permissions.act_on_job, principal, int(item), action)
                    else:
                        await run.io_bound(permissions.act_on_workflow, principal, str(item), action)
                except (LookupError, Conflict, permissions.NotPermitted) as exc:
                    problems.append(str(exc))
            if problems:
                ui.notify("; ".join(problems[:3]), type="warning", multi_line=True)
            else:
                done = {"abort": "Aborted", "restart": "Restarted", "delete": "Deleted"}.get(action, action.capitalize())
                ui.notify(f"{done} {len(ids)} {noun}{'s' if len(ids) > 1 else ''}", type="positive")
            await refresh()

        async def act_on_selection(action: str) -> None:
            ids = [row["id"] for row in table.selected]
            if not ids:
                ui.notify("Select workflows first.")
                return
            await act("workflow", ids, action)
            table.selected = []
            selection_changed()

        table.on("workflow_action", lambda e: act("workflow", [e.args["id"]], e.args["action"]))
        table.on("job_action", lambda e: act("job", [e.args["id"]], e.args["action"]))
        table.on("job_details", lambda e: open_job_details(int(e.args), dialogs))

        def copy_uuid(uuid: str) -> None:
            ui.clipboard.write(uuid)
            ui.notify("UUID copied", timeout=1200)

        table.on("copy_uuid", lambda e: copy_uuid(str(e.args)))

        await refresh()
        _refresh_on_events(refresh)


def _refresh_on_events(refresh: Any) -> None:
    """Re-read the shown rows when a job or workflow changes: at once, then at most every MIN_REFRESH_INTERVAL."""
    client = ui.context.client
    loop = asyncio.get_running_loop()
    state = {"scheduled": False, "last": 0.0}

    async def run_refresh() -> None:
        state["scheduled"] = False
        state["last"] = time.monotonic()
        if client.id in client.instances:
            await refresh()

    def schedule() -> None:
        if state["scheduled"]:
            return
        state["scheduled"] = True
        delay = max(0.0, MIN_REFRESH_INTERVAL - (time.monotonic() - state["last"]))
        loop.call_later(delay, lambda: background_tasks.create(run_refresh(), name="workflow-list-refresh"))

    def changed(_topic: str, _payload: dict[str, Any]) -> None:  # in the publisher's thread
        loop.call_soon_threadsafe(schedule)

    bus = actions.engine().bus
    unsubscribe = [bus.subscribe(JOB_CHANGED, changed), bus.subscribe(WORKFLOW_CHANGED, changed)]
    client.on_delete(lambda: [u() for u in unsubscribe])
