"""A job's result, readably: a federated orchestration's rounds and runners, and the merged aggregate.

The orchestrator job's result is its whole state (see federation/orchestration.py): a table of
rounds and each runner's status says who took part and who did not and why; counts in the
aggregate (the statistics DAG's) are shown as tables; everything is also there as JSON.
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
    if aggregate is not None:
        ui.label("Merged result" if job.get("role") == "orchestrator" else "Result (what this runner handed back)").classes("text-subtitle2 mt-2")
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
