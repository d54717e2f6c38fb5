"""The demo's progress on the Datasets page: a banner that follows the seeding live, then steps aside."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nicegui import ui

from app.demo.seeding import progress_of
from app.runtime import current_services


def demo_banner(on_ready: Callable[[], Awaitable[None]]) -> None:
    """Shown while `--demo` seeds (or when seeding failed); calls `on_ready` once the demo data is in."""
    progress = progress_of(current_services().demo)
    if progress is None or progress["state"] == "ready":
        return
    with ui.card().classes("w-full bg-amber-50").mark("demo-banner").props("data-testid=demo-banner flat bordered") as banner:
        with ui.row().classes("w-full items-center gap-3 no-wrap"):
            spinner = ui.spinner(size="md")
            title = ui.label("Seeding the demo…").classes("text-base font-medium")
            step = ui.label(progress["step"]).classes("text-sm text-gray-600 grow").mark("demo-step").props("data-testid=demo-step")
        bar = ui.linear_progress(value=progress["fraction"], show_value=False).props("instant-feedback")

    async def follow() -> None:
        now = progress_of(current_services().demo)
        if now is None:
            return
        bar.set_value(now["fraction"])
        step.set_text(now["step"])
        if now["state"] == "failed":
            timer.cancel()
            spinner.set_visibility(False)
            title.set_text("The demo could not be seeded:")
            step.set_text(now["error"])
            banner.classes(replace="w-full bg-red-50")
        elif now["state"] == "ready":
            timer.cancel()
            banner.set_visibility(False)
            ui.notify(f"Demo ready: seeded in {now['seconds']:.0f} s", type="positive")
            await on_ready()

    timer = ui.timer(0.5, follow)
