"""The tag row: tags to apply with a click. Keys 1–9 toggle the first nine; with a tag active,
clicking a series card adds it or, if the series has it already, removes it.

As in Kaapana, the field offers existing tags in a dropdown while you type (a Quasar select with
an input, so the list filters as you type and Enter still takes a new tag); the list starts with
this user's recent tags — the ones they picked or toggled last, on this visit or an earlier one
(kept with the account, app.recent_tags), then the rest of their row — then every other tag, most
used first. Chips have the tag's colour (components.tag_colours), the same as on the cards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import ui

from components.tag_colours import tag_colour
from core.tags import TagError, check_tag


class TagBar:
    def __init__(self, tags: list[str], multiple: bool, on_change: Callable[[], Awaitable[None]], recent: list[str] | None = None) -> None:
        """`recent`: the user's recent tags from earlier visits (app.recent_tags), most recent first."""
        self.tags: list[str] = list(dict.fromkeys(tags))
        self.active: list[str] = []
        self.multiple = multiple
        self.on_change = on_change
        # most recently used first: what earlier visits used, then the row's other tags in its order
        self.recent: list[str] = list(dict.fromkeys([*(recent or []), *self.tags]))
        self.known: list[str] = []  # every tag in the PACS, most used first
        with ui.row().classes("w-full items-center gap-2").mark("tag-row").props('data-testid=tag-row'):
            ui.icon("sell", color="primary")
            self.input = ui.select(self._options(), label="Add a tag", with_input=True, new_value_mode="add-unique", clearable=False)
            self.input.props('dense hide-dropdown-icon input-debounce=0 data-testid=tag-input options-dense behavior=menu')
            self.input.classes("w-56").mark("tag-input")
            self.input.on_value_change(self._chosen)
            self.chips = ui.row().classes("items-center gap-1")
            ui.space()
            self.switch = ui.switch("Several tags at once", value=multiple, on_change=self._multiple_changed).mark("multi-tag").props('data-testid=multi-tag')
        self._draw()

    def set_suggestions(self, counts: list[dict[str, Any]]) -> None:
        """The PACS's tags (`[{tag, count}]`, most used first) join the dropdown after the recent ones."""
        self.known = [str(c["tag"]) for c in counts]
        self._refresh_options()

    def _options(self) -> list[str]:
        return list(dict.fromkeys([*self.recent, *self.known]))

    def _refresh_options(self) -> None:
        self.input.set_options(self._options(), value=None)

    def _used(self, tag: str) -> None:
        self.recent = [tag, *(t for t in self.recent if t != tag)]

    async def _chosen(self, event: Any) -> None:
        """A tag picked from the dropdown or typed and Enter: into the row, and active."""
        if event.value in (None, ""):
            return
        try:
            tag = check_tag(str(event.value))
        except TagError as exc:
            ui.notify(str(exc), type="warning")
            self._refresh_options()
            return
        if tag not in self.tags:
            self.tags.append(tag)
        if tag not in self.active:
            self._activate(tag)
        self._used(tag)
        self._refresh_options()
        # Quasar keeps the picked text in the field; empty it (and close the list) for the next tag
        ui.run_javascript(f"const s = getElement({self.input.id}); const q = s && s.$refs.qRef;"
                          " if (q) { q.updateInputValue('', true); q.hidePopup(); }")
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
        if tag in self.active:
            self._used(tag)
            self._refresh_options()
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
                colour = tag_colour(tag)
                text = f"{index + 1} · {tag}" if index < 9 else tag
                chip = ui.chip(text, removable=True, selectable=False, color=None, text_color=None, on_click=lambda t=tag: self.toggle(t))
                chip.props(f"dense {'icon=check' if active else ''}").mark(f"tag-chip-{tag}")
                # active: a dark ring and bold text on the tag's own colour; inactive: the colour, softened
                ring = "box-shadow: 0 0 0 2px #1d1d1d; font-weight: 600;" if active else "opacity: .8;"
                chip.style(f"background: {colour.background}; color: {colour.text}; {ring}")
                chip.props(f"data-active={'true' if active else 'false'} data-tag-colour={colour.background}")
                chip.on("remove", lambda _e, t=tag: self._remove(t))
