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
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from core.db import Database
from core.events import JOB_CHANGED, WORKFLOW_CHANGED, EventBus
from core.timeutil import utcnow
from core.workflows.engine import RemoteJob, WorkflowEngine, WorkflowError
from core.workflows.models import Job, Workflow
from core.workflows.registry import DagRegistry
from core.workflows.states import ENDED, JobState, predecessors
from federation import instances
from federation.audit import record
from federation.envelope import EnvelopeRefused, open_body, seal
from federation.models import FederationInstance, ReportedStatus
from federation.results import result_refusal
from federation.signing import NONCE_HEADER, SIGNATURE_HEADER, DatabaseNonceStore, SignatureRefused, sign_request, sign_response, verify_request, verify_response

log = logging.getLogger(__name__)

SYNC_PATH = "/api/federation/sync"
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=5.0)  # an unreachable remote fails fast; a large sync may take longer
MAX_JOBS_PER_SYNC = 2000
ABORTS_KEPT = timedelta(days=1)


@dataclass(frozen=True)
class Reply:
    """What the sync endpoint answers: status, body, content type and headers."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]


class Federation:
    """This instance's side of the federation: the sync endpoint's logic, the poller, and the engine's checks."""

    def __init__(self, db: Database, engine: WorkflowEngine, registry: DagRegistry, bus: EventBus, host: str, port: int, protocol: str = "http") -> None:
        self.db = db
        self.engine = engine
        self.registry = registry
        self.bus = bus
        self.host = host
        self.port = port
        self.protocol = protocol
        self.nonces = DatabaseNonceStore(db.engine)
        self.scheduler: BackgroundScheduler | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._pushes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="federation-push")
        self._push_pending: set[str] = set()
        self._owners: dict[int, str] = {}
        self._last_status: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return self.engine.instance_name

    # ---- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        with self.db.session() as session:
            me = instances.ensure_local(session, self.name, self.host, self.port, self.protocol)
            interval = me.sync_interval
            session.commit()
        self.engine.remote_runner_refusal = self.remote_runner_refusal
        self.engine.admission = self.admission
        self.bus.subscribe(JOB_CHANGED, self._on_job_changed)
        self.scheduler = BackgroundScheduler(daemon=True)
        self.scheduler.add_job(self._automatic_sync, "interval", seconds=interval, id="federation-sync", max_instances=1, coalesce=True)
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        self._pushes.shutdown(wait=False, cancel_futures=True)

    def reschedule(self, interval: int) -> None:
        """The local sync interval changed: poll on the new one from now on."""
        if self.scheduler is not None:
            self.scheduler.reschedule_job("federation-sync", trigger="interval", seconds=interval)

    def _automatic_sync(self) -> None:
        with self.db.session() as session:
            if not instances.local(session).automatic_sync:
                return
        self.sync_all()

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
        with self._locks_guard:
            if owner in self._push_pending:
                return
            self._push_pending.add(owner)
        try:
            self._pushes.submit(self._push, owner)
        except RuntimeError:  # shutting down
            pass

    def _push(self, owner: str) -> None:
        with self._locks_guard:
            self._push_pending.discard(owner)
        try:
            self.sync_remote(owner)
        except instances.UnknownInstance:
            pass

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

    # ---- the callee: answering a runner's poll ------------------------------------------------
    def answer_sync(self, headers: Mapping[str, str], body: bytes, content_type: str) -> Reply:
        with self.db.session() as session:
            me = instances.local(session)
            token, key, required = me.token, me.fernet_key, me.fernet_encryption
        try:
            caller = verify_request(token, "POST", SYNC_PATH, headers, body, self.nonces)
        except SignatureRefused as exc:
            self._audit(exc.caller, "signature refused", exc.reason)
            return _refusal(401, exc.reason)
        with self.db.session() as session:
            try:
                peer = instances.remote(session, caller)
            except instances.UnknownInstance:
                record(session, caller, "unknown instance refused", "signed correctly, but not registered here")
                session.commit()
                return _refusal(403, f"instance {caller!r} is not registered here")
            try:
                payload = open_body(body, content_type, key, required)
            except EnvelopeRefused as exc:
                record(session, caller, "envelope refused", str(exc))
                session.commit()
                return _refusal(400, str(exc))
            if not isinstance(payload, dict):
                return _refusal(400, "the sync body must be a JSON object")
            _store_peer_settings(peer, payload.get("instance") or {})
            peer.last_seen = utcnow()
            session.add(peer)
            session.commit()
        with self.db.engine.begin() as conn:
            changed, acknowledged = self._apply_updates(conn, caller, payload.get("updates") or [])
            jobs = self._jobs_for(conn, caller)
            aborted = list(
                conn.execute(
                    select(Job.id).where(
                        Job.runner_instance == caller, Job.owner_instance == self.name, Job.status == JobState.ABORTED.value,
                        Job.updated >= utcnow() - ABORTS_KEPT,
                    )
                ).scalars()
            )
        for job_id, workflow_id, status in changed:
            self.bus.publish(JOB_CHANGED, job_id=job_id, workflow_id=workflow_id, status=status, progress_done=None, progress_total=None)
            self.bus.publish(WORKFLOW_CHANGED, workflow_id=workflow_id)
        answer = {"instance": settings_of(me), "jobs": jobs, "acknowledged": acknowledged, "aborted": aborted}
        data, kind = seal(answer, key if required else None)
        nonce = {k.lower(): v for k, v in headers.items()}[NONCE_HEADER.lower()]
        return Reply(200, data, kind, {SIGNATURE_HEADER: sign_response(token, nonce, 200, data)})

    def _apply_updates(self, conn: Connection, caller: str, updates: list[Any]) -> tuple[list[tuple[int, str, str]], list[int]]:
        """Apply each status forward-only; every update read is acknowledged, applied or not (stale ones are no-ops)."""
        parsed: dict[int, tuple[JobState, Any, str, Any]] = {}
        for item in updates:
            try:
                parsed[int(item["job_id"])] = (JobState(item["status"]), item.get("runner_job_id"), str(item.get("error") or "")[:4000],
                                               item.get("result"))
            except (KeyError, TypeError, ValueError):
                continue
        if not parsed:
            return [], []
        rows = conn.execute(
            select(Job.id, Job.workflow_id, Job.external_job_id, Job.status, Job.conf).where(
                Job.id.in_(list(parsed)), Job.runner_instance == caller, Job.owner_instance == self.name  # type: ignore[union-attr]
            )
        ).all()
        now = utcnow()
        links: list[dict[str, Any]] = []
        moves: list[dict[str, Any]] = []
        changed: list[tuple[int, str, str]] = []
        for row in rows:
            status, runner_job_id, error, result = parsed[row.id]
            if row.external_job_id is None and runner_job_id is not None:
                links.append({"b_id": row.id, "b_external": int(runner_job_id)})
            if status == JobState.DELETED or row.status not in predecessors(status):
                continue  # stale, repeated, or the runner hid its copy: the owner's job keeps its state
            if status is not JobState.FINISHED:
                result = None
            elif result is not None:
                refusal = result_refusal(result, row.conf)
                if refusal:  # the owner's own limit, whatever the runner thought of it
                    status, error, result = JobState.FAILED, refusal, None
            ended = status in ENDED
            moves.append({"b_id": row.id, "b_from": row.status, "b_status": status.value, "b_error": error if ended else "",
                          "b_ended": now if ended else None, "b_updated": now, "b_result": result})
            changed.append((row.id, row.workflow_id, status.value))
        if links:
            conn.execute(update(Job).where(Job.id == bindparam("b_id")).values(external_job_id=bindparam("b_external")), links)
        if moves:
            # compare-and-set on the state read above: a concurrent abort here wins over the runner's report
            conn.execute(
                update(Job).where(Job.id == bindparam("b_id"), Job.status == bindparam("b_from")).values(
                    status=bindparam("b_status"), error=bindparam("b_error"), ended=bindparam("b_ended"), updated=bindparam("b_updated"),
                    result=bindparam("b_result"),
                ),
                moves,
            )
            for workflow_id in {c[1] for c in changed}:
                conn.execute(update(Workflow).where(Workflow.id == workflow_id).values(updated=now))  # type: ignore[arg-type]
        return changed, [row.id for row in rows]

    def _jobs_for(self, conn: Connection, runner: str) -> list[dict[str, Any]]:
        """Jobs for `runner` it has not reported on yet (delivered again until it does: adoption is idempotent)."""
        rows = conn.execute(
            select(Job.id, Job.workflow_id, Job.dag_id, Job.dataset, Job.conf, Job.username, Job.timeout, Workflow.name)
            .join(Workflow, Workflow.id == Job.workflow_id)
            .where(Job.runner_instance == runner, Job.owner_instance == self.name, Job.status == JobState.PENDING.value,
                   Job.external_job_id.is_(None))  # type: ignore[union-attr]
            .order_by(Job.id)
            .limit(MAX_JOBS_PER_SYNC)
        ).all()
        return [
            {"id": r.id, "workflow_id": r.workflow_id, "workflow_name": r.name, "dag_id": r.dag_id, "dataset": r.dataset,
             "conf": r.conf, "username": r.username, "timeout": r.timeout}
            for r in rows
        ]

    # ---- the runner: polling its remotes --------------------------------------------------
    def sync_all(self) -> dict[str, dict[str, Any]]:
        """Poll every remote at once: one unreachable remote never delays the others."""
        with self.db.session() as session:
            names = [r.name for r in instances.remotes(session)]
        if not names:
            return {}
        with ThreadPoolExecutor(max_workers=min(8, len(names)), thread_name_prefix="federation-sync") as pool:
            return dict(zip(names, pool.map(self.sync_remote, names)))

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def sync_remote(self, name: str) -> dict[str, Any]:
        """One poll of one remote; returns what happened (also kept as its health)."""
        with self._lock(name):
            try:
                outcome = self._poll(name)
            except instances.UnknownInstance:
                raise
            except (httpx.HTTPError, SignatureRefused, EnvelopeRefused, ssl.SSLError, OSError, ValueError) as exc:
                message = f"{type(exc).__name__}: {exc}"[:2000]
                with self.db.session() as session:
                    row = instances.remote(session, name)
                    row.missed_syncs += 1
                    row.last_error = message
                    session.add(row)
                    session.commit()
                log.warning("sync with %s failed: %s", name, message)
                return {"ok": False, "error": message}
            return {"ok": True, **outcome}

    def _poll(self, name: str) -> dict[str, Any]:
        with self.db.session() as session:
            me, peer = instances.local(session), instances.remote(session, name)
            my_settings = settings_of(me)
            url = f"{peer.protocol}://{peer.host}:{peer.port}{SYNC_PATH}"
            token, key, verify = peer.token, peer.fernet_key, _verification(peer)
        outbox = self._outbox(name)
        body, kind = seal({"instance": my_settings, "updates": outbox}, key)
        headers = sign_request(token, self.name, "POST", SYNC_PATH, body)
        with httpx.Client(verify=verify, timeout=REQUEST_TIMEOUT) as client:
            response = client.post(url, content=body, headers={**headers, "Content-Type": kind})
        if response.status_code != 200:
            detail = _detail(response)
            raise ValueError(f"{name} answered {response.status_code}: {detail}")
        verify_response(token, headers[NONCE_HEADER], 200, response.content, response.headers.get(SIGNATURE_HEADER, ""))
        answer = open_body(response.content, response.headers.get("content-type", ""), key, required=key is not None)
        if not isinstance(answer, dict):
            raise ValueError(f"{name} answered something that is not a JSON object")
        with self.db.session() as session:
            peer = instances.remote(session, name)
            _store_peer_settings(peer, answer.get("instance") or {})
            peer.last_seen = peer.last_success = utcnow()
            peer.last_error, peer.missed_syncs = "", 0
            session.add(peer)
            session.commit()
        self._mark_reported(outbox, set(answer.get("acknowledged") or []))
        received = self._adopt(name, answer.get("jobs") or [])
        aborted = self._abort(name, answer.get("aborted") or [])
        return {"sent": len(outbox), "received": received, "aborted": aborted}

    def _outbox(self, owner: str) -> list[dict[str, Any]]:
        """Statuses of jobs `owner` owns that it has not acknowledged yet."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(Job.id, Job.external_job_id, Job.status, Job.error, Job.result)
                .outerjoin(ReportedStatus, ReportedStatus.job_id == Job.id)  # type: ignore[arg-type]
                .where(Job.owner_instance == owner, Job.runner_instance == self.name,
                       (ReportedStatus.status.is_(None)) | (ReportedStatus.status != Job.status))  # type: ignore[union-attr]
                .order_by(Job.id)
            ).all()
        # a finished job's result (a federated round's runner result) travels with its status, in the same sealed body
        return [
            {"job_id": r.external_job_id, "runner_job_id": r.id, "status": r.status, "error": r.error,
             **({"result": r.result} if r.status == JobState.FINISHED and r.result is not None else {})}
            for r in rows
        ]

    def _mark_reported(self, outbox: list[dict[str, Any]], acknowledged: set[int]) -> None:
        rows = [{"job_id": u["runner_job_id"], "status": u["status"]} for u in outbox if u["job_id"] in acknowledged]
        if not rows:
            return
        table = ReportedStatus.__table__  # type: ignore[attr-defined]
        with self.db.engine.begin() as conn:
            if self.db.is_sqlite:
                statement = sqlite_insert(table)
            else:
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                statement = pg_insert(table)
            conn.execute(statement.on_conflict_do_update(index_elements=["job_id"], set_={"status": statement.excluded.status}), rows)

    def _adopt(self, owner: str, jobs: list[Any]) -> int:
        """Store each job the owner sent: pending or queued, or failed with the reason when not allowed here."""
        with self.db.session() as session:
            me = instances.local(session)
        status_if_allowed = JobState.QUEUED if me.automatic_execution else JobState.PENDING
        remote_jobs: list[RemoteJob] = []
        for job in jobs:
            try:
                external_id, dag_id = int(job["id"]), str(job["dag_id"])
            except (KeyError, TypeError, ValueError):
                continue
            dataset = job.get("dataset") or None
            reason = permission_refusal(me, dag_id, dataset)
            series: list[str] = []
            conf = job.get("conf") if isinstance(job.get("conf"), dict) else {}
            if not reason:
                try:
                    conf = self.registry.get(dag_id).validate_conf(conf).model_dump(mode="json")
                    if dataset:
                        series = self.engine.dataset_series(dataset)
                except WorkflowError as exc:
                    reason = str(exc)
                except Exception as exc:  # an unknown DAG or a configuration this DAG refuses
                    reason = f"cannot run here: {exc}"
            remote_jobs.append(RemoteJob(
                external_job_id=external_id, workflow_id=str(job.get("workflow_id")), workflow_name=str(job.get("workflow_name") or dag_id),
                dag_id=dag_id, dataset=dataset, series=series, conf=conf, username=f"{job.get('username') or ''}@{owner}",
                status=JobState.FAILED if reason else status_if_allowed, error=reason or "", timeout=job.get("timeout"),
            ))
        if not remote_jobs:
            return 0
        adopted = self.engine.adopt_remote_jobs(owner, remote_jobs)
        self._owners.update((job_id, owner) for job_id, _ in adopted)
        created = 0
        with self.db.session() as session:
            for job, (job_id, new) in zip(remote_jobs, adopted):
                if new:
                    created += 1
                    record(session, owner, "permission refused" if job.error else "job received",
                           f"job {job_id} ({job.dag_id} on {job.dataset or 'no dataset'}): {job.error or job.status.value}")
        return created

    def _abort(self, owner: str, job_ids: list[Any]) -> int:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(Job.id, Job.status).where(Job.owner_instance == owner, Job.external_job_id.in_([int(i) for i in job_ids]))  # type: ignore[union-attr]
            ).all()
        aborted = 0
        for row in rows:
            if row.status in ENDED or row.status == JobState.DELETED:
                continue
            self.engine.abort_job(row.id)
            aborted += 1
            self._audit(owner, "aborted by owner", f"job {row.id}")
        return aborted

    def _audit(self, peer: str, action: str, detail: str) -> None:
        with self.db.session() as session:
            record(session, peer, action, detail)
            session.commit()


def settings_of(me: FederationInstance) -> dict[str, Any]:
    """What a runner tells its remotes about itself (and they about themselves) at every sync."""
    return {
        "name": me.name, "allowed_dags": list(me.allowed_dags), "allowed_datasets": list(me.allowed_datasets),
        "automatic_sync": me.automatic_sync, "automatic_execution": me.automatic_execution, "fernet_encryption": me.fernet_encryption,
    }


def permission_refusal(me: FederationInstance, dag_id: str, dataset: str | None) -> str | None:
    """This instance's own permissions for remote work, checked on receipt and before running."""
    if dag_id not in me.allowed_dags:
        return f"DAG {dag_id!r} is not allowed for remote instances on {me.name}"
    if dataset and dataset not in me.allowed_datasets:
        return f"dataset {dataset!r} is not allowed for remote instances on {me.name}"
    return None


def _store_peer_settings(peer: FederationInstance, settings: Mapping[str, Any]) -> None:
    if isinstance(settings.get("allowed_dags"), list):
        peer.allowed_dags = [str(d) for d in settings["allowed_dags"]]
    if isinstance(settings.get("allowed_datasets"), list):
        peer.allowed_datasets = [str(d) for d in settings["allowed_datasets"]]
    for flag in ("automatic_sync", "automatic_execution", "fernet_encryption"):
        if isinstance(settings.get(flag), bool):
            setattr(peer, flag, settings[flag])


def _verification(peer: FederationInstance) -> bool | ssl.SSLContext:
    """SSL verification per remote: off, the system's trust store, or the remote's own CA bundle."""
    if peer.protocol != "https":
        return True
    if not peer.ssl_verify:
        return False
    if peer.ca_bundle:
        return ssl.create_default_context(cadata=peer.ca_bundle)
    return True


def _refusal(status: int, reason: str) -> Reply:
    data, kind = seal({"detail": reason}, None)
    return Reply(status, data, kind, {})


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))[:500]
    except ValueError:
        return response.text[:500]
