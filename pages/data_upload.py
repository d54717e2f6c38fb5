"""`/upload` (Data Upload, under the Workflows menu): upload files and folders, then import them with an import DAG.

Step 1 sends files in chunks straight from the browser to `/api/uploads` (pages/upload.js:
drag and drop of files or whole folders, progress per file and overall, resume after a
dropped connection, a warning before leaving while uploads run). Step 2 lists the upload
area (download, delete) and step 3 starts an import DAG (those tagged `import`) on a chosen
upload and shows its result: the series created and the files skipped, with why.
"""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any

from nicegui import run, ui

from app import workflow_actions as actions
from app.runtime import current_services
from components.frame import current_principal, frame
from components.local_time import zone_now_or_later
from components.schema_form import SchemaForm
from components.status import short_time, utc_tooltip
from core.uploads import UploadArea
from core.workflows.engine import WorkflowError

UPLOADER_JS = (Path(__file__).with_name("upload.js")).read_text()
UPLOADER_HTML = """
<div id="vireo-uploader" class="vireo-uploader">
  <div class="upload-drop" data-testid="upload-drop">
    <div><b>Drop files or folders here</b></div>
    <div>or choose <label class="upload-pick">files<input type="file" multiple class="upload-files" hidden></label>
    or a <label class="upload-pick">folder<input type="file" webkitdirectory class="upload-folder" hidden></label></div>
    <div class="upload-prefix">into folder <input type="text" placeholder="(top level)" class="upload-prefix-input"></div>
  </div>
  <div class="upload-overall"><progress max="1" value="0"></progress> <span></span></div>
  <div class="upload-list"></div>
</div>
"""
STYLE = """
<style>
.vireo-uploader .upload-drop { border: 2px dashed #2f5d50; border-radius: 8px; padding: 24px; text-align: center; }
.vireo-uploader .upload-hover { background: #e6f0ed; }
.vireo-uploader .upload-pick { color: #2f5d50; text-decoration: underline; cursor: pointer; }
.vireo-uploader .upload-row { display: grid; grid-template-columns: minmax(0, 1fr) minmax(80px, 200px) minmax(0, 260px); gap: 8px; align-items: center; }
.vireo-uploader .upload-name { overflow-wrap: anywhere; min-width: 0; }
/* the bars in the app's colours (Quasar's primary), not the browser's default blue */
.vireo-uploader progress { width: 100%; height: 10px; border: none; border-radius: 5px; background: #e0e6e4;
  -webkit-appearance: none; appearance: none; accent-color: var(--q-primary); overflow: hidden; }
.vireo-uploader progress::-webkit-progress-bar { background: #e0e6e4; border-radius: 5px; }
.vireo-uploader progress::-webkit-progress-value { background: var(--q-primary); border-radius: 5px; transition: width .2s; }
.vireo-uploader progress::-moz-progress-bar { background: var(--q-primary); border-radius: 5px; }
.vireo-uploader progress.upload-failed::-webkit-progress-value { background: var(--q-negative); }
.vireo-uploader .upload-prefix-input { border-bottom: 1px solid #999; padding: 2px 4px; }
.vireo-uploader .upload-overall { margin: 8px 0; display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 260px); gap: 8px; align-items: center; }
</style>
"""


def _human(size: int) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def _area() -> UploadArea:
    return UploadArea(current_services().settings.data_dir / "uploads")


def register() -> None:
    @ui.page("/upload")
    async def upload_page(upload: str = "", dag: str = "") -> None:
        ui.add_head_html(STYLE + f"<script>{UPLOADER_JS}</script>")
        import_dags = {d["dag_id"]: d for d in actions.dags(visible_only=True) if "import" in d.get("tags", [])}
        state: dict[str, Any] = {"form": None, "dag": dag if dag in import_dags else next(iter(sorted(import_dags)), None), "job": None}

        with frame("Data Upload"):
            with ui.card().classes("w-full max-w-4xl"):
                ui.label("1. Upload").classes("text-lg")
                ui.html(UPLOADER_HTML, sanitize=False).classes("w-full")
            with ui.card().classes("w-full max-w-4xl"):
                with ui.row().classes("items-center w-full"):
                    ui.label("2. Upload area").classes("text-lg")
                    ui.space()
                    ui.button(icon="refresh", on_click=lambda: refresh()).props("flat").tooltip("Refresh")
                table = ui.table(
                    columns=[
                        {"name": "path", "label": "Name", "field": "path", "align": "left", "sortable": True},
                        {"name": "size", "label": "Size", "field": "size_text", "align": "right"},
                        {"name": "modified", "label": "Uploaded", "field": "modified_text", "align": "left", "sortable": True,
                         ":sort": "(a, b, rowA, rowB) => rowA.modified.localeCompare(rowB.modified)"},
                        {"name": "actions", "label": "", "field": "path"},
                    ],
                    rows=[], row_key="path", selection="single",
                ).classes("w-full").props("wrap-cells").mark("upload-table")
                table.add_slot("no-data", '<div class="full-width text-grey-7 q-pa-sm upload-table-empty">'
                               'Nothing uploaded yet. Files and folders you upload above appear here until you delete them.</div>')
                table.add_slot("body-cell-modified", r"""
                    <q-td :props="props" :title="props.row.modified_utc" class="whitespace-nowrap">{{ props.row.modified_text }}</q-td>""")
                table.add_slot("body-cell-actions", r"""
                    <q-td :props="props">
                      <q-btn flat dense icon="download" type="a" :href="'/api/uploads/' + props.row.path" class="upload-download" />
                      <q-btn flat dense icon="delete" color="negative" class="upload-delete" @click="$parent.$emit('delete', props.row)" />
                    </q-td>""")
            with ui.card().classes("w-full max-w-4xl"):
                ui.label("3. Import").classes("text-lg")
                chooser = ui.select({d: d for d in sorted(import_dags)}, value=state["dag"], label="Import DAG").classes("w-96").mark("import-dag")
                description = ui.label("").classes("text-grey-8")
                form_area = ui.column().classes("w-full")
                message = ui.label("").classes("text-negative").mark("import-message")
                ui.button("Start import", icon="play_arrow", on_click=lambda: start()).mark("start-import")
                result_area = ui.column().classes("w-full gap-1").mark("import-result")

        async def refresh() -> None:
            files = await run.io_bound(lambda: _area().list())
            zone = state.get("zone") or UTC
            table.rows = [{**f.describe(), "size_text": _human(f.size), "modified": f.modified.isoformat(),
                           "modified_text": short_time(f.modified, zone), "modified_utc": utc_tooltip(f.modified)} for f in files]
            table.update()

        async def delete(event: Any) -> None:
            path = event.args["path"]
            await run.io_bound(lambda: _area().delete(path))
            ui.notify(f"Deleted {path}")
            await refresh()

        table.on("delete", delete)

        async def redraw_in(zone: Any) -> None:
            state["zone"] = zone
            await refresh()

        state["zone"] = zone_now_or_later(redraw_in)

        def chosen_upload() -> str:
            return table.selected[0]["path"] if table.selected else upload

        def choose(dag_id: str | None) -> None:
            state["dag"] = dag_id
            meta = import_dags.get(dag_id or "")
            description.set_text(meta["description"] if meta else "No import DAG is installed.")
            form_area.clear()
            with form_area:
                state["form"] = SchemaForm(meta["config_schema"], {"upload": chosen_upload()}) if meta else None

        def on_select(_: Any) -> None:
            form = state["form"]
            if form is not None and "upload" in form.fields and table.selected:
                form.fields["upload"][0].value = table.selected[0]["path"]

        chooser.on_value_change(lambda e: choose(e.value))
        table.on("selection", on_select)
        choose(state["dag"])

        async def start() -> None:
            meta = import_dags.get(state["dag"] or "")
            if meta is None:
                message.set_text("Choose an import DAG.")
                return
            form: SchemaForm = state["form"]
            conf = form.values()
            source = str(conf.get("upload") or "").strip()  # "import-dicom on scans/2026-12" says what was imported
            request = {"dag_id": meta["dag_id"], "name": f"{meta['dag_id']} on {source}" if source else "", "conf": conf,
                       "username": current_principal().username}
            try:
                workflow = await run.io_bound(lambda: actions.create(**request))
            except WorkflowError as exc:
                unplaced = form.show_errors(exc.errors) if exc.errors else [str(exc)]
                message.set_text("; ".join(unplaced) if unplaced else "Please correct the marked fields.")
                return
            message.set_text("")
            state["job"] = workflow["jobs"][0]["id"]
            result_area.clear()
            with result_area:
                ui.link(f"Workflow {workflow['name']}", f"/workflows?workflow={workflow['id']}")
                state["status"] = ui.label("queued").mark("import-status")
                state["details"] = ui.column().classes("w-full gap-0")
            poller.activate()

        async def follow() -> None:
            job_id = state.get("job")
            if job_id is None:
                return
            job = await run.io_bound(lambda: actions.job(job_id))
            progress = job.get("progress") or {}
            text = job["status"] + (f" ({progress['done']} of {progress['total']})" if progress.get("total") and job["status"] == "running" else "")
            state["status"].set_text(text)
            if job["status"] not in ("finished", "failed", "aborted"):
                return
            poller.deactivate()
            state["job"] = None
            await show_result(job)
            await refresh()

        async def show_result(job: dict[str, Any]) -> None:
            report_path = None
            try:
                report_path = actions.job_file(job["id"], "import-report.json")
            except Exception:
                report_path = None
            details = state["details"]
            with details:
                if report_path is not None and report_path.exists():
                    report = json.loads(report_path.read_text())
                    ui.label(f"{len(report['series'])} series created ({report['instances']} instances) in dataset {report['dataset']}").mark("import-series")
                    if report["dataset"]:
                        ui.link("Open the dataset", f"/?dataset={report['dataset']}")
                    if report["skipped"]:
                        ui.label(f"{len(report['skipped'])} skipped:").classes("text-warning").mark("import-skipped")
                        for item in report["skipped"][:200]:
                            ui.label(f"{item['file']}: {item['reason']}").classes("text-grey-8 text-sm")
                if job["status"] != "finished":
                    logs = await run.io_bound(lambda: actions.job_logs(job["id"]))
                    errors = [line for line in logs.splitlines() if " ERROR " in line][:5]
                    ui.label("The import failed: " + ("; ".join(errors) or job["status"])).classes("text-negative").mark("import-error")

        poller = ui.timer(0.5, follow, active=False)
        ui.on("vireo-uploads-changed", lambda _: refresh())
        await refresh()
