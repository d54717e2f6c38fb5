"""The local instance and the registered remotes: create, validate, change, describe.

A remote is registered with the definition its admin copied from its own Instance
Overview (`name, protocol, host, port, token, public_key, fernet_key, ssl_verify`): its
public key is how we know it (what it signs, and only that, comes from it); its token proves
to it that we were given its definition, and we encrypt to it with its Fernet key, so all
must equal what it has. A remote registered without a public key (a definition from before
keys, or Kaapana's) is kept, but no sync with it happens until its key is added.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet
from sqlmodel import Session, select

from core.timeutil import isoformat, utcnow
from federation.identity import PublicKeyError, check_public_key, fingerprint
from federation.models import FederationInstance

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RESERVED_NAMES = frozenset({"local", "sync"})  # path segments of /api/instances
PROTOCOLS = ("http", "https")
OFFLINE_AFTER_MISSED = 3
MIN_SYNC_INTERVAL = 1
MAX_SYNC_INTERVAL = 86400


class InstanceError(ValueError):
    """A request about instances that cannot be honoured as asked (400)."""


class UnknownInstance(LookupError):
    """No remote of that name (404)."""


class DuplicateInstance(RuntimeError):
    """A remote of that name exists already (409)."""


def new_token() -> str:
    return str(uuid.uuid4())


def new_fernet_key() -> str:
    return Fernet.generate_key().decode()


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_PATTERN.match(name):
        raise InstanceError(f"instance name {name!r} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if name.lower() in RESERVED_NAMES:
        raise InstanceError(f"{name!r} is reserved; choose another instance name")
    return name


def check_token(token: str) -> str:
    try:
        parsed = uuid.UUID(str(token))
    except (ValueError, TypeError, AttributeError):
        raise InstanceError("token must be a UUID (36 characters, as the instance's definition shows it)") from None
    if str(parsed) != str(token).lower():
        raise InstanceError("token must be a UUID in its 36-character form")
    return str(parsed)


def check_fernet_key(key: str | None) -> str | None:
    if key in (None, "", "deactivated"):
        return None
    try:
        Fernet(key.encode() if isinstance(key, str) else key)
    except (ValueError, TypeError):
        raise InstanceError("fernet_key must be a Fernet key: 44 characters of URL-safe base64 (32 bytes), or null") from None
    return str(key)


def check_key(session: Session, key: str | None, owner: str) -> str | None:
    """A public key in its canonical form, refused when another instance here holds it (its requests would be ambiguous)."""
    try:
        key = check_public_key(key)
    except PublicKeyError as exc:
        raise InstanceError(str(exc)) from None
    if key is not None:
        holder = session.exec(select(FederationInstance).where(FederationInstance.public_key == key, FederationInstance.name != owner)).first()
        if holder is not None:
            raise InstanceError(f"this public key is {holder.name!r}'s already: every instance has a key of its own")
    return key


def check_network(protocol: str, host: str, port: int) -> tuple[str, str, int]:
    if protocol not in PROTOCOLS:
        raise InstanceError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    host = (host or "").strip()
    if not host or len(host) > 255 or any(c in host for c in "/ ?#@"):
        raise InstanceError(f"host {host!r} must be a host name or address (no scheme, path or spaces)")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise InstanceError(f"port must be between 1 and 65535, not {port!r}")
    return protocol, host, port


def check_ca_bundle(pem: str | None) -> str | None:
    if not pem:
        return None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise InstanceError("ca_bundle must be PEM text with at least one certificate")
    return pem


def local(session: Session) -> FederationInstance:
    row = session.exec(select(FederationInstance).where(FederationInstance.remote == False)).first()  # noqa: E712
    if row is None:
        raise UnknownInstance("the local instance is not set up yet")
    return row


def ensure_local(session: Session, name: str, host: str, port: int, protocol: str = "http", public_key: str | None = None) -> FederationInstance:
    """Create this instance's row on first start (token generated); keep its name and public key in step with the settings and key file."""
    row = session.exec(select(FederationInstance).where(FederationInstance.remote == False)).first()  # noqa: E712
    if row is None:
        row = FederationInstance(name=name, remote=False, protocol=protocol, host=host, port=port, token=new_token(), ssl_verify=True,
                       automatic_sync=True, sync_interval=10, automatic_execution=True, public_key=public_key)
        session.add(row)
    else:
        if row.name != name:
            row.name, row.updated = name, utcnow()
        if public_key is not None and row.public_key != public_key:
            row.public_key, row.updated = public_key, utcnow()
    session.flush()
    return row


def key_owner(session: Session, public_key: str) -> str | None:
    """The registered remote that holds `public_key` (None: nobody registered here)."""
    if not public_key or len(public_key) > 64:
        return None
    row = session.exec(select(FederationInstance).where(FederationInstance.remote == True, FederationInstance.public_key == public_key)).first()  # noqa: E712
    return row.name if row is not None else None


def remotes(session: Session) -> list[FederationInstance]:
    return list(session.exec(select(FederationInstance).where(FederationInstance.remote == True).order_by(FederationInstance.name)))  # noqa: E712


def remote(session: Session, name: str) -> FederationInstance:
    row = session.exec(select(FederationInstance).where(FederationInstance.remote == True, FederationInstance.name == name)).first()  # noqa: E712
    if row is None:
        raise UnknownInstance(f"no remote instance named {name!r}")
    return row


def definition(row: FederationInstance) -> dict[str, Any]:
    """What "copy instance definition" gives and `POST /api/instances` takes."""
    return {
        "name": row.name, "protocol": row.protocol, "host": row.host, "port": row.port, "token": row.token, "public_key": row.public_key,
        "fernet_key": row.fernet_key if (row.fernet_encryption or row.remote) else None, "ssl_verify": row.ssl_verify,
    }


HEALTH_STATES = ("online", "failing", "unreachable", "never synced")


def health(row: FederationInstance) -> str:
    """What the last sync attempts say: `online` (the last one worked), `failing` (it answered but refused us or we refused
    its answer, or one or two syncs were missed; `last_error` says why in plain words), `unreachable` (no answer a few times
    in a row, or never once) or `never synced` (neither side has reached the other yet). A remote that polls us and
    that we never poll (a runner of our jobs) is `online` while its signed requests arrive (`last_seen`)."""
    reached = row.last_success is not None or row.last_seen is not None
    if row.missed_syncs == 0:
        return "online" if reached else "never synced"
    if row.failure_kind == "refused":
        return "failing"
    if not reached or row.missed_syncs >= OFFLINE_AFTER_MISSED:
        return "unreachable"
    return "failing"


def name_lock(session: Session) -> str | None:
    """Why the local instance's name cannot change now (None: it can): remotes know it by that name."""
    names = [r.name for r in remotes(session)]
    if not names:
        return None
    listed = ", ".join(names[:3]) + (" …" if len(names) > 3 else "")
    return (f"the name is locked because remote instances are registered ({listed}): they and their jobs know this "
            "instance by it. Remove them first to rename it")


def describe(row: FederationInstance) -> dict[str, Any]:
    doc = definition(row)
    doc.update(
        remote=row.remote,
        automatic_sync=row.automatic_sync, sync_interval=row.sync_interval, automatic_execution=row.automatic_execution,
        fernet_encryption=row.fernet_encryption, key_fingerprint=fingerprint(row.public_key),
        allowed_dags=list(row.allowed_dags), allowed_datasets=list(row.allowed_datasets),
        created=isoformat(row.created), updated=isoformat(row.updated),
    )
    if row.remote:
        doc.update(
            ca_bundle=bool(row.ca_bundle), last_seen=isoformat(row.last_seen), last_success=isoformat(row.last_success),
            last_error=row.last_error or None, last_failure=isoformat(row.last_failure), missed_syncs=row.missed_syncs,
            health=health(row),
        )
    return doc


def change_local(session: Session, known_dags: set[str], known_datasets: set[str], changes: dict[str, Any]) -> FederationInstance:
    """Apply the given fields to the local instance; `regenerate_token` / `rotate_fernet_key` are actions."""
    row = local(session)
    if "name" in changes and changes["name"] not in (None, row.name):
        lock = name_lock(session)
        if lock:
            raise InstanceError(lock)
        row.name = check_name(changes["name"])
    if "public_key" in changes and changes["public_key"] not in (None, row.public_key):
        raise InstanceError("the local instance's public key comes from its key file in the data dir and cannot be changed here")
    if any(k in changes for k in ("protocol", "host", "port")):
        row.protocol, row.host, row.port = check_network(
            changes.get("protocol", row.protocol), changes.get("host", row.host), changes.get("port", row.port)
        )
    if changes.get("token") is not None:
        row.token = check_token(changes["token"])
    if changes.get("regenerate_token"):
        row.token = new_token()
    for flag in ("ssl_verify", "automatic_sync", "automatic_execution"):
        if changes.get(flag) is not None:
            setattr(row, flag, bool(changes[flag]))
    if changes.get("sync_interval") is not None:
        interval = changes["sync_interval"]
        if not isinstance(interval, int) or not MIN_SYNC_INTERVAL <= interval <= MAX_SYNC_INTERVAL:
            raise InstanceError(f"sync_interval must be whole seconds between {MIN_SYNC_INTERVAL} and {MAX_SYNC_INTERVAL}")
        row.sync_interval = interval
    if "fernet_key" in changes and changes["fernet_key"] is not None:
        row.fernet_key = check_fernet_key(changes["fernet_key"])
    if changes.get("fernet_encryption") is not None:
        row.fernet_encryption = bool(changes["fernet_encryption"])
    if changes.get("rotate_fernet_key"):
        row.fernet_key = new_fernet_key()
    if row.fernet_encryption and not row.fernet_key:
        row.fernet_key = new_fernet_key()
    if changes.get("allowed_dags") is not None:
        unknown = sorted(set(changes["allowed_dags"]) - known_dags)
        if unknown:
            raise InstanceError(f"unknown DAG(s) in allowed_dags: {', '.join(unknown)}")
        row.allowed_dags = sorted(set(changes["allowed_dags"]))
    if changes.get("allowed_datasets") is not None:
        unknown = sorted(set(changes["allowed_datasets"]) - known_datasets)
        if unknown:
            raise InstanceError(f"unknown dataset(s) in allowed_datasets: {', '.join(unknown)}")
        row.allowed_datasets = sorted(set(changes["allowed_datasets"]))
    row.updated = utcnow()
    session.add(row)
    session.flush()
    return row


def add_remote(session: Session, definition_: dict[str, Any]) -> FederationInstance:
    name = check_name(definition_.get("name", ""))
    if name == local(session).name:
        raise InstanceError(f"{name!r} is this instance's own name; a remote needs the other instance's name")
    if session.exec(select(FederationInstance).where(FederationInstance.name == name)).first() is not None:
        raise DuplicateInstance(f"a remote named {name!r} is registered already")
    protocol, host, port = check_network(definition_.get("protocol", "http"), definition_.get("host", ""), definition_.get("port", 0))
    key = check_fernet_key(definition_.get("fernet_key"))
    row = FederationInstance(
        name=name, remote=True, protocol=protocol, host=host, port=port, token=check_token(definition_.get("token", "")),
        public_key=check_key(session, definition_.get("public_key"), name),
        fernet_key=key, fernet_encryption=key is not None, ssl_verify=bool(definition_.get("ssl_verify", True)),
        ca_bundle=check_ca_bundle(definition_.get("ca_bundle")), automatic_sync=False, automatic_execution=False,
    )
    session.add(row)
    session.flush()
    return row


def change_remote(session: Session, name: str, changes: dict[str, Any]) -> FederationInstance:
    row = remote(session, name)
    if any(k in changes for k in ("protocol", "host", "port")):
        row.protocol, row.host, row.port = check_network(
            changes.get("protocol", row.protocol), changes.get("host", row.host), changes.get("port", row.port)
        )
    if changes.get("token") is not None:
        row.token = check_token(changes["token"])
    if "public_key" in changes:
        row.public_key = check_key(session, changes["public_key"], name)
    if changes.get("ssl_verify") is not None:
        row.ssl_verify = bool(changes["ssl_verify"])
    if "fernet_key" in changes:
        row.fernet_key = check_fernet_key(changes["fernet_key"])
        row.fernet_encryption = row.fernet_key is not None
    if "ca_bundle" in changes:
        row.ca_bundle = check_ca_bundle(changes["ca_bundle"])
    row.updated = utcnow()
    session.add(row)
    session.flush()
    return row


def delete_remote(session: Session, name: str) -> dict[str, Any]:
    row = remote(session, name)
    doc = describe(row)
    session.delete(row)
    session.flush()
    return doc


def stale_nonce_cutoff(window: float) -> datetime:
    return utcnow() - timedelta(seconds=window * 2)


def settings_of(me: FederationInstance) -> dict[str, Any]:
    """What a runner tells its remotes about itself (and they about themselves) at every sync."""
    return {
        "name": me.name, "allowed_dags": list(me.allowed_dags), "allowed_datasets": list(me.allowed_datasets),
        "automatic_sync": me.automatic_sync, "automatic_execution": me.automatic_execution, "fernet_encryption": me.fernet_encryption,
    }


def store_peer_settings(peer: FederationInstance, settings: Any) -> None:
    """Keep what a peer told us about itself (a `protocol.PeerSettings`): fields it left out stay as they were."""
    if settings.allowed_dags is not None:
        peer.allowed_dags = [str(d) for d in settings.allowed_dags]
    if settings.allowed_datasets is not None:
        peer.allowed_datasets = [str(d) for d in settings.allowed_datasets]
    for flag in ("automatic_sync", "automatic_execution", "fernet_encryption"):
        if getattr(settings, flag) is not None:
            setattr(peer, flag, getattr(settings, flag))


def permission_refusal(me: FederationInstance, dag_id: str, dataset: str | None) -> str | None:
    """This instance's own permissions for remote work, checked on receipt and before running."""
    if dag_id not in me.allowed_dags:
        return f"DAG {dag_id!r} is not allowed for remote instances on {me.name}"
    if dataset and dataset not in me.allowed_datasets:
        return f"dataset {dataset!r} is not allowed for remote instances on {me.name}"
    return None
