"""Federated orchestration: one orchestrator job runs rounds of runner jobs and merges their results.

A federated DAG (declared with `federated_dag`) has a *local step*, run by every runner on its
own data, and an *aggregate step*, run here on the orchestrator. Its workflow
(`POST /api/workflows` with `runners`) gets one orchestrator job; when the engine starts it,
the `Orchestrator` below creates one job per runner for round 1 (the local instance's queued
here, a remote's `pending` until that runner pulls it through the sync), waits for their
results (which come back through the runners' outboxes), aggregates them and passes the
aggregate to the next round as `round_input.previous`. A runner that fails, is refused or
does not hand back a result within `timeout` seconds fails the round — unless `min_runners`
runners still did. The orchestrator job's `result` holds the whole state: runners, rounds,
each runner's job and status, and the aggregate; the API and the Workflow List show it.

All decisions run on one worker thread, so two reports arriving together never race; the
state is in the database, so a restarted Vireo resumes a running orchestration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import select

from core.db import Database
from core.events import JOB_CHANGED, EventBus
from core.timeutil import isoformat, utcnow
from core.workflows.context import DEFAULT_RESULT_LIMIT, JobContext
from core.workflows.dag import ConfigError, Dag, DagInput, Step
from core.workflows.engine import ROLE_ORCHESTRATOR, WorkflowEngine
from core.workflows.models import Job
from core.workflows.registry import DagRegistry, UnknownDag
from core.workflows.states import ACTIVE, ENDED, JobState
from federation.results import HARD_RESULT_LIMIT, encoded_size, result_limit

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
TIMED_OUT = "timed out"


class RoundInput(BaseModel):
    """What a runner's job is told about its round: which one, of how many, and the previous round's aggregate."""

    round: int = 1
    rounds: int = 1
    previous: Any = None


class FederatedConfig(BaseModel):
    """The configuration every federated DAG has; a DAG's own model extends it."""

    model_config = ConfigDict(extra="forbid")

    min_runners: int | None = Field(None, ge=1, title="Minimum runners",
                                    description="a round succeeds when at least this many runners hand back a result (default: all)")
    rounds: int = Field(1, ge=1, le=100, title="Rounds", description="each round's aggregate is passed to the next round's runners")
    timeout: float = Field(600, gt=0, le=7 * 86400, title="Round timeout (s)",
                           description="seconds a round waits for the runners' results; a late runner counts as failed")
    max_result_bytes: int = Field(DEFAULT_RESULT_LIMIT, ge=1, le=HARD_RESULT_LIMIT, title="Result size limit (bytes)",
                                  description="a runner's result larger than this fails that runner")
    round_input: SkipJsonSchema[RoundInput | None] = None  # set by the orchestrator on the runners' jobs, not by users


LocalStep = Callable[[JobContext, RoundInput], Any]  # returns the result, or (result, [files to attach])
AggregateStep = Callable[[dict[str, Any], Any, Any], Any]


def federated_dag(
    *,
    dag_id: str,
    description: str,
    local: LocalStep,
    aggregate: AggregateStep,
    config: type[FederatedConfig] = FederatedConfig,
    input: DagInput = DagInput.DATASET,
    version: str = "1",
    tags: tuple[str, ...] = (),
) -> Dag:
    """Declare a federated DAG: `local(ctx, round_input)` returns a runner's JSON result for a round (or a
    `(result, [paths])` pair to attach small files, see `JobContext.set_result`);
    `aggregate({runner: result}, conf, previous_aggregate)` merges one round's results on the orchestrator.

    Only what `local` returns leaves a site, so it must hold aggregates, never identifiers or pixel data.
    """
    if not issubclass(config, FederatedConfig):
        raise TypeError(f"the configuration of federated DAG {dag_id} must extend FederatedConfig")

    def run_local(ctx: JobContext) -> None:
        round_input = getattr(ctx.conf, "round_input", None) or RoundInput()
        ctx.log.info("round %d of %d%s", round_input.round, round_input.rounds,
                     ", with the previous round's aggregate" if round_input.previous is not None else "")
        result = local(ctx, round_input)
        files = None
        if isinstance(result, tuple):
            result, files = result
        size = ctx.set_result(result, files=files)
        ctx.log.info("result: %d bytes (only this leaves the site)", size)

    return Dag(
        dag_id=dag_id, description=description, steps=[Step("local", run_local)], config=config, version=version, input=input,
        tags=("federated", *tags), federated=True, aggregate=aggregate,
    )


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class Orchestrator:
    """Runs the orchestrator jobs of this instance's federated workflows, round by round."""

    def __init__(self, db: Database, engine: WorkflowEngine, registry: DagRegistry, bus: EventBus) -> None:
        self.db = db
        self.engine = engine
        self.registry = registry
        self.bus = bus
        self._worker: ThreadPoolExecutor | None = None
        self._running: set[int] = set()
        self._parents: dict[int, int | None] = {}
        self._stopping = threading.Event()
        self._ticker: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # ---- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Plug into the engine and resume the orchestrations a previous run left running."""
        self._stopping.clear()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="federated-orchestration")
        self.engine.orchestrator_started = self._started
        self._unsubscribe = self.bus.subscribe(JOB_CHANGED, self._on_job_changed)
        with self.db.engine.connect() as conn:
            running = conn.execute(select(Job.id).where(
                Job.role == ROLE_ORCHESTRATOR, Job.status == JobState.RUNNING.value, Job.runner_instance == self.engine.instance_name
            )).scalars().all()
        for job_id in running:
            self._started(int(job_id), 0)
        self._ticker = threading.Thread(target=self._tick, name="federated-orchestration-tick", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None
        self.engine.orchestrator_started = None

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._worker is None or self._stopping.is_set():
            return
        try:
            self._worker.submit(self._guarded, fn, *args)
        except RuntimeError:  # shutting down
            pass

    @staticmethod
    def _guarded(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("federated orchestration step failed")

    def _started(self, job_id: int, _run: int) -> None:
        self._running.add(job_id)
        self._submit(self.advance, job_id)

    def _tick(self) -> None:
        """Round deadlines pass without any event: look at every running orchestration now and then."""
        while not self._stopping.wait(TICK_SECONDS):
            for job_id in list(self._running):
                self._submit(self.advance, job_id)

    def _on_job_changed(self, _topic: str, payload: dict[str, Any]) -> None:
        status, job_id = payload.get("status"), payload.get("job_id")
        if job_id is None or (status not in ENDED and status != JobState.DELETED):
            return
        if job_id in self._running:
            self._submit(self.advance, job_id)  # ended by a user (abort, delete): its active round jobs are aborted
            return
        parent = self._parent_of(int(job_id))
        if parent is not None and parent in self._running:
            self._submit(self.advance, parent)

    def _parent_of(self, job_id: int) -> int | None:
        if job_id not in self._parents:
            with self.db.engine.connect() as conn:
                self._parents[job_id] = conn.execute(select(Job.parent_job_id).where(Job.id == job_id)).scalar()
            if len(self._parents) > 100_000:
                self._parents.clear()
        return self._parents[job_id]

    # ---- one decision --------------------------------------------------------------------
    def advance(self, job_id: int) -> None:
        """Look at an orchestrator job and do what is due: start a round, wait, time runners out, aggregate, end."""
        with self.db.engine.connect() as conn:
            job = conn.execute(select(Job.__table__).where(Job.id == job_id)).first()  # type: ignore[attr-defined]
        if job is None or job.status != JobState.RUNNING:
            self._running.discard(job_id)
            if job is not None:
                self._abort_round_jobs(job)
            return
        state = dict(job.result or {})
        try:
            dag = self.registry.get(job.dag_id)
            conf = dag.validate_conf(job.conf)
        except (UnknownDag, ConfigError) as exc:
            self._end(job, JobState.FAILED, f"cannot orchestrate: {exc}", state)
            return
        if not state.get("runners"):
            self._end(job, JobState.FAILED, "the orchestrator job names no runners", state)
            return
        rounds = state.setdefault("rounds", [])
        if not rounds:
            self._start_round(job, conf, state, 1)
            return
        current = rounds[-1]
        if current.get("status") == "finished":  # only after a crash between closing a round and saving the next one
            if current["round"] < conf.rounds:
                self._start_round(job, conf, state, current["round"] + 1)
            else:
                self._end(job, JobState.FINISHED, "", state)
            return
        if current.get("status") != "running":
            self._end(job, JobState.FAILED, state.get("error") or f"round {current['round']} failed", state)
            return
        now = utcnow()
        results, changed = self._follow_runners(current)
        waiting = [name for name, info in current["runners"].items() if info["status"] in ACTIVE]
        if waiting and now < _parse(current["deadline"]):
            if changed:
                self.engine.update_orchestrator(job.id, job.run, state, _steps(state))
            return
        for name in waiting:  # the round's deadline passed: a late runner counts as failed, and is stopped
            info = current["runners"][name]
            self.engine.abort_job(info["job_id"])
            info.update(status=TIMED_OUT, error=f"no result within {conf.timeout:g} s")
        self._close_round(job, dag, conf, state, current, results, now)

    def _follow_runners(self, current: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Each runner's job status (and result) into the round's state; the results handed back so far."""
        ids = [info["job_id"] for info in current["runners"].values()]
        with self.db.engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(Job.id, Job.status, Job.error, Job.result).where(Job.id.in_(ids)))}  # type: ignore[union-attr]
        results: dict[str, Any] = {}
        changed = False
        for name, info in current["runners"].items():
            if info["status"] == TIMED_OUT:
                continue
            row = rows.get(info["job_id"])
            status, error = (row.status, row.error or "") if row is not None else (JobState.DELETED.value, "the runner's job is gone")
            if status == JobState.FINISHED:
                if row.result is None:
                    status, error = JobState.FAILED.value, "finished without handing back a result"
                else:
                    results[name] = row.result
            if (status, error) != (info["status"], info.get("error", "")):
                info.update(status=status, error=error)
                if status == JobState.FINISHED:
                    info["result_bytes"] = encoded_size(row.result)
                changed = True
        return results, changed

    def _start_round(self, job: Any, conf: Any, state: dict[str, Any], number: int) -> None:
        runners: list[str] = list(state["runners"])
        runner_conf = {**job.conf, "round_input": RoundInput(round=number, rounds=conf.rounds, previous=state.get("aggregate")).model_dump(mode="json")}
        ids = self.engine.add_round_jobs(job.id, number, [(name, runner_conf) for name in runners], timeout=conf.timeout)
        now = utcnow()
        state.update(rounds_total=conf.rounds, min_runners=conf.min_runners or len(runners), round=number, status="running")
        state["rounds"].append({
            "round": number, "status": "running", "started": isoformat(now), "deadline": isoformat(now + timedelta(seconds=conf.timeout)),
            "runners": {name: {"job_id": ids[name], "status": JobState.PENDING.value, "error": ""} for name in runners},
        })
        if not self.engine.update_orchestrator(job.id, job.run, state, _steps(state)):
            for job_id in ids.values():  # aborted meanwhile: the new round must not run
                self.engine.abort_job(job_id)
            return
        self._submit(self.advance, job.id)  # a runner may have failed at once (e.g. no such dataset here)

    def _close_round(self, job: Any, dag: Dag, conf: Any, state: dict[str, Any], current: dict[str, Any], results: dict[str, Any],
                     now: datetime) -> None:
        runners = list(state["runners"])
        needed = conf.min_runners or len(runners)
        number = current["round"]
        current.update(ended=isoformat(now), succeeded=sorted(results))
        if len(results) < needed:
            problems = "; ".join(
                f"{name}: {info['status']}" + (f" ({info['error']})" if info.get("error") else "")
                for name, info in current["runners"].items() if name not in results
            )
            current["status"] = "failed"
            self._end(job, JobState.FAILED, f"round {number} of {conf.rounds} failed: {len(results)} of {len(runners)} runners handed back "
                                            f"a result, {needed} needed (min_runners). {problems}", state)
            return
        try:
            aggregate = dag.aggregate(results, conf, state.get("aggregate"))  # type: ignore[misc]
            size, limit = encoded_size(aggregate), result_limit(job.conf) * max(1, len(runners))
            if size > limit:
                raise ValueError(f"the aggregate is {size} bytes, over {limit} bytes")
        except Exception as exc:
            current["status"] = "failed"
            self._end(job, JobState.FAILED, f"round {number} of {conf.rounds}: aggregation failed: {type(exc).__name__}: {exc}", state)
            return
        current.update(status="finished", aggregate=aggregate)
        state["aggregate"] = aggregate
        if number < conf.rounds:
            self._start_round(job, conf, state, number + 1)
        else:
            state["status"] = "finished"
            self._end(job, JobState.FINISHED, "", state)

    def _end(self, job: Any, status: JobState, error: str, state: dict[str, Any]) -> None:
        state["status"] = status.value
        if error:
            state["error"] = error
        self.engine.end_orchestrator(job.id, job.run, status, error, state, _steps(state))
        self._running.discard(job.id)
        self._abort_round_jobs(job)

    def _abort_round_jobs(self, job: Any) -> None:
        """An orchestrator that ended leaves no runner job behind (an abort of the workflow reaches the runners too)."""
        with self.db.engine.connect() as conn:
            active = conn.execute(select(Job.id).where(
                Job.parent_job_id == job.id, Job.status.in_([s.value for s in ACTIVE])  # type: ignore[attr-defined]
            )).scalars().all()
        for job_id in active:
            self.engine.abort_job(int(job_id))


def _steps(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The orchestrator job's steps: one per round, so the Workflow List shows how far it got."""
    step_state = {"running": "running", "finished": "finished", "failed": "failed"}
    steps = []
    done = {r["round"]: r for r in state.get("rounds", [])}
    for number in range(1, int(state.get("rounds_total") or 1) + 1):
        entry = done.get(number)
        step: dict[str, Any] = {"name": f"round {number}", "state": step_state.get(entry["status"], "waiting") if entry else "waiting"}
        if entry:
            step["started"] = entry.get("started")
            if entry.get("ended"):
                step["ended"] = entry["ended"]
        steps.append(step)
    return steps
