"""The Datasets page's action row: create / add to / remove from dataset, run workflow, download.

Every action acts on one `core.selection.Selection` that the page hands over at the moment of the
click — the picked cards, or every series matching the current dataset + search + filters, as the
row's label says — and passes it on whole (to the dataset actions, in the Workflow Execution and
download URLs), so no action can quietly act on a different set of series than the row names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from nicegui import run, ui

from app import dataset_actions as actions
from app.dataset_actions import ActionError
from core.selection import Selection

EVERY_SERIES = Selection.of(q="*")  # an empty selection means "none chosen" to the Workflow Execution page


class SelectionActions:
    """The row's buttons and their dialogs, for whatever `selection()` says is selected when a button is pressed."""

    def __init__(
        self,
        selection: Callable[[], Selection],
        username: str,
        *,
        dataset: Callable[[], str | None],
        datasets_changed: Callable[[], Awaitable[None]],
        shown_dataset_changed: Callable[[], Awaitable[None]],
    ) -> None:
        self.selection = selection
        self.username = username
        self.dataset = dataset  # the dataset the page shows (a default for "Remove from", the download's name)
        self.datasets_changed = datasets_changed
        self.shown_dataset_changed = shown_dataset_changed

    def buttons(self) -> None:
        """The five buttons, in a row of their own that wraps as a whole on a narrow screen."""
        with ui.row().classes("gap-2 items-center justify-end").mark("action-buttons"):
            self._buttons = [
                ui.button("Create dataset", icon="create_new_folder", on_click=self.create_dataset).props("dense no-caps").mark("action-create-dataset").props('data-testid=action-create-dataset'),
                ui.button("Add to dataset", icon="playlist_add", on_click=lambda: self.membership(add=True)).props("dense no-caps outline").mark("action-add").props('data-testid=action-add'),
                ui.button("Remove from dataset", icon="playlist_remove", on_click=lambda: self.membership(add=False)).props("dense no-caps outline").mark("action-remove").props('data-testid=action-remove'),
                ui.button("Run workflow", icon="play_arrow", on_click=self.run_workflow).props("dense no-caps outline").mark("action-workflow").props('data-testid=action-workflow'),
                ui.button("Download", icon="download", on_click=self.download).props("dense no-caps outline").mark("action-download").props('data-testid=action-download'),
            ]

    def show_count(self, count: int) -> None:
        """Nothing to act on (a search that matches no series): every button is disabled, and says why."""
        for button in getattr(self, "_buttons", []):
            button.set_enabled(count > 0)
            button._props["title"] = "" if count > 0 else "No series match: change the search or pick cards first"
            button.update()

    async def _count_text(self, selection: Selection) -> str | None:
        try:
            count = await run.io_bound(actions.series_count, selection)
        except ActionError as exc:
            ui.notify(str(exc), type="negative")
            return None
        return f"{count:,} series" + ("" if selection.explicit else " (everything matching the search)")

    async def create_dataset(self) -> None:
        selection = self.selection()  # as the row said when the button was pressed, even if the page moves on meanwhile
        what = await self._count_text(selection)
        if what is None:
            return
        with ui.dialog() as dialog, ui.card().classes("w-96"):
            ui.label("Create dataset").classes("text-lg")
            ui.label(f"From {what}.").mark("dialog-count").props('data-testid=dialog-count')
            name = ui.input("Name").classes("w-full").mark("new-dataset-name").props('data-testid=new-dataset-name')

            async def create() -> None:
                try:
                    count = await run.io_bound(actions.create_dataset, name.value or "", selection, self.username)
                except ActionError as exc:
                    ui.notify(str(exc), type="negative")
                    return
                dialog.close()
                ui.notify(f"Dataset {name.value} created with {count} series", type="positive")
                await self.datasets_changed()

            name.on("keydown.enter", create)
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Create", on_click=create).mark("confirm-create-dataset").props('data-testid=confirm-create-dataset')
        dialog.open()

    async def membership(self, add: bool) -> None:
        selection = self.selection()
        listed = await run.io_bound(actions.dataset_list)
        if not listed:
            ui.notify("There are no datasets yet: create one first.", type="warning")
            return
        what = await self._count_text(selection)
        if what is None:
            return
        shown = self.dataset()
        with ui.dialog() as dialog, ui.card().classes("w-96"):
            ui.label("Add to dataset" if add else "Remove from dataset").classes("text-lg")
            ui.label(f"{what}." + ("" if add else " The series stay in the PACS.")).mark("dialog-count").props('data-testid=dialog-count')
            default = shown if (not add and shown) else listed[0]["name"]
            chosen = ui.select([d["name"] for d in listed], value=default, label="Dataset").classes("w-full").mark("membership-dataset").props('data-testid=membership-dataset')

            async def apply() -> None:
                try:
                    count = await run.io_bound(actions.change_members, chosen.value, selection, add=add)
                except ActionError as exc:
                    ui.notify(str(exc), type="negative")
                    return
                dialog.close()
                ui.notify(f"Dataset {chosen.value} now holds {count} series", type="positive")
                await self.datasets_changed()
                if not add and chosen.value == self.dataset():
                    await self.shown_dataset_changed()

            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Add" if add else "Remove", on_click=apply).mark("confirm-membership").props('data-testid=confirm-membership')
        dialog.open()

    def run_workflow(self) -> None:
        selection = self.selection()
        if selection == Selection():
            selection = EVERY_SERIES
        ui.navigate.to("/workflows/execute?" + urlencode(selection.to_params()))

    def download(self) -> None:
        name = (self.dataset() or "vireo-series").replace(" ", "_")
        safe = "".join(c for c in name if c.isalnum() or c in "._-") or "vireo-series"
        ui.download.from_url("/api/download?" + urlencode([*self.selection().to_params(), ("name", safe)]))
