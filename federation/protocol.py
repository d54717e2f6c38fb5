"""What travels in one sync, as typed models: a body that does not fit is refused with the reason, never half applied.

A signed body is still only as good as its sender's code: a proven peer can send a list where
an object belongs. Both sides parse the whole body first — the runner's request on the owner,
the owner's answer on the runner — and refuse it (400 / the peer marked failing) when it does
not fit, instead of failing half-way with a 500.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_JOBS_PER_SYNC = 2000
MAX_IDS = 100_000


class MalformedSync(ValueError):
    """A sync body (request or answer) that is not what the protocol says; the message says where."""


class PeerSettings(BaseModel):
    """What an instance tells its peers about itself at every sync."""

    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(None, max_length=128)
    allowed_dags: list[str] | None = Field(None, max_length=10_000)
    allowed_datasets: list[str] | None = Field(None, max_length=10_000)
    automatic_sync: bool | None = None
    automatic_execution: bool | None = None
    fernet_encryption: bool | None = None


class StatusUpdate(BaseModel):
    """One job's status from its runner: `job_id` is the owner's id, `runner_job_id` the runner's."""

    model_config = ConfigDict(extra="ignore")
    job_id: int
    runner_job_id: int | None = None
    status: str = Field(max_length=16)
    error: str | None = None
    result: Any = None
    details: dict[str, Any] | None = None  # steps, log tails, file list (federation.job_mirror)


class SyncRequest(BaseModel):
    """A runner's poll: its settings and the statuses of jobs the callee owns."""

    model_config = ConfigDict(extra="ignore")
    instance: PeerSettings = Field(default_factory=PeerSettings)
    updates: list[StatusUpdate] = Field(default_factory=list, max_length=MAX_IDS)


class OfferedJob(BaseModel):
    """A job the owner asks the runner to run."""

    model_config = ConfigDict(extra="ignore")
    id: int
    workflow_id: str = Field(max_length=64)
    workflow_name: str | None = Field(None, max_length=512)
    dag_id: str = Field(max_length=256)
    dataset: str | None = Field(None, max_length=512)
    conf: dict[str, Any] = Field(default_factory=dict)
    username: str | None = Field(None, max_length=256)
    timeout: float | None = None


class SyncAnswer(BaseModel):
    """The owner's answer: its settings, jobs for the runner, the updates it read, the jobs it aborted."""

    model_config = ConfigDict(extra="ignore")
    instance: PeerSettings = Field(default_factory=PeerSettings)
    jobs: list[OfferedJob] = Field(default_factory=list, max_length=MAX_JOBS_PER_SYNC)
    acknowledged: list[int] = Field(default_factory=list, max_length=MAX_IDS)
    aborted: list[int] = Field(default_factory=list, max_length=MAX_IDS)


def parse(model: type[BaseModel], payload: Any) -> Any:
    """`payload` as `model`, or MalformedSync naming the first few fields that do not fit."""
    if not isinstance(payload, dict):
        raise MalformedSync(f"the body must be a JSON object, not {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
        raise MalformedSync(f"the body does not fit the sync protocol ({problems})") from None
