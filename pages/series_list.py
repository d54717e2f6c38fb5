"""`/`: the series the PACS holds, by dataset, newest first, updating as series arrive.

The full Datasets browser (search, filters, tags, gallery, dashboard) replaces this page
in its own issue; this is the foundation's view of what was received.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from nicegui import run, ui

from app import series_browsing as browsing
from components.frame import frame

PAGE_SIZE = 100
ALL = "__all__"

COLUMNS = [
    {"name": "thumbnail", "label": "", "field": "thumbnail"},
    {"name": "PatientID", "label": "Patient ID", "field": "PatientID", "sortable": False, "align": "left"},
    {"name": "PatientName", "label": "Patient", "field": "PatientName", "align": "left"},
    {"name": "StudyDate", "label": "Study date", "field": "StudyDate", "align": "left"},
    {"name": "Modality", "label": "Modality", "field": "Modality", "align": "left"},
    {"name": "SeriesDescription", "label": "Series", "field": "SeriesDescription", "align": "left"},
    {"name": "instances", "label": "Instances", "field": "instances"},
    {"name": "datasets", "label": "Datasets", "field": "datasets_text", "align": "left"},
    {"name": "arrived", "label": "Arrived", "field": "arrived", "align": "left"},
]
VIEWER_COLUMN = {"name": "viewer", "label": "Viewer", "field": "ohif", "align": "left"}


def person_name(value: str) -> str:
    """DICOM's `Family^Given^Middle^Prefix^Suffix` as people write it: `Family, Given Middle`."""
    parts = [p.strip() for p in (value or "").split("=")[0].split("^")]
    family, given = (parts + ["", ""])[:2]
    rest = " ".join(p for p in [given, *parts[2:3]] if p)
    return f"{family}, {rest}" if family and rest else family or rest


def _row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        **item,
        "PatientName": person_name(str(item.get("PatientName", ""))),
        "datasets_text": ", ".join(item["datasets"]),
        "thumbnail": f"{item['thumbnail']}?v={item['thumbnail_version']}",
        "ohif": browsing.ohif_url(str(item.get("StudyInstanceUID", ""))),
    }


def register() -> None:
    @ui.page("/")
    async def series_page(dataset: str = ALL) -> None:
        state = {"dataset": dataset, "limit": PAGE_SIZE}
        with frame("Datasets"):
            with ui.row().classes("items-center gap-4"):
                chooser = ui.select({ALL: "All series"}, value=ALL, label="Dataset").classes("w-64").mark("dataset-select")
                summary = ui.label("").mark("series-summary")
                ui.button("Run workflow", icon="play_arrow", on_click=lambda: ui.navigate.to(
                    "/workflows/execute" + (f"?{urlencode({'dataset': state['dataset']})}" if state["dataset"] != ALL else ""))
                ).props("flat").mark("run-workflow")
            with_viewer = browsing.ohif_url("1") is not None
            table = ui.table(columns=COLUMNS + ([VIEWER_COLUMN] if with_viewer else []), rows=[], row_key="SeriesInstanceUID")
            table.classes("w-full").mark("series-table")
            table.add_slot(
                "body-cell-thumbnail",
                '<q-td :props="props"><img :src="props.value" loading="lazy" style="width:64px;height:64px;object-fit:contain;background:#000"/></q-td>',
            )
            table.add_slot(
                "body-cell-viewer",
                '<q-td :props="props"><a v-if="props.value" :href="props.value" target="_blank" rel="noopener">Open in OHIF</a></q-td>',
            )
            more = ui.button("Load more", on_click=lambda: load_more()).props("flat").mark("load-more")

        async def refresh() -> None:
            chosen = None if state["dataset"] == ALL else state["dataset"]
            try:
                page, dataset_list = await run.io_bound(browsing.series_and_datasets, chosen, state["limit"])
            except LookupError:
                state["dataset"] = ALL
                page, dataset_list = await run.io_bound(browsing.series_and_datasets, None, state["limit"])
            chooser.set_options({ALL: "All series", **{d["name"]: f"{d['name']} ({d['series']})" for d in dataset_list}}, value=state["dataset"])
            table.rows = [_row(item) for item in page.items]
            table.update()
            summary.set_text(f"{page.total} series")
            more.set_visibility(page.total > len(page.items) and state["limit"] < browsing.MAX_PAGE)

        async def load_more() -> None:
            # Up to MAX_PAGE rows here; the Datasets browser (its own issue) scrolls through everything.
            state["limit"] = min(state["limit"] + PAGE_SIZE, browsing.MAX_PAGE)
            await refresh()

        async def choose(event: Any) -> None:
            state["dataset"] = event.value or ALL
            state["limit"] = PAGE_SIZE
            ui.navigate.history.replace(f"/?{urlencode({'dataset': state['dataset']})}" if state["dataset"] != ALL else "/")
            await refresh()

        chooser.on_value_change(choose)
        await refresh()
        _refresh_on_events(refresh)


def _refresh_on_events(refresh: Any) -> None:
    """Refresh (at most once a second) when series change or thumbnails are drawn."""
    client = ui.context.client
    dirty = {"value": False}

    def mark(_topic: str, _payload: dict[str, Any]) -> None:
        dirty["value"] = True

    async def tick() -> None:
        if dirty["value"]:
            dirty["value"] = False
            await refresh()

    bus = browsing.bus()
    unsubscribe = [bus.subscribe(browsing.SERIES_CHANGED, mark), bus.subscribe(browsing.THUMBNAIL_READY, mark)]
    ui.timer(1.0, tick)
    client.on_delete(lambda: [u() for u in unsubscribe])
