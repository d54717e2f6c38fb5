"""`SeriesGallery`: the Datasets page's cards, as one Vue component fed page by page.

The cards live in the browser (one element, not one NiceGUI element per card), so a gallery
of thousands of series costs the server a list, and selection clicks never wait for a round trip.
The server pushes pages (`reset`, `append`) and single-card changes (`patch`); the browser
reports selections, tag clicks, detail requests and when it wants more.
"""

from __future__ import annotations

from typing import Any

from nicegui import ui

from app.gallery_settings import GallerySettings
from components.shared_css import add_shared_css

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
.vireo-tag { background: #f2c037; border-radius: 8px; padding: 0 6px; font-size: 11px; }
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

    def configure(self, settings: GallerySettings) -> None:
        self._props["cardFields"] = [{"field": f.field, "label": field_label(f.field), "truncate": f.truncate} for f in settings.fields if f.series_card]
        self._props["patientFields"] = settings.names("patient_view")
        self._props["studyFields"] = settings.names("study_view")
        self._props["structured"] = settings.view == "structured"
        self._props["columns"] = settings.items_per_row
        self._props["cardText"] = settings.card_text
        self.update()

    def set_tag_mode(self, active: list[str]) -> None:
        """Clicks tag instead of select while tags are active; the card shows the toggle before the server confirms it."""
        if self._props["activeTags"] != active:
            self._props["tagMode"] = bool(active)
            self._props["activeTags"] = list(active)
            self.update()

    def reset(self, cards: list[dict[str, Any]], total: int) -> None:
        if not self.client.has_socket_connection:  # still building the page: the cards go out with it
            self._props["initialItems"] = cards
            self._props["initialTotal"] = total
            return
        self._props.pop("initialItems", None)  # sent once; later updates of the element need not carry them
        self.run_method("reset", cards, total)

    def append(self, cards: list[dict[str, Any]], total: int) -> None:
        self.run_method("append", cards, total)

    def patch(self, series_uid: str, changes: dict[str, Any]) -> None:
        self.run_method("patch", series_uid, changes)

    def select_all(self) -> None:
        self.run_method("selectAll")

    def clear_selection(self) -> None:
        self.run_method("clearSelection")
