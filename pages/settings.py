"""`/settings` ("Account and tokens"): your password, browser sessions and API tokens; for administrators, the users.

The Datasets page's own settings are its Settings dialog (components.settings_dialog).
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from nicegui import run, ui

from app import account_actions, browser_session
from app.account_actions import AccountError, Principal
from components.frame import (
    SETTINGS_DIALOG_URL,
    current_principal,
    frame,
    logout_everywhere,
)
from components.local_time import browser_zone, time_text
from core.timeutil import parse_time


def register() -> None:
    @ui.page("/settings")
    async def settings_page() -> None:
        principal = current_principal()
        with frame("Account and tokens"):
            _password_card(principal)
            await _sessions_card(principal)
            await _tokens_card(principal)
            if principal.is_admin:
                await _users_card(principal)
            _datasets_note()


def _password_card(principal: Principal) -> None:
    with ui.card().classes("w-full max-w-xl"):
        ui.label("Password").classes("text-lg")
        ui.label("A new password logs out your other browsers.").classes("text-sm text-gray-600")
        current = ui.input("Current password", password=True).classes("w-full")
        new = ui.input("New password", password=True).classes("w-full")
        this_browser = browser_session.cookie_hash(ui.context.client.request)

        async def change() -> None:
            try:
                ended = await run.io_bound(account_actions.change_password, principal, current.value, new.value, this_browser)
            except AccountError as exc:
                ui.notify(str(exc), type="negative")
                return
            current.set_value("")
            new.set_value("")
            ui.notify(f"Password changed; {ended} other browser session{'' if ended == 1 else 's'} ended", type="positive")

        ui.button("Change password", on_click=change).mark("change-password").props('data-testid=change-password')


async def _sessions_card(principal: Principal) -> None:
    count = await run.io_bound(account_actions.sessions_of, principal)
    with ui.card().classes("w-full max-w-xl"):
        ui.label("Browser sessions").classes("text-lg")
        ui.label(f"You are logged in in {count} browser{'' if count == 1 else 's'}.").mark("session-count")
        ui.button("Log out everywhere", icon="logout", on_click=logout_everywhere).props("outline").mark("logout-everywhere")


def _readable(rows: list[dict[str, Any]], fields: tuple[str, ...], zone: tzinfo) -> list[dict[str, Any]]:
    """ISO times in these rows as people read them ("3 min ago · 2 Dec 2026, 11:16", local); other values stay."""
    out = []
    for row in rows:
        row = dict(row)
        for field in fields:
            when = parse_time(row.get(field)) if row.get(field) not in (None, "never") else None
            if when is not None:
                row[field] = time_text(when, zone)
        out.append(row)
    return out


async def _tokens_card(principal: Principal) -> None:
    with ui.card().classes("w-full max-w-3xl"):
        ui.label("API tokens").classes("text-lg")
        ui.label("Scripts use a token as `Authorization: Bearer <token>` on /api and /dicomweb.").classes("text-sm text-gray-600")
        columns = [{"name": c, "label": c.replace("_", " ").capitalize(), "field": c, "align": "left"} for c in ("name", "prefix", "created", "last_used")]
        columns.append({"name": "actions", "label": "", "field": "id"})
        table = ui.table(columns=columns, rows=[], row_key="id").classes("w-full").mark("token-table").props('data-testid=token-table')
        table.add_slot("no-data", '<div class="text-grey-7 q-pa-sm">No tokens yet: name one below and create it to let a script '
                       'or another tool call Vireo\'s API as you.</div>')
        table.add_slot("body-cell-actions", '<q-td :props="props"><q-btn flat dense color="negative" label="Revoke" @click="$parent.$emit(\'revoke\', props.row)"/></q-td>')

        async def reload() -> None:
            table.rows = _readable(await run.io_bound(account_actions.token_rows, principal) or [], ("created", "last_used"), await browser_zone())
            table.update()

        async def revoke(event: Any) -> None:
            try:
                await run.io_bound(account_actions.revoke_token, principal, int(event.args["id"]))
            except (AccountError, LookupError) as exc:
                ui.notify(str(exc), type="negative")
                return
            ui.notify("Token revoked")
            await reload()

        table.on("revoke", revoke)
        with ui.row().classes("items-center"):
            name = ui.input("Token name").mark("token-name").props('data-testid=token-name')

            async def create() -> None:
                try:
                    token = await run.io_bound(account_actions.create_token, principal, name.value)
                except AccountError as exc:
                    ui.notify(str(exc), type="negative")
                    return
                name.set_value("")
                with ui.dialog() as dialog, ui.card():
                    ui.label("Copy the token now: it is not shown again.")
                    ui.code(token).classes("w-full").mark("new-token").props('data-testid=new-token')
                    ui.button("Done", on_click=dialog.close)
                dialog.open()
                await reload()

            ui.button("Create token", on_click=create).mark("create-token").props('data-testid=create-token')
        await reload()


async def _users_card(principal: Principal) -> None:
    with ui.card().classes("w-full max-w-3xl"):
        ui.label("Users").classes("text-lg")
        columns = [{"name": c, "label": c.replace("_", " ").capitalize(), "field": c, "align": "left"} for c in ("username", "role", "status", "last_login")]
        columns.append({"name": "actions", "label": "", "field": "username"})
        table = ui.table(columns=columns, rows=[], row_key="username").classes("w-full").mark("user-table").props('data-testid=user-table')
        table.add_slot("body-cell-actions", r'''
            <q-td :props="props">
              <q-btn flat dense :label="props.row.status === 'active' ? 'Disable' : 'Enable'" @click="$parent.$emit('toggle', props.row)"/>
              <q-btn flat dense color="negative" label="Remove" @click="$parent.$emit('remove', props.row)"/>
            </q-td>''')

        async def reload() -> None:
            table.rows = _readable(await run.io_bound(account_actions.user_rows) or [], ("last_login",), await browser_zone())
            table.update()

        async def act(action: str, username: str, password: str = "", is_admin: bool = False) -> bool:
            try:
                await run.io_bound(account_actions.user_action, principal, action, username, password, is_admin)
            except (AccountError, LookupError) as exc:
                ui.notify(str(exc), type="negative")
                return False
            await reload()
            return True

        async def toggle(event: Any) -> None:
            row = event.args
            await act("disable" if row["status"] == "active" else "enable", row["username"])

        async def remove(event: Any) -> None:
            await act("remove", event.args["username"])

        table.on("toggle", toggle)
        table.on("remove", remove)
        with ui.row().classes("items-center"):
            username = ui.input("User name").mark("new-username").props('data-testid=new-username')
            password = ui.input("Password", password=True).mark("new-password").props('data-testid=new-password')
            admin = ui.checkbox("Administrator")

            async def add() -> None:
                if await act("add", username.value.strip(), password.value, admin.value):
                    ui.notify(f"User {username.value} added", type="positive")
                    username.set_value("")
                    password.set_value("")

            ui.button("Add user", on_click=add).mark("add-user").props('data-testid=add-user')
        await reload()


def _datasets_note() -> None:
    """The Datasets page's settings moved into its own dialog (as in Kaapana): say where they are."""
    with ui.card().classes("w-full max-w-xl").mark("datasets-settings-note").props("data-testid=datasets-settings-note"):
        ui.label("Datasets page").classes("text-lg")
        with ui.row().classes("items-center gap-2 text-sm"):
            ui.label("Gallery, cards, sort, fields and viewer are set in the Datasets page's Settings dialog.")
            ui.link("Open it", SETTINGS_DIALOG_URL).mark("open-datasets-settings").props("data-testid=open-datasets-settings")
