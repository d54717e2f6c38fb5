"""A stored instance on its way into the index: what the receiver (or a receiver worker) hands the index writer.

Kept apart from ingest.indexer so that a receiver worker process, which has no database, does
not import one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.pacs_store import StoredFile
from ingest.metadata import InstanceMetadata


@dataclass
class IncomingInstance:
    """A stored instance on its way into the index, with where it came from."""

    meta: InstanceMetadata
    stored: StoredFile
    transfer_syntax_uid: str
    dataset: str | None = None
    calling_aet: str = ""
    called_aet: str = ""
    peer_address: str = ""
    received: datetime = field(default_factory=lambda: datetime.now(UTC))  # core.timeutil.utcnow, without its database import
    # The instance's DICOM JSON for WADO-RS metadata (core.dicom_json.instance_document); None: made on first request.
    metadata_document: str | None = None
