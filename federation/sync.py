"""The sync protocol: runners pull work from the instances that orchestrate it, and report back.

A runner polls each registered remote with one signed `POST /api/federation/sync`:
its own settings (what it allows), and the status changes of jobs that remote owns (the
outbox: each job's status minus the last status the owner acknowledged, so nothing is lost
across restarts or an unreachable owner). The owner answers with its own settings, the jobs
addressed to the runner that it has not yet heard of, and the ids of jobs it aborted.

The owner applies statuses forward-only (a repeated or stale update changes nothing, an
abort wins over a later `running`); a finished job's result (a federated round's runner
result) rides along with its status, size-checked again by the owner; the runner adopts a job once per (owner, job id) and
checks its own permissions on receipt and again right before running it.

Each instance proves who it is with its own key (`federation.identity`, `federation.signing`);
the callee's side lives in `federation.endpoint`, the runner's in `federation.poller`. Each
remote is polled in a lane of its own (`federation.lanes`) within an overall deadline, so a
slow or hostile remote never holds up the others, nor "Sync now" for longer than the deadline.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from core.db import Database
from core.events import JOB_CHANGED, EventBus
from core.workflows.engine import WorkflowEngine
from core.workflows.models import Job
from core.workflows.registry import DagRegistry
from federation import audit, instances
from federation.audit import RefusalTally, record
from federation.endpoint import SYNC_PATH, Reply, SyncEndpoint
from federation.fetch import FETCH_PATH, FetchEndpoint, fetch
from federation.identity import KEY_FILE, InstanceKey
from federation.instances import permission_refusal, settings_of
from federation.lanes import SyncLanes
from federation.poller import Poller, PollLimits

__all__ = ["FETCH_PATH", "SYNC_PATH", "Federation", "FederationConfig", "Reply", "permission_refusal", "settings_of"]

log = logging.getLogger(__name__)

AUDIT_FLUSH_SECONDS = 5
AUDIT_PRUNE_MINUTES = 10
NAME_FILE = "instance-name"  # the name given on the Instance Overview (it wins over VIREO_INSTANCE_NAME)
SYNC_NOW_GRACE = 1.0  # seconds "Sync now" waits beyond the deadline for the lanes' answers (their own bookkeeping)


@dataclass(frozen=True)
class FederationConfig:
    """How this instance federates: where its key lives, how long and how much one remote may take, how much audit is kept."""

    data_dir: Path | None = None  # the key file lives here; None: a key for this process only (tests of the logic)
    limits: PollLimits = field(default_factory=PollLimits)
    audit_max_rows: int = 100_000
    audit_max_age: timedelta = timedelta(days=365)


class Federation:
    """This instance's side of the federation: the sync endpoint, the poller and its lanes, and the engine's checks."""

    def __init__(self, db: Database, engine: WorkflowEngine, registry: DagRegistry, bus: EventBus, host: str, port: int,
                 protocol: str = "http", config: FederationConfig | None = None) -> None:
        self.db = db
        self.engine = engine
        self.registry = registry
        self.bus = bus
        self.host = host
        self.port = port
        self.protocol = protocol
        self.config = config or FederationConfig()
        self.key: InstanceKey | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.tally = RefusalTally(db.engine)
        self.endpoint = SyncEndpoint(db, bus, lambda: self.name, self._own_key, self.tally, Path(engine.config.data_dir))
        self._owners: dict[int, str] = {}
        self._last_status: dict[int, Any] = {}
        self.fetcher = FetchEndpoint(db, Path(engine.config.data_dir), lambda: self.name, self._own_key)
        self.poller = Poller(db, engine, registry, lambda: self.name, self._own_key, self.config.limits, self._owners)
        self.lanes = SyncLanes(self.sync_remote)

    @property
    def name(self) -> str:
        return self.engine.instance_name

    def _own_key(self) -> InstanceKey:
        if self.key is None:
            raise RuntimeError("federation is not started: this instance has no key yet")
        return self.key

    # ---- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        data_dir = self.config.data_dir
        self.key = InstanceKey.load_or_create(data_dir / KEY_FILE) if data_dir is not None else InstanceKey.generate()
        renamed = data_dir / NAME_FILE if data_dir is not None else None
        if renamed is not None and renamed.is_file() and renamed.read_text().strip():
            self._use_name(renamed.read_text().strip())  # renamed on the Instance Overview: wins over VIREO_INSTANCE_NAME
        with self.db.session() as session:
            me = instances.ensure_local(session, self.name, self.host, self.port, self.protocol, self.key.public_key)
            interval = me.sync_interval
            session.commit()
        self.engine.remote_runner_refusal = self.remote_runner_refusal
        self.engine.admission = self.admission
        self.bus.subscribe(JOB_CHANGED, self._on_job_changed)
        self.prune_audit()
        self.scheduler = BackgroundScheduler(daemon=True)
        self.scheduler.add_job(self._automatic_sync, "interval", seconds=interval, id="federation-sync", max_instances=1, coalesce=True)
        self.scheduler.add_job(self.tally.flush, "interval", seconds=AUDIT_FLUSH_SECONDS, id="audit-flush", max_instances=1, coalesce=True)
        self.scheduler.add_job(self.prune_audit, "interval", minutes=AUDIT_PRUNE_MINUTES, id="audit-prune", max_instances=1, coalesce=True)
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        self.lanes.close()
        try:
            self.tally.flush()
        except Exception:  # the database may be gone already; the counts of the last seconds are lost, nothing else
            log.warning("could not write the last audit summaries", exc_info=True)

    def _use_name(self, name: str) -> None:
        self.engine.config = dataclasses.replace(self.engine.config, instance_name=name)

    def renamed(self, old: str, new: str) -> None:
        """The local instance was renamed (allowed only while no remote is registered): jobs follow, and so do restarts."""
        self._use_name(new)
        self._owners.clear()
        if self.config.data_dir is not None:
            (self.config.data_dir / NAME_FILE).write_text(new + "\n")
        log.info("this instance is now called %s (was %s)", new, old)

    def reschedule(self, interval: int) -> None:
        """The local sync interval changed: poll on the new one from now on."""
        if self.scheduler is not None:
            self.scheduler.reschedule_job("federation-sync", trigger="interval", seconds=interval)

    def prune_audit(self) -> None:
        """Keep the audit log within its row and age limits (VIREO_AUDIT_MAX_ROWS, VIREO_AUDIT_MAX_DAYS)."""
        gone = audit.prune(self.db.engine, self.config.audit_max_rows, self.config.audit_max_age)
        if gone:
            log.info("audit log: pruned %d event(s) beyond its limits", gone)

    def _remote_names(self) -> list[str]:
        with self.db.session() as session:
            return [r.name for r in instances.remotes(session)]

    def _automatic_sync(self) -> None:
        with self.db.session() as session:
            if not instances.local(session).automatic_sync:
                return
        names = self._remote_names()
        self.lanes.retain(names)
        for name in names:
            self.lanes.request_if_idle(name)  # a remote still busy with its last poll is left to it

    def _on_job_changed(self, _topic: str, payload: dict[str, Any]) -> None:
        """A job another instance owns changed here: push its status now rather than at the next poll."""
        job_id = payload.get("job_id")
        if job_id is None:
            return
        owner = self._owners.get(job_id)
        if owner is None:  # a job's owner never changes: ask the database once per job
            with self.db.engine.connect() as conn:
                owner = conn.execute(select(Job.owner_instance).where(Job.id == job_id)).scalar() or ""
            if len(self._owners) > 100_000:
                self._owners.clear()
            self._owners[job_id] = owner
        if not owner or owner == self.name:
            return
        status = payload.get("status")
        if self._last_status.get(job_id) == status:
            return  # progress of a running job: the owner only follows states
        self._last_status[job_id] = status
        if len(self._last_status) > 100_000:
            self._last_status.clear()
        self.lanes.request(owner)  # in the owner's lane: shared with a poll already queued there

    # ---- the engine's checks ---------------------------------------------------------------
    def remote_runner_refusal(self, runner: str, dag_id: str, dataset: str | None) -> str | None:
        """Why `runner` may not be asked to run `dag_id` on `dataset`, as far as its last sync told us."""
        with self.db.session() as session:
            try:
                row = instances.remote(session, runner)
            except instances.UnknownInstance:
                return f"unknown runner instance {runner!r}: register it on the Instance Overview first"
            if dag_id not in row.allowed_dags:
                return f"remote instance {runner!r} does not allow DAG {dag_id!r} (as of its last sync)"
            if dataset and dataset not in row.allowed_datasets:
                return f"remote instance {runner!r} does not allow dataset {dataset!r} (as of its last sync)"
        return None

    def admission(self, job: Any) -> str | None:
        """Checked right before a job another instance owns starts: this instance's own permissions, now."""
        with self.db.session() as session:
            me = instances.local(session)
            try:
                instances.remote(session, job.owner_instance)
            except instances.UnknownInstance:
                reason = f"owner instance {job.owner_instance!r} is no longer registered here"
            else:
                reason = permission_refusal(me, job.dag_id, job.dataset)
            if reason:
                record(session, job.owner_instance, "permission refused", f"job {job.id}: {reason}")
                session.commit()
        return reason

    # ---- the callee and the runner -----------------------------------------------------------
    def answer_sync(self, headers: Mapping[str, str], body: bytes, content_type: str, source: str = "") -> Reply:
        """Answer one runner's poll (`source`: the address it came from, for the audit log)."""
        return self.endpoint.answer(headers, body, content_type, source)

    def answer_fetch(self, headers: Mapping[str, str], body: bytes, content_type: str, source: str = "") -> Reply:
        """Answer an owner's request for the full log or a file of a job this instance runs for it."""
        return self.fetcher.answer(headers, body, content_type, source)

    def fetch_from_runner(self, runner: str, owner_job_id: int, what: str, step: int | None = None, name: str | None = None) -> bytes:
        """The full log of one step (`what="log"`) or one result file of a job `runner` runs for this instance."""
        return fetch(self.db, self.name, self._own_key(), runner, owner_job_id, what, self.config.limits.deadline, step, name)

    def sync_all(self) -> dict[str, dict[str, Any]]:
        """Poll every remote now, each in its own lane; answers within the deadline, whatever any one remote does."""
        names = self._remote_names()
        if not names:
            return {}
        futures: dict[str, Future[dict[str, Any]]] = {name: self.lanes.request(name) for name in names}
        deadline = self.config.limits.deadline
        wait(list(futures.values()), timeout=deadline + SYNC_NOW_GRACE)
        outcomes: dict[str, dict[str, Any]] = {}
        for name, future in futures.items():
            if not future.done():
                outcomes[name] = {"ok": False, "error": f"{name} is still being synced (no answer within {deadline:g} s); "
                                                        "it goes on in the background"}
                continue
            try:
                outcomes[name] = future.result()
            except instances.UnknownInstance:
                continue  # removed meanwhile
            except Exception as exc:  # a bug in one poll: reported for that remote, never a 500 for all
                log.exception("sync with %s failed unexpectedly", name)
                outcomes[name] = {"ok": False, "error": f"the sync with {name} failed unexpectedly ({type(exc).__name__}); see the server log"}
        return outcomes

    def sync_remote(self, name: str) -> dict[str, Any]:
        """One poll of one remote, here and now; returns what happened (also kept as its health)."""
        return self.poller.poll(name)
