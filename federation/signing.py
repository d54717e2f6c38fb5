"""Signed requests between instances: HMAC-SHA256 keyed by the callee's token, fresh and used once.

The caller signs method, path, timestamp, nonce, the SHA-256 of the body and its own name
with the token the callee set for itself; the token never travels. The callee recomputes
the signature with its own token, refuses timestamps more than `MAX_SKEW` seconds off and
any nonce it has seen (a captured request cannot be replayed). Responses are signed the
same way, bound to the request's nonce, so a caller knows who answered.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from core.timeutil import utcnow
from federation.models import SeenNonce

MAX_SKEW = 300.0
INSTANCE_HEADER = "X-Vireo-Instance"
TIMESTAMP_HEADER = "X-Vireo-Timestamp"
NONCE_HEADER = "X-Vireo-Nonce"
SIGNATURE_HEADER = "X-Vireo-Signature"


class SignatureRefused(Exception):
    """A request (or response) whose signature, freshness or nonce does not hold; `reason` says which."""

    def __init__(self, reason: str, caller: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.caller = caller


class NonceStore(Protocol):
    def remember(self, nonce: str) -> bool:
        """Record the nonce; False when it was seen before (a replay)."""


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical(method: str, path: str, timestamp: str, nonce: str, body: bytes, caller: str) -> bytes:
    return "\n".join((method.upper(), path, timestamp, nonce, body_hash(body), caller)).encode()


def signature(token: str, message: bytes) -> str:
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def sign_request(token: str, caller: str, method: str, path: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers that authenticate one request from `caller` to the instance whose token this is."""
    timestamp = str(int(now if now is not None else time.time()))
    nonce = secrets.token_hex(16)
    return {
        INSTANCE_HEADER: caller,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(token, canonical(method, path, timestamp, nonce, body, caller)),
    }


@dataclass(frozen=True)
class SignedRequest:
    caller: str
    timestamp: str
    nonce: str
    signature: str


def read_headers(headers: Mapping[str, str]) -> SignedRequest:
    lower = {k.lower(): v for k, v in headers.items()}
    values = [lower.get(h.lower(), "") for h in (INSTANCE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)]
    if not all(values):
        raise SignatureRefused("unsigned request: X-Vireo-Instance, -Timestamp, -Nonce and -Signature are required")
    return SignedRequest(*values)


def verify_request(
    token: str, method: str, path: str, headers: Mapping[str, str], body: bytes, nonces: NonceStore, now: float | None = None
) -> str:
    """Check a request signed with our `token`; returns the caller's name or raises SignatureRefused."""
    signed = read_headers(headers)
    if len(signed.nonce) > 64:
        raise SignatureRefused("nonce too long", signed.caller)
    try:
        stamp = int(signed.timestamp)
    except ValueError:
        raise SignatureRefused("timestamp is not whole seconds since the epoch", signed.caller) from None
    clock = now if now is not None else time.time()
    if abs(clock - stamp) > MAX_SKEW:
        raise SignatureRefused(f"timestamp {int(clock - stamp)} s off (more than {int(MAX_SKEW)} s)", signed.caller)
    expected = signature(token, canonical(method, path, signed.timestamp, signed.nonce, body, signed.caller))
    if not hmac.compare_digest(expected, signed.signature):
        raise SignatureRefused("signature does not match (wrong token or a changed request)", signed.caller)
    if not nonces.remember(signed.nonce):
        raise SignatureRefused("nonce already seen: replayed request", signed.caller)
    return signed.caller


def sign_response(token: str, request_nonce: str, status: int, body: bytes) -> str:
    return signature(token, "\n".join(("RESPONSE", request_nonce, str(status), body_hash(body))).encode())


def verify_response(token: str, request_nonce: str, status: int, body: bytes, given: str) -> None:
    if not given or not hmac.compare_digest(sign_response(token, request_nonce, status, body), given):
        raise SignatureRefused("the answer is not signed with the remote's token")


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
