"""Signed requests between instances: the sender's own Ed25519 key says who it is, the callee's token that it may ask.

A caller signs method, path, timestamp, nonce, the SHA-256 of the body, its own name and the
callee's name with its private key (`federation.identity`), and sends its public key along.
The callee finds the registered remote that holds that public key — that remote, and only
it, is the sender — and refuses a request whose claimed name is another's. The callee's own
token (which never travels) keys an HMAC over the same message: proof that the caller was
given this instance's definition, so regenerating the token still cuts every peer off.
Timestamps more than `MAX_SKEW` seconds off and nonces seen before are refused, and the
callee's name in the message stops a request meant for one instance from being replayed to
another. Answers are signed with the answering instance's key, bound to the request's nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from core.timeutil import utcnow
from federation import identity
from federation.identity import InstanceKey
from federation.models import SeenNonce

MAX_SKEW = 300.0
INSTANCE_HEADER = "X-Vireo-Instance"
KEY_HEADER = "X-Vireo-Key"
TIMESTAMP_HEADER = "X-Vireo-Timestamp"
NONCE_HEADER = "X-Vireo-Nonce"
SIGNATURE_HEADER = "X-Vireo-Signature"
TOKEN_PROOF_HEADER = "X-Vireo-Token-Proof"
REQUIRED_HEADERS = (INSTANCE_HEADER, KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TOKEN_PROOF_HEADER)

# what kind of refusal, for the audit log's summaries of unproven requests
UNSIGNED, MALFORMED, STALE, UNKNOWN_KEY, BAD_SIGNATURE, REPLAYED = "unsigned", "malformed", "stale", "unknown key", "bad signature", "replayed"


class SignatureRefused(Exception):
    """A request (or answer) whose signature, freshness or nonce does not hold; `reason` says which, `kind` in a word."""

    def __init__(self, reason: str, caller: str = "", kind: str = BAD_SIGNATURE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.caller = caller
        self.kind = kind


class NonceStore(Protocol):
    def remember(self, nonce: str) -> bool:
        """Record the nonce; False when it was seen before (a replay)."""


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def request_message(method: str, path: str, timestamp: str, nonce: str, body: bytes, caller: str, callee: str) -> bytes:
    return "\n".join(("VIREO-REQUEST-1", method.upper(), path, timestamp, nonce, body_hash(body), caller, callee)).encode()


def response_message(request_nonce: str, status: int, body: bytes, responder: str, caller: str) -> bytes:
    return "\n".join(("VIREO-RESPONSE-1", request_nonce, str(status), body_hash(body), responder, caller)).encode()


def token_proof(token: str, message: bytes) -> str:
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def sign_request(
    key: InstanceKey, token: str, caller: str, callee: str, method: str, path: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The headers of one request from `caller` (whose key this is) to `callee` (whose token this is)."""
    timestamp = str(int(now if now is not None else time.time()))
    nonce = secrets.token_hex(16)
    message = request_message(method, path, timestamp, nonce, body, caller, callee)
    return {
        INSTANCE_HEADER: caller,
        KEY_HEADER: key.public_key,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: key.sign(message),
        TOKEN_PROOF_HEADER: token_proof(token, message),
    }


@dataclass(frozen=True)
class SignedRequest:
    caller: str
    public_key: str
    timestamp: str
    nonce: str
    signature: str
    token_proof: str


def read_headers(headers: Mapping[str, str]) -> SignedRequest:
    lower = {k.lower(): v for k, v in headers.items()}
    values = [lower.get(h.lower(), "") for h in REQUIRED_HEADERS]
    if not all(values):
        raise SignatureRefused(
            "unsigned request: X-Vireo-Instance, -Key, -Timestamp, -Nonce, -Signature and -Token-Proof are required",
            lower.get(INSTANCE_HEADER.lower(), "")[:128], UNSIGNED,
        )
    signed = SignedRequest(*values)
    if len(signed.nonce) > 64 or len(signed.caller) > 128 or len(signed.public_key) > 128 or len(signed.signature) > 128:
        raise SignatureRefused("malformed signature headers (too long)", signed.caller[:128], MALFORMED)
    return signed


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose signature holds: `signer` is the registered instance whose key made it."""

    signer: str
    claimed: str
    nonce: str
    token_ok: bool


def verify_request(
    headers: Mapping[str, str], method: str, path: str, body: bytes, *, callee: str, token: str,
    key_owner: Callable[[str], str | None], nonces: NonceStore, now: float | None = None,
) -> VerifiedRequest:
    """Who signed this request to `callee` (by `key_owner`: the registered remote holding a public key), or SignatureRefused.

    Whether the claimed name is the signer's, and whether the token proof holds, is the caller's
    to decide (and to audit, now that it knows who the sender is)."""
    signed = read_headers(headers)
    try:
        stamp = int(signed.timestamp)
    except ValueError:
        raise SignatureRefused("timestamp is not whole seconds since the epoch", signed.caller, MALFORMED) from None
    clock = now if now is not None else time.time()
    if abs(clock - stamp) > MAX_SKEW:
        raise SignatureRefused(f"timestamp {int(clock - stamp)} s off (more than {int(MAX_SKEW)} s)", signed.caller, STALE)
    signer = key_owner(signed.public_key)
    if signer is None:
        raise SignatureRefused("the request is signed with a key no instance registered here holds", signed.caller, UNKNOWN_KEY)
    message = request_message(method, path, signed.timestamp, signed.nonce, body, signed.caller, callee)
    if not identity.verify(signed.public_key, message, signed.signature):
        raise SignatureRefused("signature does not match (a changed request, or not signed with the key it names)", signed.caller, BAD_SIGNATURE)
    if not nonces.remember(signed.nonce):
        raise SignatureRefused("nonce already seen: replayed request", signed.caller, REPLAYED)
    return VerifiedRequest(signer, signed.caller, signed.nonce, hmac.compare_digest(token_proof(token, message), signed.token_proof))


def sign_response(key: InstanceKey, request_nonce: str, status: int, body: bytes, responder: str, caller: str) -> str:
    return key.sign(response_message(request_nonce, status, body, responder, caller))


def verify_response(public_key: str, request_nonce: str, status: int, body: bytes, given: str, responder: str, caller: str) -> None:
    """Check that `responder` (the holder of `public_key`) gave this answer to this request."""
    if not given or not identity.verify(public_key, response_message(request_nonce, status, body, responder, caller), given):
        raise SignatureRefused(f"the answer is not signed with the public key registered for {responder}")


class DatabaseNonceStore:
    """Nonces in the `federation_nonce` table: survives a restart, shared by every worker of one database."""

    def __init__(self, engine: Engine, window: float = MAX_SKEW) -> None:
        self.engine = engine
        self.window = window
        self._last_prune = 0.0

    def remember(self, nonce: str) -> bool:
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(SeenNonce.__table__).values(nonce=nonce, seen=now))  # type: ignore[attr-defined]
        except IntegrityError:
            return False
        if time.monotonic() - self._last_prune > self.window:
            self.prune(now - timedelta(seconds=2 * self.window))
        return True

    def prune(self, before: datetime) -> None:
        """Forget nonces older than twice the window: their timestamps alone refuse them now."""
        self._last_prune = time.monotonic()
        with self.engine.begin() as conn:
            conn.execute(delete(SeenNonce.__table__).where(SeenNonce.__table__.c.seen < before))  # type: ignore[attr-defined]
