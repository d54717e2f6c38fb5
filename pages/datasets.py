"""`/`: the Datasets page — choose a dataset, search, filter, tag, select and act on series, see them.

Rows, top to bottom: dataset row, search row (Lucene query, filter chips, sort), tag row, the
selection's action row; then the gallery with the metadata dashboard beside it. The detail view
(components.detail_panel) opens as a resizable split beside the gallery, in the dashboard's place,
and Esc closes it. Settings (user menu) is a dialog here (components.settings_dialog) whose Save
redraws the gallery in place. Dataset, query, filters and sort live in the URL (shareable; back works).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import Request
from nicegui import background_tasks, run, ui

from app import dataset_actions as actions
from app import gallery_settings, permissions, recent_tags, series_browsing
from app.dataset_actions import ActionError
from app.gallery_settings import GallerySettings
from components import dashboard as dash
from components.dashboard import MetadataDashboard
from components.demo_banner import demo_banner
from components.detail_panel import DetailPanel
from components.frame import current_principal, frame
from components.gallery import SeriesGallery
from components.search_row import SearchRow, SearchState, filter_text
from components.selection_actions import SelectionActions
from components.series_cards import card
from components.settings_dialog import open_settings_dialog
from components.tag_bar import TagBar
from core.search.query import QueryError
from core.search.service import UnknownDataset
from core.selection import Selection

PAGE = 50
DASHBOARD_SELECTION_LIMIT = 1000
FIRST_PAGE_WAIT_S = 2.0  # NiceGUI answers 500 after 3 s
ALL = "__all__"


def _state_from(request: Request) -> SearchState:
    params = request.query_params
    return SearchState(
        dataset=params.get("dataset") or None,
        q=params.get("q") or "",
        filters=[f for f in params.getlist("filter") if f.strip()],
        sort=params.get("sort") or "",
    )


def state_url(state: SearchState) -> str:
    query: list[tuple[str, str]] = []
    if state.dataset:
        query.append(("dataset", state.dataset))
    if state.q:
        query.append(("q", state.q))
    query.extend(("filter", f) for f in state.filters)
    if state.sort:
        query.append(("sort", state.sort))
    return "/?" + urlencode(query) if query else "/"


class DatasetsPage:
    """One open Datasets page: its search state, loaded cards, selection and tag bar."""

    def __init__(self, state: SearchState, settings: GallerySettings, username: str, recent: list[str] | None = None) -> None:
        self.state = state
        self.settings = settings
        self.username = username
        self.saved_recent_tags = list(recent or [])  # the user's recent tags as stored (app.recent_tags)
        self.loaded_tags: dict[str, list[str]] = {}
        self.shown_total = 0
        self.cursor: str | None = None
        self.selected: list[str] = []
        self.all_matching = False
        self.generation = 0
        self.dirty_series = False
        self.ready_thumbnails: set[str] = set()
        self.dashboard_due = False
        self.settings_dialog: ui.dialog | None = None

    # --- building ---------------------------------------------------------------------------

    def build(self) -> None:
        with frame("Datasets", on_settings=self.open_settings):
            demo_banner(on_ready=self._demo_ready)
            with ui.row().classes("w-full items-center gap-3"):
                self.dataset_select = ui.select({ALL: "All series", **({self.state.dataset: self.state.dataset} if self.state.dataset else {})}, value=self.state.dataset or ALL, label="Dataset").classes("w-72").mark("dataset-select").props('data-testid=dataset-select')
                self.dataset_select.on_value_change(self._dataset_chosen)
                ui.button("Manage datasets", icon="folder_open", on_click=self._manage_datasets).props("flat").mark("manage-datasets").props('data-testid=manage-datasets')
                ui.space()
                self.live_banner = ui.button("", on_click=lambda: self.reload()).props("color=orange no-caps").mark("live-banner").props('data-testid=live-banner')
                self.live_banner.set_visibility(False)
            self.search_row = SearchRow(self.state, on_change=self.search_changed)
            self.tag_bar = TagBar(self.settings.tag_bar, self.settings.multiple_tags, on_change=self._tags_changed,
                                  recent=self.saved_recent_tags)
            with ui.row().classes("w-full items-center gap-2"):
                self.selection_label = ui.label("").classes("text-sm").mark("selection-count").props('data-testid=selection-count')
                ui.button("Select all matching", on_click=self._select_all).props("flat dense no-caps").mark("select-all").props('data-testid=select-all')
                ui.button("Clear selection", on_click=self._clear_selection).props("flat dense no-caps").mark("clear-selection").props('data-testid=clear-selection')
                ui.space()
                self.actions = SelectionActions(self.action_selection, self.username, dataset=lambda: self.state.dataset,
                                                datasets_changed=self.refresh_datasets, shown_dataset_changed=self.reload)
                self.actions.buttons()
            with ui.row().classes("w-full no-wrap items-start gap-2"):
                with ui.column().classes("grow min-w-0"):
                    self.gallery = SeriesGallery(self.settings).classes("w-full").mark("gallery").props('data-testid=gallery')
                with ui.card().classes("w-96 shrink-0 sticky top-16 ml-2").mark("dashboard").props('data-testid=dashboard') as self.dashboard_card:
                    with ui.row().classes("items-baseline gap-2"):
                        ui.label("Metadata dashboard").classes("text-base font-medium")
                        self.dashboard_scope = ui.label("").classes("text-xs text-gray-600").mark("dashboard-scope").props("data-testid=dashboard-scope")
                    self.dashboard = MetadataDashboard(self._dashboard_pick)
                self.detail = DetailPanel(self.username, self.settings.panel_width, on_visibility=self._detail_shown)
        self.gallery.on("more", self._more)
        self.gallery.on("selection", self._selection_changed)
        self.gallery.on("tag", self._tag_clicked)
        self.gallery.on("open", lambda e: self.open_detail(e.args["uid"]))
        self.gallery.on_tags_changed(lambda changed: (self.loaded_tags.update(changed), setattr(self, "dashboard_due", True)))  # chip X, other tabs
        # keys 1–9 and Esc act unless a text field has focus (typing "1" into the search types it)
        ui.keyboard(on_key=self._key, ignore=["input", "select", "textarea"])
        ui.on("vireo_popstate", self._popstate)
        ui.add_body_html("<script>window.addEventListener('popstate', () => emitEvent('vireo_popstate', window.location.search));</script>")

    async def _demo_ready(self) -> None:
        """The demo finished seeding while this page was open: show its series, datasets and tags."""
        await self.reload()
        await self.refresh_datasets()
        self.tag_bar.set_suggestions(await run.io_bound(actions.tag_counts))

    # --- loading ----------------------------------------------------------------------------

    def selection(self) -> Selection:
        return Selection.of(self.state.q, self.state.filters, self.state.dataset)

    async def reload(self, dashboard: bool = True) -> None:
        """Load the first page for the current state; the gallery asks for the rest as it scrolls."""
        self.generation += 1
        generation = self.generation
        listing = await self._first_page()
        if generation == self.generation:
            await self.show_first(listing, dashboard)

    async def _first_page(self) -> series_browsing.Listing | QueryError | UnknownDataset:
        try:
            return await run.io_bound(series_browsing.find_series, self.selection(), sort=self.state.sort or self.settings.sort, limit=PAGE)
        except (QueryError, UnknownDataset) as exc:
            return exc

    async def show_first(self, listing: series_browsing.Listing | QueryError | UnknownDataset, dashboard: bool = True) -> None:
        self.live_banner.set_visibility(False)
        self.search_row.show_error("")
        if isinstance(listing, UnknownDataset):  # deleted meanwhile, or a stale link: show everything instead
            ui.notify(f"{listing}: showing all series", type="warning")
            self.state.dataset = None
            self.dataset_select.set_value(ALL)
            ui.navigate.history.replace(state_url(self.state))
            await self.reload(dashboard)
            return
        if isinstance(listing, QueryError):
            self.search_row.show_error(str(listing))
            listing = series_browsing.Listing(total=0, items=[])
        self.cursor = listing.next
        self.shown_total = listing.total
        self.loaded_tags = {doc["SeriesInstanceUID"]: list(doc.get("tags") or []) for doc in listing.items}
        self.selected, self.all_matching = [], False
        self.gallery.reset([card(doc, self.settings) for doc in listing.items], listing.total)
        self._show_selection()
        if dashboard:
            await self.refresh_dashboard()

    async def _more(self, _event: Any) -> None:
        if self.cursor is None:  # everything is loaded: say so, so the gallery stops asking
            self.gallery.append([], len(self.loaded_tags))
            return
        generation = self.generation
        try:
            listing = await run.io_bound(series_browsing.find_series, self.selection(), sort=self.state.sort or self.settings.sort, limit=PAGE, after=self.cursor)
        except (QueryError, UnknownDataset):
            return
        if generation != self.generation:
            return
        self.cursor = listing.next
        for doc in listing.items:
            self.loaded_tags[doc["SeriesInstanceUID"]] = list(doc.get("tags") or [])
        self.gallery.append([card(doc, self.settings) for doc in listing.items], listing.total if listing.next else len(self.loaded_tags))

    def dashboard_selection(self) -> Selection:
        """The selected series when some are (up to a thousand), else everything the search matches."""
        if self.selected and not self.all_matching and len(self.selected) <= DASHBOARD_SELECTION_LIMIT:
            chosen = filter_text("SeriesInstanceUID", self.selected)
            return Selection.of(self.state.q, [*self.state.filters, chosen], self.state.dataset)
        return self.selection()

    async def refresh_dashboard(self) -> None:
        fields = self.settings.names("dashboard")
        scope = self.dashboard_selection()
        self.dashboard_scope.set_text("of the selected series" if scope != self.selection() else "of all matching series")
        try:
            result = await run.io_bound(series_browsing.aggregate, scope, dash.aggregation_fields(fields))
        except (QueryError, UnknownDataset):
            self.dashboard.show(0, 0, 0, [], {})
            return
        self.dashboard.show(result.series, result.studies, result.patients, fields, result.fields)

    async def refresh_datasets(self) -> None:
        listed = await run.io_bound(actions.dataset_list)
        options = {ALL: "All series", **{d["name"]: f"{d['name']} ({d['series']})" for d in listed}}
        if self.state.dataset and self.state.dataset not in options:
            options[self.state.dataset] = self.state.dataset
        self.dataset_select.set_options(options, value=self.state.dataset or ALL)

    # --- search state and the URL -------------------------------------------------------------

    async def search_changed(self, push: bool = True) -> None:
        if push:
            ui.navigate.history.push(state_url(self.state))
        await self.reload()

    async def _dataset_chosen(self, event: Any) -> None:
        chosen = None if event.value in (None, ALL) else event.value
        if chosen == self.state.dataset:
            return
        self.state.dataset = chosen
        await self.search_changed()

    async def _popstate(self, event: Any) -> None:
        params = parse_qs(str(event.args or "").lstrip("?"))
        self.state.dataset = (params.get("dataset") or [None])[0]
        self.state.q = (params.get("q") or [""])[0]
        self.state.filters = params.get("filter") or []
        self.state.sort = (params.get("sort") or [""])[0]
        self.search_row.sync()
        self.dataset_select.set_value(self.state.dataset or ALL)
        await self.reload()

    async def _dashboard_pick(self, field: str, value: str) -> None:
        if dash.is_date(field):
            year, month = value.split("-")[:2]
            start = f"{year}{month}01"
            end = f"{year}{month}31"
            self.search_row.add_query(f"{field}:[{start} TO {end}]")
        else:
            self.search_row.add_filter_value(field, value)
        await self.search_changed()

    # --- selection ---------------------------------------------------------------------------

    def action_selection(self) -> Selection:
        """What the action row acts on, as its label says: the picked cards, else every series matching the search."""
        if self.selected and not self.all_matching:
            return Selection.of_series(self.selected)
        return self.selection()

    def _selection_changed(self, event: Any) -> None:
        self.all_matching = bool(event.args.get("all"))
        self.selected = list(event.args.get("uids") or [])
        self._show_selection()
        self.dashboard_due = True  # the dashboard follows the selection (on the page's next tick)

    def _show_selection(self) -> None:
        if self.all_matching:
            text = f"All {self.shown_total:,} matching series selected"
        elif self.selected:
            text = f"{len(self.selected):,} selected"
        else:
            text = f"No selection: actions apply to all {self.shown_total:,} matching series"
        self.selection_label.set_text(text)
        self.actions.show_count(len(self.selected) if self.selected and not self.all_matching else self.shown_total)

    def _select_all(self) -> None:
        self.gallery.select_all()

    def _clear_selection(self) -> None:
        self.gallery.clear_selection()

    # --- tags -------------------------------------------------------------------------------

    async def _tags_changed(self) -> None:
        self.gallery.set_tag_mode(list(self.tag_bar.active))
        recent = self.tag_bar.recent[:recent_tags.KEPT]
        if recent != self.saved_recent_tags:  # the next visit's dropdown starts with them (stored first: the row's save says both are)
            self.saved_recent_tags = await run.io_bound(recent_tags.save, self.username, recent)
        await run.io_bound(gallery_settings.update, self.username, tag_bar=list(self.tag_bar.tags), multiple_tags=self.tag_bar.multiple)

    async def _key(self, event: Any) -> None:
        if not event.action.keydown or event.modifiers.ctrl or event.modifiers.meta or event.modifiers.alt:
            return
        if event.key.escape:
            if self.settings_dialog is None or not self.settings_dialog.value:  # Esc in the dialog closes the dialog only
                await self.detail.close()
            return
        number = event.key.number
        if number is not None and 1 <= number <= 9:
            await self.tag_bar.toggle_index(number - 1)

    async def _tag_clicked(self, event: Any) -> None:
        uid = event.args["uid"]
        active = list(self.tag_bar.active)
        shown_before = {"tags": self.loaded_tags.get(uid, [])}  # to undo what the card showed at once, if this fails
        if not active:
            self.gallery.patch(uid, shown_before)
            return
        try:
            tags = await run.io_bound(actions.toggle_tags, uid, active)
        except ActionError as exc:
            self.gallery.patch(uid, shown_before)
            ui.notify(str(exc), type="negative")
            return
        except Exception:
            self.gallery.patch(uid, shown_before)
            raise
        self.loaded_tags[uid] = tags
        self.gallery.patch(uid, {"tags": tags})
        await self.refresh_dashboard()  # at once: the Tags chart counts the change

    # --- actions ----------------------------------------------------------------------------

    async def _manage_datasets(self) -> None:
        with ui.dialog() as dialog, ui.card().classes("w-[40rem] max-w-full"):
            ui.label("Datasets").classes("text-lg")
            ui.label("Deleting a dataset removes the grouping only: its series stay in the PACS and in other datasets.").classes("text-sm text-gray-600")
            columns = [
                {"name": "name", "label": "Name", "field": "name", "align": "left", "sortable": True},
                {"name": "series", "label": "Series", "field": "series", "sortable": True},
                {"name": "created", "label": "Created", "field": "created", "align": "left", "sortable": True},
                {"name": "actions", "label": "", "field": "name"},
            ]
            table = ui.table(columns=columns, rows=[], row_key="name").classes("w-full").mark("dataset-table").props('data-testid=dataset-table')
            table.add_slot("body-cell-actions", r'''
                <q-td :props="props"><span :title="props.row.why_not">
                  <q-btn flat dense icon="edit" :disable="!!props.row.why_not" @click="$parent.$emit('rename', props.row)"/>
                  <q-btn flat dense color="negative" icon="delete" :disable="!!props.row.why_not" @click="$parent.$emit('remove', props.row)"/>
                </span></q-td>''')
            principal = ui.context.client.request.state.principal  # rename/delete: administrators or the maker (app/permissions.py)

            async def fill() -> None:
                table.rows = [{**d, "created": d["created"][:16].replace("T", " "), "why_not": permissions.dataset_refusal(principal, d.get("username", "")) or ""}
                              for d in await run.io_bound(actions.dataset_list)]
                table.update()
                await self.refresh_datasets()

            async def rename(event: Any) -> None:
                old = event.args["name"]
                with ui.dialog() as ask, ui.card():
                    new = ui.input("New name", value=old).mark("rename-input").props('data-testid=rename-input')

                    async def apply() -> None:
                        try:
                            owner = await run.io_bound(permissions.dataset_owner, old)  # the server's record, not what the page sent
                            permissions.require(permissions.dataset_refusal(principal, owner))
                            await run.io_bound(actions.rename_dataset, old, new.value or "")
                        except (ActionError, LookupError, permissions.NotPermitted) as exc:
                            ui.notify(str(exc), type="negative")
                            return
                        ask.close()
                        if self.state.dataset == old:
                            self.state.dataset = new.value
                            ui.navigate.history.replace(state_url(self.state))
                        await fill()

                    ui.button("Rename", on_click=apply).mark("confirm-rename").props('data-testid=confirm-rename')
                ask.open()

            async def remove(event: Any) -> None:
                name = event.args["name"]
                with ui.dialog() as ask, ui.card():
                    ui.label(f"Delete dataset {name}? Its {event.args['series']} series stay in the PACS.")

                    async def apply() -> None:
                        try:
                            owner = await run.io_bound(permissions.dataset_owner, name)  # the server's record, not what the page sent
                            permissions.require(permissions.dataset_refusal(principal, owner))
                            await run.io_bound(actions.delete_dataset, name)
                        except (ActionError, LookupError, permissions.NotPermitted) as exc:
                            ui.notify(str(exc), type="negative")
                        ask.close()
                        if self.state.dataset == name:
                            self.state.dataset = None
                            await self.search_changed()
                        await fill()

                    with ui.row():
                        ui.button("Cancel", on_click=ask.close).props("flat")
                        ui.button("Delete", on_click=apply).props("color=negative").mark("confirm-delete-dataset").props('data-testid=confirm-delete-dataset')
                ask.open()

            table.on("rename", rename)
            table.on("remove", remove)
            ui.button("Close", on_click=dialog.close).props("flat")
        dialog.open()
        await fill()

    # --- detail view and settings ---------------------------------------------------------

    async def open_detail(self, series_uid: str) -> None:
        await self.detail.open(series_uid)

    def _detail_shown(self, visible: bool) -> None:
        """The panel takes the dashboard's column while it is open: the gallery keeps the rest."""
        self.dashboard_card.set_visibility(not visible)
        if not visible:  # charts drawn while hidden have no width to fit: let them measure again
            ui.run_javascript("requestAnimationFrame(() => window.dispatchEvent(new Event('resize')))")

    async def open_settings(self) -> None:
        if self.settings_dialog is not None:
            self.settings_dialog.delete()
        self.settings_dialog = await open_settings_dialog(self.username, self._settings_saved)

    async def _settings_saved(self, saved: GallerySettings) -> None:
        """Apply the dialog's settings at once: cards, view and dashboard redraw; the page stays."""
        if saved is None:  # the server is shutting down (run.io_bound gave nothing back)
            return
        self.settings = saved
        self.gallery.configure(saved)
        self.gallery.update()
        await self.reload()

    # --- live updates ----------------------------------------------------------------------

    def listen(self) -> None:
        """Series arriving (DICOM) and thumbnails drawn: noted by the bus in its thread, shown by one page timer."""
        bus = series_browsing.bus()

        def series_changed(_topic: str, _payload: dict[str, Any]) -> None:
            self.dirty_series = True

        def thumbnail_ready(_topic: str, payload: dict[str, Any]) -> None:
            self.ready_thumbnails.add(payload.get("series_uid", ""))

        unsubscribe = [bus.subscribe(series_browsing.SERIES_CHANGED, series_changed), bus.subscribe(series_browsing.THUMBNAIL_READY, thumbnail_ready)]
        ui.context.client.on_delete(lambda: [u() for u in unsubscribe])
        ui.timer(1.0, self._tick)

    async def _tick(self) -> None:
        if self.ready_thumbnails:
            ready, self.ready_thumbnails = self.ready_thumbnails, set()
            for uid in ready & self.loaded_tags.keys():
                self.gallery.patch(uid, {"thumb": f"/api/series/{uid}/thumbnail?v={time.time():.0f}"})
        if self.dirty_series:
            self.dirty_series = False
            try:
                count = await run.io_bound(series_browsing.count, self.selection())
            except (QueryError, UnknownDataset):
                return
            new = count - self.shown_total
            if new > 0:
                self.live_banner.set_text(f"{new} new series — show")
                self.live_banner.set_visibility(True)
            self.dashboard_due = True
        if self.dashboard_due:
            self.dashboard_due = False
            await self.refresh_dashboard()


def register() -> None:
    @ui.page("/")
    async def datasets_page(request: Request) -> None:
        principal = current_principal()
        settings = await run.io_bound(gallery_settings.load, principal.username)
        recent = await run.io_bound(recent_tags.load, principal.username)
        page = DatasetsPage(_state_from(request), settings, principal.username, recent)
        page.build()
        client = ui.context.client
        if request.query_params.get("settings"):  # "Settings" chosen in the user menu of another page
            ui.navigate.history.replace(state_url(page.state))
            ui.timer(0.1, page.open_settings, once=True)
        # The first cards go out with the page when they are ready in time (they usually are); a slow
        # first query (search columns still loading at start-up) must not hold the page past NiceGUI's
        # response timeout, so then they follow over the websocket.
        first = asyncio.ensure_future(page._first_page())
        done, _ = await asyncio.wait({first}, timeout=FIRST_PAGE_WAIT_S)
        if done:
            await page.show_first(first.result(), dashboard=False)
        else:
            async def deliver_later() -> None:
                listing = await first
                await client.connected()
                if client.is_deleted:
                    return
                with client:
                    await page.show_first(listing, dashboard=False)

            background_tasks.create(deliver_later(), name="datasets-first-page")
        page.listen()

        done = {"value": False}

        async def after_first_paint() -> None:  # the dashboard and lists are not needed for the first cards
            if done["value"]:
                return
            done["value"] = True
            await page.refresh_dashboard()
            await page.refresh_datasets()
            page.tag_bar.set_suggestions(await run.io_bound(actions.tag_counts))

        page.gallery.on("painted", after_first_paint)
        ui.timer(2.0, after_first_paint, once=True)  # in case the paint event came before the websocket
