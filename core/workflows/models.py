"""The workflow tables: `workflow` (one user request), `job` (one unit on one runner), `job_run` (past runs).

A workflow keeps the selection it was started on and the series that resolved to; it has no
stored status: that is derived from its jobs (one count per job state).
A job's `run` counts its runs; restarting archives the run that ended into `job_run` and
starts the next, so a run's state only ever moves forward and old logs stay on disk.
`runner_instance` / `owner_instance` / `external_job_id` carry federation (a job can run on
another instance than the one that owns its workflow); `role`, `parent_job_id`, `round` and
`result` carry federated orchestration (an orchestrator job and its per-round runner jobs).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, Column, ForeignKey, Index, String
from sqlmodel import Field, SQLModel

from core.timeutil import UTCDateTime, utcnow


def _when(nullable: bool = False, index: bool = False) -> Any:
    return Field(default_factory=None if nullable else utcnow, sa_type=UTCDateTime, nullable=nullable, index=index)


class Workflow(SQLModel, table=True):
    # the Workflow List's order: visible workflows, newest first
    __table_args__ = (Index("ix_workflow_deleted_created", "deleted", "created", "id"),)

    id: str = Field(primary_key=True, max_length=36, description="a UUID")
    name: str = Field(max_length=200, index=True)
    dag_id: str = Field(max_length=128, index=True)
    dataset: Optional[str] = Field(default=None, max_length=128)
    conf: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # what the workflow was asked to run on (core.selection.Selection as JSON: a search or picked series) and the
    # series that resolved to when it was started; None for workflows without input and for older rows
    selection: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON, nullable=True))
    series: Optional[list[str]] = Field(default=None, sa_column=Column(JSON, nullable=True))
    username: str = Field(default="", max_length=128, index=True)
    owner_instance: str = Field(default="", max_length=128)
    service: bool = Field(default=False, description="the platform's own background work")
    deleted: bool = False
    created: datetime = _when()
    updated: datetime = _when()


class Job(SQLModel, table=True):
    __table_args__ = (Index("ix_job_status_id", "status", "id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    workflow_id: str = Field(sa_column=Column(String(36), ForeignKey("workflow.id", ondelete="CASCADE"), nullable=False, index=True))
    dag_id: str = Field(max_length=128, index=True)
    status: str = Field(default="queued", max_length=16)
    run: int = Field(default=1, description="1 for the first run; a restart starts the next")
    conf: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    series: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False), description="input SeriesInstanceUIDs")
    dataset: Optional[str] = Field(default=None, max_length=128)
    username: str = Field(default="", max_length=128)
    runner_instance: str = Field(default="", max_length=128)
    owner_instance: str = Field(default="", max_length=128)
    external_job_id: Optional[int] = Field(default=None, description="this job's id on the other instance (federation)")
    timeout: Optional[float] = Field(default=None, description="seconds a run may take")
    progress_done: int = 0
    progress_total: int = 0
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    error: str = Field(default="", max_length=4000)
    # federated orchestration: the orchestrator job ("orchestrator") creates one job per runner and round ("runner")
    role: str = Field(default="", max_length=16, sa_column_kwargs={"server_default": ""})
    parent_job_id: Optional[int] = Field(default=None, index=True, description="a round job's orchestrator job")
    round: Optional[int] = Field(default=None, description="a round job's round (1, 2, …)")
    result: Optional[Any] = Field(default=None, sa_column=Column(JSON, nullable=True), description="what a job hands back (JSON)")
    created: datetime = _when()
    updated: datetime = _when()
    started: Optional[datetime] = _when(nullable=True)
    ended: Optional[datetime] = _when(nullable=True)


class JobRun(SQLModel, table=True):
    """A run of a job that was restarted: its end state, times and steps (its logs stay in its run folder)."""

    __tablename__ = "job_run"
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(sa_column=Column(ForeignKey("job.id", ondelete="CASCADE"), nullable=False, index=True))
    run: int
    status: str = Field(max_length=16)
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    error: str = Field(default="", max_length=4000)
    started: Optional[datetime] = _when(nullable=True)
    ended: Optional[datetime] = _when(nullable=True)
