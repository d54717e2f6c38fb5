"""`SeriesGallery`: the Datasets page's cards, as one Vue component fed page by page.

The cards live in the browser (one element, not one NiceGUI element per card), so a gallery
of thousands of series costs the server a list, and selection clicks never wait for a round trip.
The server pushes pages (`reset`, `append`) and single-card changes (`patch`); the browser
reports selections, tag clicks, detail requests and when it wants more.

Tags are the gallery's own business once a card shows them: a chip's X removes that tag from
that series here, and tag changes made anywhere else (another tab, another user, the REST API)
reach the cards through the event bus's `TAGS_CHANGED` topic, so the page only hears about
them (`on_tags_changed`) to keep its own bookkeeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from nicegui import run, ui

from app import dataset_actions, series_browsing
from app.gallery_settings import GallerySettings
from components.shared_css import add_shared_css
from components.tag_colours import palette_prop
from core.events import TAGS_CHANGED

TAG_POLL_S = 0.5  # how often an open page looks at tag changes noted by the bus (a second tab sees them this fast)

CSS = """
.vireo-card { position: relative; border: 2px solid transparent; border-radius: 6px; background: #fff;
  box-shadow: 0 1px 3px rgba(0,0,0,.2); cursor: pointer; user-select: none; overflow: hidden; }
.vireo-card.selected { border-color: var(--q-primary); background: #e3efe9; }
.tag-mode .vireo-card { cursor: cell; }
.vireo-thumb-box { position: relative; background: #000; aspect-ratio: 1 / 1; }
.vireo-thumb { width: 100%; height: 100%; object-fit: contain; display: block; }
.vireo-modality { position: absolute; left: 4px; top: 4px; background: var(--q-primary); color: #fff;
  border-radius: 10px; padding: 0 8px; font-size: 12px; }
.vireo-incomplete { position: absolute; left: 4px; bottom: 4px; background: #c10015; color: #fff;
  border-radius: 10px; padding: 0 8px; font-size: 11px; }
.vireo-eye { position: absolute; right: 4px; top: 4px; border: none; border-radius: 50%; background: rgba(255,255,255,.85);
  width: 28px; height: 28px; cursor: pointer; padding: 2px; }
.vireo-eye .material-icons { font-size: 20px; }
.vireo-card-text { padding: 4px 8px; font-size: 12px; line-height: 1.35; }
.vireo-field.truncate { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.vireo-field { overflow-wrap: anywhere; }
.vireo-tags { padding: 0 6px 6px; display: flex; flex-wrap: wrap; gap: 3px; }
.vireo-tag { display: inline-flex; align-items: center; max-width: 100%; background: #f2c037; color: #000; border-radius: 8px;
  padding: 0 0 0 6px; font-size: 11px; line-height: 18px; }
.vireo-tag-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.vireo-tag-x { border: none; background: transparent; color: inherit; cursor: pointer; font-size: 14px; line-height: 16px;
  padding: 0 5px; margin-left: 1px; border-radius: 0 8px 8px 0; }
.vireo-tag-x:hover { background: rgba(0,0,0,.18); }
.vireo-card:focus { outline: none; }
.vireo-card:focus-visible { outline: 3px solid #1565c0; outline-offset: 2px; box-shadow: 0 0 0 5px rgba(21,101,192,.25); }
.vireo-group-head { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 6px 8px; background: #eef2f1;
  border-radius: 6px; margin-bottom: 6px; }
.vireo-study { margin-left: 18px; margin-bottom: 10px; }
.vireo-study-head { background: #f6f7f7; }
.vireo-field-name { color: #667; font-size: 11px; }
.vireo-group-count { margin-left: auto; color: #667; font-size: 12px; }
.vireo-sentinel { min-height: 40px; padding: 12px; color: #777; text-align: center; }
"""


def field_label(field: str) -> str:
    """`PatientName` → `Patient Name`, as Kaapana humanises keywords."""
    if field == "tags":
        return "Tags"
    out = ""
    for i, ch in enumerate(field):
        if ch.isupper() and i and (not field[i - 1].isupper() or (i + 1 < len(field) and field[i + 1].islower())):
            out += " "
        out += ch
    return out


class SeriesGallery(ui.element, component="gallery.js"):
    def __init__(self, settings: GallerySettings) -> None:
        super().__init__()
        add_shared_css("gallery", CSS)
        self.configure(settings)
        self._props["tagMode"] = False
        self._props["activeTags"] = []
        self._props["tagPalette"] = palette_prop()
        self._card_tags: dict[str, list[str]] = {}  # what each loaded card shows, to patch only real changes
        self._tag_listeners: list[Callable[[dict[str, list[str]]], None]] = []
        self._noted_lock = threading.Lock()
        self._noted: set[str] = set()
        self._noted_all = False
        self.on("untag", self._untag)
        unsubscribe = series_browsing.bus().subscribe(TAGS_CHANGED, self._note_tags_changed)
        self.client.on_delete(unsubscribe)
        ui.timer(TAG_POLL_S, self._show_noted_tags)

    def configure(self, settings: GallerySettings) -> None:
        self._props["cardFields"] = [{"field": f.field, "label": field_label(f.field), "truncate": f.truncate} for f in settings.fields if f.series_card]
        self._props["patientFields"] = settings.names("patient_view")
        self._props["studyFields"] = settings.names("study_view")
        self._props["structured"] = settings.view == "structured"
        self._props["columns"] = settings.items_per_row  # at most that many: fewer where cards would get too narrow (gallery.js)
        self._props["cardText"] = settings.card_text
        self.update()

    def set_tag_mode(self, active: list[str]) -> None:
        """Clicks tag instead of select while tags are active; the card shows the toggle before the server confirms it."""
        if self._props["activeTags"] != active:
            self._props["tagMode"] = bool(active)
            self._props["activeTags"] = list(active)
            self.update()

    def on_tags_changed(self, listener: Callable[[dict[str, list[str]]], None]) -> None:
        """`listener({uid: tags})` whenever cards show new tags that the page did not ask for (chip X, other tabs)."""
        self._tag_listeners.append(listener)

    def reset(self, cards: list[dict[str, Any]], total: int) -> None:
        self._card_tags = {c["uid"]: list(c.get("tags") or []) for c in cards}
        if not self.client.has_socket_connection:  # still building the page: the cards go out with it
            self._props["initialItems"] = cards
            self._props["initialTotal"] = total
            return
        self._props.pop("initialItems", None)  # sent once; later updates of the element need not carry them
        self.run_method("reset", cards, total)

    def append(self, cards: list[dict[str, Any]], total: int) -> None:
        self._card_tags.update({c["uid"]: list(c.get("tags") or []) for c in cards})
        self.run_method("append", cards, total)

    def patch(self, series_uid: str, changes: dict[str, Any]) -> None:
        if "tags" in changes and series_uid in self._card_tags:
            self._card_tags[series_uid] = list(changes["tags"])
        self.run_method("patch", series_uid, changes)

    # --- tags ---------------------------------------------------------------------------------

    async def _untag(self, event: Any) -> None:
        """A chip's X: that tag off that one series, in one transaction; the card already hides it."""
        uid, tag = str(event.args.get("uid", "")), str(event.args.get("tag", ""))
        shown_before = list(self._card_tags.get(uid, []))
        try:
            tags = await run.io_bound(dataset_actions.remove_tag, uid, tag)
        except dataset_actions.ActionError as exc:
            self.patch(uid, {"tags": shown_before})
            ui.notify(f"Could not remove the tag: {exc}", type="negative")
            return
        self._shown({uid: tags})

    def _note_tags_changed(self, _topic: str, payload: dict[str, Any]) -> None:
        """Runs in the publisher's thread: only note the series; the page timer shows them."""
        uids = payload.get("series_uids")
        with self._noted_lock:
            if uids is None:
                self._noted_all = True
            else:
                self._noted.update(uids)

    async def _show_noted_tags(self) -> None:
        with self._noted_lock:
            noted, everything = self._noted, self._noted_all
            self._noted, self._noted_all = set(), False
        if not noted and not everything:
            return
        uids = list(self._card_tags) if everything else [u for u in noted if u in self._card_tags]
        if not uids:
            return
        current = await run.io_bound(dataset_actions.current_tags, uids)
        changed = {uid: tags for uid, tags in current.items() if uid in self._card_tags and tags != self._card_tags[uid]}
        if changed:
            self._shown(changed)

    def _shown(self, changed: dict[str, list[str]]) -> None:
        for uid, tags in changed.items():
            self.patch(uid, {"tags": tags})
        for listener in self._tag_listeners:
            listener(changed)

    def select_all(self) -> None:
        self.run_method("selectAll")

    def clear_selection(self) -> None:
        self.run_method("clearSelection")
