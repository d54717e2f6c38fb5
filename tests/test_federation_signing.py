"""Request signing, nonce store and Fernet envelopes: good requests pass, every tampering is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from core.db import Database
from federation import envelope, signing
from federation.instances import new_token
from federation.signing import SignatureRefused

TOKEN = new_token()
BODY = b'{"jobs": []}'


@pytest.fixture(scope="module")
def nonces(tmp_path_factory: pytest.TempPathFactory) -> signing.DatabaseNonceStore:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('nonces') / 'vireo.db'}")
    db.migrate()
    return signing.DatabaseNonceStore(db.engine)


def _verify(headers: dict[str, str], nonces: signing.NonceStore, *, token: str = TOKEN, method: str = "POST",
            path: str = "/api/federation/sync", body: bytes = BODY, now: float | None = None) -> str:
    return signing.verify_request(token, method, path, headers, body, nonces, now=now)


def test_signed_request_passes_once(nonces: signing.DatabaseNonceStore) -> None:
    headers = signing.sign_request(TOKEN, "site-b", "POST", "/api/federation/sync", BODY)
    assert TOKEN not in "".join(headers.values())  # the token itself never travels
    assert _verify(headers, nonces) == "site-b"
    with pytest.raises(SignatureRefused, match="replayed"):
        _verify(headers, nonces)


@pytest.mark.parametrize(
    "change",
    [
        {"token": new_token()},
        {"method": "PUT"},
        {"path": "/api/federation/jobs"},
        {"body": b'{"jobs": [1]}'},
    ],
    ids=["wrong-token", "method", "path", "body"],
)
def test_any_change_breaks_the_signature(nonces: signing.DatabaseNonceStore, change: dict) -> None:
    headers = signing.sign_request(TOKEN, "site-b", "POST", "/api/federation/sync", BODY)
    with pytest.raises(SignatureRefused, match="signature does not match"):
        _verify(headers, nonces, **change)
    # a refused request does not burn its nonce: the genuine one still passes
    assert _verify(headers, nonces) == "site-b"


def test_claimed_caller_and_nonce_are_signed(nonces: signing.DatabaseNonceStore) -> None:
    headers = signing.sign_request(TOKEN, "site-b", "POST", "/api/federation/sync", BODY)
    for header, value in ((signing.INSTANCE_HEADER, "site-c"), (signing.NONCE_HEADER, "0" * 32), (signing.SIGNATURE_HEADER, "0" * 64)):
        with pytest.raises(SignatureRefused, match="signature does not match"):
            _verify({**headers, header: value}, nonces)


def test_old_and_future_timestamps_are_refused(nonces: signing.DatabaseNonceStore) -> None:
    now = time.time()
    for skew in (-301, 301, -3600):
        headers = signing.sign_request(TOKEN, "site-b", "POST", "/api/federation/sync", BODY, now=now + skew)
        with pytest.raises(SignatureRefused, match="s off"):
            _verify(headers, nonces, now=now)
    headers = signing.sign_request(TOKEN, "site-b", "POST", "/api/federation/sync", BODY, now=now - 290)
    assert _verify(headers, nonces, now=now) == "site-b"


def test_unsigned_and_malformed_headers(nonces: signing.DatabaseNonceStore) -> None:
    with pytest.raises(SignatureRefused, match="unsigned"):
        _verify({}, nonces)
    headers = signing.sign_request(TOKEN, "site-b", "POST", "/api/federation/sync", BODY)
    with pytest.raises(SignatureRefused, match="whole seconds"):
        _verify({**headers, signing.TIMESTAMP_HEADER: "yesterday"}, nonces)


def test_nonces_survive_a_new_store_and_old_ones_are_pruned(nonces: signing.DatabaseNonceStore) -> None:
    again = signing.DatabaseNonceStore(nonces.engine)
    assert again.remember("n-1") and not again.remember("n-1") and not nonces.remember("n-1")
    from core.timeutil import utcnow

    again.prune(utcnow())
    assert again.remember("n-1")  # forgotten once its timestamp alone would refuse it


def test_response_signature_is_bound_to_the_request() -> None:
    sig = signing.sign_response(TOKEN, "nonce-1", 200, BODY)
    signing.verify_response(TOKEN, "nonce-1", 200, BODY, sig)
    for args in (("nonce-2", 200, BODY), ("nonce-1", 500, BODY), ("nonce-1", 200, b"{}")):
        with pytest.raises(SignatureRefused):
            signing.verify_response(TOKEN, *args, sig)
    with pytest.raises(SignatureRefused):
        signing.verify_response(new_token(), "nonce-1", 200, BODY, sig)


def test_envelope_round_trip_and_refusals() -> None:
    key = Fernet.generate_key().decode()
    body, kind = envelope.seal({"jobs": [{"id": 1}]}, key)
    assert kind == envelope.FERNET_TYPE and b"jobs" not in body
    assert envelope.open_body(body, kind, key, required=True) == {"jobs": [{"id": 1}]}
    with pytest.raises(envelope.EnvelopeRefused, match="wrong Fernet key"):
        envelope.open_body(body, kind, Fernet.generate_key().decode(), required=True)
    with pytest.raises(envelope.EnvelopeRefused, match="wrong Fernet key"):
        envelope.open_body(body[:-4] + b"AAAA", kind, key, required=True)
    plain, plain_kind = envelope.seal({"jobs": []}, None)
    assert plain_kind == envelope.JSON_TYPE and envelope.open_body(plain, plain_kind, None, required=False) == {"jobs": []}
    with pytest.raises(envelope.EnvelopeRefused, match="plaintext refused"):
        envelope.open_body(plain, plain_kind, key, required=True)


def test_envelope_ttl() -> None:
    key = Fernet.generate_key()
    old = Fernet(key).encrypt_at_time(b'{"a": 1}', int(time.time()) - 700)
    with pytest.raises(envelope.EnvelopeRefused, match="TTL"):
        envelope.open_body(old, envelope.FERNET_TYPE, key.decode(), required=True, ttl=600)
    assert envelope.open_body(old, envelope.FERNET_TYPE, key.decode(), required=True, ttl=800) == {"a": 1}
