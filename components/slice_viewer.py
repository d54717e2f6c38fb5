"""`SliceViewer`: the detail view's image viewer (slices, window/level, zoom/pan, SEG overlays).

The plan (app.series_viewing.viewer_plan) tells it which series to show and which overlays
exist; the browser then fetches slices from `/api/series/{uid}/slices/{n}` on its own.
"""

from __future__ import annotations

from typing import Any

from nicegui import ui

from components.shared_css import add_shared_css

CSS = """
.vireo-viewer { outline: none; display: flex; flex-direction: column; gap: 6px; }
.vireo-viewport { position: relative; width: 100%; height: 460px; background: #000; overflow: hidden; cursor: crosshair; }
.vireo-stack { position: absolute; inset: 0; transform-origin: center center; }
.vireo-slice, .vireo-overlay { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain;
  image-rendering: auto; pointer-events: none; }
.vireo-hud { position: absolute; left: 6px; bottom: 4px; color: #ddd; font-size: 12px; text-shadow: 0 0 2px #000; }
.vireo-slider { width: 100%; }
.vireo-controls { display: flex; flex-wrap: wrap; gap: 4px; }
.vireo-btn { border: 1px solid #bbb; background: #fff; border-radius: 4px; padding: 1px 8px; font-size: 12px; cursor: pointer; }
.vireo-segments { display: flex; flex-wrap: wrap; gap: 10px; font-size: 12px; }
.vireo-segment { display: flex; align-items: center; gap: 4px; }
.vireo-swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; }
.vireo-hint { color: #777; font-size: 11px; }
"""


class SliceViewer(ui.element, component="slice_viewer.js"):
    def __init__(self) -> None:
        super().__init__()
        add_shared_css("slice-viewer", CSS)
        self._props["plan"] = None

    def show(self, plan: dict[str, Any] | None) -> None:
        self._props["plan"] = plan
        self.update()
