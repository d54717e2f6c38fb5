"""The one way an instance enters the PACS: checked, stored durably, then indexed.

The DICOM receiver (C-STORE), STOW-RS and retrievals from other PACS (C-GET) all hand
their Part 10 bytes to `Intake`, so every door applies the same checks, stores files the
same way and answers only once the instance is on disk and searchable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from core.dicom_json import instance_document
from core.pacs_store import InvalidUID, PacsStore
from ingest.indexer import IncomingInstance, IndexWriter
from ingest.metadata import MissingAttribute, extract

log = logging.getLogger(__name__)

# C-STORE status codes (PS3.4 B.2.3 and PS3.7 C.4.1); STOW-RS reports the same as FailureReason.
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
# STOW-RS: the instance belongs to another study than the one the request names (PS3.18 I.2.2).
REFERENCED_STUDY_MISMATCH = 0xC122

INDEX_TIMEOUT = 60


@dataclass(frozen=True)
class Origin:
    """Where an instance came from, as the index records it."""

    dataset: str | None = None
    calling_aet: str = ""
    called_aet: str = ""
    peer_address: str = ""


class StoreRefused(Exception):
    """An instance that cannot be stored, with the status and comment the sender gets."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


def parse_dataset(content: bytes) -> Dataset:
    """Parse a received Part 10 stream completely enough to know it is whole."""
    try:
        ds = dcmread(BytesIO(content))
    except Exception as exc:
        raise StoreRefused(CANNOT_UNDERSTAND, f"dataset could not be parsed: {exc}") from exc
    if len(ds) == 0:
        raise StoreRefused(CANNOT_UNDERSTAND, "dataset could not be parsed: no data elements (truncated or not DICOM)")
    problem = truncation(ds)
    if problem:
        raise StoreRefused(CANNOT_UNDERSTAND, f"dataset is truncated: {problem}")
    return ds


def truncation(ds: Dataset) -> str | None:
    """Why a dataset looks cut short, or None. pydicom reads short values without complaint."""
    last = ds.get_item(max(ds.keys()))
    length = getattr(last, "length", None)
    value = getattr(last, "value", None)
    if isinstance(value, bytes) and length is not None and length != 0xFFFFFFFF and len(value) < length:
        return f"element {last.tag} declares {length} bytes but has {len(value)}"
    if "PixelData" in ds and not ds.file_meta.TransferSyntaxUID.is_compressed:
        try:
            frames = int(ds.get("NumberOfFrames") or 1)
            bits = int(ds.BitsAllocated)
            expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * frames
            expected = (expected + 7) // 8 if bits == 1 else expected * bits // 8
        except (AttributeError, TypeError, ValueError):
            return "pixel data without Rows, Columns or BitsAllocated"
        actual = len(ds.get_item("PixelData").value or b"")
        if actual < expected:
            return f"pixel data has {actual} bytes, the image needs {expected}"
    return None



class Intake:
    def __init__(self, store: PacsStore, indexer: IndexWriter) -> None:
        self.store = store
        self.indexer = indexer

    def receive(
        self,
        content: bytes,
        transfer_syntax: str,
        origin: Origin,
        *,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
        study_uid: str | None = None,
    ) -> IncomingInstance:
        """Check and durably store one Part 10 instance; raises StoreRefused with the status to report.

        `sop_class_uid`/`sop_instance_uid` are what a C-STORE request announced, `study_uid`
        the study a STOW-RS request is limited to: the dataset must agree with them.
        """
        ds = parse_dataset(content)
        try:
            series_uid = str(ds.get("SeriesInstanceUID", "")).strip("\x00 ")
            meta = extract(ds, with_attributes=bool(series_uid) and not self.indexer.knows_series(series_uid))
        except MissingAttribute as exc:
            raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from exc
        except Exception as exc:  # lazily parsed elements fail on first access
            raise StoreRefused(CANNOT_UNDERSTAND, f"dataset could not be parsed: {exc}") from exc
        if sop_class_uid is not None and meta.sop_class_uid != sop_class_uid:
            raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, f"SOPClassUID {meta.sop_class_uid} does not match the request's {sop_class_uid}")
        if sop_instance_uid is not None and meta.sop_instance_uid != sop_instance_uid:
            raise StoreRefused(
                DATASET_DOES_NOT_MATCH_SOP_CLASS, f"SOPInstanceUID {meta.sop_instance_uid} does not match the request's {sop_instance_uid}"
            )
        if study_uid is not None and meta.study_uid != study_uid:
            raise StoreRefused(REFERENCED_STUDY_MISMATCH, f"StudyInstanceUID {meta.study_uid} is not the study {study_uid} of the request")
        try:
            document: str | None = instance_document(ds, meta.study_uid, meta.series_uid, meta.sop_instance_uid)
        except Exception:  # never refuse an instance over its metadata document: it is made again on first request
            log.exception("metadata document of %s could not be made", meta.sop_instance_uid)
            document = None
        try:
            stored = self.store.store(meta.study_uid, meta.series_uid, meta.sop_instance_uid, content)
        except InvalidUID as exc:
            raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from exc
        return IncomingInstance(
            meta=meta,
            stored=stored,
            transfer_syntax_uid=transfer_syntax,
            dataset=origin.dataset,
            calling_aet=origin.calling_aet,
            called_aet=origin.called_aet,
            peer_address=origin.peer_address,
            metadata_document=document,
        )

    def ingest(self, content: bytes, transfer_syntax: str, origin: Origin, **expected: str | None) -> IncomingInstance:
        """Store and index one instance; returns once it is durable and searchable.

        Raises StoreRefused (with OUT_OF_RESOURCES when writing or indexing failed).
        """
        try:
            item = self.receive(content, transfer_syntax, origin, **expected)
        except OSError as exc:
            log.exception("instance could not be written")
            raise StoreRefused(OUT_OF_RESOURCES, f"storage failed: {exc.strerror or exc}") from exc
        try:
            self.indexer.submit(item).result(timeout=INDEX_TIMEOUT)
        except Exception as exc:
            # The file stays: it is whole and durable, another sender may rely on it, and a resend or
            # `reindex` indexes it. Only the sender's Success is withheld.
            log.exception("instance could not be indexed")
            raise StoreRefused(OUT_OF_RESOURCES, f"indexing failed: {exc}") from exc
        return item


def transfer_syntax_of(content: bytes) -> str:
    """The Transfer Syntax UID in a Part 10 stream's meta header ('' without one)."""
    try:
        meta = dcmread(BytesIO(content), stop_before_pixels=True, specific_tags=[0x00020010]).file_meta
    except Exception:
        return ""
    return str(meta.get("TransferSyntaxUID", "")).strip("\x00 ")


def identify(content: bytes) -> tuple[str | None, str | None]:
    """SOPClassUID and SOPInstanceUID of a (possibly broken) Part 10 stream, where readable, for failure reports."""
    try:
        ds = dcmread(BytesIO(content), stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"], force=True)
        return (str(ds.get("SOPClassUID", "")).strip("\x00 ") or None, str(ds.get("SOPInstanceUID", "")).strip("\x00 ") or None)
    except Exception:
        return None, None
