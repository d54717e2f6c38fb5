"""A job's result, readably: a federated orchestration's rounds and runners, and the merged aggregate.

The orchestrator job's result is its whole state (see federation/orchestration.py): a table of
rounds and each runner's status says who took part and who did not and why; counts in the
aggregate (the statistics DAG's) are shown as tables; everything is also there as JSON.

Analysis results (measure-segments, evaluate-segmentations, a federated model) share one
generic shape, so any DAG can have tables and charts on its Result tab without code here:
`{"tables": [{"title", "rows": [{column: value}]}], "charts": [{"title", "categories",
"series": [{"name", "values"}]}]}` (see ingest/analysis/measurement_dags.py).
"""

from __future__ import annotations

from typing import Any

from nicegui import ui

from components.status import colour, short_time

ROUND_COLUMNS = [
    {"name": "round", "label": "Round", "field": "round"},
    {"name": "runner", "label": "Runner", "field": "runner", "align": "left"},
    {"name": "status", "label": "Status", "field": "status", "align": "left"},
    {"name": "job", "label": "Job", "field": "job_id"},
    {"name": "error", "label": "Reason", "field": "error", "align": "left"},
]


def runner_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per round and runner."""
    return [
        {"key": f"{r['round']}-{name}", "round": r["round"], "runner": name, "status": info.get("status", ""), "job_id": info.get("job_id"),
         "error": info.get("error", "")}
        for r in result.get("rounds", []) for name, info in r.get("runners", {}).items()
    ]


def job_result(job: dict[str, Any]) -> None:
    """The Result tab's content for `job` (its `result` is not None)."""
    result = job["result"]
    if job.get("role") == "orchestrator" and isinstance(result, dict):
        _orchestration(result)
        aggregate = result.get("aggregate")
    else:
        aggregate = result
    if isinstance(aggregate, dict) and isinstance(aggregate.get("counts"), dict):
        _counts(aggregate)
    if isinstance(aggregate, dict):
        analysis_tables(aggregate)
    if aggregate is not None:
        title = {"orchestrator": "Merged result", "runner": "Result (what this runner handed back)"}.get(job.get("role") or "", "Result as JSON")
        ui.label(title).classes("text-subtitle2 mt-2")
        ui.json_editor({"content": {"json": aggregate}, "readOnly": True, "mainMenuBar": False}).classes("w-full").mark("job-result")


def _orchestration(result: dict[str, Any]) -> None:
    status = result.get("status", "")
    with ui.row().classes("items-center gap-3"):
        ui.badge(status or "waiting", color=colour(status or "queued")).mark("federated-status")
        done = len([r for r in result.get("rounds", []) if r.get("status") == "finished"])
        ui.label(f"{done} of {result.get('rounds_total', '?')} round(s) done · runners {', '.join(result.get('runners', []))} · "
                 f"at least {result.get('min_runners', len(result.get('runners', [])))} needed per round")
    if result.get("error"):
        ui.label(result["error"]).classes("text-negative")
    rows = runner_rows(result)
    for row in rows:
        round_ = next(r for r in result["rounds"] if r["round"] == row["round"])
        row["error"] = row["error"] or (f"deadline {short_time(round_.get('deadline'))}" if row["status"] in ("pending", "queued", "running") else "")
    ui.table(columns=ROUND_COLUMNS, rows=rows, row_key="key").classes("w-full").mark("federated-runners")


def _counts(aggregate: dict[str, Any]) -> None:
    totals = ", ".join(f"{key}: {aggregate[key]}" for key in ("sites", "series", "instances") if key in aggregate)
    if totals:
        ui.label(totals).classes("text-subtitle2").mark("result-totals")
    with ui.row().classes("gap-4 items-start"):
        for field, values in aggregate["counts"].items():
            if not isinstance(values, dict):
                continue
            ui.table(
                columns=[{"name": "value", "label": field, "field": "value", "align": "left"}, {"name": "n", "label": "Series", "field": "n"}],
                rows=[{"value": k, "n": v} for k, v in values.items()], row_key="value",
            ).props("dense flat bordered").mark(f"result-counts-{field}")


# ---- generic analysis results --------------------------------------------------------------

def column_label(key: str) -> str:
    """A column key as people read it: `volume_ml` → "Volume (mL)", `hausdorff95_mm` → "Hausdorff95 (mm)"."""
    units = {"ml": "mL", "mm": "mm", "mm2": "mm²", "mm3": "mm³", "percent": "%"}
    parts = key.split("_")
    unit = None
    if len(parts) > 1 and parts[-1] in units:
        unit = units[parts.pop()]
    elif len(parts) > 2 and parts[-2] == "mm" and parts[-1] in ("x", "y", "z"):  # centroid_mm_x
        parts.pop(-2)
        unit = "mm"
    words = {"hausdorff95": "Hausdorff 95", "sd": "SD", "bbox": "bounding box", "seg": "SEG", "sr": "SR"}
    text = " ".join(words.get(p, p) for p in parts)
    text = text[:1].upper() + text[1:]
    return f"{text} ({unit})" if unit else text


def _cell(value: Any) -> Any:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return value


def analysis_tables(result: dict[str, Any]) -> None:
    """The `tables` and `charts` of an analysis result (ignored when absent or malformed)."""
    for number, table in enumerate(t for t in result.get("tables") or [] if isinstance(t, dict)):
        rows = [r for r in table.get("rows") or [] if isinstance(r, dict)]
        keys: list[str] = []
        for row in rows:
            keys.extend(k for k in row if k not in keys)
        ui.label(str(table.get("title") or "Results")).classes("text-subtitle2 mt-2")
        if not rows:
            ui.label("No rows.").classes("text-grey-7")
            continue
        columns = [{"name": k, "label": column_label(k), "field": k, "align": "left" if isinstance(rows[0].get(k), str) else "right",
                    "sortable": True} for k in keys]
        shown = [{"_key": i, **{k: _cell(r.get(k)) for k in keys}} for i, r in enumerate(rows)]
        ui.table(columns=columns, rows=shown, row_key="_key", pagination=25).props("dense flat bordered").classes(
            "w-full max-w-full overflow-auto").mark(f"analysis-table-{number}")
    for number, chart in enumerate(c for c in result.get("charts") or [] if isinstance(c, dict)):
        categories = list(chart.get("categories") or [])
        data = [{"type": "bar", "name": str(s.get("name", "")), "x": categories, "y": list(s.get("values") or [])}
                for s in chart.get("series") or [] if isinstance(s, dict)]
        if not data:
            continue
        ui.plotly({"data": data, "layout": {"title": {"text": str(chart.get("title") or "")}, "barmode": "group", "height": 320, "yaxis": {"rangemode": "tozero"},
                                            "margin": {"l": 50, "r": 20, "t": 40, "b": 80}, "legend": {"orientation": "h"}},
                   "config": {"displaylogo": False, "responsive": True}}).classes("w-full").mark(f"analysis-chart-{number}")
