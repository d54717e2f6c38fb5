"""The metadata dashboard: series/study/patient counts and one plotly bar chart per configured field.

Clicking a bar calls `on_pick(field, value)` (the page adds it as a filter). Date fields are drawn
as a histogram over months. Bar labels are DICOM values, so they are escaped before plotly sees
them (plotly renders a few HTML tags in labels); the raw value travels in `customdata`.
Only `&`, `<` and `>` are escaped: plotly decodes those entities again, but not `&quot;` or
`&#x27;`, which it would show as they are.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import ui

from components.gallery import field_label
from core.name_display import person_name
from core.search.analysis import vr_of

MAX_BARS = 25

Pick = Callable[[str, str], Awaitable[None] | None]


def is_date(field: str) -> bool:
    return vr_of(field) == "DA"


def aggregation_fields(fields: list[str]) -> list[str]:
    return [f"{f}:month" if is_date(f) else f for f in fields]


def bar_label(value: str) -> str:
    """A value as plotly draws it, literally: cut to 40 characters, its tag characters escaped (quotes are no markup)."""
    return html.escape(value if len(value) <= 40 else value[:39] + "…", quote=False) or "(empty)"


def _shown_values(field: str, values: list[str]) -> list[str]:
    """Values as people read them: person names with every group (`Yamada, Tarou (山田 太郎)`), the rest as stored.

    Bars sit on a category axis, where equal labels would merge two bars into one, so the
    names stay raw in the rare chart where two of them read alike.
    """
    if vr_of(field) != "PN":
        return values
    shown = [person_name(v) or v for v in values]
    return shown if len(set(shown)) == len(shown) else values


def _figure(field: str, counts: dict[str, int]) -> dict[str, Any]:
    if is_date(field):
        items = [(k, v) for k, v in counts.items() if k != "other"]
        x = [f"{k}-01" for k, _ in items]
        return {
            "data": [{"type": "bar", "x": x, "y": [v for _, v in items], "customdata": [k for k, _ in items], "marker": {"color": "#2f5d50"},
                      "text": [f"{v:,}" for _, v in items], "textposition": "auto", "cliponaxis": False,
                      "hovertemplate": "%{customdata}: %{y} series<extra></extra>"}],
            "layout": {"height": 180, "margin": {"l": 30, "r": 10, "t": 10, "b": 30}, "xaxis": {"type": "date"}, "bargap": 0.05},
            "config": {"displayModeBar": False},
        }
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_BARS]
    items.reverse()
    labels = [bar_label(shown) for shown in _shown_values(field, [k for k, _ in items])]
    return {
        "data": [{"type": "bar", "orientation": "h", "y": labels, "x": [v for _, v in items], "customdata": [k for k, _ in items],
                  "text": [f"{v:,}" for _, v in items], "textposition": "outside", "cliponaxis": False,
                  "marker": {"color": "#2f5d50"}, "hovertemplate": "%{y}: %{x} series<extra></extra>"}],
        # room for the count beside the longest bar; at least three rows high, or one bar leaves no plot area to draw in
        # the counts are on the bars, so the value axis (which said "0.5 series") is left out
        "layout": {"height": 24 + 22 * max(3, len(items)), "margin": {"l": 120, "r": 40, "t": 4, "b": 8},
                   "yaxis": {"automargin": True, "type": "category"},
                   "xaxis": {"range": [0, max((v for _, v in items), default=1) * 1.15], "fixedrange": True,
                             "showticklabels": False, "showgrid": False, "zeroline": True}},
        "config": {"displayModeBar": False},
    }


class MetadataDashboard:
    def __init__(self, on_pick: Pick) -> None:
        self.on_pick = on_pick
        with ui.column().classes("w-full gap-2") as self.container:
            with ui.row().classes("w-full justify-around text-center"):
                self.counts = {name: self._count(name) for name in ("Series", "Studies", "Patients")}
            self.charts = ui.column().classes("w-full gap-1")


    def _count(self, name: str) -> ui.label:
        with ui.column().classes("items-center gap-0"):
            value = ui.label("–").classes("text-xl font-bold").mark(f"count-{name.lower()}").props("data-testid=" + f"count-{name.lower()}")
            ui.label(name).classes("text-xs text-gray-600")
        return value

    def show(self, series: int, studies: int, patients: int, fields: list[str], counts: dict[str, dict[str, int]]) -> None:
        self.counts["Series"].set_text(f"{series:,}")
        self.counts["Studies"].set_text(f"{studies:,}")
        self.counts["Patients"].set_text(f"{patients:,}")
        figures = {f: _figure(f, v) if (v := counts.get(f"{f}:month" if is_date(f) else f, {})) else None for f in fields}
        self.charts.clear()  # redrawn, not updated in place: updating plotly figures in place broke the page's websocket
        with self.charts:
            for field, figure in figures.items():
                ui.label(field_label(field)).classes("text-sm font-medium")
                if figure is None:
                    ui.label("no values").classes("text-xs text-gray-500")
                    continue
                plot = ui.plotly(figure).classes("w-full").mark(f"chart-{field}").props(f"data-testid=chart-{field}")
                plot.on("plotly_click", lambda e, f=field: self._picked(f, e.args))

    async def _picked(self, field: str, args: Any) -> None:
        points = (args or {}).get("points") or []
        if not points:
            return
        value = points[0].get("customdata")
        if value is None:
            return
        result = self.on_pick(field, str(value))
        if result is not None:
            await result
