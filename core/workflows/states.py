"""Job states and the one rule about them: within a run, a job's state only moves forward.

`pending` waits for the runner's confirmation (federation), `queued` waits for a free
worker, `scheduled` is handed to an executor, `running` has started its first step.
`finished`, `failed` and `aborted` end a run; a restart starts a new run (the old run's
logs stay). `deleted` hides a job for good.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    ABORTED = "aborted"
    DELETED = "deleted"


ORDER: dict[JobState, int] = {
    JobState.PENDING: 0,
    JobState.QUEUED: 1,
    JobState.SCHEDULED: 2,
    JobState.RUNNING: 3,
    JobState.FINISHED: 4,
    JobState.FAILED: 4,
    JobState.ABORTED: 4,
    JobState.DELETED: 5,
}

ENDED = frozenset({JobState.FINISHED, JobState.FAILED, JobState.ABORTED})
ACTIVE = frozenset({JobState.PENDING, JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING})
ALL_STATES = [s.value for s in JobState]


def predecessors(target: JobState) -> list[str]:
    """States a job may be in to move to `target` (strictly earlier ones; ended runs only to `deleted`)."""
    rank = ORDER[target]
    return [s.value for s, r in ORDER.items() if r < rank]


class StepState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    SKIPPED = "skipped"
