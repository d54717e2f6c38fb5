"""Helpers for workflow tests: a Vireo with the test DAGs in its DAGs folder, and waiting on jobs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx

TEST_DAGS = Path(__file__).resolve().parents[1] / "dags"


def dags_folder(target: Path) -> Path:
    """A DAGs folder holding the test DAGs (and one broken DAG file)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in TEST_DAGS.glob("*.py"):
        shutil.copy(path, target / path.name)
    return target


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/workflows", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_job(client: httpx.Client, job_id: int, states: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in states:
            return job  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job['status']}, not {states} after {timeout} s: {job}")
        time.sleep(0.05)


ENDED = {"finished", "failed", "aborted"}
