"""`/settings`: your password, browser sessions and API tokens; for administrators, the users."""

from __future__ import annotations

from typing import Any

from nicegui import run, ui

from pydantic import ValidationError

from app import account_actions, browser_session, gallery_settings, series_browsing
from app.account_actions import AccountError, Principal
from app.gallery_settings import FieldDisplay, GallerySettings
from components.frame import current_principal, frame, logout_everywhere
from components.gallery import field_label
from components.search_row import SORTS

FLAGS = [("series_card", "Series Card"), ("truncate", "Truncate"), ("dashboard", "Dashboard"), ("patient_view", "Patient View"), ("study_view", "Study View")]


def register() -> None:
    @ui.page("/settings")
    async def settings_page() -> None:
        principal = current_principal()
        with frame("Settings"):
            await _gallery_card(principal)
            _password_card(principal)
            await _sessions_card(principal)
            await _tokens_card(principal)
            if principal.is_admin:
                await _users_card(principal)


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


async def _tokens_card(principal: Principal) -> None:
    with ui.card().classes("w-full max-w-3xl"):
        ui.label("API tokens").classes("text-lg")
        ui.label("Scripts use a token as `Authorization: Bearer <token>` on /api and /dicomweb.").classes("text-sm text-gray-600")
        columns = [{"name": c, "label": c.replace("_", " ").capitalize(), "field": c, "align": "left"} for c in ("name", "prefix", "created", "last_used")]
        columns.append({"name": "actions", "label": "", "field": "id"})
        table = ui.table(columns=columns, rows=[], row_key="id").classes("w-full").mark("token-table").props('data-testid=token-table')
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


async def _gallery_card(principal: Principal) -> None:
    """The Datasets page's configuration, saved per user on the server."""
    settings = await run.io_bound(gallery_settings.load, principal.username)
    fields: list[FieldDisplay] = [f.model_copy() for f in settings.fields]
    with ui.card().classes("w-full max-w-4xl").mark("gallery-settings").props('data-testid=gallery-settings'):
        ui.label("Datasets page").classes("text-lg")
        ui.label("Saved with your account: they follow you to any browser.").classes("text-sm text-gray-600")
        with ui.row().classes("items-center gap-6"):
            view = ui.toggle({"gallery": "Gallery", "structured": "Structured gallery"}, value=settings.view).mark("setting-view").props('data-testid=setting-view')
            per_row = ui.number("Items per row (0: as many as fit)", value=settings.items_per_row, min=0, max=12, step=1, format="%d").classes("w-56").mark("setting-per-row").props('data-testid=setting-per-row')
            card_text = ui.switch("Cards with metadata (off: thumbnails only)", value=settings.card_text).mark("setting-card-text").props('data-testid=setting-card-text')
            sort = ui.select({k: v for k, v in SORTS.items() if k}, value=settings.sort if settings.sort in SORTS else "-arrived", label="Sort").classes("w-56").mark("setting-sort").props('data-testid=setting-sort')
        grid = ui.grid(columns=len(FLAGS) + 2).classes("items-center gap-x-4 gap-y-0")

        def draw() -> None:
            grid.clear()
            with grid:
                ui.label("Field").classes("font-medium")
                for _, label in FLAGS:
                    ui.label(label).classes("font-medium text-sm")
                ui.label("")
                for item in fields:
                    ui.label(field_label(item.field)).classes("text-sm")
                    for flag, label in FLAGS:
                        ui.checkbox(value=getattr(item, flag)).bind_value(item, flag).mark(f"setting-{item.field}-{flag}").props("data-testid=" + f"setting-{item.field}-{flag}")
                    ui.button(icon="close", on_click=lambda _e, f=item: (fields.remove(f), draw())).props("flat dense round size=sm")

        draw()
        with ui.row().classes("items-center gap-2"):
            new_field = ui.select([], label="Add a field", with_input=True).classes("w-64").mark("setting-new-field").props('data-testid=setting-new-field')

            async def load_fields() -> None:
                if not new_field.options:
                    new_field.set_options(await run.io_bound(series_browsing.indexed_fields))

            new_field.on("focus", load_fields, throttle=5)

            def add_field() -> None:
                if new_field.value and all(f.field != new_field.value for f in fields):
                    fields.append(FieldDisplay(field=new_field.value, series_card=True))
                    new_field.set_value(None)
                    draw()

            ui.button("Add", on_click=add_field).props("flat")

        async def save() -> None:
            try:
                chosen = GallerySettings(view=view.value, items_per_row=int(per_row.value or 0), card_text=bool(card_text.value), sort=sort.value or "-arrived", fields=fields)
                await run.io_bound(
                    gallery_settings.update, principal.username,
                    **{k: getattr(chosen, k) for k in ("view", "items_per_row", "card_text", "sort", "fields")},
                )
            except ValidationError as exc:
                ui.notify(f"Not saved: {exc.errors()[0]['msg']}", type="negative")
                return
            ui.notify("Datasets settings saved", type="positive")

        async def reset() -> None:
            defaults = await run.io_bound(gallery_settings.reset, principal.username)
            view.set_value(defaults.view)
            per_row.set_value(defaults.items_per_row)
            card_text.set_value(defaults.card_text)
            sort.set_value(defaults.sort)
            fields[:] = defaults.fields
            draw()
            ui.notify("Datasets settings reset to the defaults")

        with ui.row():
            ui.button("Save", on_click=save).mark("save-gallery-settings").props('data-testid=save-gallery-settings')
            ui.button("Reset to defaults", on_click=reset).props("flat").mark("reset-gallery-settings").props('data-testid=reset-gallery-settings')
