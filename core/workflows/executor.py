"""The interface between the engine and whatever runs jobs (local process pool or Dask)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from core.workflows.context import JobSpec

# (job id, run, kind, data): kind is started | step | progress | series_changed | ended
ReportSink = Callable[[int, int, str, dict[str, Any]], None]


class Executor(Protocol):
    name: str

    def start(self, sink: ReportSink) -> None:
        """Begin accepting jobs; every report of every job goes to `sink` (from any thread)."""

    def stop(self) -> None:
        """Kill running jobs and release resources."""

    def free_slots(self) -> int:
        """How many more jobs can start now."""

    def submit(self, spec: JobSpec) -> None:
        """Start the job; its reports follow, ending with exactly one `ended`."""

    def kill(self, job_id: int, run: int) -> None:
        """Stop a running job and everything it started (its `ended` report follows)."""
