"""`/settings`: your password and API tokens; for administrators, the users."""

from __future__ import annotations

from typing import Any

from nicegui import run, ui

from app import account_actions
from app.account_actions import AccountError, Principal
from components.frame import current_principal, frame


def register() -> None:
    @ui.page("/settings")
    async def settings_page() -> None:
        principal = current_principal()
        with frame("Settings"):
            _password_card(principal)
            await _tokens_card(principal)
            if principal.is_admin:
                await _users_card(principal)


def _password_card(principal: Principal) -> None:
    with ui.card().classes("w-full max-w-xl"):
        ui.label("Password").classes("text-lg")
        current = ui.input("Current password", password=True).classes("w-full")
        new = ui.input("New password", password=True).classes("w-full")

        async def change() -> None:
            try:
                await run.io_bound(account_actions.change_password, principal, current.value, new.value)
            except AccountError as exc:
                ui.notify(str(exc), type="negative")
                return
            current.set_value("")
            new.set_value("")
            ui.notify("Password changed", type="positive")

        ui.button("Change password", on_click=change).mark("change-password")


async def _tokens_card(principal: Principal) -> None:
    with ui.card().classes("w-full max-w-3xl"):
        ui.label("API tokens").classes("text-lg")
        ui.label("Scripts use a token as `Authorization: Bearer <token>` on /api and /dicomweb.").classes("text-sm text-gray-600")
        columns = [{"name": c, "label": c.replace("_", " ").capitalize(), "field": c, "align": "left"} for c in ("name", "prefix", "created", "last_used")]
        columns.append({"name": "actions", "label": "", "field": "id"})
        table = ui.table(columns=columns, rows=[], row_key="id").classes("w-full").mark("token-table")
        table.add_slot("body-cell-actions", '<q-td :props="props"><q-btn flat dense color="negative" label="Revoke" @click="$parent.$emit(\'revoke\', props.row)"/></q-td>')

        async def reload() -> None:
            table.rows = await run.io_bound(account_actions.token_rows, principal) or []
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
            name = ui.input("Token name").mark("token-name")

            async def create() -> None:
                try:
                    token = await run.io_bound(account_actions.create_token, principal, name.value)
                except AccountError as exc:
                    ui.notify(str(exc), type="negative")
                    return
                name.set_value("")
                with ui.dialog() as dialog, ui.card():
                    ui.label("Copy the token now: it is not shown again.")
                    ui.code(token).classes("w-full").mark("new-token")
                    ui.button("Done", on_click=dialog.close)
                dialog.open()
                await reload()

            ui.button("Create token", on_click=create).mark("create-token")
        await reload()


async def _users_card(principal: Principal) -> None:
    with ui.card().classes("w-full max-w-3xl"):
        ui.label("Users").classes("text-lg")
        columns = [{"name": c, "label": c.replace("_", " ").capitalize(), "field": c, "align": "left"} for c in ("username", "role", "status", "last_login")]
        columns.append({"name": "actions", "label": "", "field": "username"})
        table = ui.table(columns=columns, rows=[], row_key="username").classes("w-full").mark("user-table")
        table.add_slot("body-cell-actions", r'''
            <q-td :props="props">
              <q-btn flat dense :label="props.row.status === 'active' ? 'Disable' : 'Enable'" @click="$parent.$emit('toggle', props.row)"/>
              <q-btn flat dense color="negative" label="Remove" @click="$parent.$emit('remove', props.row)"/>
            </q-td>''')

        async def reload() -> None:
            table.rows = await run.io_bound(account_actions.user_rows) or []
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
            username = ui.input("User name").mark("new-username")
            password = ui.input("Password", password=True).mark("new-password")
            admin = ui.checkbox("Administrator")

            async def add() -> None:
                if await act("add", username.value.strip(), password.value, admin.value):
                    ui.notify(f"User {username.value} added", type="positive")
                    username.set_value("")
                    password.set_value("")

            ui.button("Add user", on_click=add).mark("add-user")
        await reload()
