"""`/workflows/execute`: run a DAG on a dataset or a selection of series.

Opened from the Datasets page with its selection (`?series=uid,uid` or `?dataset=name`);
the chosen DAG is kept in the URL too. Submitting shows the new workflow in the Workflow List.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from nicegui import run, ui

from app import federation_actions
from app import workflow_actions as actions
from components.frame import current_principal, frame
from components.schema_form import SchemaForm
from core.workflows.engine import WorkflowError


def register() -> None:
    @ui.page("/workflows/execute")
    async def execute_page(dag: str = "", dataset: str = "", series: str = "") -> None:
        all_dags = {d["dag_id"]: d for d in actions.dags(visible_only=True)}
        dags = dict(all_dags)
        datasets = await run.io_bound(actions.datasets)
        local = actions.instance_name()
        remotes = await run.io_bound(federation_actions.remote_runners)
        selection = [s for s in series.split(",") if s.strip()]
        state: dict[str, Any] = {"dag": dag if dag in dags else None, "form": None}

        with frame("Workflow Execution"):
            with ui.card().classes("w-full max-w-3xl"):
                runner_options = {local: f"{local} (this instance)", **{name: f"{name} (remote)" for name in sorted(remotes)}}
                runners = ui.select(runner_options, value=[local], multiple=True, label="Runner instances").classes("w-96").mark("runners")
                chooser = ui.select({d: d for d in sorted(dags)}, value=state["dag"], label="DAG", with_input=True).classes("w-96").mark("dag-select")
                description = ui.label("").classes("text-grey-8").mark("dag-description")
                name = ui.input("Workflow name", placeholder="(default: DAG id and time)").classes("w-96").mark("workflow-name")
                input_area = ui.column().classes("w-full gap-1")
                ui.separator()
                ui.label("Configuration").classes("text-lg")
                form_area = ui.column().classes("w-full")
                message = ui.label("").classes("text-negative").mark("form-message")
                ui.button("Start workflow", icon="play_arrow", on_click=lambda: submit()).mark("submit-workflow")

        def draw_input(meta: dict[str, Any] | None) -> None:
            input_area.clear()
            with input_area:
                if meta is None:
                    return
                if meta["input"] == "none":
                    ui.label("This DAG takes no input series.").classes("text-grey-7").mark("no-input")
                    state["dataset"] = None
                    return
                if selection and not dataset:
                    ui.label(f"{len(selection)} selected series").mark("selection-count")
                    state["dataset"] = None
                    return
                options = dataset_options()
                pick = ui.select(options, value=dataset if dataset in options else None, label="Dataset", with_input=True).classes("w-96").mark("dataset-select")
                state["dataset_select"] = pick
                if meta["input"] == "series":
                    ui.label("One job per series.").classes("text-grey-7")

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
            chooser.set_options({d: d for d in sorted(dags)}, value=state["dag"] if state["dag"] in dags else None)
            choose(chooser.value)

        def choose(dag_id: str | None) -> None:
            state["dag"] = dag_id
            meta = dags.get(dag_id or "")
            description.set_text(meta["description"] if meta else "Choose a DAG.")
            draw_input(meta)
            form_area.clear()
            message.set_text("")
            with form_area:
                state["form"] = SchemaForm(meta["config_schema"]) if meta else None
            query = {k: v for k, v in (("dag", dag_id or ""), ("dataset", dataset), ("series", series)) if v}
            ui.navigate.history.replace(f"/workflows/execute?{urlencode(query)}" if query else "/workflows/execute")

        chooser.on_value_change(lambda e: choose(e.value))
        runners.on_value_change(lambda _: runners_changed())
        choose(state["dag"])

        async def submit() -> None:
            meta = dags.get(state["dag"] or "")
            if meta is None:
                message.set_text("Choose a DAG first.")
                return
            form: SchemaForm = state["form"]
            request: dict[str, Any] = {"dag_id": meta["dag_id"], "name": name.value or "", "conf": form.values(),
                                       "runners": list(runners.value or []), "username": current_principal().username}
            if meta["input"] != "none":
                if selection and not dataset:
                    request["series"] = selection
                else:
                    picked = state.get("dataset_select")
                    request["dataset"] = picked.value if picked is not None else None
                    if not request["dataset"]:
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
