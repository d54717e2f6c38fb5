"""The tag row: tags to apply with a click. Keys 1–9 toggle the first nine; with a tag active,
clicking a series card adds it or, if the series has it already, removes it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import ui

from core.tags import TagError, check_tag


class TagBar:
    def __init__(self, tags: list[str], multiple: bool, on_change: Callable[[], Awaitable[None]]) -> None:
        self.tags: list[str] = list(dict.fromkeys(tags))
        self.active: list[str] = []
        self.multiple = multiple
        self.on_change = on_change
        with ui.row().classes("w-full items-center gap-2").mark("tag-row").props('data-testid=tag-row'):
            ui.icon("sell", color="primary")
            self.input = ui.input("Add a tag", autocomplete=[]).props("dense").classes("w-56").mark("tag-input").props('data-testid=tag-input')
            self.input.on("keydown.enter", self._add)
            self.chips = ui.row().classes("items-center gap-1")
            ui.space()
            self.switch = ui.switch("Several tags at once", value=multiple, on_change=self._multiple_changed).mark("multi-tag").props('data-testid=multi-tag')
        self._draw()

    def set_suggestions(self, counts: list[dict[str, Any]]) -> None:
        self.input.set_autocomplete([c["tag"] for c in counts])

    async def _add(self) -> None:
        try:
            tag = check_tag(self.input.value or "")
        except TagError as exc:
            ui.notify(str(exc), type="warning")
            return
        self.input.set_value("")
        if tag not in self.tags:
            self.tags.append(tag)
        self._activate(tag)
        self._draw()
        await self.on_change()

    def _activate(self, tag: str) -> None:
        if tag in self.active:
            self.active.remove(tag)
        elif self.multiple:
            self.active.append(tag)
        else:
            self.active = [tag]

    async def toggle(self, tag: str) -> None:
        self._activate(tag)
        self._draw()
        await self.on_change()

    async def toggle_index(self, index: int) -> None:
        if index < len(self.tags):
            await self.toggle(self.tags[index])

    async def _remove(self, tag: str) -> None:
        self.tags.remove(tag)
        if tag in self.active:
            self.active.remove(tag)
        self._draw()
        await self.on_change()

    async def _multiple_changed(self, event: Any) -> None:
        self.multiple = bool(event.value)
        if not self.multiple and len(self.active) > 1:
            self.active = self.active[-1:]
        self._draw()
        await self.on_change()

    def _draw(self) -> None:
        self.chips.clear()
        with self.chips:
            if not self.tags:
                ui.label("No tags yet: type one and press Enter.").classes("text-sm text-gray-500")
            for index, tag in enumerate(self.tags):
                active = tag in self.active
                text = f"{index + 1} · {tag}" if index < 9 else tag
                chip = ui.chip(text, removable=True, selectable=False, on_click=lambda t=tag: self.toggle(t))
                chip.props(f"dense {'color=amber text-color=black icon=check' if active else 'outline'}").mark(f"tag-chip-{tag}")
                chip.props(f"data-active={'true' if active else 'false'}")
                chip.on("remove", lambda _e, t=tag: self._remove(t))
