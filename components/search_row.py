"""The search row: a Lucene query box (syntax help, inline errors), filter chips built with a field
picker and value completion, and the sort order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nicegui import run, ui

from app import series_browsing
from components.gallery import field_label
from core.search.query import parse_filter, QueryError

SORTS = {
    "": "Default (settings)",
    "-arrived": "Newest arrivals",
    "arrived": "Oldest arrivals",
    "-StudyDate": "Study date, newest",
    "StudyDate": "Study date, oldest",
    "PatientID": "Patient ID",
    "PatientName": "Patient name",
    "SeriesDescription": "Series description",
    "Modality": "Modality",
    "-instances": "Most instances",
}

HELP = [
    ("lung", "the word anywhere"),
    ("LUNG1-*", "wildcards * and ?"),
    ("-CHEST", "exclude a word"),
    ("Modality:CT", "a field's value"),
    ('SeriesDescription:"axial 5mm"', "a phrase"),
    ("StudyDate:[20200101 TO 20201231]", "a range"),
    ("CT AND (lung OR chest)", "AND, OR, NOT, brackets; side by side means AND"),
    ("tags:reviewed", "a tag; datasets:name for a dataset"),
]


@dataclass
class SearchState:
    dataset: str | None = None
    q: str = ""
    filters: list[str] = field(default_factory=list)
    sort: str = ""


def filter_text(field_name: str, values: list[str]) -> str:
    """`Field:v1,v2`, quoting values that hold commas or quotes."""
    def one(value: str) -> str:
        if any(c in value for c in ',"\\') or value != value.strip():
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return value
    return f"{field_name}:" + ",".join(one(v) for v in values)


class SearchRow:
    def __init__(self, state: SearchState, on_change: Callable[[], Awaitable[None]]) -> None:
        self.state = state
        self.on_change = on_change
        with ui.row().classes("w-full items-center gap-2"):
            self.query = ui.input("Search (Lucene syntax)", value=state.q).props("clearable dense outlined").classes("grow").mark("search-input").props('data-testid=search-input')
            self.query.on("keydown.enter", self._search)
            self.query.on("clear", self._search)
            with ui.button(icon="help_outline").props("flat round dense").mark("search-help").props('data-testid=search-help'):
                with ui.menu().classes("p-3"):
                    ui.label("Search syntax").classes("font-medium")
                    for example, meaning in HELP:
                        with ui.row().classes("gap-2 no-wrap"):
                            ui.label(example).classes("font-mono text-sm")
                            ui.label(meaning).classes("text-sm text-gray-600")
            ui.button("Search", icon="search", on_click=self._search).props("dense").mark("search-button").props('data-testid=search-button')
            self.sort = ui.select(SORTS, value=state.sort if state.sort in SORTS else "", label="Sort").props("dense").classes("w-48").mark("sort-select").props('data-testid=sort-select')
            self.sort.on_value_change(self._sorted)
        self.error = ui.label("").classes("text-negative text-sm").mark("search-error").props('data-testid=search-error')
        self.error.set_visibility(False)
        with ui.row().classes("w-full items-center gap-2"):
            self.field = ui.select([], label="Filter field", with_input=True).props("dense").classes("w-56").mark("filter-field").props('data-testid=filter-field')
            self.field.on("focus", self._load_fields, throttle=5)
            self.field.on_value_change(lambda _: self._values_for(""))
            self.values = ui.select({}, label="Values", multiple=True, with_input=True, new_value_mode="add-unique").props("dense use-chips").classes("w-72").mark("filter-values").props('data-testid=filter-values')
            self.values.on("input-value", lambda e: self._values_for(str(e.args or "")))
            ui.button("Add filter", icon="filter_alt", on_click=self._add_filter).props("dense outline no-caps").mark("add-filter").props('data-testid=add-filter')
            self.chips = ui.row().classes("items-center gap-1")
        self._draw_chips()

    # --- state --------------------------------------------------------------------------------

    def sync(self) -> None:
        """Show the state (after the back button changed it)."""
        self.query.set_value(self.state.q)
        self.sort.set_value(self.state.sort if self.state.sort in SORTS else "")
        self._draw_chips()

    def show_error(self, message: str) -> None:
        self.error.set_text(f"Search error: {message}" if message else "")
        self.error.set_visibility(bool(message))

    def add_query(self, clause: str) -> None:
        self.state.q = f"({self.state.q}) AND {clause}" if self.state.q.strip() else clause
        self.query.set_value(self.state.q)

    def add_filter_value(self, field_name: str, value: str) -> None:
        for index, existing in enumerate(self.state.filters):
            try:
                parsed = parse_filter(existing)
            except QueryError:
                continue
            if parsed.field == field_name:
                head, _, rest = existing.partition(":")
                self.state.filters[index] = existing if value in rest.split(",") else f"{head}:{rest},{filter_text('x', [value])[2:]}"
                break
        else:
            self.state.filters.append(filter_text(field_name, [value]))
        self._draw_chips()

    # --- handlers -----------------------------------------------------------------------------

    async def _search(self) -> None:
        self.state.q = (self.query.value or "").strip()
        await self.on_change()
        await self._values_for("")  # the value counts follow the new search

    async def _sorted(self, event: Any) -> None:
        if (event.value or "") != self.state.sort:
            self.state.sort = event.value or ""
            await self.on_change()

    async def _load_fields(self) -> None:
        if not self.field.options:
            self.field.set_options(await run.io_bound(series_browsing.indexed_fields))

    async def _values_for(self, prefix: str) -> None:
        if not self.field.value:
            return
        found = await run.io_bound(series_browsing.values_in_search, self.field.value, prefix, self.state.dataset,
                                   self.state.q, list(self.state.filters))  # counts follow what the page shows
        chosen = list(self.values.value or [])
        options = {v: v for v in chosen}
        options.update({str(item["value"]): f"{item['value']} ({item['count']})" for item in found})
        self.values.set_options(options, value=chosen)

    async def _add_filter(self) -> None:
        if not self.field.value or not self.values.value:
            ui.notify("Pick a field and at least one value", type="warning")
            return
        self.state.filters.append(filter_text(self.field.value, [str(v) for v in self.values.value]))
        self.values.set_value([])
        self._draw_chips()
        await self.on_change()
        await self._values_for("")

    async def _remove(self, text: str) -> None:
        if text in self.state.filters:
            self.state.filters.remove(text)
        self._draw_chips()
        await self.on_change()
        await self._values_for("")

    def _draw_chips(self) -> None:
        self.chips.clear()
        with self.chips:
            for text in self.state.filters:
                head, _, rest = text.partition(":")
                ui.chip(f"{field_label(head)}: {rest}", removable=True, on_click=None).props("dense color=teal-1").mark("filter-chip").props('data-testid=filter-chip').on(
                    "remove", lambda _e, t=text: self._remove(t)
                )
