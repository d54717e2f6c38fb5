"""The Workflow List's table: one row per workflow, expandable to its jobs, paged on the server.

Rows are plain data (what `workflow_row` makes of a workflow document); buttons inside the
rows emit events (`workflow_action`, `job_action`, `job_details`) the page handles.
"""

from __future__ import annotations

import json
from typing import Any

from nicegui import ui

from components.status import STATUS_ORDER, colour, duration, short_time
from core.selection import Selection

JOBS_SHOWN = 50  # jobs listed under an expanded workflow (the API lists all)

COLUMNS = [
    {"name": "expand", "label": "", "field": "id"},
    {"name": "name", "label": "Name", "field": "name", "align": "left"},
    {"name": "id", "label": "UUID", "field": "id", "align": "left"},
    {"name": "input", "label": "Input", "field": "input", "align": "left"},
    {"name": "created", "label": "Created", "field": "created", "align": "left"},
    {"name": "updated", "label": "Updated", "field": "updated", "align": "left"},
    {"name": "username", "label": "User", "field": "username", "align": "left"},
    {"name": "owner_instance", "label": "Owner instance", "field": "owner_instance", "align": "left"},
    {"name": "status", "label": "Jobs", "field": "status", "align": "left"},
    {"name": "actions", "label": "", "field": "id", "align": "right"},
]

_BODY = r"""
<q-tr :props="props" :data-workflow="props.row.id">
  <q-td auto-width><q-checkbox dense v-model="props.selected" /></q-td>
  <q-td key="expand" auto-width>
    <q-icon size="sm" :name="props.expand ? 'expand_less' : 'expand_more'" class="expand-workflow cursor-pointer"
            @click="props.expand = !props.expand" />
  </q-td>
  <q-td key="name" :props="props">{{ props.row.name }}<q-badge v-if="props.row.service" color="purple-3" class="q-ml-xs" label="service" /></q-td>
  <q-td key="id" :props="props"><span class="text-caption text-grey-8">{{ props.row.id }}</span></q-td>
  <q-td key="input" :props="props" class="workflow-input">{{ props.row.input }}</q-td>
  <q-td key="created" :props="props">{{ props.row.created }}</q-td>
  <q-td key="updated" :props="props">{{ props.row.updated }}</q-td>
  <q-td key="username" :props="props">{{ props.row.username }}</q-td>
  <q-td key="owner_instance" :props="props">{{ props.row.owner_instance }}</q-td>
  <q-td key="status" :props="props">
    <q-badge v-for="c in props.row.counts" :key="c.status" :color="c.color" class="q-mr-xs workflow-count"
             :data-status="c.status" :label="c.status + ' ' + c.n" />
  </q-td>
  <q-td key="actions" :props="props">
    <q-icon v-for="a in [['abort', 'stop', 'Abort'], ['restart', 'replay', 'Restart'], ['delete', 'delete', 'Delete']]" :key="a[0]" size="xs" :name="a[1]" :title="props.row.why_not || a[2]"
            :class="['q-mx-xs', 'workflow-' + a[0], props.row.why_not ? 'text-grey-5 cursor-not-allowed' : 'cursor-pointer']"
            :data-disabled="props.row.why_not ? 'true' : null"
            @click="props.row.why_not || $parent.$emit('workflow_action', {id: props.row.id, action: a[0]})" />
  </q-td>
</q-tr>
<q-tr v-if="props.expand" :props="props" class="bg-grey-1">
  <q-td colspan="100%">
    <table class="w-full text-left jobs-of-workflow" style="border-collapse: collapse">
      <thead><tr class="text-grey-8">
        <th>Job</th><th>DAG</th><th>Created</th><th>Updated</th><th>Runner</th><th>Owner</th><th>Configuration</th>
        <th>Status</th><th>Progress</th><th>Duration</th><th></th>
      </tr></thead>
      <tbody>
        <tr v-for="job in props.row.jobs" :key="job.id" :data-job="job.id">
          <td>{{ job.id }}</td><td>{{ job.dag_id }}<div v-if="job.role_text" class="text-caption text-grey-7 job-role">{{ job.role_text }}</div></td><td>{{ job.created }}</td><td>{{ job.updated }}</td>
          <td>{{ job.runner_instance }}</td><td>{{ job.owner_instance }}</td>
          <td><code class="text-caption" style="white-space: pre-wrap; max-width: 320px; display: inline-block">{{ job.conf_text }}</code></td>
          <td><q-badge :color="job.color" :label="job.status" class="job-status" :data-job="job.id" /></td>
          <td style="min-width: 140px">
            <q-linear-progress :value="job.progress" size="10px" :color="job.color" rounded />
            <span class="text-caption">{{ job.progress_text }}</span>
          </td>
          <td>{{ job.duration }}</td>
          <td style="white-space: nowrap">
            <q-btn flat dense round size="sm" icon="article" title="Logs and steps" class="job-details"
                   @click="$parent.$emit('job_details', job.id)" />
            <span v-for="a in [['abort', 'stop', 'Abort'], ['restart', 'replay', 'Restart'], ['delete', 'delete', 'Delete']]" :key="a[0]" :title="props.row.why_not || a[2]">
              <q-btn flat dense round size="sm" :icon="a[1]" :class="'job-' + a[0]" :disable="!!props.row.why_not"
                     @click="$parent.$emit('job_action', {id: job.id, action: a[0]})" />
            </span>
          </td>
        </tr>
        <tr v-if="props.row.more_jobs > 0"><td colspan="11" class="text-grey-7">and {{ props.row.more_jobs }} more jobs</td></tr>
      </tbody>
    </table>
  </q-td>
</q-tr>
"""


def job_row(job: dict[str, Any]) -> dict[str, Any]:
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
        "created": short_time(job["created"]),
        "updated": short_time(job["updated"]),
        "runner_instance": job["runner_instance"],
        "owner_instance": job["owner_instance"],
        "conf_text": json.dumps(job["conf"], indent=None)[:300] if job["conf"] else "",
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


def workflow_row(workflow: dict[str, Any], why_not: str | None = None) -> dict[str, Any]:
    """`why_not`: why the viewer may not abort, restart or delete it (app/permissions.py); its buttons say so."""
    counts = workflow["status_counts"]
    jobs = workflow.get("jobs", [])
    return {
        "id": workflow["id"],
        "name": workflow["name"],
        "dataset": workflow["dataset"] or "",
        "input": input_text(workflow),
        "created": short_time(workflow["created"]),
        "updated": short_time(workflow["updated"]),
        "username": workflow["username"],
        "owner_instance": workflow["owner_instance"],
        "service": workflow["service"],
        "counts": [{"status": s, "n": counts[s], "color": colour(s)} for s in STATUS_ORDER if counts.get(s)],
        "jobs": [job_row(j) for j in jobs[:JOBS_SHOWN]],
        "more_jobs": max(0, sum(counts.values()) - len(jobs[:JOBS_SHOWN])),
        "why_not": why_not or "",
    }


def workflow_table(rows_per_page: int) -> ui.table:
    table = ui.table(
        columns=COLUMNS, rows=[], row_key="id", selection="multiple",
        pagination={"page": 1, "rowsPerPage": rows_per_page, "rowsNumber": 0},
    ).classes("w-full").mark("workflow-table")
    table.add_slot("body", _BODY)
    table.props("binary-state-sort")
    return table
