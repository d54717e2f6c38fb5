"""`/workflows/execute`: run a DAG on a dataset or a selection of series.

Opened from the Datasets page with its selection in the URL (core.selection: `series=` repeated, or
`dataset=`, `q=`, `filter=`), which the workflow gets whole; the page says how many series that is
before Start. The chosen DAG is kept in the URL too. Submitting shows the new workflow in the
Workflow List.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from nicegui import run, ui

from app import federation_actions, permissions
from app import workflow_actions as actions
from components.frame import current_principal, frame
from components.schema_form import SchemaForm
from core.selection import Selection
from core.workflows.engine import WorkflowError


def _refusal(meta: dict[str, Any] | None) -> str | None:
    """Why this user cannot start this DAG here: a permission, or what the DAG lacks (an optional extra, a model)."""
    return permissions.start_refusal(current_principal(), meta) or (meta or {}).get("unavailable")


def _dag_label(meta: dict[str, Any]) -> str:
    return f"{meta['dag_id']} (cannot run here)" if meta.get("unavailable") else meta["dag_id"]


async def _search_count(selection: Selection) -> int | str:
    """How many series the search matches now, or why it cannot be run."""
    try:
        return await run.io_bound(actions.input_count, selection)
    except (ValueError, LookupError) as exc:  # a bad query, a dataset deleted meanwhile
        return str(exc).strip("'\"")


def register() -> None:
    @ui.page("/workflows/execute")
    async def execute_page(request: Request, dag: str = "") -> None:
        all_dags = {d["dag_id"]: d for d in actions.dags(visible_only=True)}
        dags = dict(all_dags)
        datasets = await run.io_bound(actions.datasets)
        local = actions.instance_name()
        remotes = await run.io_bound(federation_actions.remote_runners)
        selection = Selection.from_params(request.query_params)
        # a search (or picked series) goes to the workflow whole; otherwise the page offers a dataset to choose
        fixed = selection.explicit or selection.searches
        matching = await _search_count(selection) if selection.searches else len(selection.series)
        state: dict[str, Any] = {"dag": dag if dag in dags else None, "form": None}

        with frame("Workflow Execution"):
            with ui.card().classes("w-full max-w-3xl"):
                runner_options = {local: f"{local} (this instance)", **{name: f"{name} (remote)" for name in sorted(remotes)}}
                runners = ui.select(runner_options, value=[local], multiple=True, label="Runner instances").classes("w-96 max-w-full").mark("runners")
                chooser = ui.select({d: _dag_label(dags[d]) for d in sorted(dags)}, value=state["dag"], label="DAG", with_input=True).classes("w-96 max-w-full").mark("dag-select").props("data-testid=dag-select")
                description = ui.label("").classes("text-grey-8").mark("dag-description")
                name = ui.input("Workflow name").classes("w-96 max-w-full").mark("workflow-name")
                input_area = ui.column().classes("w-full gap-1")
                ui.separator()
                ui.label("Configuration").classes("text-lg")
                form_area = ui.column().classes("w-full")
                message = ui.label("").classes("text-negative").mark("form-message").props("data-testid=form-message")
                with ui.element("span") as start_wrapper:  # the reason as a tooltip too: a disabled button shows none
                    start = ui.button("Start workflow", icon="play_arrow", on_click=lambda: submit()).mark("submit-workflow").props("data-testid=submit-workflow")
                not_permitted = ui.label("").classes("text-grey-8").mark("start-why-not").props("data-testid=start-why-not")

        def draw_input(meta: dict[str, Any] | None) -> None:
            input_area.clear()
            state["dataset_select"] = None
            with input_area:
                if meta is None:
                    return
                if meta["input"] == "none":
                    ui.label("This DAG takes no input series.").classes("text-grey-7").mark("no-input")
                    return
                per_series = " (one job per series)" if meta["input"] == "series" else ""
                if selection.explicit:
                    ui.label(f"{len(selection.series)} selected series").mark("selection-count").props("data-testid=selection-count")
                elif selection.searches:
                    asked = selection.describe()
                    ui.label("Every series in the PACS" if asked == "all series" else f"Every series matching {asked}").mark("selection-query").props("data-testid=selection-query")
                if fixed:
                    text = f"This workflow will get {matching:,} series{per_series}" if isinstance(matching, int) else f"Cannot search: {matching}"
                    ui.label(text).classes("text-weight-medium").mark("input-count").props("data-testid=input-count")
                    return
                options = dataset_options()
                pick = ui.select(options, value=selection.dataset if selection.dataset in options else None, label="Dataset",
                                 with_input=True).classes("w-96 max-w-full").mark("dataset-select").props("data-testid=dataset-select")
                count = ui.label("").classes("text-weight-medium").mark("input-count").props("data-testid=input-count")
                state["dataset_select"] = pick

                def show_count() -> None:
                    if not pick.value:
                        count.set_text("Choose a dataset.")
                    elif chosen_remotes():
                        count.set_text(f"Each runner resolves dataset {pick.value} on its own data{per_series}")
                    else:
                        n = next((d["series"] for d in datasets if d["name"] == pick.value), 0)
                        count.set_text(f"This workflow will get {n:,} series{per_series}")

                pick.on_value_change(lambda _: (show_count(), show_default_name()))
                show_count()

        def chosen_input() -> Selection | None:
            """What the workflow would be started on as the page stands (None: no input, or no dataset chosen yet)."""
            meta = dags.get(state["dag"] or "")
            if meta is None or meta["input"] == "none":
                return None
            if fixed:
                return selection
            picked = state.get("dataset_select")
            return Selection.of(dataset=picked.value) if picked is not None and picked.value else None

        def show_default_name() -> None:
            """The hint gives the name a blank field gets: DAG + what it runs on ("collect-metadata on brain-mr")."""
            default = actions.default_name(state["dag"], chosen_input()) if state["dag"] else "DAG and input"
            name._props["hint"] = f"Left blank, it is called “{default}”"  # a placeholder hides behind the label until focused
            name.update()

        def chosen_remotes() -> list[str]:
            return [r for r in runners.value or [] if r in remotes]

        def dataset_options() -> dict[str, str]:
            """Local datasets when only this instance runs; with remotes, only names every chosen remote allows."""
            picked = chosen_remotes()
            if not picked:
                return {d["name"]: f"{d['name']} ({d['series']} series)" for d in datasets}
            names = set.intersection(*(set(remotes[r]["datasets"]) for r in picked))
            if local in (runners.value or []):
                names &= {d["name"] for d in datasets}
            return {n: n for n in sorted(names)}

        def runners_changed() -> None:
            """Offer only the DAGs every chosen remote allows (as of its last sync)."""
            picked = chosen_remotes()
            allowed = set(all_dags)
            for r in picked:
                allowed &= set(remotes[r]["dags"])
            dags.clear()
            dags.update({d: all_dags[d] for d in sorted(allowed)})
            chooser.set_options({d: _dag_label(dags[d]) for d in sorted(dags)}, value=state["dag"] if state["dag"] in dags else None)
            choose(chooser.value)

        def choose(dag_id: str | None) -> None:
            state["dag"] = dag_id
            meta = dags.get(dag_id or "")
            description.set_text(meta["description"] if meta else "Choose a DAG.")
            why_not = _refusal(meta)
            start.set_enabled(not why_not)
            start_wrapper._props["title"] = why_not or ""
            start_wrapper.update()
            not_permitted.set_text(f"{why_not[0].upper()}{why_not[1:].rstrip('.')}." if why_not else "")
            draw_input(meta)
            show_default_name()
            form_area.clear()
            message.set_text("")
            with form_area:
                state["form"] = SchemaForm(meta["config_schema"]) if meta else None
            query = [*([("dag", dag_id)] if dag_id else []), *selection.to_params()]
            ui.navigate.history.replace(f"/workflows/execute?{urlencode(query)}" if query else "/workflows/execute")

        chooser.on_value_change(lambda e: choose(e.value))
        runners.on_value_change(lambda _: runners_changed())
        choose(state["dag"])

        async def submit() -> None:
            meta = dags.get(state["dag"] or "")
            if meta is None:
                message.set_text("Choose a DAG first.")
                return
            if why_not := _refusal(meta):
                message.set_text(why_not)
                return
            form: SchemaForm = state["form"]
            request: dict[str, Any] = {"dag_id": meta["dag_id"], "name": name.value or "", "conf": form.values(),
                                       "runners": list(runners.value or []), "username": current_principal().username}
            if meta["input"] != "none":
                picked = state.get("dataset_select")
                if fixed:
                    request["selection"] = selection
                elif picked is not None and picked.value:
                    request["selection"] = Selection.of(dataset=picked.value)
                else:
                    message.set_text("Choose a dataset.")
                    return
            try:
                workflow = await run.io_bound(lambda: actions.create(**request))
            except WorkflowError as exc:
                unplaced = form.show_errors(exc.errors) if exc.errors else [str(exc)]
                message.set_text("; ".join(unplaced) if unplaced else "Please correct the marked fields.")
                return
            ui.notify(f"Workflow {workflow['name']} started", type="positive")
            ui.navigate.to(f"/workflows?workflow={workflow['id']}")
