"""The app shell every page shares: header with navigation and the user menu (Settings, Account, Logout).

"Settings" is the Datasets page's settings dialog (as in Kaapana): on that page it opens in
place; elsewhere it goes to the Datasets page, which opens it (`/?settings=1`). Password,
sessions, tokens and users are "Account and tokens" (/settings).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from html import escape

from nicegui import run, ui

from app import browser_session, csrf
from core.accounts import Principal

# Pages join the navigation as their issues land them.
NAVIGATION: list[tuple[str, str, str]] = [
    ("Datasets", "/", "photo_library"),
    ("Workflow Execution", "/workflows/execute", "play_circle"),
    ("Workflow List", "/workflows", "account_tree"),
    ("Data Upload", "/upload", "cloud_upload"),
    ("Instances", "/instances", "hub"),
]


SETTINGS_DIALOG_URL = "/?settings=1"  # the Datasets page, with its settings dialog open


def current_principal() -> Principal:
    """The logged-in user of the page being built (the auth middleware put it on the request)."""
    return ui.context.client.request.state.principal  # type: ignore[no-any-return]


async def logout() -> None:
    await run.io_bound(browser_session.end_session_of, ui.context.client.request)
    ui.navigate.to("/login")


async def logout_everywhere() -> None:
    """End every session of this user: other browsers and open tabs go to the login page too."""
    await run.io_bound(browser_session.end_user_sessions, current_principal().user_id)
    ui.navigate.to("/login")


def csrf_meta() -> None:
    """The session's CSRF token for the page's own fetch calls (app/csrf.py): another origin cannot read it here."""
    token = getattr(ui.context.client.request.state, "csrf_token", "")
    ui.add_head_html(f'<meta name="{csrf.META_NAME}" content="{escape(token)}">')


@contextmanager
def frame(title: str, on_settings: Callable[[], Awaitable[None] | None] | None = None) -> Iterator[None]:
    principal = current_principal()
    ui.page_title(f"{title} · Vireo")
    ui.colors(primary="#2f5d50")
    csrf_meta()
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
                ui.menu_item("Settings", on_settings or (lambda: ui.navigate.to(SETTINGS_DIALOG_URL))).mark("menu-settings").props("data-testid=menu-settings")
                ui.menu_item("Account and tokens", lambda: ui.navigate.to("/settings")).mark("menu-account").props("data-testid=menu-account")
                ui.menu_item("Logout", logout).mark("menu-logout")
                ui.menu_item("Log out everywhere", logout_everywhere).mark("menu-logout-everywhere")
    with ui.column().classes("w-full p-4 gap-4"):
        ui.label(title).classes("text-2xl")
        yield
