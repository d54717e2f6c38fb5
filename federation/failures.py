"""Why a sync with a remote failed, in the words an admin reads on the Instance Overview.

The endpoints' refusals are precise but technical ("cannot decrypt the body: wrong Fernet key,
a changed body or older than its TTL"); the admin needs which side to fix: "site-b refused our
request: the Fernet key does not match". The reasons below are matched on the refusal's text
(both sides run this code base); anything not recognised is passed on as the remote gave it.
Failures below HTTP deliberately all read the same (`could_not_reach`, issue 17 item 10): telling
a closed port from a filtered one would make a registered remote a port scanner.
"""

from __future__ import annotations

# (a phrase in the remote's refusal, what it means for us): first match wins
REQUEST_REFUSALS: tuple[tuple[str, str], ...] = (
    ("cannot decrypt the body", "the Fernet key does not match (register its current definition, or check the key it shows)"),
    ("plaintext refused", "it requires Fernet encryption, and no Fernet key is registered here for it"),
    ("is fernet-encrypted but no fernet key", "it has no Fernet key for our encrypted request (turn encryption off here, or on there)"),
    ("token proof does not match", "our copy of its token is out of date (was it regenerated? register its definition again)"),
    ("is not registered here", "it does not know this instance (register this instance's definition on it)"),
    ("not signed with the public key registered here", "it has another public key registered for this instance (register our current definition on it)"),
    ("timestamp", "our clocks differ by more than 5 minutes (check both machines' time)"),
    ("an instance speaks only for itself", "it has our public key registered under another name"),
)


def could_not_reach(name: str) -> str:
    """The one message for every failure below the protocol: refused, timed out, TLS, DNS, not a Vireo answering."""
    return f"could not reach {name} (the server log has the details)"


def refused_request(name: str, status: int, detail: str) -> str:
    """`name` answered (signed) and refused our request: what to fix, in plain words."""
    lowered = detail.lower()
    for phrase, meaning in REQUEST_REFUSALS:
        if phrase.lower() in lowered:
            return f"{name} refused our request: {meaning}"
    return f"{name} refused our request (HTTP {status}): {detail}"


def refused_answer(name: str, reason: str) -> str:
    """`name`'s signed answer could not be taken here."""
    if "cannot decrypt" in reason:
        return f"{name}'s answer could not be read: the Fernet key does not match (register its current definition)"
    return f"{name}'s answer was refused: {reason}"


def signature_key_changed(name: str) -> str:
    """An answer that carries a Vireo signature, but not by the key registered for `name`."""
    return (f"{name}'s signature key changed: its answer is signed, but not with the public key registered here for it "
            "(if its admin made a new key, register its new definition)")
