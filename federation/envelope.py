"""Fernet envelopes: with encryption on, a whole request or response body travels encrypted.

The body is JSON; sealed, it is a Fernet token (authenticated, timestamped) sent as
`application/vnd.vireo.fernet`. Opening checks the token's age against a TTL, so an old
captured body is useless even before the signature's own freshness check. When the receiver
requires encryption, plaintext is refused rather than accepted quietly.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

FERNET_TYPE = "application/vnd.vireo.fernet"
JSON_TYPE = "application/json"
DEFAULT_TTL = 600


class EnvelopeRefused(Exception):
    """A body that cannot be opened: plaintext where encryption is required, a wrong key, an expired token."""


def seal(payload: Any, key: str | None) -> tuple[bytes, str]:
    """The body and its content type: Fernet-encrypted JSON with a key, plain JSON without."""
    data = json.dumps(payload, separators=(",", ":"), default=str).encode()
    if key is None:
        return data, JSON_TYPE
    return Fernet(key.encode()).encrypt(data), FERNET_TYPE


def open_body(body: bytes, content_type: str, key: str | None, required: bool, ttl: int = DEFAULT_TTL) -> Any:
    """The payload of a body; raises EnvelopeRefused for plaintext when `required`, or an unreadable token."""
    encrypted = content_type.split(";")[0].strip().lower() == FERNET_TYPE
    if encrypted:
        if key is None:
            raise EnvelopeRefused("the body is Fernet-encrypted but no Fernet key is configured for it")
        try:
            body = Fernet(key.encode()).decrypt(body, ttl=ttl)
        except InvalidToken:
            raise EnvelopeRefused("cannot decrypt the body: wrong Fernet key, a changed body or older than its TTL") from None
    elif required:
        raise EnvelopeRefused("plaintext refused: this instance requires Fernet-encrypted bodies")
    if not body:
        return None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EnvelopeRefused("the body is not JSON") from None
