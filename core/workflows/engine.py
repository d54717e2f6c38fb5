"""The workflow engine: creates workflows and jobs, schedules queued jobs, follows them to their end.

Only the engine changes a job's state, and every change is one conditional UPDATE
(`... WHERE status IN (earlier states) AND run = :run`): an abort and a job's own end can
race, and whichever comes second finds the state already moved on and changes nothing.
Every change is also published on the event bus, which is how pages learn of it.

One scheduler thread starts queued jobs while the executor has free slots, respecting each
DAG's `max_active`, and fails jobs that overrun their timeout. Reports from running jobs
arrive on the executor's monitor thread.

A federated DAG's workflow gets one orchestrator job (`role` "orchestrator"). It never goes
to the executor: when the scheduler picks it up it is `running` and handed to the
orchestration (federation plugs it in as `orchestrator_started`), which adds the runners'
jobs round by round (`add_round_jobs`) and ends it with the merged result.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from core.background import WakeableLoop
from core.db import Database
from core.events import JOB_CHANGED, SERIES_CHANGED, SERIES_DELETED, THUMBNAIL_READY, WORKFLOW_CHANGED, EventBus
from core.selection import Selection, SeriesResolver
from core.timeutil import utcnow
from core.workflows.context import RESULT_FILE, JobSpec, job_dir, run_dir
from core.workflows.dag import ConfigError, Dag, DagInput
from core.workflows.errors import WorkflowError
from core.workflows.executor import Executor
from core.workflows.inputs import dataset_uids, input_selection, input_series
from core.workflows.models import Job, JobRun, Workflow
from core.workflows.registry import DagRegistry, UnknownDag
from core.workflows.states import ENDED, JobState, StepState, predecessors

log = logging.getLogger(__name__)

ROLE_ORCHESTRATOR = "orchestrator"
ROLE_RUNNER = "runner"


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    """The action does not fit the job's current state (e.g. restarting a running job)."""


@dataclass
class RemoteJob:
    """A job another instance (its owner) asks this one to run, as the runner stores it."""

    external_job_id: int
    workflow_id: str
    workflow_name: str
    dag_id: str
    dataset: str | None
    series: list[str]
    conf: dict[str, Any]
    username: str
    status: JobState
    error: str = ""
    timeout: float | None = None


@dataclass(frozen=True)
class EngineConfig:
    data_dir: Path
    database_url: str
    instance_name: str


@dataclass
class _Active:
    """A job handed to the executor, until the executor releases it."""

    job_id: int
    run: int
    workflow_id: str
    dag_id: str
    deadline: float | None
    timeout: float | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    submitted: bool = False
    stopping: str | None = None  # "aborted" or "timeout" once the engine ended it


def close_steps(steps: list[dict[str, Any]], state: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Steps of a run that ended: a running step gets `state`, steps that never ran are skipped."""
    stamp = (now or utcnow()).isoformat().replace("+00:00", "Z")
    closed = []
    for step in steps:
        step = dict(step)
        if step.get("state") == StepState.RUNNING:
            step.update(state=state, ended=stamp)
        elif step.get("state") == StepState.WAITING:
            step["state"] = StepState.SKIPPED
        closed.append(step)
    return closed


def stop_orphan(folder: Path) -> None:
    """Kill the process group of a job a previous Vireo left behind (if it still runs and is one of ours)."""
    try:
        pid = int((folder / "pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if os.getpgid(pid) == pid and (b"multiprocessing" in cmdline or b"core.workflows" in cmdline):
            os.killpg(pid, signal.SIGKILL)
            log.warning("killed job process %d left by the previous run", pid)
    except (OSError, ValueError):
        pass


class WorkflowEngine:
    def __init__(self, db: Database, bus: EventBus, registry: DagRegistry, config: EngineConfig, executor: Executor) -> None:
        self.db = db
        self.bus = bus
        self.registry = registry
        self.config = config
        self.executor = executor
        self._active: dict[int, _Active] = {}
        self._lock = threading.RLock()
        self._scheduler = WakeableLoop("vireo-scheduler", self._tick, "scheduling failed")
        self._outbox = threading.local()
        # Federation plugs in here (core knows no instances): `remote_runner_refusal(runner, dag_id, dataset)`
        # says why a remote may not run a job (None: it may; unset: no remotes), `admission(job)` why a job that
        # another instance owns may not start now (the runner's permissions, checked right before running).
        self.remote_runner_refusal: Callable[[str, str, str | None], str | None] | None = None
        self.admission: Callable[[Any], str | None] | None = None
        # `orchestrator_started(job_id, run)`: a federated workflow's orchestrator job is running (unset: not available).
        self.orchestrator_started: Callable[[int, int], None] | None = None
        # The series search (the composition root plugs it in): resolves a selection that is a search to series.
        self.search: SeriesResolver | None = None

    @property
    def instance_name(self) -> str:
        return self.config.instance_name

    # ---- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Fail runs a previous process left running, then start scheduling (queued jobs go on)."""
        self.recover()
        self.executor.start(self._on_report)
        self._scheduler.start()

    def stop(self) -> None:
        self._scheduler.stop()
        with self._lock:
            active = list(self._active.values())
        self.executor.stop()
        if active:
            with self._tx() as conn:
                for job in active:
                    self._end(conn, job.job_id, job.run, JobState.FAILED, "interrupted by restart", job.steps)

    def recover(self) -> int:
        """Jobs a previous Vireo left scheduled or running are failed ("interrupted by restart") and restartable."""
        with self._tx() as conn:
            rows = conn.execute(
                select(Job.id, Job.run, Job.steps).where(
                    Job.status.in_([JobState.SCHEDULED.value, JobState.RUNNING.value]),  # type: ignore[attr-defined]
                    Job.runner_instance == self.instance_name,
                    Job.role != ROLE_ORCHESTRATOR,  # its state is in the database: the orchestration resumes it
                )
            ).all()
            for job_id, run, steps in rows:
                self._end(conn, job_id, run, JobState.FAILED, "interrupted by restart", steps or [])
                stop_orphan(run_dir(self.config.data_dir, job_id, run))
        if rows:
            log.warning("%d jobs were interrupted by the restart; they are failed and can be restarted", len(rows))
        return len(rows)

    # ---- creating ------------------------------------------------------------------------
    def create_workflow(
        self,
        *,
        dag_id: str,
        name: str = "",
        dataset: str | None = None,
        series: list[str] | None = None,
        selection: Selection | None = None,
        conf: dict[str, Any] | None = None,
        runners: list[str] | None = None,
        username: str = "",
        service: bool | None = None,
        timeout: float | None = None,
    ) -> str:
        """Validate the request and create the workflow with its jobs (queued locally); returns its id.

        The input is a `selection` (picked series, or dataset + query + filters), or the older `dataset`
        or `series`, which are the same as a selection of a whole dataset or of those series.
        """
        self.registry.refresh()  # a DAG file dropped into the folder a moment ago
        try:
            dag = self.registry.get(dag_id)
        except UnknownDag as exc:
            raise WorkflowError(str(exc)) from exc
        try:
            validated = dag.validate_conf(conf)
        except ConfigError as exc:
            raise WorkflowError(str(exc), exc.errors) from exc
        chosen = input_selection(dag, dataset, series, selection)
        dataset = chosen.dataset if chosen is not None else None
        runners = list(dict.fromkeys(runners or [self.instance_name]))
        remote = [r for r in runners if r != self.instance_name]
        if remote and self.remote_runner_refusal is None:
            raise WorkflowError(f"unknown runner instance(s): {', '.join(remote)} (this instance is {self.instance_name!r})")
        for runner in remote:
            if chosen is not None and not chosen.whole_dataset:
                if chosen.searches:
                    raise WorkflowError(f"remote runner {runner!r} resolves a dataset by name on its own data: it cannot take a search "
                                        f"({chosen.describe()}); make a dataset of the matching series first")
                raise WorkflowError(f"remote runner {runner!r} needs a dataset by name: series UIDs of another site are not known here")
            refusal = self.remote_runner_refusal(runner, dag.dag_id, dataset)  # type: ignore[misc]
            if refusal:
                raise WorkflowError(refusal)
        if timeout is not None and timeout <= 0:
            raise WorkflowError("timeout must be a positive number of seconds")
        if dag.federated:
            if timeout is not None:
                raise WorkflowError(f"{dag.dag_id} is federated: set the round timeout as conf.timeout (seconds)")
            return self._create_federated(dag, validated, name, chosen, runners, username)
        workflow_id = str(uuid.uuid4())
        now = utcnow()
        with self.db.session() as session:
            local_runners = [r for r in runners if r == self.instance_name]
            uids = input_series(session, chosen, self.search) if local_runners else []
            stored_conf = validated.model_dump(mode="json")
            workflow = Workflow(
                id=workflow_id,
                name=(name or "").strip()[:200] or f"{dag.dag_id}-{now:%Y%m%d-%H%M%S}",
                dag_id=dag.dag_id,
                dataset=dataset,
                conf=stored_conf,
                selection=chosen.to_json() if chosen is not None else None,
                series=uids if chosen is not None and local_runners else None,  # remote runners resolve the dataset themselves
                username=username,
                owner_instance=self.instance_name,
                service=dag.service if service is None else service,
                created=now,
                updated=now,
            )
            session.add(workflow)
            session.flush()  # no ORM relationship orders the inserts: the workflow row goes first
            groups = [[uid] for uid in uids] if dag.input is DagInput.SERIES else [uids]
            jobs = [
                Job(
                    workflow_id=workflow_id, dag_id=dag.dag_id, status=JobState.QUEUED.value, conf=stored_conf, series=group,
                    dataset=dataset, username=username, runner_instance=runner, owner_instance=self.instance_name,
                    timeout=timeout if timeout is not None else dag.timeout, created=now, updated=now,
                )
                for runner in local_runners
                for group in groups
            ]
            # A remote runner gets one job for the dataset by name and resolves its series itself; the job is
            # `pending` here until the runner reports it took it (queued) or waits for its admin's Confirm.
            jobs += [
                Job(
                    workflow_id=workflow_id, dag_id=dag.dag_id, status=JobState.PENDING.value, conf=stored_conf, series=[],
                    dataset=dataset, username=username, runner_instance=runner, owner_instance=self.instance_name,
                    timeout=timeout if timeout is not None else dag.timeout, created=now, updated=now,
                )
                for runner in remote
            ]
            session.add_all(jobs)
            session.flush()
            job_ids = [(j.id, j.status) for j in jobs]
        self.bus.publish(WORKFLOW_CHANGED, workflow_id=workflow_id)
        for job_id, status in job_ids:
            self.bus.publish(JOB_CHANGED, job_id=job_id, workflow_id=workflow_id, status=status, progress_done=0, progress_total=0)
        self.wake()
        return workflow_id

    def _create_federated(self, dag: Dag, validated: Any, name: str, chosen: Selection | None, runners: list[str], username: str) -> str:
        """A federated workflow: one orchestrator job here; the runners' jobs come round by round."""
        if self.orchestrator_started is None:
            raise WorkflowError("federated orchestration is not available on this instance")
        if chosen is not None and chosen.explicit:
            raise WorkflowError(f"{dag.dag_id} is federated: give a dataset by name (each runner resolves it on its own data), not series UIDs")
        if chosen is not None and chosen.searches:
            raise WorkflowError(f"{dag.dag_id} is federated: give a dataset by name (each runner resolves it on its own data), not a search")
        dataset = chosen.dataset if chosen is not None else None
        if dag.input is not DagInput.NONE and not dataset:
            raise WorkflowError(f"{dag.dag_id} is federated and needs a dataset by name (each runner resolves it on its own data)")
        min_runners = getattr(validated, "min_runners", None)
        if min_runners is not None and min_runners > len(runners):
            raise WorkflowError(f"min_runners is {min_runners}, but only {len(runners)} runner(s) were chosen")
        workflow_id = str(uuid.uuid4())
        now = utcnow()
        stored_conf = validated.model_dump(mode="json")
        with self.db.session() as session:
            session.add(Workflow(
                id=workflow_id, name=(name or "").strip()[:200] or f"{dag.dag_id}-{now:%Y%m%d-%H%M%S}", dag_id=dag.dag_id, dataset=dataset,
                conf=stored_conf, selection=chosen.to_json() if chosen is not None else None, username=username, owner_instance=self.instance_name,
                service=False, created=now, updated=now,
            ))
            session.flush()
            job = Job(
                workflow_id=workflow_id, dag_id=dag.dag_id, status=JobState.QUEUED.value, conf=stored_conf, series=[], dataset=dataset,
                username=username, runner_instance=self.instance_name, owner_instance=self.instance_name, role=ROLE_ORCHESTRATOR,
                result={"runners": runners}, created=now, updated=now,
            )
            session.add(job)
            session.flush()
            job_id = job.id
        self.bus.publish(WORKFLOW_CHANGED, workflow_id=workflow_id)
        self.bus.publish(JOB_CHANGED, job_id=job_id, workflow_id=workflow_id, status=JobState.QUEUED.value, progress_done=0, progress_total=0)
        self.wake()
        return workflow_id

    def add_round_jobs(self, parent_id: int, round_: int, runners: list[tuple[str, dict[str, Any]]], timeout: float | None) -> dict[str, int]:
        """One job per (runner, conf) for round `round_` of an orchestrator job; {runner: job id}.

        The local runner's job is queued with the dataset's series resolved now (or failed with
        the reason); a remote runner's job is `pending` until that runner pulls it.
        """
        ids: dict[str, int] = {}
        with self._tx() as conn:
            parent = conn.execute(select(Job.workflow_id, Job.dag_id, Job.dataset, Job.username).where(Job.id == parent_id)).first()
            if parent is None:
                raise NotFound(f"no job {parent_id}")
            dag = self.registry.get(parent.dag_id)
            now = utcnow()
            for runner, conf in runners:
                status, error, uids = JobState.PENDING, "", []
                if runner == self.instance_name:
                    status = JobState.QUEUED
                    if dag.input is not DagInput.NONE:
                        try:
                            uids = dataset_uids(conn, parent.dataset)
                        except WorkflowError as exc:
                            status, error = JobState.FAILED, str(exc)
                job_id = int(conn.execute(insert(Job).values(
                    workflow_id=parent.workflow_id, dag_id=parent.dag_id, status=status.value, run=1, conf=conf, series=uids,
                    dataset=parent.dataset, username=parent.username, runner_instance=runner, owner_instance=self.instance_name,
                    timeout=timeout, progress_done=0, progress_total=0, steps=[], error=error, role=ROLE_RUNNER, parent_job_id=parent_id,
                    round=round_, created=now, updated=now, ended=now if status in ENDED else None,
                )).inserted_primary_key[0])
                ids[runner] = job_id
                self._after_commit(conn, job_id, parent.workflow_id, status.value)
            conn.execute(update(Workflow).where(Workflow.id == parent.workflow_id).values(updated=now))  # type: ignore[arg-type]
        self.wake()
        return ids

    def update_orchestrator(self, job_id: int, run: int, result: Any, steps: list[dict[str, Any]]) -> bool:
        """Keep a running orchestrator job's state (its `result`: rounds so far) and steps; False once it ended."""
        with self._tx() as conn:
            moved = conn.execute(
                update(Job).where(Job.id == job_id, Job.run == run, Job.status == JobState.RUNNING.value)  # type: ignore[arg-type]
                .values(result=result, steps=steps, updated=utcnow())
            ).rowcount
            if moved:
                workflow_id = conn.execute(select(Job.workflow_id).where(Job.id == job_id)).scalar_one()
                self._after_commit(conn, job_id, workflow_id, JobState.RUNNING.value)
        return bool(moved)

    def end_orchestrator(self, job_id: int, run: int, status: JobState, error: str, result: Any, steps: list[dict[str, Any]]) -> bool:
        """End a running orchestrator job with its final result (forward-only, as every end)."""
        with self._tx() as conn:
            return self._end(conn, job_id, run, status, error, steps, result=result)

    def adopt_remote_jobs(self, owner: str, jobs: list[RemoteJob]) -> list[tuple[int, bool]]:
        """Store jobs another instance asked this one to run, in one transaction; (job id, created) for each.

        Idempotent per (owner, external id): a job delivered again (its owner missed our report) is not stored twice.
        """
        adopted: list[tuple[int, bool]] = []
        with self._tx() as conn:
            known = dict(
                conn.execute(
                    select(Job.external_job_id, Job.id).where(
                        Job.owner_instance == owner, Job.external_job_id.in_([j.external_job_id for j in jobs])  # type: ignore[union-attr]
                    )
                ).all()
            )
            workflows = set(conn.execute(select(Workflow.id).where(Workflow.id.in_({j.workflow_id for j in jobs}))).scalars())  # type: ignore[attr-defined]
            now = utcnow()
            for job in jobs:
                if job.external_job_id in known:
                    adopted.append((int(known[job.external_job_id]), False))
                    continue
                if job.workflow_id not in workflows:
                    conn.execute(
                        insert(Workflow).values(
                            id=job.workflow_id, name=job.workflow_name[:200] or job.dag_id, dag_id=job.dag_id, dataset=job.dataset,
                            conf=job.conf, username=job.username, owner_instance=owner, service=False, deleted=False, created=now, updated=now,
                        )
                    )
                    workflows.add(job.workflow_id)
                job_id = conn.execute(
                    insert(Job).values(
                        workflow_id=job.workflow_id, dag_id=job.dag_id, status=job.status.value, run=1, conf=job.conf, series=job.series,
                        dataset=job.dataset, username=job.username, runner_instance=self.instance_name, owner_instance=owner,
                        external_job_id=job.external_job_id, timeout=job.timeout, progress_done=0, progress_total=0, steps=[],
                        error=job.error[:4000], created=now, updated=now, ended=now if job.status in ENDED else None,
                    )
                ).inserted_primary_key[0]
                known[job.external_job_id] = job_id
                adopted.append((int(job_id), True))
                self._after_commit(conn, int(job_id), job.workflow_id, job.status.value)
        self.wake()
        return adopted

    def dataset_series(self, dataset: str) -> list[str]:
        """The series of a local dataset, by name (a remote job names its dataset; the runner resolves it here)."""
        with self.db.session() as session:
            return dataset_uids(session, dataset)

    # ---- service jobs: work the platform does itself, shown as jobs ----------------------
    def record_service_job(self, dag_id: str, series: list[str], steps: list[str]) -> int:
        """A `running` job in today's service workflow of `dag_id`, for work done outside the executor.

        The service updates and ends it (`update_service_job`, `end_service_job`); a restart
        runs the DAG itself through the executor.
        """
        dag = self.registry.get(dag_id)
        now = utcnow()
        workflow_id = self._service_workflow(dag, now)
        first = [{"name": name, "state": (StepState.RUNNING if i == 0 else StepState.WAITING).value,
                  **({"started": now.isoformat().replace("+00:00", "Z")} if i == 0 else {})} for i, name in enumerate(steps)]
        with self._tx() as conn:
            job_id = conn.execute(
                Job.__table__.insert().values(  # type: ignore[attr-defined]
                    workflow_id=workflow_id, dag_id=dag_id, status=JobState.RUNNING.value, run=1, conf={}, series=series, dataset=None,
                    username="system", runner_instance=self.instance_name, owner_instance=self.instance_name, progress_done=0,
                    progress_total=len(series), steps=first, error="", created=now, updated=now, started=now,
                )
            ).inserted_primary_key[0]
            conn.execute(update(Workflow).where(Workflow.id == workflow_id).values(updated=now))  # type: ignore[arg-type]
        self._publish(job_id, workflow_id, JobState.RUNNING.value, 0, len(series))
        return int(job_id)

    def _service_workflow(self, dag: Dag, now: datetime) -> str:
        """Today's service workflow of a DAG (one a day keeps each one's job list short)."""
        day = now.strftime("%Y-%m-%d")
        workflow_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"vireo:{self.instance_name}:{dag.dag_id}:{day}"))
        with self.db.engine.connect() as conn:
            if conn.execute(select(Workflow.id).where(Workflow.id == workflow_id)).first() is not None:
                return workflow_id
        try:
            with self.db.engine.begin() as conn:
                conn.execute(Workflow.__table__.insert().values(  # type: ignore[attr-defined]
                    id=workflow_id, name=f"{dag.dag_id}-{day}", dag_id=dag.dag_id, dataset=None, conf={}, username="system",
                    owner_instance=self.instance_name, service=True, deleted=False, created=now, updated=now,
                ))
        except Exception:  # created at the same moment by another thread
            with self.db.engine.connect() as conn:
                if conn.execute(select(Workflow.id).where(Workflow.id == workflow_id)).first() is None:
                    raise
        self.bus.publish(WORKFLOW_CHANGED, workflow_id=workflow_id)
        return workflow_id

    def update_service_job(self, job_id: int, **values: Any) -> bool:
        """Change a running service job's series, steps or progress; False once it ended (e.g. aborted)."""
        with self._tx() as conn:
            row = conn.execute(select(Job.workflow_id).where(Job.id == job_id)).first()
            if row is None:
                return False
            moved = conn.execute(
                update(Job).where(Job.id == job_id, Job.status == JobState.RUNNING.value).values(updated=utcnow(), **values)  # type: ignore[arg-type]
            ).rowcount
        if moved:
            self._publish(job_id, row.workflow_id, JobState.RUNNING.value, values.get("progress_done"), values.get("progress_total"))
        return bool(moved)

    def end_service_job(self, job_id: int, status: JobState, error: str = "", steps: list[dict[str, Any]] | None = None) -> bool:
        with self._tx() as conn:
            row = conn.execute(select(Job.run, Job.steps).where(Job.id == job_id)).first()
            if row is None:
                return False
            return self._end(conn, job_id, row.run, status, error, steps if steps is not None else row.steps)

    # ---- actions on jobs -----------------------------------------------------------------
    def _job(self, conn: Connection, job_id: int) -> Any:
        row = conn.execute(select(Job.id, Job.run, Job.status, Job.workflow_id, Job.steps).where(Job.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    def abort_job(self, job_id: int) -> None:
        """Abort a job: queued ones never start, running ones are killed (their whole process tree)."""
        with self._lock:
            with self._tx() as conn:
                row = self._job(conn, job_id)
                if row.status in ENDED or row.status == JobState.DELETED:
                    return
                active = self._active.get(job_id)
                steps = active.steps if active is not None and active.run == row.run else row.steps or []
                ended = self._end(conn, job_id, row.run, JobState.ABORTED, "aborted", steps)
            if ended and active is not None and active.run == row.run:
                active.stopping = "aborted"
                if active.submitted:
                    self.executor.kill(job_id, row.run)

    def restart_job(self, job_id: int) -> None:
        """Start a new run of an ended job; the old run's logs and record stay."""
        with self._tx() as conn:
            job = conn.execute(
                select(Job.run, Job.status, Job.steps, Job.error, Job.started, Job.ended, Job.workflow_id, Job.role, Job.result).where(Job.id == job_id)
            ).first()
            if job is None:
                raise NotFound(f"no job {job_id}")
            if job.status not in ENDED:
                raise Conflict(f"job {job_id} is {job.status}: only finished, failed or aborted jobs can be restarted")
            conn.execute(
                JobRun.__table__.insert().values(  # type: ignore[attr-defined]
                    job_id=job_id, run=job.run, status=job.status, steps=job.steps, error=job.error, started=job.started, ended=job.ended
                )
            )
            moved = conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.run == job.run, Job.status == job.status)  # type: ignore[arg-type]
                .values(run=job.run + 1, status=JobState.QUEUED.value, steps=[], progress_done=0, progress_total=0, error="",
                        started=None, ended=None, updated=utcnow(),
                        # an orchestrator keeps only its runners: the new run starts again from round 1
                        result={"runners": (job.result or {}).get("runners", [])} if job.role == ROLE_ORCHESTRATOR else None)
            ).rowcount
            if not moved:
                raise Conflict(f"job {job_id} changed meanwhile; try again")
            workflow_id = job.workflow_id
        self._touch_workflow(workflow_id)
        self._publish(job_id, workflow_id, JobState.QUEUED.value, 0, 0)
        self.wake()

    def confirm_job(self, job_id: int) -> None:
        """A runner confirms a pending job (federation without automatic execution): it is queued."""
        with self._tx() as conn:
            row = self._job(conn, job_id)
            if row.status != JobState.PENDING:
                raise Conflict(f"job {job_id} is {row.status}: only pending jobs are confirmed")
            self._transition(conn, job_id, row.run, JobState.QUEUED)
        self._publish(job_id, row.workflow_id, JobState.QUEUED.value)
        self.wake()

    def delete_job(self, job_id: int) -> None:
        """Abort the job if it is active, hide it (`deleted`) and remove its work dir; PACS data is never touched."""
        self.abort_job(job_id)
        deadline = time.monotonic() + 3.0
        while job_id in self._active and time.monotonic() < deadline:  # let an aborted job's processes finish dying
            time.sleep(0.02)
        with self._tx() as conn:
            row = self._job(conn, job_id)
            if row.status != JobState.DELETED:
                self._transition(conn, job_id, None, JobState.DELETED)
            workflow_id = row.workflow_id
            visible = conn.execute(
                select(func.count()).select_from(Job).where(Job.workflow_id == workflow_id, Job.status != JobState.DELETED.value)
            ).scalar_one()
            if not visible:
                conn.execute(update(Workflow).where(Workflow.id == workflow_id).values(deleted=True, updated=utcnow()))  # type: ignore[arg-type]
        shutil.rmtree(job_dir(self.config.data_dir, job_id), ignore_errors=True)
        self._publish(job_id, workflow_id, JobState.DELETED.value)

    # ---- actions on workflows ------------------------------------------------------------
    def _workflow_jobs(self, workflow_id: str) -> list[tuple[int, str]]:
        with self.db.engine.connect() as conn:
            if conn.execute(select(Workflow.id).where(Workflow.id == workflow_id)).first() is None:
                raise NotFound(f"no workflow {workflow_id}")
            return [(r[0], r[1]) for r in conn.execute(select(Job.id, Job.status).where(Job.workflow_id == workflow_id).order_by(Job.id))]

    def abort_workflow(self, workflow_id: str) -> None:
        """Abort every job of the workflow: waiting ones in one statement, running ones one by one."""
        jobs = self._workflow_jobs(workflow_id)
        waiting = [job_id for job_id, status in jobs if status in (JobState.PENDING, JobState.QUEUED)]
        if waiting:
            now = utcnow()
            with self._tx() as conn:
                for start in range(0, len(waiting), 500):
                    conn.execute(
                        update(Job)
                        .where(Job.id.in_(waiting[start : start + 500]), Job.status.in_([JobState.PENDING.value, JobState.QUEUED.value]))  # type: ignore[union-attr, attr-defined]
                        .values(status=JobState.ABORTED.value, error="aborted", ended=now, updated=now)
                    )
                conn.execute(update(Workflow).where(Workflow.id == workflow_id).values(updated=now))  # type: ignore[arg-type]
            for job_id in waiting:
                self._publish(job_id, workflow_id, JobState.ABORTED.value)
        for job_id, status in jobs:
            if status in (JobState.SCHEDULED, JobState.RUNNING):
                self.abort_job(job_id)

    def restart_workflow(self, workflow_id: str) -> None:
        """Restart every ended job of the workflow (running ones carry on).

        A federated workflow restarts its orchestrator only: it creates the runners' jobs afresh.
        """
        with self.db.engine.connect() as conn:
            round_jobs = set(conn.execute(select(Job.id).where(Job.workflow_id == workflow_id, Job.role == ROLE_RUNNER)).scalars())
        jobs = [job_id for job_id, status in self._workflow_jobs(workflow_id) if status in ENDED and job_id not in round_jobs]
        if not jobs:
            raise Conflict(f"workflow {workflow_id} has no finished, failed or aborted jobs to restart")
        for job_id in jobs:
            self.restart_job(job_id)

    def delete_workflow(self, workflow_id: str) -> None:
        """Abort what runs, then hide every job and the workflow and remove the jobs' work dirs."""
        self.abort_workflow(workflow_id)
        jobs = [job_id for job_id, status in self._workflow_jobs(workflow_id) if status != JobState.DELETED]
        deadline = time.monotonic() + 3.0
        while any(job_id in self._active for job_id in jobs) and time.monotonic() < deadline:
            time.sleep(0.02)
        now = utcnow()
        with self._tx() as conn:
            for start in range(0, len(jobs), 500):
                conn.execute(
                    update(Job).where(Job.id.in_(jobs[start : start + 500]), Job.status != JobState.DELETED.value)  # type: ignore[union-attr]
                    .values(status=JobState.DELETED.value, updated=now)
                )
        for job_id in jobs:
            shutil.rmtree(job_dir(self.config.data_dir, job_id), ignore_errors=True)
            self._publish(job_id, workflow_id, JobState.DELETED.value)
        with self._tx() as conn:
            conn.execute(update(Workflow).where(Workflow.id == workflow_id).values(deleted=True, updated=utcnow()))  # type: ignore[arg-type]
        self.bus.publish(WORKFLOW_CHANGED, workflow_id=workflow_id)

    # ---- state changes -------------------------------------------------------------------
    def _transition(self, conn: Connection, job_id: int, run: int | None, target: JobState, **values: Any) -> bool:
        """Move a job (in run `run`, or any run) to `target` if it is in an earlier state; True if it moved."""
        condition = [Job.id == job_id, Job.status.in_(predecessors(target))]  # type: ignore[attr-defined]
        if run is not None:
            condition.append(Job.run == run)
        result = conn.execute(update(Job).where(*condition).values(status=target.value, updated=utcnow(), **values))
        return bool(result.rowcount)

    def _end(self, conn: Connection, job_id: int, run: int, target: JobState, error: str, steps: list[dict[str, Any]], **values: Any) -> bool:
        step_state = {JobState.FINISHED: StepState.FINISHED, JobState.ABORTED: "aborted"}.get(target, StepState.FAILED)
        now = utcnow()
        moved = self._transition(conn, job_id, run, target, error=error[:4000], ended=now, steps=close_steps(steps, step_state, now), **values)
        if moved:
            workflow_id = conn.execute(select(Job.workflow_id).where(Job.id == job_id)).scalar_one()
            conn.execute(update(Workflow).where(Workflow.id == workflow_id).values(updated=now))  # type: ignore[arg-type]
            self._after_commit(conn, job_id, workflow_id, target.value)
        return moved

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A transaction whose job changes are published once it committed (subscribers read the database)."""
        outbox: list[tuple[int, str, str]] = []
        self._outbox.stack = [*getattr(self._outbox, "stack", []), outbox]
        try:
            with self.db.engine.begin() as conn:
                yield conn
        finally:
            self._outbox.stack = self._outbox.stack[:-1]
        for job_id, workflow_id, status in outbox:
            self._publish(job_id, workflow_id, status)

    def _after_commit(self, conn: Connection, job_id: int, workflow_id: str, status: str) -> None:
        stack = getattr(self._outbox, "stack", None)
        if stack:
            stack[-1].append((job_id, workflow_id, status))
        else:
            self._publish(job_id, workflow_id, status)

    def _publish(self, job_id: int, workflow_id: str, status: str, done: int | None = None, total: int | None = None) -> None:
        self.bus.publish(JOB_CHANGED, job_id=job_id, workflow_id=workflow_id, status=status, progress_done=done, progress_total=total)
        self.bus.publish(WORKFLOW_CHANGED, workflow_id=workflow_id)

    def _touch_workflow(self, workflow_id: str) -> None:
        with self._tx() as conn:
            conn.execute(update(Workflow).where(Workflow.id == workflow_id).values(updated=utcnow()))  # type: ignore[arg-type]

    # ---- scheduling ----------------------------------------------------------------------
    def wake(self) -> None:
        self._scheduler.wake()

    def _tick(self) -> None:
        self._check_timeouts()
        self._schedule()

    def _start_orchestrators(self) -> None:
        """Queued orchestrator jobs run here, not in the executor: `running`, then handed to the orchestration."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(Job.id, Job.run, Job.workflow_id).where(
                Job.status == JobState.QUEUED.value, Job.runner_instance == self.instance_name, Job.role == ROLE_ORCHESTRATOR
            ).order_by(Job.id)).all()
        for row in rows:
            with self._tx() as conn:
                if self.orchestrator_started is None:
                    self._end(conn, row.id, row.run, JobState.FAILED, "federated orchestration is not available on this instance", [])
                    continue
                if not self._transition(conn, row.id, row.run, JobState.RUNNING, started=utcnow()):
                    continue
                self._after_commit(conn, row.id, row.workflow_id, JobState.RUNNING.value)
            self.orchestrator_started(row.id, row.run)

    def _schedule(self) -> None:
        self._start_orchestrators()
        free = self.executor.free_slots()
        if free <= 0:
            return
        with self._lock:
            busy: dict[str, int] = {}
            for job in self._active.values():
                busy[job.dag_id] = busy.get(job.dag_id, 0) + 1
        full = [dag_id for dag_id, n in busy.items() if n >= (self._max_active(dag_id) or n + 1)]
        query = select(Job.id, Job.run, Job.dag_id, Job.workflow_id, Job.conf, Job.series, Job.dataset, Job.username, Job.timeout, Job.owner_instance).where(
            Job.status == JobState.QUEUED.value, Job.runner_instance == self.instance_name, Job.role != ROLE_ORCHESTRATOR
        )
        if full:
            query = query.where(Job.dag_id.not_in(full))  # type: ignore[attr-defined]
        with self.db.engine.connect() as conn:
            rows = conn.execute(query.order_by(Job.id).limit(free * 4 + 10)).all()
        for row in rows:
            if free <= 0 or self._scheduler.stopping:
                break
            try:
                dag = self.registry.get(row.dag_id)
            except UnknownDag:
                with self._tx() as conn:
                    self._end(conn, row.id, row.run, JobState.FAILED, f"DAG {row.dag_id!r} is no longer available", [])
                continue
            if dag.max_active is not None and busy.get(dag.dag_id, 0) >= dag.max_active:
                continue
            refusal = self.admission(row) if self.admission is not None and row.owner_instance != self.instance_name else None
            if refusal:
                with self._tx() as conn:
                    self._end(conn, row.id, row.run, JobState.FAILED, refusal, [])
                continue
            if self._start(row, dag):
                busy[dag.dag_id] = busy.get(dag.dag_id, 0) + 1
                free -= 1
        if rows and free > 0 and len(rows) == free * 4 + 10:
            self.wake()

    def _max_active(self, dag_id: str) -> int | None:
        try:
            return self.registry.get(dag_id).max_active
        except UnknownDag:
            return None

    def _start(self, row: Any, dag: Dag) -> bool:
        spec = JobSpec(
            job_id=row.id, run=row.run, workflow_id=row.workflow_id, dag_id=dag.dag_id, dag_source=dag.source, conf=row.conf,
            series=list(row.series or []), dataset=row.dataset, username=row.username, data_dir=str(self.config.data_dir.resolve()),
            database_url=self.config.database_url, instance_name=self.instance_name,
        )
        with self._lock:
            with self._tx() as conn:
                if not self._transition(conn, row.id, row.run, JobState.SCHEDULED):
                    return False
            deadline = time.monotonic() + row.timeout if row.timeout else None
            active = _Active(row.id, row.run, row.workflow_id, dag.dag_id, deadline, row.timeout)
            self._active[row.id] = active
            self._publish(row.id, row.workflow_id, JobState.SCHEDULED.value)
            try:
                self.executor.submit(spec)
                active.submitted = True
            except Exception as exc:
                log.exception("job %d could not be started", row.id)
                self._active.pop(row.id, None)
                with self._tx() as conn:
                    self._end(conn, row.id, row.run, JobState.FAILED, f"could not be started: {exc}", [])
                return False
        return True

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        with self._lock:
            overdue = [a for a in self._active.values() if a.deadline is not None and now >= a.deadline and a.stopping is None]
        for active in overdue:
            with self._lock:
                active.stopping = "timeout"
                with self._tx() as conn:
                    self._end(conn, active.job_id, active.run, JobState.FAILED, f"timed out after {active.timeout:g} s", active.steps)
                self.executor.kill(active.job_id, active.run)

    # ---- reports from jobs ---------------------------------------------------------------
    def _on_report(self, job_id: int, run: int, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            active = self._active.get(job_id)
        if active is None or active.run != run:
            return
        if kind == "released":
            with self._lock:
                self._active.pop(job_id, None)
            self.wake()
            return
        if kind == "series_changed":
            uids = list(data.get("series") or [])
            self.bus.publish(SERIES_CHANGED, series_uids=uids)
            if data.get("thumbnails"):
                for uid in uids:
                    self.bus.publish(THUMBNAIL_READY, series_uid=uid)
            return
        if kind == "series_deleted":
            uids = data.get("series")
            self.bus.publish(SERIES_DELETED, series_uids=uids)
            self.bus.publish(SERIES_CHANGED, series_uids=list(uids or []))
            return
        with self._tx() as conn:
            if kind == "started":
                active.steps = [{"name": name, "state": StepState.WAITING.value} for name in data.get("steps", [])]
                if self._transition(conn, job_id, run, JobState.RUNNING, started=utcnow(), steps=active.steps):
                    self._after_commit(conn, job_id, active.workflow_id, JobState.RUNNING.value)
            elif kind == "step":
                index = int(data["index"])
                while len(active.steps) <= index:
                    active.steps.append({"name": "", "state": StepState.WAITING.value})
                active.steps[index] = {k: data.get(k) for k in ("name", "state", "attempt", "started", "ended") if data.get(k) is not None}
                self._update_running(conn, active, steps=list(active.steps))
            elif kind == "progress":
                done, total = int(data.get("done", 0)), int(data.get("total", 0))
                if self._update_running(conn, active, progress_done=done, progress_total=total, publish=False):
                    self.bus.publish(JOB_CHANGED, job_id=job_id, workflow_id=active.workflow_id, status=JobState.RUNNING.value,
                                     progress_done=done, progress_total=total)
            elif kind == "ended":
                status = JobState(data.get("status", "failed"))
                if active.stopping is None:
                    extra = {"result": self._read_result(job_id, run)} if status is JobState.FINISHED else {}
                    self._end(conn, job_id, run, status, str(data.get("error") or ""), active.steps, **extra)

    def _read_result(self, job_id: int, run: int) -> Any:
        """The JSON result a finished run handed back (`JobContext.set_result`), or None."""
        import json

        path = run_dir(self.config.data_dir, job_id, run) / RESULT_FILE
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("job %d run %d left an unreadable result", job_id, run)
            return None

    def _update_running(self, conn: Connection, active: _Active, publish: bool = True, **values: Any) -> bool:
        result = conn.execute(
            update(Job).where(Job.id == active.job_id, Job.run == active.run, Job.status == JobState.RUNNING.value)  # type: ignore[arg-type]
            .values(updated=utcnow(), **values)
        )
        if result.rowcount and publish:
            self._after_commit(conn, active.job_id, active.workflow_id, JobState.RUNNING.value)
        return bool(result.rowcount)
