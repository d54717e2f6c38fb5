"""The federation tables: `instance` (this one and the registered remotes), seen nonces, the audit log.

One table holds both the local instance and the remotes, as in Kaapana: a remote's
`allowed_dags`, `allowed_datasets` and automatic switches are what it told us at the last
sync; the local row's are this instance's own permissions for remote work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from core.timeutil import UTCDateTime, utcnow


def _when(nullable: bool = False, index: bool = False) -> Any:
    return Field(default_factory=None if nullable else utcnow, sa_type=UTCDateTime, nullable=nullable, index=index)


class FederationInstance(SQLModel, table=True):
    """This instance (`remote` false) or a registered remote."""

    __tablename__ = "federation_instance"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    remote: bool = Field(default=True, description="false for this instance's own row")
    protocol: str = Field(default="http", max_length=8)
    host: str = Field(max_length=255)
    port: int
    token: str = Field(max_length=36, description="the instance's own token: callers prove with it they were given the definition; it never travels")
    public_key: Optional[str] = Field(default=None, max_length=64, description="ed25519:… — the instance's signing key (its private half never leaves it)")
    fernet_key: Optional[str] = Field(default=None, max_length=44)
    ssl_verify: bool = True
    ca_bundle: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True), description="PEM to verify a remote's certificate")
    automatic_sync: bool = False
    sync_interval: int = 10
    automatic_execution: bool = True
    fernet_encryption: bool = False
    allowed_dags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    allowed_datasets: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    last_seen: Optional[datetime] = _when(nullable=True)
    last_success: Optional[datetime] = _when(nullable=True)
    last_error: str = Field(default="", max_length=2000)
    last_failure: Optional[datetime] = _when(nullable=True)
    missed_syncs: int = 0
    failure_kind: str = Field(default="", max_length=16, description="'' (last sync fine), 'unreachable' or 'refused' (it answered; the answer was refused)")
    created: datetime = _when()
    updated: datetime = _when()


class SeenNonce(SQLModel, table=True):
    """A request nonce seen within the freshness window: a second request with it is a replay."""

    __tablename__ = "federation_nonce"
    nonce: str = Field(primary_key=True, max_length=64)
    seen: datetime = _when(index=True)


class AuditEvent(SQLModel, table=True):
    """One remote action (job received, confirmed, refused …) by a proven peer, or a summary of unproven requests.

    `verified`: the peer is the one whose key signed the request (or the event is this instance's own
    doing); unproven requests are only counted, one row per source address, kind and minute (`count`)."""

    __tablename__ = "audit_event"
    id: Optional[int] = Field(default=None, primary_key=True)
    time: datetime = _when(index=True)
    peer: str = Field(default="", max_length=128)
    action: str = Field(max_length=64)
    detail: str = Field(default="", max_length=2000)
    verified: bool = False
    source: str = Field(default="", max_length=64, description="the network address a request came from ('' for this instance's own actions)")
    count: int = 1


class ReportedStatus(SQLModel, table=True):
    """The last status of a job run for another instance that its owner acknowledged: the outbox is the difference."""

    __tablename__ = "federation_report"
    job_id: int = Field(primary_key=True)
    status: str = Field(max_length=16)
