"""The app shell every page shares: header with navigation and the user menu (Settings, Logout)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nicegui import ui

from app.auth import end_session
from core.accounts import Principal

# Pages join the navigation as their issues land them.
NAVIGATION: list[tuple[str, str, str]] = [
    ("Datasets", "/", "photo_library"),
    ("Workflow Execution", "/workflows/execute", "play_circle"),
    ("Workflow List", "/workflows", "account_tree"),
    ("Data Upload", "/upload", "cloud_upload"),
    ("Instances", "/instances", "hub"),
]


def current_principal() -> Principal:
    """The logged-in user of the page being built (the auth middleware put it on the request)."""
    return ui.context.client.request.state.principal  # type: ignore[no-any-return]


def logout() -> None:
    end_session()
    ui.navigate.to("/login")


@contextmanager
def frame(title: str) -> Iterator[None]:
    principal = current_principal()
    ui.page_title(f"{title} · Vireo")
    ui.colors(primary="#2f5d50")
    with ui.header().classes("items-center gap-6 px-4 py-2"):
        with ui.link(target="/").classes("text-white no-underline flex items-center gap-2"):
            ui.icon("blur_on", size="md")
            ui.label("Vireo").classes("text-xl font-bold")
        for label, target, icon in NAVIGATION:
            with ui.link(target=target).classes("text-white no-underline flex items-center gap-1").mark(f"nav-{label}"):
                ui.icon(icon)
                ui.label(label)
        ui.space()
        with ui.button(principal.username, icon="account_circle").props("flat color=white no-caps").mark("user-menu"):
            with ui.menu():
                ui.menu_item("Settings", lambda: ui.navigate.to("/settings")).mark("menu-settings")
                ui.menu_item("Logout", logout).mark("menu-logout")
    with ui.column().classes("w-full p-4 gap-4"):
        ui.label(title).classes("text-2xl")
        yield
