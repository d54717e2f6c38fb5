"""Request signing, nonce store and Fernet envelopes: good requests pass, every tampering is refused.

Identity comes from each instance's own Ed25519 key: a request passes only with the key
registered for its sender, and the callee's token proof rides along as the authorisation.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from core.db import Database
from federation import envelope, identity, signing
from federation.identity import InstanceKey
from federation.instances import new_token
from federation.signing import SignatureRefused

TOKEN = new_token()  # the callee's (site-a's) token
BODY = b'{"jobs": []}'
B_KEY, C_KEY = InstanceKey.generate(), InstanceKey.generate()
REGISTERED = {B_KEY.public_key: "site-b", C_KEY.public_key: "site-c"}  # what site-a holds


@pytest.fixture(scope="module")
def nonces(tmp_path_factory: pytest.TempPathFactory) -> signing.DatabaseNonceStore:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('nonces') / 'vireo.db'}")
    db.migrate()
    return signing.DatabaseNonceStore(db.engine)


def _sign(key: InstanceKey = B_KEY, caller: str = "site-b", callee: str = "site-a", token: str = TOKEN, **kw: float) -> dict[str, str]:
    return signing.sign_request(key, token, caller, callee, "POST", "/api/federation/sync", BODY, **kw)


def _verify(headers: dict[str, str], nonces: signing.NonceStore, *, token: str = TOKEN, method: str = "POST", callee: str = "site-a",
            path: str = "/api/federation/sync", body: bytes = BODY, now: float | None = None) -> signing.VerifiedRequest:
    return signing.verify_request(headers, method, path, body, callee=callee, token=token, key_owner=REGISTERED.get, nonces=nonces, now=now)


def test_signed_request_passes_once(nonces: signing.DatabaseNonceStore) -> None:
    headers = _sign()
    assert TOKEN not in "".join(headers.values())  # the token itself never travels
    verified = _verify(headers, nonces)
    assert verified.signer == "site-b" and verified.claimed == "site-b" and verified.token_ok
    with pytest.raises(SignatureRefused, match="replayed"):
        _verify(headers, nonces)


@pytest.mark.parametrize(
    "change",
    [{"method": "PUT"}, {"path": "/api/federation/jobs"}, {"body": b'{"jobs": [1]}'}, {"callee": "site-c"}],
    ids=["method", "path", "body", "another-callee"],
)
def test_any_change_breaks_the_signature(nonces: signing.DatabaseNonceStore, change: dict) -> None:
    headers = _sign()
    with pytest.raises(SignatureRefused, match="signature does not match") as refused:
        _verify(headers, nonces, **change)
    assert refused.value.kind == signing.BAD_SIGNATURE
    # a refused request does not burn its nonce: the genuine one still passes
    assert _verify(headers, nonces).signer == "site-b"


def test_the_signer_is_who_holds_the_key_not_who_it_claims_to_be(nonces: signing.DatabaseNonceStore) -> None:
    """site-c knows site-a's token: it can sign as itself only, whatever name it puts in the header."""
    impersonation = _verify(_sign(C_KEY, caller="site-b"), nonces)
    assert impersonation.signer == "site-c" and impersonation.claimed == "site-b"  # the endpoint refuses and audits site-c
    borrowed = {**_sign(C_KEY, caller="site-b"), signing.KEY_HEADER: B_KEY.public_key}  # names site-b's key, signed with its own
    with pytest.raises(SignatureRefused, match="signature does not match"):
        _verify(borrowed, nonces)
    stranger = InstanceKey.generate()
    with pytest.raises(SignatureRefused, match="no instance registered") as unknown:
        _verify(_sign(stranger, caller="site-x"), nonces)
    assert unknown.value.kind == signing.UNKNOWN_KEY and unknown.value.caller == "site-x"


def test_a_wrong_token_is_told_apart_from_a_wrong_key(nonces: signing.DatabaseNonceStore) -> None:
    verified = _verify(_sign(token=new_token()), nonces)
    assert verified.signer == "site-b" and not verified.token_ok


def test_claimed_caller_nonce_and_signature_are_signed(nonces: signing.DatabaseNonceStore) -> None:
    headers = _sign()
    for header, value in ((signing.INSTANCE_HEADER, "site-c"), (signing.NONCE_HEADER, "0" * 32), (signing.SIGNATURE_HEADER, "A" * 86)):
        with pytest.raises(SignatureRefused, match="signature does not match"):
            _verify({**headers, header: value}, nonces)


def test_old_and_future_timestamps_are_refused(nonces: signing.DatabaseNonceStore) -> None:
    now = time.time()
    for skew in (-301, 301, -3600):
        with pytest.raises(SignatureRefused, match="s off"):
            _verify(_sign(now=now + skew), nonces, now=now)
    assert _verify(_sign(now=now - 290), nonces, now=now).signer == "site-b"


def test_unsigned_and_malformed_headers(nonces: signing.DatabaseNonceStore) -> None:
    with pytest.raises(SignatureRefused, match="unsigned"):
        _verify({}, nonces)
    headers = _sign()
    old_style = {k: v for k, v in headers.items() if k not in (signing.KEY_HEADER, signing.TOKEN_PROOF_HEADER)}
    with pytest.raises(SignatureRefused, match="unsigned"):
        _verify(old_style, nonces)  # a token-only (HMAC) request of the earlier protocol
    with pytest.raises(SignatureRefused, match="whole seconds"):
        _verify({**headers, signing.TIMESTAMP_HEADER: "yesterday"}, nonces)
    with pytest.raises(SignatureRefused, match="too long"):
        _verify({**headers, signing.NONCE_HEADER: "n" * 65}, nonces)


def test_nonces_survive_a_new_store_and_old_ones_are_pruned(nonces: signing.DatabaseNonceStore) -> None:
    again = signing.DatabaseNonceStore(nonces.engine)
    assert again.remember("n-1") and not again.remember("n-1") and not nonces.remember("n-1")
    from core.timeutil import utcnow

    again.prune(utcnow())
    assert again.remember("n-1")  # forgotten once its timestamp alone would refuse it


def test_response_signature_is_bound_to_the_request_and_the_responder() -> None:
    sig = signing.sign_response(B_KEY, "nonce-1", 200, BODY, "site-b", "site-a")
    signing.verify_response(B_KEY.public_key, "nonce-1", 200, BODY, sig, "site-b", "site-a")
    for args in (("nonce-2", 200, BODY), ("nonce-1", 500, BODY), ("nonce-1", 200, b"{}")):
        with pytest.raises(SignatureRefused):
            signing.verify_response(B_KEY.public_key, *args, sig, "site-b", "site-a")
    with pytest.raises(SignatureRefused):  # site-c answering in site-b's place
        signing.verify_response(B_KEY.public_key, "nonce-1", 200, BODY, signing.sign_response(C_KEY, "nonce-1", 200, BODY, "site-b", "site-a"),
                                "site-b", "site-a")
    with pytest.raises(SignatureRefused):  # an answer site-b gave site-c, passed on to site-a
        signing.verify_response(B_KEY.public_key, "nonce-1", 200, BODY, signing.sign_response(B_KEY, "nonce-1", 200, BODY, "site-b", "site-c"),
                                "site-b", "site-a")


def test_key_file_is_created_once_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "data" / identity.KEY_FILE
    first = InstanceKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert InstanceKey.load_or_create(path).public_key == first.public_key  # the same identity after a restart
    os.chmod(path, 0o644)
    InstanceKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.public_key.startswith("ed25519:") and identity.check_public_key(first.public_key) == first.public_key
    assert identity.fingerprint(first.public_key).startswith("SHA256:")
    for bad in ("ed25519:short", "ssh-ed25519 AAAA", "x" * 51):
        with pytest.raises(identity.PublicKeyError):
            identity.check_public_key(bad)


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
