"""The callee's side of a sync: who is asking (proven by its key), what it may see, and what it reports.

Every answer is signed with this instance's key, refusals too, so a runner can tell a refusal
from this instance apart from anything else that answers at its address. A request nobody is
proven to have sent is only counted in the audit log (`audit.RefusalTally`); a proven sender's
refused attempts — claiming another's name, a wrong token, reports on jobs that are not its
own — are recorded in full under its own name.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from core.db import Database
from core.events import JOB_CHANGED, WORKFLOW_CHANGED, EventBus
from core.timeutil import utcnow
from core.workflows.models import Job, Workflow
from core.workflows.states import ENDED, JobState, predecessors
from federation import instances, job_mirror
from federation.audit import RefusalTally, record
from federation.envelope import EnvelopeRefused, open_body, seal
from federation.identity import InstanceKey
from federation.protocol import (
    MAX_JOBS_PER_SYNC,
    MalformedSync,
    StatusUpdate,
    SyncRequest,
    parse,
)
from federation.results import result_refusal
from federation.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    UNKNOWN_KEY,
    DatabaseNonceStore,
    SignatureRefused,
    sign_response,
    verify_request,
)

SYNC_PATH = "/api/federation/sync"
ABORTS_KEPT = timedelta(days=1)
FOREIGN_REPORTS_REMEMBERED = 10_000


@dataclass(frozen=True)
class Reply:
    """What the sync endpoint answers: status, body, content type and headers."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]


class SyncEndpoint:
    """Answers runners' polls for the instance named by `name()`, signing with `key()`."""

    def __init__(self, db: Database, bus: EventBus, name: Callable[[], str], key: Callable[[], InstanceKey], tally: RefusalTally,
                 mirror_dir: Path | None = None) -> None:
        self.db = db
        self.mirror_dir = mirror_dir  # where remote jobs' steps, log tails and file lists are kept (None: not kept)
        self.bus = bus
        self._name = name
        self._key = key
        self.tally = tally
        self.nonces = DatabaseNonceStore(db.engine)
        self._foreign_reported: set[tuple[str, int]] = set()
        self._foreign_guard = threading.Lock()

    def answer(self, headers: Mapping[str, str], body: bytes, content_type: str, source: str = "") -> Reply:
        lower = {k.lower(): v for k, v in headers.items()}
        nonce, claimed = lower.get(NONCE_HEADER.lower(), "")[:64], lower.get("x-vireo-instance", "")[:128]
        with self.db.session() as session:
            me = instances.local(session)
            me_name, token, key, required = me.name, me.token, me.fernet_key, me.fernet_encryption
        try:
            request = verify_request(headers, "POST", SYNC_PATH, body, callee=me_name, token=token, key_owner=self._key_owner, nonces=self.nonces)
        except SignatureRefused as exc:
            return self._unproven(exc, source, nonce, claimed)
        signer = request.signer
        if request.claimed != signer:
            self._audit(signer, "impersonation refused", f"signed with {signer}'s key but claimed to be {request.claimed!r}", source)
            return self._refusal(403, f"this request is signed with the key of {signer!r}, not of {request.claimed!r}: "
                                      "an instance speaks only for itself", nonce, claimed)
        if not request.token_ok:
            self._audit(signer, "authorisation refused", f"its token proof does not match {me_name}'s token", source)
            return self._refusal(401, f"the token proof does not match {me_name}'s token (regenerated? register {me_name}'s "
                                      "definition again)", nonce, signer)
        try:
            sync = parse(SyncRequest, open_body(body, content_type, key, required))
        except EnvelopeRefused as exc:
            self._audit(signer, "envelope refused", str(exc), source)
            return self._refusal(400, str(exc), nonce, signer)
        except MalformedSync as exc:
            self._audit(signer, "request refused", str(exc), source)
            return self._refusal(400, str(exc), nonce, signer)
        with self.db.session() as session:
            try:
                peer = instances.remote(session, signer)
            except instances.UnknownInstance:  # removed since its key was looked up
                return self._refusal(403, f"instance {signer!r} is not registered here", nonce, signer)
            instances.store_peer_settings(peer, sync.instance)
            peer.last_seen = utcnow()
            session.add(peer)
            session.commit()
        with self.db.engine.begin() as conn:
            changed, acknowledged, foreign = self._apply_updates(conn, signer, me_name, sync.updates)
            jobs = self._jobs_for(conn, signer, me_name)
            aborted = list(conn.execute(
                select(Job.id).where(
                    Job.runner_instance == signer, Job.owner_instance == me_name, Job.status == JobState.ABORTED.value,
                    Job.updated >= utcnow() - ABORTS_KEPT,
                )
            ).scalars())
        self._audit_foreign(signer, foreign, source)
        for job_id, workflow_id, status in changed:
            self.bus.publish(JOB_CHANGED, job_id=job_id, workflow_id=workflow_id, status=status, progress_done=None, progress_total=None)
            self.bus.publish(WORKFLOW_CHANGED, workflow_id=workflow_id)
        answer = {"instance": instances.settings_of(me), "jobs": jobs, "acknowledged": acknowledged, "aborted": aborted}
        data, kind = seal(answer, key if required else None)
        return Reply(200, data, kind, {SIGNATURE_HEADER: sign_response(self._key(), nonce, 200, data, me_name, signer)})

    # ---- who is asking ------------------------------------------------------------------
    def _key_owner(self, public_key: str) -> str | None:
        with self.db.session() as session:
            return instances.key_owner(session, public_key)

    def _unproven(self, exc: SignatureRefused, source: str, nonce: str, claimed: str) -> Reply:
        """A request nobody is proven to have sent: counted (not one row each), refused with the reason."""
        if exc.kind == UNKNOWN_KEY:
            with self.db.session() as session:
                try:
                    instances.remote(session, exc.caller)
                except instances.UnknownInstance:
                    self.tally.add(source, "unknown instance refused", exc.kind, exc.caller)
                    return self._refusal(403, f"instance {exc.caller!r} is not registered here", nonce, claimed)
            reason = f"the request is not signed with the public key registered here for {exc.caller!r}"
        else:
            reason = exc.reason
        self.tally.add(source, "signature refused", exc.kind, exc.caller)
        return self._refusal(401, reason, nonce, claimed)

    def _refusal(self, status: int, reason: str, nonce: str, caller: str) -> Reply:
        data, kind = seal({"detail": reason}, None)
        headers = {SIGNATURE_HEADER: sign_response(self._key(), nonce, status, data, self._name(), caller)} if nonce else {}
        return Reply(status, data, kind, headers)

    def _audit(self, peer: str, action: str, detail: str, source: str) -> None:
        with self.db.session() as session:
            record(session, peer, action, detail, source)
            session.commit()

    def _audit_foreign(self, signer: str, job_ids: list[int], source: str) -> None:
        """A proven peer reported on jobs that are not its own: once per job, under its name."""
        with self._foreign_guard:
            fresh = [j for j in job_ids if (signer, j) not in self._foreign_reported]
            if len(self._foreign_reported) > FOREIGN_REPORTS_REMEMBERED:
                self._foreign_reported.clear()
            self._foreign_reported.update((signer, j) for j in fresh)
        if fresh:
            listed = ", ".join(str(j) for j in fresh[:20]) + (" …" if len(fresh) > 20 else "")
            self._audit(signer, "update refused", f"reported on job(s) {listed}, which {signer} does not run for this instance", source)

    # ---- what it reports, what it gets ----------------------------------------------------
    def _apply_updates(
        self, conn: Connection, caller: str, me: str, updates: list[StatusUpdate]
    ) -> tuple[list[tuple[int, str, str]], list[int], list[int]]:
        """Apply each status forward-only; every update of the caller's own jobs is acknowledged, applied or not.

        Returns (changed jobs, acknowledged ids, ids of existing jobs that are not the caller's to report on)."""
        parsed: dict[int, tuple[JobState, int | None, str, Any]] = {}
        details: dict[int, dict[str, Any]] = {}
        for item in updates:
            if item.details is not None:
                details[item.job_id] = item.details
            try:
                parsed[item.job_id] = (JobState(item.status), item.runner_job_id, (item.error or "")[:4000], item.result)
            except ValueError:  # a status this version does not know: skipped, not fatal
                continue
        if not parsed:
            return [], [], []
        rows = conn.execute(
            select(Job.id, Job.workflow_id, Job.external_job_id, Job.status, Job.conf, Job.runner_instance, Job.owner_instance, Job.run)
            .where(Job.id.in_(list(parsed)))  # type: ignore[union-attr]
        ).all()
        foreign = [row.id for row in rows if row.runner_instance != caller or row.owner_instance != me]
        rows = [row for row in rows if row.runner_instance == caller and row.owner_instance == me]
        now = utcnow()
        links: list[dict[str, Any]] = []
        moves: list[dict[str, Any]] = []
        changed: list[tuple[int, str, str]] = []
        mirrored: list[dict[str, Any]] = []
        for row in rows:
            status, runner_job_id, error, result = parsed[row.id]
            if row.external_job_id is None and runner_job_id is not None:
                links.append({"b_id": row.id, "b_external": int(runner_job_id)})
            fresh = status != JobState.DELETED and (row.status == status.value or row.status in predecessors(status))
            if fresh and row.id in details and self.mirror_dir is not None:
                mirrored.append({"b_id": row.id, "b_steps": self._mirror(row.id, row.run, caller, details[row.id])})
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
        if mirrored:
            conn.execute(update(Job).where(Job.id == bindparam("b_id")).values(steps=bindparam("b_steps")), mirrored)
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
        return changed, [row.id for row in rows], foreign

    def _mirror(self, job_id: int, run: int, runner: str, details: dict[str, Any]) -> list[dict[str, Any]]:
        """Keep what the runner told about the job's steps, logs and files; a snapshot that cannot be kept costs only itself."""
        assert self.mirror_dir is not None
        try:
            return job_mirror.store(self.mirror_dir, job_id, run, runner, details)
        except (OSError, TypeError, ValueError, AttributeError) as exc:
            import logging

            logging.getLogger(__name__).warning("job %d: could not keep what %s reported on its steps: %s", job_id, runner, exc)
            return job_mirror.clean_steps(details)

    def _jobs_for(self, conn: Connection, runner: str, me: str) -> list[dict[str, Any]]:
        """Jobs for `runner` it has not reported on yet (delivered again until it does: adoption is idempotent)."""
        rows = conn.execute(
            select(Job.id, Job.workflow_id, Job.dag_id, Job.dataset, Job.conf, Job.username, Job.timeout, Workflow.name)
            .join(Workflow, Workflow.id == Job.workflow_id)
            .where(Job.runner_instance == runner, Job.owner_instance == me, Job.status == JobState.PENDING.value,
                   Job.external_job_id.is_(None))  # type: ignore[union-attr]
            .order_by(Job.id)
            .limit(MAX_JOBS_PER_SYNC)
        ).all()
        return [
            {"id": r.id, "workflow_id": r.workflow_id, "workflow_name": r.name, "dag_id": r.dag_id, "dataset": r.dataset,
             "conf": r.conf, "username": r.username, "timeout": r.timeout}
            for r in rows
        ]


def refusal_detail(body: bytes) -> str:
    """The reason in a (signed) refusal's `{"detail": …}`, shortened for an admin."""
    try:
        detail = json.loads(body).get("detail", "")
    except (ValueError, AttributeError):
        return "no reason given"
    return str(detail)[:300] or "no reason given"
