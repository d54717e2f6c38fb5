"""`/login`: the one page that needs no login."""

from __future__ import annotations

import re

from urllib.parse import quote

from fastapi import Request
from nicegui import app as nicegui_app
from nicegui import run, ui

from app import browser_session
from app.auth import TooManyAttempts, client_address, login


_SAME_SITE_PATH = re.compile(r"^/(?![/\\])[^\\\x00-\x1f]*$")


def safe_next(target: str) -> str:
    """Only same-site paths: a login link must not bounce the user to another site.

    Browsers read `\\` as `/`, so `/\\evil.example` would be `//evil.example`: refused like `//…`.
    """
    return target if target and _SAME_SITE_PATH.match(target) else "/"


def register() -> None:
    # The session cookie can only be set by an HTTP response: the page hands over a one-time ticket (app/browser_session.py).
    nicegui_app.add_api_route(browser_session.COMPLETE_PATH, browser_session.complete_login, methods=["GET"], include_in_schema=False)

    @ui.page("/login")
    def login_page(request: Request, next: str = "/") -> None:
        address = client_address(request)
        browser = browser_session.browser_id(request)
        target = safe_next(next)
        ui.page_title("Log in · Vireo")
        ui.colors(primary="#2f5d50")

        async def attempt() -> None:
            error.set_text("")
            try:
                principal = await run.io_bound(login, username.value.strip(), password.value, address)
            except TooManyAttempts as exc:
                error.set_text(f"Too many failed logins. Try again in {exc.retry_after} seconds.")
                return
            if principal is None:
                error.set_text("Wrong user name or password.")
                password.set_value("")
                return
            ticket = browser_session.tickets.issue(principal, browser, target)
            ui.navigate.to(f"{browser_session.COMPLETE_PATH}?ticket={quote(ticket)}")

        with ui.card().classes("absolute-center w-80"):
            with ui.row().classes("items-center gap-2"):
                ui.icon("blur_on", size="lg", color="primary")
                ui.label("Vireo").classes("text-2xl font-bold")
            username = ui.input("User name").classes("w-full").props("autofocus autocomplete=username").mark("username")
            password = ui.input("Password", password=True, password_toggle_button=True).classes("w-full").props("autocomplete=current-password").mark("password")
            password.on("keydown.enter", attempt)
            username.on("keydown.enter", lambda: password.run_method("focus"))
            error = ui.label("").classes("text-negative").mark("login-error")
            ui.button("Log in", on_click=attempt).classes("w-full").mark("login-button")
