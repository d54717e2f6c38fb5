"""`/instances`: the Instance Overview — this instance's federation settings, the registered remotes, the audit log.

Administrators only: the page shows this instance's token and Fernet key. Its public key (and
fingerprint, to compare by phone) is part of the definition a remote's admin registers: it is
how the remote knows requests really come from this instance.
"""

from __future__ import annotations

import json
from datetime import UTC, tzinfo
from typing import Any

from nicegui import run, ui

from app import federation_actions as actions
from app import workflow_actions
from components.frame import current_principal, frame
from components.local_time import browser_zone, time_text
from core.timeutil import parse_time
from federation.instances import DuplicateInstance, InstanceError, UnknownInstance

DEFINITION_KEYS = ("name", "protocol", "host", "port", "token", "public_key", "fernet_key", "ssl_verify")
WRAP = "white-space: normal; overflow-wrap: anywhere"
TIME_CELL = "white-space: pre-line; min-width: 7.5rem"  # "3 min ago" over "2 Dec 2026, 11:16"
LOW_VALUE = "gt-md"  # Quasar: shown from 1440 px wide on; the values stay in Edit and the API
REMOTE_COLUMNS = [
    {"name": "name", "label": "Name", "field": "name", "sortable": True, "align": "left"},
    {"name": "health", "label": "Health", "field": "health", "align": "left", "style": "min-width: 14rem; " + WRAP},
    {"name": "last_success", "label": "Last success", "field": "last_success", "align": "left", "style": TIME_CELL},
    {"name": "last_failure", "label": "Last error", "field": "last_failure", "align": "left", "style": TIME_CELL},
    {"name": "network", "label": "Network", "field": "network", "align": "left", "style": WRAP},
    {"name": "token", "label": "Token", "field": "token", "align": "left"},
    {"name": "created", "label": "Created", "field": "created", "align": "left", "style": TIME_CELL},
    {"name": "updated", "label": "Updated", "field": "updated", "align": "left", "style": TIME_CELL},
    {"name": "key", "label": "Key fingerprint", "field": "key", "align": "left", "classes": LOW_VALUE, "headerClasses": LOW_VALUE, "style": WRAP},
    {"name": "encryption", "label": "SSL / Fernet", "field": "encryption", "align": "left", "classes": LOW_VALUE, "headerClasses": LOW_VALUE},
    {"name": "allowed", "label": "Allows", "field": "allowed", "align": "left", "classes": LOW_VALUE, "headerClasses": LOW_VALUE, "style": WRAP},
    {"name": "automatic", "label": "Auto sync / execution", "field": "automatic", "align": "left", "classes": LOW_VALUE, "headerClasses": LOW_VALUE},
]
HEALTH_COLOURS = {"online": "positive", "failing": "negative", "unreachable": "warning", "never synced": "grey-7"}
TOKEN_SLOT = r"""
<q-td :props="props">
  <span class="font-mono text-xs" :data-testid="'token-' + props.row.name">{{ props.row.token }}</span>
  <q-btn flat dense round size="sm" :icon="props.row.revealed ? 'visibility_off' : 'visibility'"
         :title="props.row.revealed ? 'Hide the token' : 'Show the token'" @click="$parent.$emit('reveal', props.row.name)"
         :data-testid="'reveal-' + props.row.name" />
  <q-btn flat dense round size="sm" icon="content_copy" title="Copy the token" @click="$parent.$emit('copy_token', props.row.name)"
         :data-testid="'copy-token-' + props.row.name" />
</q-td>
"""
HEALTH_SLOT = r"""
<q-td :props="props">
  <q-badge :color="props.row.health_colour" :label="props.row.health" :data-testid="'health-' + props.row.name" />
  <div v-if="props.row.reason" class="text-caption" style="white-space: normal; overflow-wrap: anywhere"
       :data-testid="'reason-' + props.row.name">{{ props.row.reason }}</div>
</q-td>
"""
AUDIT_COLUMNS = [
    {"name": c, "label": c.capitalize(), "field": c, "align": "left", **({"style": WRAP} if c == "detail" else {})}
    for c in ("time", "peer", "action", "detail")
]
ERRORS = (InstanceError, UnknownInstance, DuplicateInstance)


def masked(token: str) -> str:
    """A token as the table shows it until revealed: enough to tell two apart, not enough to use."""
    return f"••••••••-…-{token[-4:]}" if token else "—"


def when(iso: str | None, zone: tzinfo = UTC, never: str = "never", sep: str = " · ") -> str:
    """A stored time as a person reads it: `3 min ago · 2 Dec 2026, 11:16` (in a table cell: one per line)."""
    moment = parse_time(iso)
    return time_text(moment, zone).replace(" · ", sep) if moment is not None else never


def remote_row(doc: dict[str, Any], zone: tzinfo = UTC, revealed: bool = False) -> dict[str, Any]:
    """One remote as the table shows it: its health with the reason in plain words, its times, its token masked."""
    health = doc["health"]
    return {
        "name": doc["name"], "network": f"{doc['protocol']}://{doc['host']}:{doc['port']}",
        "health": health, "health_colour": HEALTH_COLOURS.get(health, "grey-7"),
        "reason": doc["last_error"] if health != "online" and doc["last_error"] else "",
        "last_seen": when(doc["last_seen"], zone), "last_success": when(doc["last_success"], zone, sep="\n"),
        "last_failure": when(doc.get("last_failure"), zone, "none", "\n"), "last_error": doc["last_error"] or "",
        "token": doc["token"] if revealed else masked(doc["token"]), "revealed": revealed,
        "created": when(doc["created"], zone, sep="\n"), "updated": when(doc["updated"], zone, sep="\n"),
        "key": doc.get("key_fingerprint") or "none: no sync until its public key is added",
        "encryption": f"{'on' if doc['ssl_verify'] else 'off'} / {'on' if doc['fernet_key'] else 'off'}",
        "allowed": f"DAGs: {', '.join(doc['allowed_dags']) or 'none'}; datasets: {', '.join(doc['allowed_datasets']) or 'none'}",
        "automatic": f"{'on' if doc['automatic_sync'] else 'off'} / {'on' if doc['automatic_execution'] else 'off'}",
    }


def register() -> None:
    @ui.page("/instances")
    async def instances_page() -> None:
        with frame("Instance Overview"):
            if not current_principal().is_admin:
                ui.label("Only administrators manage instances.").mark("not-admin")
                return
            zone = await browser_zone()
            await _local_card(zone)
            await _remotes_card(zone)
            await _audit_card(zone)


async def _local_card(zone: tzinfo) -> None:
    local = await run.io_bound(actions.local_instance)
    dag_ids = sorted(d["dag_id"] for d in workflow_actions.dags() if d.get("dag_id"))
    dataset_names = sorted(d["name"] for d in await run.io_bound(workflow_actions.datasets))
    with ui.card().classes("w-full max-w-4xl"):
        ui.label("This instance").classes("text-lg")
        local_name = ui.label(f"{local['name']}").classes("text-xl font-bold").mark("local-name")
        with ui.row().classes("items-center gap-2"):
            new_name = ui.input("Instance name", value=local["name"]).classes("w-64").mark("local-rename")
            rename_button = ui.button("Rename", icon="drive_file_rename_outline", on_click=lambda: rename()).props("flat").mark("rename-local")
        lock_note = ui.label("").classes("text-caption text-grey-8").style("overflow-wrap: anywhere").mark("local-name-lock")
        with ui.row().classes("items-center gap-4"):
            protocol = ui.select(["http", "https"], value=local["protocol"], label="Protocol").classes("w-28").mark("local-protocol")
            host = ui.input("Host", value=local["host"]).classes("w-64").mark("local-host")
            port = ui.number("Port", value=local["port"], min=1, max=65535, format="%d").classes("w-28").mark("local-port")
        with ui.row().classes("items-center gap-2"):
            token = ui.label(f"Token: {local['token']}").classes("font-mono").mark("local-token")
            ui.button("Regenerate", icon="autorenew", on_click=lambda: save(regenerate_token=True)).props("flat").mark("regenerate-token")
        with ui.row().classes("items-center gap-2"):
            ui.label(f"Public key: {local['public_key'] or '—'}").classes("font-mono").mark("local-public-key")
            ui.button("Copy", icon="content_copy", on_click=lambda: copy_key()).props("flat").mark("copy-public-key")
        ui.label(f"Fingerprint {local['key_fingerprint'] or '—'}: the remote's admin should see the same").classes(
            "font-mono text-grey-7").mark("local-key-fingerprint")
        ui.label(f"Created {when(local['created'], zone)} · updated {when(local['updated'], zone)}").classes("text-grey-7").mark("local-times")
        ssl_verify = ui.switch("SSL verification", value=local["ssl_verify"]).mark("local-ssl")
        with ui.row().classes("items-center gap-2"):
            fernet = ui.switch("Fernet encryption", value=local["fernet_encryption"]).mark("local-fernet")
            key = ui.label(f"Key: {local['fernet_key'] or '—'}").classes("font-mono").mark("local-fernet-key")
            ui.button("Rotate key", icon="key", on_click=lambda: save(rotate_fernet_key=True, fernet_encryption=True)).props("flat").mark("rotate-key")
        with ui.row().classes("items-center gap-4"):
            sync = ui.switch("Automatic sync", value=local["automatic_sync"]).mark("local-auto-sync")
            interval = ui.number("Sync interval (s)", value=local["sync_interval"], min=1, max=86400, format="%d").classes("w-40").mark("local-interval")
        execution = ui.switch("Automatic execution of remote jobs", value=local["automatic_execution"]).mark("local-auto-exec")
        allowed_dags = ui.select(dag_ids, value=[d for d in local["allowed_dags"] if d in dag_ids], multiple=True,
                                 label="DAGs remote instances may run here").classes("w-full").props("use-chips").mark("local-allowed-dags")
        allowed_datasets = ui.select(dataset_names, value=[d for d in local["allowed_datasets"] if d in dataset_names], multiple=True,
                                     label="Datasets remote instances may use").classes("w-full").props("use-chips").mark("local-allowed-datasets")
        message = ui.label("").classes("text-negative").mark("local-message")
        with ui.row():
            ui.button("Save", icon="save", on_click=lambda: save()).mark("save-local")
            ui.button("Copy instance definition", icon="content_copy", on_click=lambda: copy()).props("outline").mark("copy-definition")
        state = {"local": local}

    def show_lock(doc: dict[str, Any]) -> None:
        """The name can change until the first remote is registered; then say why not."""
        locked = doc.get("name_locked")
        lock_note.set_text(locked or "Other instances will know this instance by this name: it can change until the first remote is registered.")
        new_name.set_enabled(not locked)
        rename_button.set_enabled(not locked)

    async def rename() -> None:
        wanted = (new_name.value or "").strip()
        if wanted == state["local"]["name"]:
            return
        try:
            doc = await run.io_bound(actions.change_local, {"name": wanted})
        except ERRORS as exc:
            message.set_text(str(exc))
            return
        message.set_text("")
        state["local"] = doc
        local_name.set_text(doc["name"])
        show_lock(doc)
        ui.notify(f"This instance is now called {doc['name']}", type="positive")

    async def check_lock() -> None:
        doc = await run.io_bound(actions.local_instance)
        if doc.get("name_locked") != state["local"].get("name_locked"):
            state["local"] = {**state["local"], "name_locked": doc.get("name_locked")}
            show_lock(doc)

    show_lock(local)
    ui.timer(5.0, check_lock)  # a remote registered below (or elsewhere) locks the name

    async def save(**actions_: Any) -> None:
        changes = {
            "protocol": protocol.value, "host": host.value, "port": int(port.value or 0), "ssl_verify": ssl_verify.value,
            "fernet_encryption": fernet.value, "automatic_sync": sync.value, "sync_interval": int(interval.value or 0),
            "automatic_execution": execution.value, "allowed_dags": list(allowed_dags.value or []),
            "allowed_datasets": list(allowed_datasets.value or []), **actions_,
        }
        try:
            doc = await run.io_bound(actions.change_local, changes)
        except ERRORS as exc:
            message.set_text(str(exc))
            return
        message.set_text("")
        state["local"] = doc
        token.set_text(f"Token: {doc['token']}")
        key.set_text(f"Key: {doc['fernet_key'] or '—'}")
        fernet.value = doc["fernet_encryption"]
        ui.notify("Saved", type="positive")

    def copy() -> None:
        text = json.dumps({k: state["local"][k] for k in DEFINITION_KEYS})
        ui.clipboard.write(text)
        ui.notify("Instance definition copied")

    def copy_key() -> None:
        ui.clipboard.write(state["local"]["public_key"] or "")
        ui.notify("Public key copied")


async def _remotes_card(zone: tzinfo) -> None:
    with ui.card().classes("w-full"):
        with ui.row().classes("items-center w-full"):
            ui.label("Remote instances").classes("text-lg")
            ui.space()
            ui.button("Sync now", icon="sync", on_click=lambda: sync_now()).mark("sync-now")
        table = ui.table(columns=REMOTE_COLUMNS, rows=[], row_key="name", selection="single").classes("w-full").props(
            "wrap-cells flat").mark("remote-table")
        table.add_slot("body-cell-token", TOKEN_SLOT)
        table.add_slot("body-cell-health", HEALTH_SLOT)
        table.add_slot("no-data", '<div class="text-grey-7 q-pa-sm">No remote instances yet: add one below with the '
                                  'definition its admin copied from its Instance Overview.</div>')
        with ui.row():
            ui.button("Edit", icon="edit", on_click=lambda: edit()).props("flat").mark("edit-remote")
            ui.button("Remove", icon="delete", on_click=lambda: remove()).props("flat color=negative").mark("remove-remote")
        ui.separator()
        ui.label("Add a remote: paste its instance definition, or fill in the fields").classes("text-md")
        pasted = ui.textarea("Instance definition (JSON)").classes("w-full").mark("remote-definition")
        with ui.row().classes("items-center gap-2"):
            name = ui.input("Name").classes("w-40").mark("remote-name")
            protocol = ui.select(["http", "https"], value="https", label="Protocol").classes("w-28").mark("remote-protocol")
            host = ui.input("Host").classes("w-48").mark("remote-host")
            port = ui.number("Port", value=443, min=1, max=65535, format="%d").classes("w-28").mark("remote-port")
            token = ui.input("Token").classes("w-80 max-w-full").mark("remote-token")
            public_key = ui.input("Public key (ed25519:…)").classes("w-96 max-w-full").mark("remote-public-key")
            fernet_key = ui.input("Fernet key (optional)").classes("w-80 max-w-full").mark("remote-fernet-key")
            ssl_verify = ui.switch("SSL verification", value=True).mark("remote-ssl")
        message = ui.label("").classes("text-negative").mark("remote-message")
        ui.button("Add remote", icon="add", on_click=lambda: add()).mark("add-remote")

    revealed: set[str] = set()
    tokens: dict[str, str] = {}

    async def reload() -> None:
        docs = (await run.io_bound(actions.all_instances))[1:]
        tokens.clear()
        tokens.update({d["name"]: d["token"] for d in docs})
        table.rows = [remote_row(d, zone, d["name"] in revealed) for d in docs]
        table.update()

    async def reveal(event: Any) -> None:
        remote = str(event.args)
        revealed.symmetric_difference_update({remote})
        await reload()

    def copy_token(event: Any) -> None:
        remote = str(event.args)
        ui.clipboard.write(tokens.get(remote, ""))
        ui.notify(f"{remote}'s token copied")

    table.on("reveal", reveal)
    table.on("copy_token", copy_token)

    async def add() -> None:
        if (pasted.value or "").strip():
            try:
                definition = json.loads(pasted.value)
                if not isinstance(definition, dict):
                    raise ValueError
            except ValueError:
                message.set_text("The definition is not a JSON object as 'Copy instance definition' gives it.")
                return
            definition.setdefault("name", definition.pop("instance_name", ""))
            definition.setdefault("ssl_verify", definition.pop("ssl_check", True))
        else:
            definition = {"name": name.value, "protocol": protocol.value, "host": host.value, "port": int(port.value or 0),
                          "token": token.value, "public_key": public_key.value or None, "fernet_key": fernet_key.value or None,
                          "ssl_verify": ssl_verify.value}
        definition = {k: definition.get(k) for k in DEFINITION_KEYS if k in definition}
        try:
            await run.io_bound(actions.add_remote, definition)
        except (*ERRORS, TypeError) as exc:
            message.set_text(str(exc))
            return
        message.set_text("")
        pasted.value = ""
        ui.notify(f"Remote {definition['name']} added", type="positive")
        await reload()

    async def remove() -> None:
        if not table.selected:
            message.set_text("Select a remote first.")
            return
        remote = table.selected[0]["name"]
        with ui.dialog() as dialog, ui.card():
            ui.label(f"Remove remote {remote}? Its jobs stay in the Workflow List.")
            with ui.row():
                ui.button("Remove", on_click=lambda: dialog.submit(True)).props("color=negative").mark("confirm-remove")
                ui.button("Cancel", on_click=lambda: dialog.submit(False)).props("flat")
        if await dialog:
            await run.io_bound(actions.delete_remote, remote)
            table.selected.clear()
            await reload()

    async def edit() -> None:
        if not table.selected:
            message.set_text("Select a remote first.")
            return
        doc = await run.io_bound(actions.remote_instance, table.selected[0]["name"])
        with ui.dialog() as dialog, ui.card():
            ui.label(f"Edit {doc['name']}").classes("text-lg")
            new_port = ui.number("Port", value=doc["port"], min=1, max=65535, format="%d").mark("edit-port")
            new_token = ui.input("Token", value=doc["token"]).classes("w-96").mark("edit-token")
            new_public_key = ui.input("Public key (ed25519:…)", value=doc["public_key"] or "").classes("w-96").mark("edit-public-key")
            new_ssl = ui.switch("SSL verification", value=doc["ssl_verify"]).mark("edit-ssl")
            new_key = ui.input("Fernet key (empty: off)", value=doc["fernet_key"] or "").classes("w-96").mark("edit-fernet-key")
            error = ui.label("").classes("text-negative")

            async def apply() -> None:
                changes = {"port": int(new_port.value or 0), "token": new_token.value, "public_key": new_public_key.value or None,
                           "ssl_verify": new_ssl.value, "fernet_key": new_key.value or None}
                try:
                    await run.io_bound(actions.change_remote, doc["name"], changes)
                except ERRORS as exc:
                    error.set_text(str(exc))
                    return
                dialog.submit(True)

            with ui.row():
                ui.button("Save", on_click=apply).mark("save-remote")
                ui.button("Cancel", on_click=lambda: dialog.submit(False)).props("flat")
        if await dialog:
            await reload()

    async def sync_now() -> None:
        outcome = await run.io_bound(actions.sync_now)
        failed = [f"{n}: {o.get('error')}" for n, o in outcome.items() if not o.get("ok")]
        ui.notify("; ".join(failed) if failed else f"Synced {len(outcome)} remote(s)", type="warning" if failed else "positive")
        await reload()

    await reload()
    ui.timer(5.0, reload)  # health changes with every poll


async def _audit_card(zone: tzinfo) -> None:
    with ui.card().classes("w-full"):
        ui.label("Audit log of remote actions").classes("text-lg")
        table = ui.table(columns=AUDIT_COLUMNS, rows=[], row_key="id").classes("w-full").props("wrap-cells flat").mark("audit-table")
        table.add_slot("no-data", '<div class="text-grey-7 q-pa-sm">Jobs other instances send here, and requests refused, '
                                  'will be listed here.</div>')

    async def reload() -> None:
        events = await run.io_bound(actions.audit_log, 200)
        table.rows = [{**e, "time": when(e.get("time"), zone)} for e in events]
        table.update()

    await reload()
    ui.timer(5.0, reload)
