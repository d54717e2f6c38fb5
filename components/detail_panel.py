"""`DetailPanel`: the Datasets page's detail view, a resizable split beside the gallery.

Kaapana opens the detail view (viewer + searchable metadata table) over the page; here it takes
a column of its own (the metadata dashboard's, while open), so the gallery, the action row and the selection stay
usable beside it (the gallery reflows into fewer columns). The split's width is dragged with a
handle and remembered per user (app.gallery_settings `panel_width`), not per browser.

The quick slice viewer is the first look (fast, no 61 MB app to load); OHIF is one tab away,
drawn only when that tab is chosen, and a user who prefers it gets it first (app.viewers).
The attribute table keeps its columns whatever the series holds: sequence paths are indented
with their parent path in small print, values wrap at word boundaries (anywhere for UIDs), and
long values fold to three lines until clicked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import run, ui

from app import gallery_settings, series_browsing, series_viewing, viewers
from app.gallery_settings import MIN_PANEL_WIDTH
from components import ohif_viewer as ohif
from components.shared_css import add_shared_css
from components.slice_viewer import SliceViewer

GALLERY_MIN_WIDTH = 220  # the gallery keeps at least one column of cards beside the panel
LONG_VALUE = 120  # characters: longer values fold to three lines until clicked
TAB_QUICK, TAB_OHIF = "quick", "ohif"
OHIF_MIN_WIDTH = 760  # px: OHIF's toolbar fits from about 700 px (measured in its stock layout)

CSS = """
.vireo-split-handle { flex: 0 0 10px; align-self: stretch; cursor: col-resize; position: sticky; top: 64px;
  height: calc(100vh - 80px); display: flex; align-items: flex-start; justify-content: center; touch-action: none; outline: none; }
.vireo-split-grip { width: 4px; height: 48px; margin-top: 160px; border-radius: 2px; background: #c4ccc9; }
.vireo-split-handle:hover .vireo-split-grip, .vireo-split-handle:focus .vireo-split-grip,
.vireo-split-handle.vireo-dragging .vireo-split-grip { background: var(--q-primary); }
.vireo-detail { flex: 0 0 auto; min-width: 320px; max-width: calc(100% - 230px); position: sticky; top: 64px;
  height: calc(100vh - 80px); overflow-y: auto; overflow-x: hidden; box-sizing: border-box; }
.vireo-detail > * { flex-shrink: 0; }  /* the panel scrolls; its parts keep their height */
.vireo-attrs { width: 100%; }
.vireo-attrs .q-table__middle { overflow-x: hidden; }
.vireo-attrs table { table-layout: fixed; width: 100%; }
.vireo-attrs th, .vireo-attrs td { white-space: normal !important; vertical-align: top; overflow: hidden; }
.vireo-attrs td { font-size: 12px; line-height: 1.35; }
.vireo-attr-tag { font-family: ui-monospace, monospace; font-size: 11px; white-space: nowrap; }
.vireo-attr-parent { color: #6b7280; font-size: 11px; overflow-wrap: anywhere; }
.vireo-attr-leaf, .vireo-attr-value { overflow-wrap: anywhere; word-break: normal; }
.vireo-attr-value.vireo-long { cursor: pointer; }
.vireo-attr-value.vireo-long:not(.vireo-open) { display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; }
"""

ATTRIBUTE_COLUMNS = [
    {"name": "tag", "label": "Tag", "field": "tag", "align": "left", "headerStyle": "width: 104px"},
    {"name": "name", "label": "Attribute", "field": "name", "align": "left", "headerStyle": "width: 44%"},
    {"name": "vr", "label": "VR", "field": "vr", "align": "left", "headerStyle": "width: 44px"},
    {"name": "value", "label": "Value", "field": "value", "align": "left"},
]

NAME_CELL = r'''
<q-td :props="props" :title="props.row.name">
  <div :style="{paddingLeft: (props.row.depth * 10) + 'px'}">
    <div v-if="props.row.parent" class="vireo-attr-parent">{{ props.row.parent }}</div>
    <div class="vireo-attr-leaf">{{ props.row.leaf }}</div>
  </div>
</q-td>'''
TAG_CELL = '<q-td :props="props"><span class="vireo-attr-tag">{{ props.row.tag }}</span></q-td>'
# Unfolded is kept on the row (Vue state), not as a class put on the element by hand: Vue knows nothing of
# such a class, and a re-render that re-creates the element drops it.
VALUE_CELL = r'''
<q-td :props="props">
  <div v-if="props.row.long" class="vireo-attr-value vireo-long" :class="{'vireo-open': props.row.open}" data-testid="folded-value"
       title="Click to show or fold the whole value"
       @click="props.row.open = !props.row.open">{{ props.row.value }}</div>
  <div v-else class="vireo-attr-value">{{ props.row.value }}</div>
</q-td>'''


def table_rows(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The attribute rows as the table draws them: the path split into its parent and its last part.

    The parent path is shown as `Outer[1] › Inner[2]`: its spaces are where a narrow column wraps.
    """
    shown = []
    for index, row in enumerate(rows):
        name = row["name"]
        parent, _, leaf = name.rpartition(".")
        shown.append({**row, "key": index, "depth": name.count("]."), "parent": parent.replace("].", "] › "), "leaf": leaf,
                      "long": len(row.get("value") or "") > LONG_VALUE})
    return shown


class DetailPanel:
    """The split's handle and panel, drawn into the current row after the gallery column."""

    def __init__(self, username: str, width: int, on_visibility: Callable[[bool], Awaitable[None] | None] | None = None) -> None:
        add_shared_css("detail-panel", CSS)
        self.username = username
        self.width = width
        self.on_visibility = on_visibility
        self.series_uid: str | None = None
        self.related: dict[str, Any] = {}
        self.ohif_drawn_for: str | None = None
        self.handle = SplitHandle(MIN_PANEL_WIDTH, GALLERY_MIN_WIDTH)
        self.handle.on("resize", self._resized)
        with ui.card().classes("vireo-detail p-3 gap-2").style(f"width: {width}px").mark("detail-panel").props("data-testid=detail-panel") as self.panel:
            self._build()
        self.handle.set_visibility(False)
        self.panel.set_visibility(False)

    @property
    def is_open(self) -> bool:
        return self.panel.visible

    def _build(self) -> None:
        with ui.row().classes("w-full items-start no-wrap gap-2"):
            self.title = ui.label("").classes("text-lg grow min-w-0 break-words").mark("detail-title").props("data-testid=detail-title")
            # "Open in OHIF" for the series' study, when VIREO_OHIF_URL names a viewer reading /dicomweb
            self.ohif_link = ui.link("Open in OHIF", "#", new_tab=True).classes("shrink-0 text-sm").mark("open-ohif").props("data-testid=open-ohif")
            self.ohif_link.set_visibility(False)
            ui.button(icon="close", on_click=self.close).props("flat dense").tooltip("Close (Esc)").mark("close-detail").props("data-testid=close-detail")
        self.related_row = ui.row().classes("w-full items-center gap-1 text-sm").mark("related-series").props("data-testid=related-series")
        with ui.tabs(value=TAB_QUICK, on_change=self._tab_changed).props("dense align=left no-caps").classes("w-full") as self.tabs:
            ui.tab(TAB_QUICK, "Quick view").props("data-testid=viewer-tab-quick")
            ui.tab(TAB_OHIF, "OHIF").props("data-testid=viewer-tab-ohif")
        with ui.tab_panels(self.tabs, value=TAB_QUICK).props("keep-alive").classes("w-full") as self.tab_panels:
            with ui.tab_panel(TAB_QUICK).classes("p-0"):
                self.viewer = SliceViewer().classes("w-full")
            with ui.tab_panel(TAB_OHIF).classes("p-0"):
                self.ohif_box = ui.column().classes("w-full h-[70vh] gap-0")
        self.attribute_filter = ui.input("Search attributes").props("dense clearable").classes("w-full").mark("attribute-search").props("data-testid=attribute-search")
        self.attribute_table = ui.table(columns=ATTRIBUTE_COLUMNS, rows=[], row_key="key", pagination={"rowsPerPage": 50}) \
            .props("dense flat wrap-cells").classes("vireo-attrs").mark("attribute-table").props("data-testid=attribute-table")
        self.attribute_table.add_slot("body-cell-tag", TAG_CELL)
        self.attribute_table.add_slot("body-cell-name", NAME_CELL)
        self.attribute_table.add_slot("body-cell-value", VALUE_CELL)
        self.attribute_table.bind_filter_from(self.attribute_filter, "value")

    # --- opening and closing ----------------------------------------------------------------

    async def open(self, series_uid: str) -> None:
        """Show `series_uid`: the tab the user prefers first, its related series, every attribute."""
        first_open = not self.is_open
        self.series_uid = series_uid
        self.ohif_drawn_for = None
        self.title.set_text(f"Series {series_uid}")
        self.handle.set_visibility(True)
        self.panel.set_visibility(True)
        if first_open:
            preferred = await run.io_bound(viewers.preferred_viewer, self.username)
            self.tabs.set_value(TAB_OHIF if preferred == "ohif" else TAB_QUICK)
            await self._tell_visibility(True)
        try:
            plan, rows, related = await asyncio.gather(
                run.io_bound(series_viewing.viewer_plan, series_uid),
                run.io_bound(series_viewing.attribute_rows, series_uid),
                run.io_bound(series_viewing.related_series, series_uid),
            )
        except Exception:  # an unreadable or vanished series shows as a message, not a broken page
            self.viewer.show(None)
            self.attribute_table.rows = []
            self.attribute_table.update()
            ui.notify("This series cannot be shown: its files could not be read.", type="negative")
            return
        if series_uid != self.series_uid:  # another card was opened meanwhile
            return
        self.related = related
        description = related["description"]
        self.title.set_text(f"{plan['modality']} · {description}" if description else plan["modality"])
        ohif_link = series_browsing.ohif_url(related["study_uid"]) if related["study_uid"] else None
        if ohif_link and not ohif.ohif_available():  # Vireo's own OHIF is the OHIF tab; this link is for a separate one
            self.ohif_link.props(f"href={ohif_link}")
        self.ohif_link.set_visibility(bool(ohif_link) and not ohif.ohif_available())
        self._show_related(related)
        self.viewer.show(plan)
        self.attribute_table.rows = table_rows(rows)
        self.attribute_table.update()
        self._fit_width(self.tabs.value)
        if self.tabs.value == TAB_OHIF:
            self._draw_ohif()

    async def close(self) -> None:
        if not self.is_open:
            return
        self.panel.set_visibility(False)
        self.handle.set_visibility(False)
        self.series_uid = None
        self.ohif_box.clear()  # stops OHIF (an iframe) from running hidden
        self.ohif_drawn_for = None
        await self._tell_visibility(False)

    async def _tell_visibility(self, visible: bool) -> None:
        if self.on_visibility is not None:
            result = self.on_visibility(visible)
            if result is not None:
                await result

    # --- parts --------------------------------------------------------------------------------

    def _show_related(self, related: dict[str, Any]) -> None:
        self.related_row.clear()
        with self.related_row:
            if related["referenced"]:
                ui.label("Segmentation of").classes("text-gray-600")
                for found in related["referenced"]:
                    self._series_chip(found)
            if related["segmentations"]:
                ui.label("Segmentations of this series").classes("text-gray-600")
                for found in related["segmentations"]:
                    self._series_chip(found)
        self.related_row.set_visibility(bool(related["referenced"] or related["segmentations"]))

    def _series_chip(self, found: dict[str, Any]) -> None:
        text = " · ".join(p for p in (found["modality"], found["description"]) if p) or "series"
        ui.chip(text, icon="open_in_new", on_click=lambda _e, uid=found["series_uid"]: self.open(uid)) \
            .props("dense outline clickable").tooltip(f"Show series {found['series_uid']}").props("data-testid=related-chip")

    async def _tab_changed(self, event: Any) -> None:
        self._fit_width(event.value)
        if event.value == TAB_OHIF and self.series_uid is not None:
            self._draw_ohif()

    def _fit_width(self, tab: str | None) -> None:
        """OHIF's toolbar overlaps below ~700 px, so its tab widens the panel (capped by the page, not remembered)."""
        shown = max(self.width, OHIF_MIN_WIDTH) if tab == TAB_OHIF else self.width
        self.panel.style(f"width: {shown}px")

    def _draw_ohif(self) -> None:
        """OHIF on this series; a SEG is drawn over the series it annotates, an image series with its SEGs."""
        if self.series_uid is None or self.ohif_drawn_for == self.series_uid or not self.related:
            return
        self.ohif_drawn_for = self.series_uid
        related = self.related
        if related["modality"] == "SEG" and related["referenced"]:
            image_uid, segs = related["referenced"][0]["series_uid"], [self.series_uid]
        else:
            image_uid, segs = self.series_uid, [s["series_uid"] for s in related["segmentations"]]
        self.ohif_box.clear()
        with self.ohif_box:
            ohif.ohif_viewer(related["study_uid"], image_uid, seg_series_uids=segs or None)

    async def _resized(self, event: Any) -> None:
        width = max(MIN_PANEL_WIDTH, int(event.args.get("width") or self.width))
        self.width = width
        self._fit_width(self.tabs.value)
        await run.io_bound(gallery_settings.update, self.username, panel_width=width)


class SplitHandle(ui.element, component="split_handle.js"):
    """The drag handle (a vertical separator) before the panel; see split_handle.js."""

    def __init__(self, min_width: int, gallery_min: int) -> None:
        super().__init__()
        self._props["min"] = min_width
        self._props["galleryMin"] = gallery_min
