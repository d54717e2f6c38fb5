"""`ohif_viewer`: OHIF Viewer v3 in the detail panel, served by this Vireo under /ohif (app/ohif).

OHIF is the full diagnostic viewer (MPR, measurements, SEG over CT); the quick slice viewer
stays the fast first look. OHIF is optional: its 61 MB dist is installed outside the wheel
(`vireo ohif install`), so every function here works, and says how to add it, without it.
Inside the panel OHIF runs in an iframe of the same origin: the session cookie is its only
credential, and its own side panels are left out there (app/ohif/config.py) so the image
gets the panel's width; "Open full screen" gives the complete OHIF in a tab.
When the login expires, OHIF's page puts a notice with "Log in again" above the iframe
(app/ohif/session_watch.js) instead of leaving empty viewports.
"""

from __future__ import annotations

from nicegui import ui

from app import viewers
from app.ohif import location
from components.shared_css import add_shared_css

CSS = """
.vireo-ohif { display: flex; flex-direction: column; gap: 4px; width: 100%; height: 100%; min-height: 420px; }
.vireo-ohif-bar { display: flex; justify-content: flex-end; align-items: center; gap: 12px; font-size: 13px; }
.vireo-ohif-frame { flex: 1 1 auto; width: 100%; min-height: 400px; border: 0; background: #000; }
.vireo-ohif-missing { color: #555; font-size: 13px; line-height: 1.5; }
"""


def ohif_available() -> bool:
    """Whether Vireo's own OHIF is installed and served under /ohif."""
    return location.installed() is not None


def ohif_viewer_url(study_uid: str, series_uid: str | None = None, *, segmentation: bool = False,
                    seg_series_uids: list[str] | None = None) -> str | None:
    """Vireo's own OHIF opened on a study (and series), or None when OHIF is not installed.

    `segmentation=True` opens OHIF's segmentation mode; `seg_series_uids` draws those SEGs
    over `series_uid` (the series they reference) in the default viewer.
    """
    if not ohif_available() or not study_uid:
        return None
    return viewers.own_ohif_url(study_uid, series_uid, segmentation=segmentation, seg_series_uids=seg_series_uids)


def ohif_viewer(study_uid: str, series_uid: str, *, seg_series_uids: list[str] | None = None) -> None:
    """Draw OHIF in an iframe filling the current container, with an "Open full screen" link.

    With `seg_series_uids` the (first) SEG is drawn over `series_uid`, its referenced series.
    Without OHIF installed this draws a note saying how to install it.
    """
    add_shared_css("ohif-viewer", CSS)
    url = ohif_viewer_url(study_uid, series_uid, seg_series_uids=seg_series_uids)
    with ui.element("div").classes("vireo-ohif").props("data-testid=ohif-viewer"):
        if url is None:
            ui.label(location.INSTALL_HINT).classes("vireo-ohif-missing").props("data-testid=ohif-missing")
            return
        with ui.element("div").classes("vireo-ohif-bar"):
            ui.link("Open full screen", url, new_tab=True).props("data-testid=ohif-full-screen")
        frame = ui.element("iframe").classes("vireo-ohif-frame").props("data-testid=ohif-frame")
        frame._props.update({"src": url, "title": "OHIF Viewer", "allow": "fullscreen"})
