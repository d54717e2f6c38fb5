"""The runner's side of a sync: poll one remote, take only an answer it proves it gave, and record how it went.

A poll sends this instance's settings and its outbox (the statuses the remote has not
acknowledged), signed with this instance's key. The answer is read within the deadline and
size limit (`federation.transport`), must be signed with the remote's registered public key,
and must fit the protocol as a whole before anything of it is applied. How a poll failed is
the remote's health: `unreachable` (no answer from it — the admin sees only "could not reach",
the server log has why) or `refused` (it answered, but the answer was refused, with the reason).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.db import Database
from core.timeutil import utcnow
from core.workflows.engine import RemoteJob, WorkflowEngine, WorkflowError
from core.workflows.models import Job
from core.workflows.registry import DagRegistry
from core.workflows.states import ENDED, JobState
from federation import instances, job_mirror, transport
from federation.audit import record
from federation.endpoint import SYNC_PATH, refusal_detail
from federation.envelope import EnvelopeRefused, open_body, seal
from federation.failures import could_not_reach, refused_answer, refused_request, signature_key_changed
from federation.identity import InstanceKey
from federation.models import FederationInstance, ReportedStatus
from federation.protocol import MalformedSync, OfferedJob, SyncAnswer, parse
from federation.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    SignatureRefused,
    sign_request,
    verify_response,
)

log = logging.getLogger(__name__)

UNREACHABLE, REFUSED = "unreachable", "refused"


@dataclass(frozen=True)
class PollLimits:
    deadline: float = 30.0  # seconds for one whole exchange with one remote
    max_response: int = 64 * 1024 * 1024  # bytes of one answer


class SyncFailure(Exception):
    """Why one poll failed: `message` for the admin, `kind` for the remote's health, `seen` if the remote proved it answered."""

    def __init__(self, message: str, kind: str, seen: bool = False) -> None:
        super().__init__(message)
        self.message = message[:2000]
        self.kind = kind
        self.seen = seen


class Poller:
    """Polls remotes for the instance named by `name()`; one call of `poll` is one exchange with one remote."""

    def __init__(self, db: Database, engine: WorkflowEngine, registry: DagRegistry, name: Callable[[], str],
                 key: Callable[[], InstanceKey], limits: PollLimits, owners: dict[int, str]) -> None:
        self.db = db
        self.engine = engine
        self.registry = registry
        self._name = name
        self._key = key
        self.limits = limits
        self._owners = owners
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def poll(self, name: str) -> dict[str, Any]:
        """One poll of one remote; returns what happened (also kept as its health)."""
        with self._lock(name):
            try:
                outcome = self._poll(name)
            except SyncFailure as failure:
                self._record_failure(name, failure)
                return {"ok": False, "error": failure.message}
            return {"ok": True, **outcome}

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def _record_failure(self, name: str, failure: SyncFailure) -> None:
        with self.db.session() as session:
            try:
                row = instances.remote(session, name)
            except instances.UnknownInstance:
                return  # removed while it was being polled
            row.missed_syncs += 1
            row.last_error, row.failure_kind, row.last_failure = failure.message, failure.kind, utcnow()
            if failure.seen:
                row.last_seen = utcnow()
            session.add(row)
            session.commit()

    def _poll(self, name: str) -> dict[str, Any]:
        me_name = self._name()
        with self.db.session() as session:
            me, peer = instances.local(session), instances.remote(session, name)
            if not peer.public_key:
                raise SyncFailure(f"no public key is registered for {name}: add the public_key of its instance definition "
                                  "(Instance Overview, Edit)", REFUSED)
            my_settings = instances.settings_of(me)
            url = f"{peer.protocol}://{peer.host}:{peer.port}{SYNC_PATH}"
            token, fernet, public_key = peer.token, peer.fernet_key, peer.public_key
            try:
                verify = _verification(peer)
            except ssl.SSLError as exc:
                raise SyncFailure(f"the CA bundle registered for {name} cannot be used: {exc.reason or exc}", REFUSED) from None
        outbox = self._outbox(name)
        body, kind = seal({"instance": my_settings, "updates": outbox}, fernet)
        headers = sign_request(self._key(), token, me_name, name, "POST", SYNC_PATH, body)
        answer = self._exchange(name, url, body, {**headers, "Content-Type": kind}, verify)
        try:
            verify_response(public_key, headers[NONCE_HEADER], answer.status, answer.body, answer.headers.get(SIGNATURE_HEADER, ""),
                            responder=name, caller=me_name)
        except SignatureRefused as exc:
            log.warning("sync with %s at %s: %s (HTTP %d)", name, url, exc.reason, answer.status)
            if answer.headers.get(SIGNATURE_HEADER):  # a Vireo answered, signing with another key than the one we know
                raise SyncFailure(signature_key_changed(name), REFUSED) from None
            raise SyncFailure(could_not_reach(name), UNREACHABLE) from None
        if answer.status != 200:
            raise SyncFailure(refused_request(name, answer.status, refusal_detail(answer.body)), REFUSED, seen=True)
        try:
            payload = open_body(answer.body, answer.headers.get("content-type", ""), fernet, required=fernet is not None)
            reply: SyncAnswer = parse(SyncAnswer, payload)
        except (EnvelopeRefused, MalformedSync) as exc:
            log.warning("sync with %s: its signed answer was refused: %s", name, exc)
            raise SyncFailure(refused_answer(name, str(exc)), REFUSED, seen=True) from None
        with self.db.session() as session:
            peer = instances.remote(session, name)
            instances.store_peer_settings(peer, reply.instance)
            peer.last_seen = peer.last_success = utcnow()
            peer.last_error, peer.missed_syncs, peer.failure_kind = "", 0, ""
            session.add(peer)
            session.commit()
        self._mark_reported(outbox, set(reply.acknowledged))
        received = self._adopt(name, reply.jobs)
        aborted = self._abort(name, reply.aborted)
        return {"sent": len(outbox), "received": received, "aborted": aborted}

    def _exchange(self, name: str, url: str, body: bytes, headers: dict[str, str], verify: bool | ssl.SSLContext) -> transport.Answer:
        try:
            return transport.exchange(url, body, headers, verify, self.limits.deadline, self.limits.max_response)
        except transport.Unreachable as exc:
            log.warning("sync with %s at %s: could not reach it: %s", name, url, exc.detail)
            raise SyncFailure(could_not_reach(name), UNREACHABLE) from None
        except transport.AnswerTooLarge as exc:
            log.warning("sync with %s at %s: %s", name, url, exc)
            raise SyncFailure(f"{name}'s answer was refused: {exc} (VIREO_FEDERATION_MAX_RESPONSE); the transfer was stopped", REFUSED) from None
        except transport.AnswerRefused as exc:
            log.warning("sync with %s at %s: %s", name, url, exc)
            raise SyncFailure(f"{name}'s answer was refused: {exc}", REFUSED) from None

    # ---- what the answer asks of this instance ----------------------------------------------
    def _outbox(self, owner: str) -> list[dict[str, Any]]:
        """Statuses of jobs `owner` owns that it has not acknowledged yet, each with its steps, log tails and file list.

        The snapshots (`federation.job_mirror`) of one sync stay within `MAX_DETAILS_PER_SYNC`: the updates beyond
        wait for the next sync (unacknowledged, they stay in the outbox)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(Job.id, Job.external_job_id, Job.status, Job.error, Job.result, Job.run, Job.steps)
                .outerjoin(ReportedStatus, ReportedStatus.job_id == Job.id)  # type: ignore[arg-type]
                .where(Job.owner_instance == owner, Job.runner_instance == self._name(),
                       (ReportedStatus.status.is_(None)) | (ReportedStatus.status != Job.status))  # type: ignore[union-attr]
                .order_by(Job.id)
            ).all()
        data_dir = Path(self.engine.config.data_dir)
        budget = job_mirror.MAX_DETAILS_PER_SYNC
        updates: list[dict[str, Any]] = []
        for r in rows:
            details = job_mirror.collect(data_dir, r.id, r.run, list(r.steps or []))
            budget -= job_mirror.size_of(details)
            if budget < 0 and updates:
                break
            # a finished job's result (a federated round's runner result) travels with its status, in the same sealed body
            updates.append({"job_id": r.external_job_id, "runner_job_id": r.id, "status": r.status, "error": r.error, "details": details,
                            **({"result": r.result} if r.status == JobState.FINISHED and r.result is not None else {})})
        return updates

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

    def _adopt(self, owner: str, jobs: list[OfferedJob]) -> int:
        """Store each job the owner sent: pending or queued, or failed with the reason when not allowed here."""
        with self.db.session() as session:
            me = instances.local(session)
        status_if_allowed = JobState.QUEUED if me.automatic_execution else JobState.PENDING
        remote_jobs: list[RemoteJob] = []
        for job in jobs:
            dataset = job.dataset or None
            reason = instances.permission_refusal(me, job.dag_id, dataset)
            series: list[str] = []
            conf = job.conf
            if not reason:
                try:
                    conf = self.registry.get(job.dag_id).validate_conf(conf).model_dump(mode="json")
                    if dataset:
                        series = self.engine.dataset_series(dataset)
                except WorkflowError as exc:
                    reason = str(exc)
                except Exception as exc:  # an unknown DAG or a configuration this DAG refuses
                    reason = f"cannot run here: {exc}"
            remote_jobs.append(RemoteJob(
                external_job_id=job.id, workflow_id=job.workflow_id, workflow_name=job.workflow_name or job.dag_id,
                dag_id=job.dag_id, dataset=dataset, series=series, conf=conf, username=f"{job.username or ''}@{owner}",
                status=JobState.FAILED if reason else status_if_allowed, error=reason or "", timeout=job.timeout,
            ))
        if not remote_jobs:
            return 0
        adopted = self.engine.adopt_remote_jobs(owner, remote_jobs)
        self._owners.update((job_id, owner) for job_id, _ in adopted)
        created = 0
        with self.db.session() as session:
            for remote_job, (job_id, new) in zip(remote_jobs, adopted):
                if new:
                    created += 1
                    record(session, owner, "permission refused" if remote_job.error else "job received",
                           f"job {job_id} ({remote_job.dag_id} on {remote_job.dataset or 'no dataset'}): "
                           f"{remote_job.error or remote_job.status.value}")
            session.commit()
        return created

    def _abort(self, owner: str, job_ids: list[int]) -> int:
        if not job_ids:
            return 0
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(Job.id, Job.status).where(Job.owner_instance == owner, Job.external_job_id.in_(job_ids))  # type: ignore[union-attr]
            ).all()
        aborted = 0
        for row in rows:
            if row.status in ENDED or row.status == JobState.DELETED:
                continue
            self.engine.abort_job(row.id)
            aborted += 1
            with self.db.session() as session:
                record(session, owner, "aborted by owner", f"job {row.id}")
                session.commit()
        return aborted


def _verification(peer: FederationInstance) -> bool | ssl.SSLContext:
    """SSL verification per remote: off, the system's trust store, or the remote's own CA bundle."""
    if peer.protocol != "https":
        return True
    if not peer.ssl_verify:
        return False
    if peer.ca_bundle:
        return ssl.create_default_context(cadata=peer.ca_bundle)
    return True
