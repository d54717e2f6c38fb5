"""The Workflow List's table: one row per workflow, expandable to its jobs, paged on the server.

Rows are plain data (what `workflow_row` makes of a workflow document); buttons inside the
rows emit events (`workflow_action`, `job_action`, `job_details`, `copy_uuid`) the page handles.
What matters comes first (status counts, actions); the UUID is shortened with a copy button, a
job's configuration is folded behind a button, and low-value columns show on wide screens
only, so the table fits 1280 px without sideways scrolling (tests/test_page_fit.py). Names and
inputs break anywhere when they must: a 200-character name without a space wraps instead of
pushing the actions off the screen (bench/page_fit_sizes.py).
"""

from __future__ import annotations

import json
from datetime import UTC, tzinfo
from typing import Any

from nicegui import ui

from components.status import STATUS_ORDER, colour, duration, short_time, utc_tooltip
from core.selection import Selection
from core.timeutil import parse_time, relative_time, utcnow

JOBS_SHOWN = 50  # jobs listed under an expanded workflow (the API lists all)

ACTIVE_STATES = ("pending", "queued", "scheduled", "running")  # what Abort can still stop
_WIDE = "gt-md"  # Quasar: shown from 1440 px on; a 1280-px screen keeps the columns that matter

# What matters first (status counts, actions), then what tells rows apart; low-value columns last and only on wide screens.
COLUMNS = [
    {"name": "expand", "label": "", "field": "id"},
    {"name": "name", "label": "Name", "field": "name", "align": "left"},
    {"name": "status", "label": "Jobs", "field": "status", "align": "left"},
    {"name": "actions", "label": "", "field": "id", "align": "left"},
    {"name": "input", "label": "Input", "field": "input", "align": "left"},
    {"name": "created", "label": "Created", "field": "created", "align": "left"},
    {"name": "username", "label": "User", "field": "username", "align": "left"},
    {"name": "id", "label": "UUID", "field": "id", "align": "left"},
    {"name": "updated", "label": "Updated", "field": "updated", "align": "left", "headerClasses": _WIDE, "classes": _WIDE},
    {"name": "owner_instance", "label": "Owner", "field": "owner_instance", "align": "left", "headerClasses": _WIDE, "classes": _WIDE},
]

_ACTIONS = "[['abort', 'stop', 'Abort'], ['restart', 'replay', 'Restart'], ['delete', 'delete', 'Delete']]"

_BODY = r"""
<q-tr :props="props" :data-workflow="props.row.id">
  <q-td auto-width><q-checkbox dense v-model="props.selected" /></q-td>
  <q-td key="expand" auto-width>
    <q-icon size="sm" :name="props.expand ? 'expand_less' : 'expand_more'" class="expand-workflow cursor-pointer"
            @click="props.expand = !props.expand" />
  </q-td>
  <q-td key="name" :props="props" class="workflow-name-cell" style="overflow-wrap: anywhere; min-width: 10rem">{{ props.row.name }}<q-badge v-if="props.row.service" color="purple-3" class="q-ml-xs" label="service" /></q-td>
  <q-td key="status" :props="props" class="workflow-counts-cell">
    <q-badge v-for="c in props.row.counts" :key="c.status" :color="c.color" class="q-mr-xs q-mb-xs workflow-count"
             :data-status="c.status" :label="c.status + ' ' + c.n" />
  </q-td>
  <q-td key="actions" :props="props" auto-width class="whitespace-nowrap">
    <span v-for="a in ACTIONS" :key="a[0]" :title="props.row.why_not || (a[0] == 'abort' && !props.row.abortable ? 'Nothing left to abort: every job has ended' : a[2])">
      <q-btn flat dense round size="sm" :icon="a[1]"
             :title="props.row.why_not || (a[0] == 'abort' && !props.row.abortable ? 'Nothing left to abort: every job has ended' : a[2])"
             :class="['workflow-' + a[0], (props.row.why_not || (a[0] == 'abort' && !props.row.abortable)) ? 'text-grey-5' : '']"
             :disable="!!props.row.why_not || (a[0] == 'abort' && !props.row.abortable)"
             :data-disabled="(props.row.why_not || (a[0] == 'abort' && !props.row.abortable)) ? 'true' : null"
             @click="$parent.$emit('workflow_action', {id: props.row.id, action: a[0]})" />
    </span>
  </q-td>
  <q-td key="input" :props="props" class="workflow-input" style="overflow-wrap: anywhere; min-width: 7rem"><span v-if="props.row.input">{{ props.row.input }}</span><span v-else class="text-grey-6">no input series</span></q-td>
  <q-td key="created" :props="props" :title="props.row.created_utc" class="whitespace-nowrap">{{ props.row.created }}<div class="text-caption text-grey-7">{{ props.row.created_ago }}</div></q-td>
  <q-td key="username" :props="props">{{ props.row.username }}</q-td>
  <q-td key="id" :props="props" class="whitespace-nowrap">
    <span class="text-caption text-grey-8 workflow-uuid" :title="props.row.id">{{ props.row.id.slice(0, 8) }}…</span>
    <q-btn flat dense round size="xs" icon="content_copy" class="copy-uuid" title="Copy the full UUID"
           @click="$parent.$emit('copy_uuid', props.row.id)" />
  </q-td>
  <q-td key="updated" :props="props" :title="props.row.updated_utc" class="whitespace-nowrap">{{ props.row.updated }}</q-td>
  <q-td key="owner_instance" :props="props">{{ props.row.owner_instance }}</q-td>
</q-tr>
<q-tr v-if="props.expand" :props="props" class="bg-grey-1">
  <q-td colspan="100%" style="white-space: normal">
    <table class="w-full text-left jobs-of-workflow" style="border-collapse: collapse; table-layout: auto">
      <thead><tr class="text-grey-8">
        <th>Status</th><th></th><th>Job</th><th>DAG</th><th>Progress</th><th>Duration</th><th>Created</th><th>Runner</th>
        <th class="gt-md">Updated</th><th class="gt-md">Owner</th>
      </tr></thead>
      <tbody>
        <tr v-for="job in props.row.jobs" :key="job.id" :data-job="job.id">
          <td><q-badge :color="job.color" :label="job.status" class="job-status" :data-job="job.id" /></td>
          <td style="white-space: nowrap">
            <q-btn flat dense round size="sm" icon="article" title="Logs and steps" class="job-details"
                   @click="$parent.$emit('job_details', job.id)" />
            <q-btn v-if="job.conf_text" flat dense round size="sm" icon="tune" title="Job configuration" class="job-conf">
              <q-menu><pre class="text-caption q-pa-sm q-ma-none job-conf-text" style="max-width: 480px; white-space: pre-wrap; word-break: break-word">{{ job.conf_text }}</pre></q-menu>
            </q-btn>
            <span v-for="a in ACTIONS" :key="a[0]" :title="props.row.why_not || (a[0] == 'abort' && !job.abortable ? 'This job has ended: nothing to abort' : a[2])">
              <q-btn flat dense round size="sm" :icon="a[1]" :disable="!!props.row.why_not || (a[0] == 'abort' && !job.abortable)"
                     :title="props.row.why_not || (a[0] == 'abort' && !job.abortable ? 'This job has ended: nothing to abort' : a[2])"
                     :class="['job-' + a[0], (props.row.why_not || (a[0] == 'abort' && !job.abortable)) ? 'text-grey-5' : '']"
                     @click="$parent.$emit('job_action', {id: job.id, action: a[0]})" />
            </span>
          </td>
          <td>{{ job.id }}</td>
          <td>{{ job.dag_id }}<div v-if="job.role_text" class="text-caption text-grey-7 job-role">{{ job.role_text }}</div></td>
          <td style="min-width: 110px">
            <q-linear-progress :value="job.progress" size="10px" :color="job.color" rounded />
            <span class="text-caption">{{ job.progress_text }}</span>
          </td>
          <td style="white-space: nowrap">{{ job.duration }}</td>
          <td :title="job.created_utc" style="white-space: nowrap">{{ job.created }}</td>
          <td>{{ job.runner_instance }}</td>
          <td class="gt-md" :title="job.updated_utc" style="white-space: nowrap">{{ job.updated }}</td>
          <td class="gt-md">{{ job.owner_instance }}</td>
        </tr>
        <tr v-if="props.row.more_jobs > 0"><td colspan="10" class="text-grey-7">and {{ props.row.more_jobs }} more jobs</td></tr>
      </tbody>
    </table>
  </q-td>
</q-tr>
""".replace("ACTIONS", _ACTIONS)

_NO_DATA = r"""
<div class="full-width text-grey-7 q-pa-md workflow-table-empty">
  No workflows here yet. Workflows you start from the Datasets page or with New workflow appear in this list, with their jobs.
</div>
"""


def job_row(job: dict[str, Any], zone: tzinfo = UTC) -> dict[str, Any]:
    progress = job["progress"]
    total = progress.get("total") or 0
    fraction = 1.0 if job["status"] == "finished" else (progress.get("done", 0) / total if total else 0.0)
    return {
        "id": job["id"],
        "dag_id": job["dag_id"],
        # a federated workflow's orchestrator job and its runners' round jobs
        "role_text": "orchestrator" if job.get("role") == "orchestrator" else (f"round {job.get('round')}" if job.get("role") == "runner" else ""),
        "status": job["status"],
        "color": colour(job["status"]),
        "created": short_time(job["created"], zone),
        "updated": short_time(job["updated"], zone),
        "created_utc": utc_tooltip(job["created"]),
        "updated_utc": utc_tooltip(job["updated"]),
        "abortable": job["status"] in ACTIVE_STATES,
        "runner_instance": job["runner_instance"],
        "owner_instance": job["owner_instance"],
        "conf_text": json.dumps(job["conf"], indent=2)[:4000] if job["conf"] else "",
        "progress": round(fraction, 4),
        "progress_text": f"{progress.get('done', 0)} of {total}" if total else "",
        "duration": duration(job["duration"]),
        "error": job["error"],
    }


def input_text(workflow: dict[str, Any]) -> str:
    """What the workflow was started on, as people read it: "query Modality:CT in brain-mr → 5 series"."""
    series = workflow.get("series") or []
    if workflow.get("selection"):
        return Selection.from_json(workflow["selection"]).describe(len(series) if series else None)  # no series: remote runners resolve them
    if series:
        return f"{workflow['dataset']} → {len(series):,} series" if workflow.get("dataset") else f"{len(series):,} series"
    return workflow.get("dataset") or ""


def workflow_row(workflow: dict[str, Any], why_not: str | None = None, zone: tzinfo = UTC) -> dict[str, Any]:
    """`why_not`: why the viewer may not abort, restart or delete it (app/permissions.py); its buttons say so."""
    counts = workflow["status_counts"]
    jobs = workflow.get("jobs", [])
    return {
        "id": workflow["id"],
        "name": workflow["name"],
        "dataset": workflow["dataset"] or "",
        "input": input_text(workflow),
        "created": short_time(workflow["created"], zone),
        "updated": short_time(workflow["updated"], zone),
        "created_utc": utc_tooltip(workflow["created"]),
        "created_ago": relative_time(created, utcnow()) if (created := parse_time(workflow["created"])) else "",
        "updated_utc": utc_tooltip(workflow["updated"]),
        "abortable": any(counts.get(s) for s in ACTIVE_STATES),
        "username": workflow["username"],
        "owner_instance": workflow["owner_instance"],
        "service": workflow["service"],
        "counts": [{"status": s, "n": counts[s], "color": colour(s)} for s in STATUS_ORDER if counts.get(s)],
        "jobs": [job_row(j, zone) for j in jobs[:JOBS_SHOWN]],
        "more_jobs": max(0, sum(counts.values()) - len(jobs[:JOBS_SHOWN])),
        "why_not": why_not or "",
    }


class ServerPagedTable(ui.table):
    """A table paged on the server, whose page, page size and row count only the server sets.

    Quasar echoes its pagination back (`update:pagination`) when the table mounts, with the row
    count it was drawn with; NiceGUI stores any such echo as the table's pagination. An echo that
    arrives after the server has moved on (rows read meanwhile, a reconnect redrawing an old
    state) put the stale count back: the footer read "1-0 of 0" over rows on screen. Page changes
    come as `request` events here (server-side paging), so an echo never carries a user's wish and
    the server's values always win over it.
    """

    def __init__(self, rows_per_page: int, **kwargs: Any) -> None:
        self.server_pagination: dict[str, int] = {"page": 1, "rowsPerPage": rows_per_page, "rowsNumber": 0}
        super().__init__(pagination=dict(self.server_pagination), **kwargs)

    @property
    def pagination(self) -> dict:
        return self._props["pagination"]  # type: ignore[no-any-return]

    @pagination.setter
    def pagination(self, value: dict) -> None:
        self._props["pagination"] = {**value, **self.server_pagination}

    def show_page(self, page: int, rows_per_page: int, total: int) -> None:
        """What the footer says: page `page` of `total` rows, `rows_per_page` to a page."""
        self.server_pagination = {"page": page, "rowsPerPage": rows_per_page, "rowsNumber": total}
        self.pagination = self.pagination


def workflow_table(rows_per_page: int) -> ServerPagedTable:
    table = ServerPagedTable(rows_per_page, columns=COLUMNS, rows=[], row_key="id", selection="multiple") \
        .classes("w-full").mark("workflow-table")
    table.add_slot("body", _BODY)
    table.add_slot("no-data", _NO_DATA)
    table.props("binary-state-sort wrap-cells")
    return table
