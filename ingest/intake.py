"""The one way an instance enters the PACS: checked, stored durably, then indexed.

The DICOM receiver (C-STORE), STOW-RS and retrievals from other PACS (C-GET) all hand
their Part 10 bytes to `Intake`, so every door applies the same checks and stores files the
same way. `ingest` answers once the instance is on disk and searchable; the receiver's fast
path (`receive_part`, for a data set already written as it arrived) once it is on disk, with
the index commit behind the answer (ingest.receiver).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from io import BytesIO
from types import SimpleNamespace
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pynetdicom.service_class import NonPatientObjectStorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from core.dicom_json import instance_document
from core.pacs_store import InvalidUID, PacsStore, Part, StoredFile
from ingest.dicom_reader import read_received
from ingest.error_text import plain_reason
from ingest.incoming import IncomingInstance
from ingest.metadata import InstanceMetadata, MissingAttribute, extract, raw_ascii

if TYPE_CHECKING:
    from ingest.indexer import IndexWriter

log = logging.getLogger(__name__)

# C-STORE status codes (PS3.4 B.2.3 and PS3.7 C.4.1); STOW-RS reports the same as FailureReason.
SUCCESS = 0x0000
# PS3.7 C.5 (DCMTK: Refused: SOPClassNotSupported): a SOP class this door does not store (STOW-RS: the same FailureReason).
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
# PS3.4 B.2.3 Warning: Data Set does not match SOP Class, stored anyway (STOW-RS: the same WarningReason, PS3.18).
DATASET_MISMATCH_WARNING = 0xB007
# STOW-RS: the instance belongs to another study than the one the request names (PS3.18 I.2.2).
REFERENCED_STUDY_MISMATCH = 0xC122

INDEX_TIMEOUT = 60
# ErrorComment (0000,0902) is LO: 64 characters of the default repertoire (PS3.5 6.2).
MAX_ERROR_COMMENT = 64
# Absolute paths (POSIX or Windows) inside an exception's text: a sender must never learn the server's layout.
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[\\/](?:[^\s\\/'\"]+[\\/])+[^\s'\",;:)]*")
# Photometric interpretations whose uncompressed pixel data hold two chroma samples per two pixels (PS3.3 C.7.6.3.1.2).
# pydicom's get_expected_length knows YBR_FULL_422; the retired YBR_PARTIAL_422 is subsampled the same way.
_SUBSAMPLED_422 = frozenset({"YBR_PARTIAL_422"})
_ABSENT = object()
_UNDEFINED_LENGTH = 0xFFFFFFFF
# A Sequence Delimitation Item (FFFE,E0DD) of length 0, as each byte order writes it.
_SEQUENCE_END = {True: b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", False: b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"}
# (7FE0,0010) Pixel Data's tag as each byte order writes it, and an undefined length.
_PIXEL_DATA_TAG = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
_UNDEFINED_LENGTH_BYTES = b"\xff\xff\xff\xff"
_PIXEL_DATA = 0x7FE00010
# The attributes that size uncompressed pixel data (PS3.3 C.7.6.3), by tag: US but NumberOfFrames (IS).
_IMAGE_PIXEL_TAGS = {"Rows": 0x00280010, "Columns": 0x00280011, "BitsAllocated": 0x00280100, "SamplesPerPixel": 0x00280002, "NumberOfFrames": 0x00280008}


@dataclass(frozen=True)
class Origin:
    """Where an instance came from, as the index records it."""

    dataset: str | None = None
    calling_aet: str = ""
    called_aet: str = ""
    peer_address: str = ""


class StoreRefused(Exception):
    """An instance that cannot be stored, with the status and the plain reason the sender gets.

    The comment says the reason first and the detail after it, so the 64 characters a DIMSE
    ErrorComment keeps are the useful ones; it never holds a server path.
    """

    def __init__(self, status: int, comment: str) -> None:
        comment = _without_paths(comment)
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass
class AdmittedInstance(IncomingInstance):
    """A stored instance with the warning its sender gets instead of Success (PS3.4 B.2.3: stored anyway), if any."""

    warning: str | None = None


class ImagePixelError(ValueError):
    """An Image Pixel attribute that is missing or unreadable, so the pixel data's size cannot be known."""


def _without_paths(text: str) -> str:
    """A reason fit for a sender whatever went into it: paths replaced, control characters and runs of spaces collapsed."""
    text = _PATH.sub("(file)", text)
    return " ".join(text.split())


def error_comment(reason: str) -> str:
    """A reason as an ErrorComment value: ASCII, no backslash (LO's value separator), at most 64 characters."""
    text = _without_paths(reason).replace("\u2026", "...").replace("\\", "/").encode("ascii", "replace").decode("ascii")
    return text[:MAX_ERROR_COMMENT].rstrip()


def parse_dataset(content: bytes) -> Dataset:
    """Parse a received Part 10 stream completely enough to know it is whole."""
    return admit(content)[0]


def admit(content: bytes) -> tuple[Dataset, str | None]:
    """A received stream parsed and known whole, with what its header says that its pixel data contradicts (or None).

    A cut stream is refused (0xC000); a whole one whose Image Pixel attributes disagree with
    its pixel data is the sender's data, kept as sent and answered with a warning.
    """
    try:
        ds = read_received(content)
    except Exception as exc:
        raise StoreRefused(CANNOT_UNDERSTAND, f"cannot parse the data set: {plain_reason(exc)}") from exc
    if len(ds) == 0:
        raise StoreRefused(CANNOT_UNDERSTAND, _why_no_elements(content))
    try:
        problem = truncation(ds)
    except ImagePixelError as exc:
        raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from exc
    if problem:
        raise StoreRefused(CANNOT_UNDERSTAND, f"truncated: {problem}")
    cut = unread_tail(ds, content)
    if cut:
        raise StoreRefused(CANNOT_UNDERSTAND, f"truncated: {cut}")
    try:
        mismatch = pixel_mismatch(ds)
    except ImagePixelError as exc:
        raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from exc
    return ds, mismatch


def _why_no_elements(content: bytes) -> str:
    """Why pydicom read no element of a stream (a refusal, so off the hot path).

    pydicom drops every element it had read when a value of undefined length ends before its
    delimiter, as encapsulated pixel data cut short does: read again up to the pixel data, the
    elements are there, and the stream goes on with pixel data of undefined length.
    """
    stream = BytesIO(content)
    try:
        head = dcmread(stream, stop_before_pixels=True)
    except Exception:
        head = None
    pixels = stream.tell()  # pydicom leaves the stream at the header of the element it stopped before
    header = content[pixels : pixels + 12]
    if head is not None and len(head) and header[:4] in _PIXEL_DATA_TAG and _UNDEFINED_LENGTH_BYTES in (header[4:8], header[8:12]):
        return "truncated: encapsulated pixel data ends before its delimiter"
    return "no data elements: truncated or not DICOM"


def truncation(ds: Dataset) -> str | None:
    """Why a dataset looks cut short inside its last value, or None. pydicom reads short values without complaint."""
    last = ds.get_item(max(ds.keys(), key=int))  # int keys: BaseTag compares in Python, ~90 calls a stream
    length = getattr(last, "length", None)
    value = getattr(last, "value", None)
    if isinstance(value, bytes) and length is not None and length != _UNDEFINED_LENGTH and len(value) < length:
        return f"element {last.tag} declares {length} bytes but has {len(value)}"
    return None


def unread_tail(ds: Dataset, content: bytes) -> str | None:
    """Why bytes after the last element pydicom read are left over (a cut element header), or None.

    pydicom's reader stops without a word at a partial header, so the end of the last element
    read is compared with the end of the stream. Only that element is looked at (the hot path
    parses each stream once). A deflated data set's offsets are not the stream's: not judged.
    """
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian or len(ds) == 0:
        return None
    tag = next(reversed(ds.keys()))  # the last element in stream order
    last = ds.get_item(tag)
    implicit, little = ds.original_encoding
    if isinstance(last, RawDataElement):
        tell, length, value = last.value_tell, last.length, last.value
    else:  # read as it was parsed (Specific Character Set): its declared length is in its header
        tell, value = last.file_tell, None
        if last.VR == "SQ" and last.is_undefined_length:
            if content.endswith(_SEQUENCE_END[bool(little)]):
                return None
            return f"ends inside sequence {tag}, before its delimiter"
        length = _declared_length(content, tell, last.VR, bool(implicit), bool(little)) if tell is not None else None
    if tell is None or length is None:
        return None
    end = tell + (length if length != _UNDEFINED_LENGTH else len(value or b"") + 8)
    if end > len(content):
        return f"element {tag} declares {length} bytes but has {len(content) - tell}"
    if end < len(content):
        return f"ends inside an element header after {tag}"
    return None


def _declared_length(content: bytes, value_tell: int, vr: str, implicit: bool, little: bool) -> int | None:
    """The value length an element's header (ending at `value_tell`) declares, read from the stream (PS3.5 7.1)."""
    wide = implicit or vr in EXPLICIT_VR_LENGTH_32
    size = 4 if wide else 2
    if value_tell < size:
        return None
    return int.from_bytes(content[value_tell - size : value_tell], "little" if little else "big")


def pixel_mismatch(ds: Dataset) -> str | None:
    """What the Image Pixel attributes say that the (whole) uncompressed pixel data contradicts, or None.

    Raises ImagePixelError when the attributes that size the pixel data are missing or invalid:
    that is the data set's fault, not a transfer's, and the sender is told which attribute it is.
    """
    if _PIXEL_DATA not in ds or not _native_pixels(ds):
        return None
    expected = expected_pixel_bytes(ds)
    actual = len(ds.get_item(_PIXEL_DATA).value or b"")
    if actual >= expected:
        return None
    frames = _whole_number(ds, "NumberOfFrames", default=1)
    samples = _whole_number(ds, "SamplesPerPixel", default=1)
    return f"pixel data {actual} bytes, header needs {expected}: {frames} frames x {samples} samples"


def _native_pixels(ds: Dataset) -> bool:
    """Whether the pixel data is native (uncompressed), the only kind whose length the Image Pixel attributes fix.

    A stream with no Transfer Syntax UID, or one pydicom does not know, is judged by the element
    itself: encapsulated pixel data has an undefined length (PS3.5 A.4). (Both once failed here.)
    """
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    try:
        compressed = syntax is not None and bool(syntax.is_compressed)
    except (AttributeError, ValueError):  # a UID that names no transfer syntax pydicom knows
        compressed = False
    pixels = ds.get_item(_PIXEL_DATA)
    encapsulated = getattr(pixels, "length", None) == _UNDEFINED_LENGTH or bool(getattr(pixels, "is_undefined_length", False))
    return not compressed and not encapsulated


def expected_pixel_bytes(ds: Dataset) -> int:
    """The length uncompressed pixel data must have, by pydicom's rule (chroma subsampling included).

    pydicom reads only these attributes, so it is given them checked, in a plain namespace: a
    Dataset built per instance would cost the receiver ten times as much.
    """
    image = SimpleNamespace(
        Rows=_whole_number(ds, "Rows"),
        Columns=_whole_number(ds, "Columns"),
        BitsAllocated=_whole_number(ds, "BitsAllocated"),
        SamplesPerPixel=_whole_number(ds, "SamplesPerPixel", default=1),
        NumberOfFrames=_whole_number(ds, "NumberOfFrames", default=1),
        PhotometricInterpretation=_photometric(ds),
    )
    expected = get_expected_length(image, unit="bytes")  # type: ignore[arg-type]
    if image.PhotometricInterpretation in _SUBSAMPLED_422:
        expected = expected // 3 * 2
    return int(expected)


def _photometric(ds: Dataset) -> str:
    raw = raw_ascii(ds, 0x00280004, "CS")
    return (raw if raw is not None else str(ds.get("PhotometricInterpretation") or "")).strip().upper()


def _raw_whole_number(ds: Dataset, keyword: str) -> int | str | None:
    """An Image Pixel attribute straight from its bytes (a single little-endian US, or an all-digits IS), or None: pydicom decides.

    Reading five of them through pydicom cost ~60 us an instance (hooks, validation); these bytes
    convert to exactly what pydicom gives (tests/test_metadata_fast_path.py). '' is an empty value.
    """
    tag = _IMAGE_PIXEL_TAGS[keyword]
    if keyword == "NumberOfFrames":
        text = raw_ascii(ds, tag, "IS")
        if text is None or not (text == "" or text.isdigit()):
            return None
        return text and int(text)
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement) and raw.VR in ("US", None) and raw.is_little_endian and isinstance(raw.value, bytes) and len(raw.value) == 2:
        return int.from_bytes(raw.value, "little")
    return None


def _whole_number(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """An Image Pixel attribute's value as a non-negative integer; ImagePixelError names the attribute when it is not one."""
    value = _raw_whole_number(ds, keyword)
    if value is None:
        try:
            value = ds.get(keyword, _ABSENT)
        except Exception as exc:  # a value pydicom cannot convert fails on first access
            raise ImagePixelError(f"invalid {keyword}: cannot be read ({plain_reason(exc)})") from exc
    if value is _ABSENT:
        if default is None:
            raise ImagePixelError(f"missing {keyword}: pixel data cannot be sized")
        return default
    if value is None or value == "":
        if default is None:
            raise ImagePixelError(f"empty {keyword}: pixel data cannot be sized")
        return default
    if isinstance(value, str) and not value.strip().isdigit():
        raise ImagePixelError(f"invalid {keyword}: {value.strip()!r} is not a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ImagePixelError(f"invalid {keyword}: {value!r} is not a whole number") from None
    if number < 0:
        raise ImagePixelError(f"invalid {keyword}: {number} is negative")
    return number


def non_patient_class(sop_class_uid: str) -> str | None:
    """The name of a SOP class whose objects belong to no patient or study (Color Palette, Hanging Protocol...), else None."""
    if not sop_class_uid or not issubclass(uid_to_service_class(sop_class_uid), NonPatientObjectStorageServiceClass):
        return None
    return UID(sop_class_uid).name or sop_class_uid


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
    ) -> AdmittedInstance:
        """Check and durably store one Part 10 instance; raises StoreRefused with the status to report.

        `sop_class_uid`/`sop_instance_uid` are what a C-STORE request announced, `study_uid`
        the study a STOW-RS request is limited to: the dataset must agree with them. A stored
        instance's `warning` is the reason to answer 0xB007 instead of Success.
        """
        ds, warning = admit(content)
        meta = self._placed(ds, sop_class_uid, sop_instance_uid, study_uid)
        document = metadata_document(ds, meta)
        try:
            stored = self.store.store(meta.study_uid, meta.series_uid, meta.sop_instance_uid, content)
        except InvalidUID as exc:
            raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, f"invalid UID: {exc}") from exc
        return self._admitted(meta, stored, warning, transfer_syntax, origin, document)

    def receive_part(
        self, part: Part, content: bytes | bytearray | None, transfer_syntax: str, origin: Origin, *, sop_class_uid: str, sop_instance_uid: str
    ) -> tuple[AdmittedInstance, Dataset]:
        """Check and durably store an instance already written to `part` as it arrived (the C-STORE fast path).

        `content` is the whole stream read back from the part (every instance but a large one),
        checked exactly as `receive` checks; a large one is checked from its file's headers
        (ingest.file_admission). The part's bytes have been on their way to the disk since they
        were written (Part.write), so waiting for them after the parse costs little; `adopt` then
        makes file and name durable. (A thread that waited during the parse saved nothing
        measurable and cost a hand-off per instance.)
        Raises StoreRefused (OUT_OF_RESOURCES when writing failed).
        The instance has no metadata document yet: the caller makes it from the returned data set
        (`metadata_document`) once the sender has its answer.
        """
        from ingest.file_admission import admit_file  # it builds on this module's checks

        ds, warning = admit(content) if content is not None else admit_file(part.path)
        meta = self._placed(ds, sop_class_uid, sop_instance_uid, None)
        try:
            part.write_out()
        except OSError as exc:
            log.exception("instance could not be written")
            raise StoreRefused(OUT_OF_RESOURCES, f"storage failed: {exc.strerror or type(exc).__name__}") from exc
        try:
            stored = self.store.adopt(part, meta.study_uid, meta.series_uid, meta.sop_instance_uid)
        except InvalidUID as exc:
            raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, f"invalid UID: {exc}") from exc
        except OSError as exc:
            log.exception("instance could not be linked")
            raise StoreRefused(OUT_OF_RESOURCES, f"storage failed: {exc.strerror or type(exc).__name__}") from exc
        return self._admitted(meta, stored, warning, transfer_syntax, origin, None), ds

    def _placed(self, ds: Dataset, sop_class_uid: str | None, sop_instance_uid: str | None, study_uid: str | None) -> InstanceMetadata:
        """The index metadata of an admitted data set, checked against what its request announced."""
        try:
            series_uid = str(ds.get("SeriesInstanceUID", "")).strip("\x00 ")
            meta = extract(ds, with_attributes=bool(series_uid) and not self.indexer.knows_series(series_uid))
        except MissingAttribute as exc:
            raise _missing(ds, exc) from exc
        except Exception as exc:  # lazily parsed elements fail on first access
            raise StoreRefused(CANNOT_UNDERSTAND, f"cannot parse an element: {plain_reason(exc)}") from exc
        # The UIDs go to the log: 64 ErrorComment characters hold the point or one UID, not both.
        if sop_class_uid is not None and meta.sop_class_uid != sop_class_uid:
            log.warning("data set SOPClassUID %s, request %s", meta.sop_class_uid, sop_class_uid)
            raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, f"request SOP class differs from data set SOPClassUID {_short(meta.sop_class_uid)}")
        if sop_instance_uid is not None and meta.sop_instance_uid != sop_instance_uid:
            log.warning("data set SOPInstanceUID %s, request %s", meta.sop_instance_uid, sop_instance_uid)
            raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, "request UID differs from data set SOPInstanceUID")
        if study_uid is not None and meta.study_uid != study_uid:
            raise StoreRefused(REFERENCED_STUDY_MISMATCH, f"not in the requested study: StudyInstanceUID {meta.study_uid}, request {study_uid}")
        return meta

    @staticmethod
    def _admitted(
        meta: InstanceMetadata, stored: StoredFile, warning: str | None, transfer_syntax: str, origin: Origin, document: str | None
    ) -> AdmittedInstance:
        return AdmittedInstance(
            warning=warning,
            meta=meta,
            stored=stored,
            transfer_syntax_uid=transfer_syntax,
            dataset=origin.dataset,
            calling_aet=origin.calling_aet,
            called_aet=origin.called_aet,
            peer_address=origin.peer_address,
            metadata_document=document,
        )

    def ingest(self, content: bytes, transfer_syntax: str, origin: Origin, **expected: str | None) -> AdmittedInstance:
        """Store and index one instance; returns once it is durable and searchable.

        Raises StoreRefused (with OUT_OF_RESOURCES when writing or indexing failed).
        """
        try:
            item = self.receive(content, transfer_syntax, origin, **expected)
        except OSError as exc:
            log.exception("instance could not be written")
            raise StoreRefused(OUT_OF_RESOURCES, f"storage failed: {exc.strerror or type(exc).__name__}") from exc
        try:
            self.indexer.submit(item).result(timeout=INDEX_TIMEOUT)
        except Exception as exc:
            # The file stays: it is whole and durable, another sender may rely on it, and a resend or
            # `reindex` indexes it. Only the sender's Success is withheld.
            log.exception("instance could not be indexed")
            # The exception's text (SQL, database URLs) stays in the log: the sender learns only what to do.
            raise StoreRefused(OUT_OF_RESOURCES, "indexing failed: the file is kept, send it again later") from exc
        return item


def metadata_document(ds: Dataset, meta: InstanceMetadata) -> str | None:
    """The instance's DICOM JSON for WADO-RS metadata; never a reason to refuse it (None: made on first request)."""
    try:
        return instance_document(ds, meta.study_uid, meta.series_uid, meta.sop_instance_uid)
    except Exception:
        log.exception("metadata document of %s could not be made", meta.sop_instance_uid)
        return None


def _short(sop_class_uid: str) -> str:
    """A SOP class as few characters as name it: pydicom's keyword (CTImageStorage), else the UID."""
    return UID(sop_class_uid).keyword or sop_class_uid


def _missing(ds: Dataset, exc: MissingAttribute) -> StoreRefused:
    """The refusal for a data set the PACS cannot place: a SOP class it does not file, or a Type 1 UID left out."""
    non_patient = non_patient_class(str(ds.get("SOPClassUID", "")).strip("\x00 "))
    if non_patient is not None:
        return StoreRefused(SOP_CLASS_NOT_SUPPORTED, f"not stored, no study: {non_patient}")
    return StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc))


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
