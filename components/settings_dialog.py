"""The Datasets page's Settings dialog (Kaapana's gear → "Dataset configuration").

View (gallery or structured), items per row, cards with metadata or thumbnails only, the sort,
which viewer the detail panel opens first, and for each field where it shows: Series Card,
Truncate, Dashboard, Patient View, Study View. Saved with the account on the server
(app.gallery_settings, app.viewers), so they follow the user to any browser; Save hands the new
settings to the page, which redraws its gallery without a page reload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nicegui import run, ui
from pydantic import ValidationError

from app import gallery_settings, series_browsing, viewers
from app.gallery_settings import FieldDisplay, GallerySettings
from components.gallery import field_label
from components.ohif_viewer import ohif_available
from components.search_row import SORTS

FLAGS = [("series_card", "Series Card"), ("truncate", "Truncate"), ("dashboard", "Dashboard"), ("patient_view", "Patient View"), ("study_view", "Study View")]
VIEWERS = {"quick": "Quick slice viewer", "ohif": "OHIF"}

Applied = Callable[[GallerySettings], Awaitable[None]]


async def open_settings_dialog(username: str, on_saved: Applied) -> ui.dialog:
    """Open the dialog with the user's stored settings; Save stores them and calls `on_saved`.

    The caller deletes the returned dialog before opening the next one (values are read afresh).
    """
    settings, viewer = await run.io_bound(lambda: (gallery_settings.load(username), viewers.preferred_viewer(username)))
    fields: list[FieldDisplay] = [f.model_copy() for f in settings.fields]
    with ui.dialog() as dialog, ui.card().classes("w-[56rem] max-w-full gap-3").mark("settings-dialog").props("data-testid=settings-dialog"):
        with ui.row().classes("w-full items-center"):
            ui.label("Datasets settings").classes("text-lg grow")
            ui.button(icon="close", on_click=dialog.close).props("flat dense").tooltip("Close without saving")
        ui.label("Saved with your account: they follow you to any browser.").classes("text-sm text-gray-600")
        with ui.row().classes("w-full items-center gap-x-6 gap-y-2"):
            view = ui.toggle({"gallery": "Gallery", "structured": "Structured gallery"}, value=settings.view).mark("setting-view").props("data-testid=setting-view")
            per_row = ui.number("Items per row (0: as many as fit)", value=settings.items_per_row, min=0, max=12, step=1, format="%d") \
                .classes("w-56").mark("setting-per-row").props("data-testid=setting-per-row")
            card_text = ui.switch("Cards with metadata (off: thumbnails only)", value=settings.card_text).mark("setting-card-text").props("data-testid=setting-card-text")
        with ui.row().classes("w-full items-center gap-x-6 gap-y-2"):
            sort = ui.select({k: v for k, v in SORTS.items() if k}, value=settings.sort if settings.sort in SORTS else "-arrived", label="Sort") \
                .classes("w-56").mark("setting-sort").props("data-testid=setting-sort")
            with ui.column().classes("gap-0"):
                ui.label("Detail panel opens with").classes("text-xs text-gray-600")
                viewer_choice = ui.toggle(VIEWERS, value=viewer).mark("setting-viewer").props("data-testid=setting-viewer")
            if not ohif_available():
                ui.label("OHIF is not installed here: the panel's OHIF tab says how to add it.").classes("text-xs text-gray-600 max-w-xs")
        with ui.scroll_area().classes("w-full h-72 border rounded"):
            grid = ui.grid(columns=len(FLAGS) + 2).classes("items-center gap-x-4 gap-y-0 w-full").style("grid-template-columns: minmax(9rem, 1.5fr) repeat(5, minmax(4rem, 1fr)) 2.5rem")

        def draw() -> None:
            grid.clear()
            with grid:
                ui.label("Field").classes("font-medium")
                for _, label in FLAGS:
                    ui.label(label).classes("font-medium text-sm")
                ui.label("")
                for item in fields:
                    ui.label(field_label(item.field)).classes("text-sm break-words")
                    for flag, _label in FLAGS:
                        ui.checkbox(value=getattr(item, flag)).bind_value(item, flag).mark(f"setting-{item.field}-{flag}").props("dense data-testid=" + f"setting-{item.field}-{flag}")
                    ui.button(icon="close", on_click=lambda _e, f=item: (fields.remove(f), draw())).props("flat dense round size=sm").tooltip(f"Remove {field_label(item.field)}")

        draw()
        with ui.row().classes("items-center gap-2"):
            new_field = ui.select([], label="Add a field", with_input=True).classes("w-64").mark("setting-new-field").props("data-testid=setting-new-field")

            async def load_fields() -> None:
                if not new_field.options:
                    new_field.set_options(await run.io_bound(series_browsing.indexed_fields))

            new_field.on("focus", load_fields, throttle=5)

            def add_field() -> None:
                if new_field.value and all(f.field != new_field.value for f in fields):
                    fields.append(FieldDisplay(field=new_field.value, series_card=True))
                    new_field.set_value(None)
                    draw()

            ui.button("Add", on_click=add_field).props("flat")

        async def save() -> None:
            try:
                chosen = GallerySettings(view=view.value, items_per_row=int(per_row.value or 0), card_text=bool(card_text.value),
                                         sort=sort.value or "-arrived", fields=fields)
            except (ValidationError, ValueError) as exc:
                reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "items per row is a whole number from 0 to 12"
                ui.notify(f"Not saved: {reason}", type="negative")
                return
            changes = {k: getattr(chosen, k) for k in ("view", "items_per_row", "card_text", "sort", "fields")}

            def store() -> GallerySettings:
                viewers.set_preferred_viewer(username, viewer_choice.value or "quick")
                return gallery_settings.update(username, **changes)  # tag row and panel width stay as stored

            try:
                saved = await run.io_bound(store)
            except ValidationError as exc:
                ui.notify(f"Not saved: {exc.errors()[0]['msg']}", type="negative")
                return
            dialog.close()
            ui.notify("Datasets settings saved", type="positive")
            await on_saved(saved)

        async def reset() -> None:
            defaults = GallerySettings()
            view.set_value(defaults.view)
            per_row.set_value(defaults.items_per_row)
            card_text.set_value(defaults.card_text)
            sort.set_value(defaults.sort)
            viewer_choice.set_value("quick")
            fields[:] = defaults.fields
            draw()
            ui.notify("The defaults are filled in: Save applies them")

        with ui.row().classes("w-full"):
            ui.button("Save", on_click=save).mark("save-gallery-settings").props("data-testid=save-gallery-settings")
            ui.button("Reset to defaults", on_click=reset).props("flat").mark("reset-gallery-settings").props("data-testid=reset-gallery-settings")
            ui.space()
            ui.button("Cancel", on_click=dialog.close).props("flat")
    dialog.open()
    return dialog
