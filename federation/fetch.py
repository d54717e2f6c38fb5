"""Full logs and result files of a remote job, fetched from its runner on demand through the signed channel.

The sync mirrors only log tails and the file list (`federation.job_mirror`); the whole of a log
or a file is asked for when someone opens it. The owner (caller) sends one signed
`POST /api/federation/fetch` — `{"job_id": <the owner's job id>, "what": "log" | "file",
"step": <index>, "name": <file name>}`, sealed like a sync body — and the runner answers with the
bytes, signed (the signature covers them) and Fernet-encrypted when it requires encryption.
The runner answers only for a job it runs *for the instance that proves it is asking*: any other
job id is refused (403) and recorded in the audit log under the asker's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from core.db import Database
from core.workflows.context import run_dir
from core.workflows.models import Job
from core.workflows.runner import step_log_name
from federation import instances, transport
from federation.audit import record
from federation.endpoint import Reply, refusal_detail
from federation.envelope import FERNET_TYPE, EnvelopeRefused, open_body, seal
from federation.failures import could_not_reach, refused_request, signature_key_changed
from federation.identity import InstanceKey
from federation.protocol import MalformedSync, parse
from federation.signing import NONCE_HEADER, SIGNATURE_HEADER, DatabaseNonceStore, SignatureRefused, sign_request, sign_response, verify_request

FETCH_PATH = "/api/federation/fetch"
MAX_FETCH_BYTES = 64 * 1024 * 1024
OCTETS = "application/octet-stream"


class FetchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    job_id: int
    what: str = Field(pattern="^(log|file)$")
    step: int | None = Field(None, ge=0, le=10_000)
    name: str | None = Field(None, max_length=255)


class FetchRefused(Exception):
    """The runner could not be asked, or refused: `message` in plain words, `status` the HTTP status to pass on."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class FetchEndpoint:
    """The runner's side: answers a proven owner's request for a log or file of a job it runs for that owner."""

    def __init__(self, db: Database, data_dir: Path, name: Callable[[], str], key: Callable[[], InstanceKey]) -> None:
        self.db = db
        self.data_dir = data_dir
        self._name = name
        self._key = key
        self.nonces = DatabaseNonceStore(db.engine)

    def answer(self, headers: Mapping[str, str], body: bytes, content_type: str, source: str = "") -> Reply:
        lower = {k.lower(): v for k, v in headers.items()}
        nonce, claimed = lower.get(NONCE_HEADER.lower(), "")[:64], lower.get("x-vireo-instance", "")[:128]
        with self.db.session() as session:
            me = instances.local(session)
            me_name, token, fernet, required = me.name, me.token, me.fernet_key, me.fernet_encryption
        try:
            request = verify_request(headers, "POST", FETCH_PATH, body, callee=me_name, token=token, key_owner=self._key_owner, nonces=self.nonces)
        except SignatureRefused as exc:
            return self._refusal(401, exc.reason, nonce, claimed)
        signer = request.signer
        if request.claimed != signer or not request.token_ok:
            return self._refusal(401 if not request.token_ok else 403, "the token proof does not match" if not request.token_ok
                                 else "an instance speaks only for itself", nonce, signer)
        try:
            asked: FetchRequest = parse(FetchRequest, open_body(body, content_type, fernet, required))
        except (EnvelopeRefused, MalformedSync) as exc:
            return self._refusal(400, str(exc), nonce, signer)
        with self.db.engine.connect() as conn:
            row = conn.execute(select(Job.id, Job.run, Job.steps).where(
                Job.owner_instance == signer, Job.runner_instance == me_name, Job.external_job_id == asked.job_id)).first()
        if row is None:
            self._audit(signer, "fetch refused", f"asked for {asked.what}s of job {asked.job_id}, which {me_name} does not run for {signer}", source)
            return self._refusal(403, f"job {asked.job_id} is not a job {me_name} runs for {signer}", nonce, signer)
        path = self._path(row, asked)
        if path is None or not path.is_file():
            return self._refusal(404, f"job {asked.job_id} has no such {asked.what} on {me_name}", nonce, signer)
        if path.stat().st_size > MAX_FETCH_BYTES:
            return self._refusal(413, f"the {asked.what} is larger than {MAX_FETCH_BYTES} bytes: fetch it on {me_name} itself", nonce, signer)
        data = path.read_bytes()
        kind = OCTETS
        if required and fernet:
            data, kind = Fernet(fernet.encode()).encrypt(data), FERNET_TYPE
        return Reply(200, data, kind, {SIGNATURE_HEADER: sign_response(self._key(), nonce, 200, data, me_name, signer)})

    def _path(self, row: Any, asked: FetchRequest) -> Path | None:
        folder = run_dir(self.data_dir, row.id, row.run)
        if asked.what == "log":
            steps = list(row.steps or [])
            if asked.step is None or not 0 <= asked.step < len(steps):
                return None
            return folder / "logs" / step_log_name(asked.step, str(steps[asked.step].get("name", "")))
        name = asked.name or ""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            return None
        return folder / "output" / name

    def _key_owner(self, public_key: str) -> str | None:
        with self.db.session() as session:
            return instances.key_owner(session, public_key)

    def _audit(self, peer: str, action: str, detail: str, source: str) -> None:
        with self.db.session() as session:
            record(session, peer, action, detail, source)
            session.commit()

    def _refusal(self, status: int, reason: str, nonce: str, caller: str) -> Reply:
        data, kind = seal({"detail": reason}, None)
        headers = {SIGNATURE_HEADER: sign_response(self._key(), nonce, status, data, self._name(), caller)} if nonce else {}
        return Reply(status, data, kind, headers)


def fetch(db: Database, me_name: str, key: InstanceKey, runner: str, owner_job_id: int, what: str, deadline: float,
          step: int | None = None, name: str | None = None) -> bytes:
    """Ask `runner` for the full log of step `step` (or the file `name`) of the owner's job `owner_job_id`."""
    with db.session() as session:
        try:
            peer = instances.remote(session, runner)
        except instances.UnknownInstance:
            raise FetchRefused(f"{runner} is no longer registered here: its job's files cannot be fetched", 409) from None
        if not peer.public_key:
            raise FetchRefused(f"no public key is registered for {runner}", 409)
        from federation.poller import _verification

        url = f"{peer.protocol}://{peer.host}:{peer.port}{FETCH_PATH}"
        token, fernet, public_key, verify = peer.token, peer.fernet_key, peer.public_key, _verification(peer)
    body, kind = seal({"job_id": owner_job_id, "what": what, "step": step, "name": name}, fernet)
    headers = sign_request(key, token, me_name, runner, "POST", FETCH_PATH, body)
    try:
        answer = transport.exchange(url, body, {**headers, "Content-Type": kind}, verify, deadline, MAX_FETCH_BYTES + 1024 * 1024)
    except transport.AnswerRefused as exc:
        raise FetchRefused(f"{runner}'s answer was refused: {exc}") from None
    except transport.Unreachable:
        raise FetchRefused(could_not_reach(runner), 504) from None
    from federation.signing import verify_response

    try:
        verify_response(public_key, headers[NONCE_HEADER], answer.status, answer.body, answer.headers.get(SIGNATURE_HEADER, ""),
                        responder=runner, caller=me_name)
    except SignatureRefused:
        raise FetchRefused(signature_key_changed(runner) if answer.headers.get(SIGNATURE_HEADER) else could_not_reach(runner)) from None
    if answer.status != 200:
        status = answer.status if answer.status in (403, 404, 413) else 502
        raise FetchRefused(refused_request(runner, answer.status, refusal_detail(answer.body)), status)
    data = answer.body
    if answer.headers.get("content-type", "").split(";")[0].strip().lower() == FERNET_TYPE:
        if not fernet:
            raise FetchRefused(f"{runner}'s answer is encrypted, and no Fernet key is registered here for it")
        try:
            data = Fernet(fernet.encode()).decrypt(data)
        except InvalidToken:
            raise FetchRefused(f"{runner}'s answer could not be read: the Fernet key does not match") from None
    return data
