"""Who this instance is: an Ed25519 key pair only it holds, and the public keys of the remotes.

A token every peer of an instance knows cannot tell those peers apart; a private key can.
The key is generated at first start into the data dir (`federation-identity.key`, mode 0600,
never in the database, never shown); its public half travels in the instance definition as
`ed25519:<base64url>` and is stored with the remote that registers it. Every request and every
answer between instances is signed with the sender's private key and checked against the
public key registered for the sender.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

log = logging.getLogger(__name__)

KEY_FILE = "federation-identity.key"
PUBLIC_KEY_PREFIX = "ed25519:"
PUBLIC_KEY_LENGTH = len(PUBLIC_KEY_PREFIX) + 43  # 32 bytes, base64url without padding


class PublicKeyError(ValueError):
    """Text that is not an Ed25519 public key as an instance definition carries it."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_public_key(key: Ed25519PublicKey) -> str:
    return PUBLIC_KEY_PREFIX + _b64(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The key of `ed25519:<base64url of 32 bytes>`; raises PublicKeyError with the reason."""
    text = (text or "").strip()
    if not text.startswith(PUBLIC_KEY_PREFIX) or len(text) != PUBLIC_KEY_LENGTH:
        raise PublicKeyError("public_key must be 'ed25519:' and 43 characters of base64url, as the instance definition shows it")
    try:
        raw = _unb64(text[len(PUBLIC_KEY_PREFIX):])
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError):
        raise PublicKeyError("public_key is not a valid Ed25519 public key") from None


def check_public_key(text: str | None) -> str | None:
    """The canonical text of a public key (None when absent)."""
    if text in (None, ""):
        return None
    return encode_public_key(parse_public_key(str(text)))


def fingerprint(public_key: str | None) -> str | None:
    """`SHA256:<base64>` of the raw key, as OpenSSH prints one: short enough to compare by phone."""
    if not public_key:
        return None
    raw = _unb64(public_key[len(PUBLIC_KEY_PREFIX):])
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()


def verify(public_key: str, message: bytes, signature: str) -> bool:
    """Whether `signature` (base64url) is the key's signature of `message`."""
    try:
        parse_public_key(public_key).verify(_unb64(signature), message)
    except (PublicKeyError, InvalidSignature, ValueError, TypeError):
        return False
    return True


class InstanceKey:
    """This instance's private key: signs what it sends."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = encode_public_key(private_key.public_key())

    @classmethod
    def generate(cls) -> InstanceKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> InstanceKey:
        """Read the key file, or create it (owner read/write only) on first start."""
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                log.warning("%s was readable by others (mode %o): restricted to its owner", path.name, mode)
                path.chmod(0o600)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise SystemExit(f"{path} does not hold an Ed25519 private key; move it away to have a new one generated")
            return cls(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = Ed25519PrivateKey.generate()
        pem = fresh.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        log.info("generated this instance's federation key (%s)", path.name)
        return cls(fresh)

    def sign(self, message: bytes) -> str:
        return _b64(self._key.sign(message))
