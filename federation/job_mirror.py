"""A remote job's steps, log tails and file list, mirrored back to its owner with each status update.

Without it a job that ran on another instance is a black box on the instance that asked for it.
The runner adds a snapshot (`collect`) to each status it reports; the owner keeps it (`store`):
the steps in the job row, each step's log tail as that step's log file in the owner job's own run
folder (so the owner's log viewer and `GET /api/jobs/{id}/logs` read it like a local log), and a
manifest (`remote.json`: which instance ran it, full log sizes, the result files with sizes).
The full logs and the files themselves stay on the runner and are fetched on demand through the
signed channel (`federation.fetch`).

Limits (per status update; a sync body holds at most `MAX_DETAILS_PER_SYNC` bytes of snapshots,
the rest of the outbox waits for the next sync):
- `MAX_STEPS` steps, each with name, state, attempt, started, ended;
- the last `LOG_TAIL_BYTES` of each step's log, at most `MAX_LOG_BYTES` over all steps;
- `MAX_FILES` result files (name and size).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from core.timeutil import isoformat, utcnow
from core.workflows.context import run_dir
from core.workflows.runner import step_log_name

log = logging.getLogger(__name__)

MAX_STEPS = 200
LOG_TAIL_BYTES = 16 * 1024
MAX_LOG_BYTES = 256 * 1024
MAX_FILES = 200
MAX_DETAILS_PER_SYNC = 8 * 1024 * 1024
MANIFEST = "remote.json"
STEP_KEYS = ("name", "state", "attempt", "started", "ended")
FILE_NAME = re.compile(r"^[^/\\\x00]{1,255}$")
LIMITS = {"max_steps": MAX_STEPS, "log_tail_bytes": LOG_TAIL_BYTES, "max_log_bytes": MAX_LOG_BYTES, "max_files": MAX_FILES}


def _tail(path: Path, limit: int) -> tuple[str, int]:
    """The last `limit` bytes of a file (from a line start when possible) and the file's full size."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            handle.seek(max(0, size - limit))
            data = handle.read(limit)
    except OSError:
        return "", 0
    if size > limit and b"\n" in data[:-1]:
        data = data[data.index(b"\n") + 1:]
    return data.decode(errors="replace"), size


def collect(data_dir: Path, job_id: int, run: int, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The runner's snapshot of one job's current run, within the limits above."""
    folder = run_dir(data_dir, job_id, run)
    kept = [{k: step.get(k) for k in STEP_KEYS if k in step} for step in steps[:MAX_STEPS]]
    budget = MAX_LOG_BYTES
    logs: list[dict[str, Any]] = []
    for index, step in enumerate(kept):
        text, size = _tail(folder / "logs" / step_log_name(index, str(step.get("name", ""))), min(LOG_TAIL_BYTES, budget))
        budget -= len(text.encode())
        logs.append({"index": index, "size": size, "tail": text})
    files: list[dict[str, Any]] = []
    output = folder / "output"
    if output.is_dir():
        for path in sorted(output.iterdir())[:MAX_FILES]:
            if path.is_file() and not path.name.endswith(".part"):
                files.append({"name": path.name, "size": path.stat().st_size})
    return {"runner_job_id": job_id, "steps": kept, "logs": logs, "files": files}


def size_of(details: dict[str, Any]) -> int:
    return len(json.dumps(details, separators=(",", ":"), default=str))


def clean_steps(details: dict[str, Any]) -> list[dict[str, Any]]:
    """The mirrored steps as the owner stores them: only the known keys, as short strings or numbers."""
    steps = details.get("steps") if isinstance(details, dict) else None
    if not isinstance(steps, list):
        return []
    out: list[dict[str, Any]] = []
    for step in steps[:MAX_STEPS]:
        if not isinstance(step, dict):
            continue
        clean: dict[str, Any] = {}
        for key in STEP_KEYS:
            value = step.get(key)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                clean[key] = value[:200] if isinstance(value, str) else value
        out.append(clean)
    return out


def store(data_dir: Path, job_id: int, run: int, runner: str, details: dict[str, Any]) -> list[dict[str, Any]]:
    """Keep a runner's snapshot on the owner (log tails as the steps' log files, a manifest); returns the steps for the job row."""
    steps = clean_steps(details)
    folder = run_dir(data_dir, job_id, run)
    logs_dir = folder / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for entry in details.get("logs") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int) or not 0 <= entry["index"] < len(steps):
            continue
        index, tail = entry["index"], str(entry.get("tail") or "")[:LOG_TAIL_BYTES]
        (logs_dir / step_log_name(index, str(steps[index].get("name", "")))).write_text(tail)
        sizes[str(index)] = int(entry.get("size") or 0) if isinstance(entry.get("size"), int) else len(tail.encode())
    files = [
        {"name": f["name"], "size": int(f.get("size") or 0)}
        for f in (details.get("files") or [])[:MAX_FILES]
        if isinstance(f, dict) and isinstance(f.get("name"), str) and FILE_NAME.match(f["name"]) and not f["name"].startswith(".")
        and isinstance(f.get("size", 0), int)
    ]
    runner_job_id = details.get("runner_job_id")
    manifest = {"runner": runner, "runner_job_id": runner_job_id if isinstance(runner_job_id, int) else None,
                "mirrored": isoformat(utcnow()), "log_sizes": sizes, "files": files, "limits": LIMITS}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return steps


def manifest(data_dir: Path, job_id: int, run: int) -> dict[str, Any] | None:
    """What was mirrored for an owner's job (None: nothing yet)."""
    try:
        return json.loads((run_dir(data_dir, job_id, run) / MANIFEST).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None
