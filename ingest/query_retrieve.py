"""Query/Retrieve SCP on the DICOM port: C-FIND, C-MOVE and C-GET (PS3.4 Annex C).

Patient root and study root, at the patient, study, series and image levels. C-FIND runs
the same matching engine as QIDO-RS (core.dicom_query) and answers with exactly the keys
the identifier asked for. C-MOVE sends to destinations configured by AE title
(`VIREO_DICOM_DESTINATIONS`), never to an address a request names; C-GET sends back over
the requesting association. Both send the stored file where the peer accepted its transfer
syntax, and otherwise a copy re-encoded uncompressed (ingest.wado_transcode), same SOP Instance UID.
"""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select

from core import dicom_query
from core.attribute_matching import SequenceKey
from core.db import Database
from core.dicom_json import tag_hex
from core.models import Instance, Patient, Series, Study
from core.pacs_store import PacsStore
from ingest.intake import error_comment
from ingest.wado_transcode import CannotTranscode, syntax_label, transcode_refusal, transcoded

log = logging.getLogger(__name__)

FIND_MODELS = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
MOVE_MODELS = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
GET_MODELS = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
STUDY_ROOT = frozenset({str(m) for m in (StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelMove,
                                          StudyRootQueryRetrieveInformationModelGet)})

# Statuses (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
MAX_CONTEXTS = 128  # pynetdicom's (and PS3.8's) limit of presentation contexts per association
# Every instance can be re-encoded in these (PS3.5 10.1: implicit VR little endian is the default every AE supports).
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
REACH_TIMEOUT = 5.0  # seconds to wait for a C-MOVE destination's TCP port before answering it unreachable
# Unique keys that select what a retrieve sends, per level.
UNIQUE_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


class IdentifierError(ValueError):
    """A C-FIND/C-MOVE/C-GET identifier that cannot be answered; the message says why."""


def _level(identifier: Dataset, model: str) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in dicom_query.LEVELS:
        raise IdentifierError(f"QueryRetrieveLevel {level[:16]!r} is not {'/'.join(dicom_query.LEVELS)}")  # fits an ErrorComment
    if level == "PATIENT" and model in STUDY_ROOT:
        raise IdentifierError("the study root information model has no PATIENT level")
    return level


def _match_value(element: Any) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip("\x00 ")


def _skipped(element: Any) -> bool:
    """Elements of an identifier that are neither matched nor returned."""
    return element.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or element.tag.is_private or element.tag.group == 0x0000


def _item_keys(item: Dataset) -> SequenceKey:
    """A sequence key's item keys (PS3.4 C.2.2.2.6), nested sequences included."""
    keys: SequenceKey = {}
    for element in item:
        if _skipped(element) or not element.keyword:
            continue
        keys[element.keyword] = _sequence_key(element) if element.VR == "SQ" else _match_value(element)
    return keys


def _sequence_key(element: Any) -> SequenceKey:
    """A zero-length sequence, or one empty item, is universal: every item is returned (PS3.4 C.2.2.2.6)."""
    return _item_keys(element.value[0]) if element.value else {}


def identifier_matches(identifier: Dataset) -> tuple[dict[str, str], dict[str, SequenceKey], list[int]]:
    """The identifier's matching values by keyword, its sequence keys, and every tag it asks to be returned."""
    matches: dict[str, str] = {}
    sequences: dict[str, SequenceKey] = {}
    requested: list[int] = []
    for element in identifier:
        if _skipped(element):
            continue
        requested.append(int(element.tag))
        if not element.keyword:
            continue
        if element.VR == "SQ":
            sequences[element.keyword] = _sequence_key(element)
        else:
            matches[element.keyword] = _match_value(element)
    return matches, sequences, requested


def _returned_items(found: dict[str, Any], asked: Any) -> dict[str, Any]:
    """A sequence as the identifier asked for it: whole items for a universal key, else only the item keys asked for."""
    items = [item for item in found.get("Value") or [] if isinstance(item, dict)]
    wanted = [tag_hex(int(e.tag)) for e in asked.value[0] if not _skipped(e)] if asked.value else []
    if wanted:
        items = [{tag: item[tag] for tag in wanted if tag in item} for item in items]
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}


def find_responses(db: Database, identifier: Dataset, model: str, ae_title: str) -> Iterator[Dataset]:
    """The C-FIND responses to one identifier, each with exactly the requested keys."""
    level = _level(identifier, model)
    matches, sequences, requested = identifier_matches(identifier)
    query = dicom_query.Query(level=level, matches=matches, sequences=sequences, limit=dicom_query.MAX_RESULTS)
    with db.session() as session:
        result = dicom_query.search(session, query)
    for item in result.items:
        picked = {tag_hex(t): item[tag_hex(t)] for t in requested if tag_hex(t) in item}
        for element in identifier:
            if element.VR == "SQ" and element.keyword in sequences and tag_hex(int(element.tag)) in picked:
                picked[tag_hex(int(element.tag))] = _returned_items(picked[tag_hex(int(element.tag))], element)
        response = Dataset.from_json(picked)
        for tag in requested:
            if tag not in response:
                try:
                    vr = dictionary_VR(tag).split(" ")[0]
                except KeyError:
                    continue
                response.add_new(tag, vr, [] if vr == "SQ" else None)
        response.QueryRetrieveLevel = level
        response.RetrieveAETitle = ae_title
        if any(not str(element.value).isascii() for element in response if element.value is not None):
            response.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names as the index holds them
        yield response


def retrieve_filters(identifier: Dataset, model: str) -> list[tuple[str, list[str]]]:
    """The unique keys (keyword, values) a C-MOVE/C-GET identifier selects by; IdentifierError says why it cannot be answered."""
    level = _level(identifier, model)
    filters: list[tuple[str, list[str]]] = []
    for position, current in enumerate(dicom_query.LEVELS):
        keyword = UNIQUE_KEYS[current]
        value = _match_value(identifier[keyword]) if keyword in identifier else ""
        if position > dicom_query.LEVELS.index(level) or not value:
            if current == level:
                raise IdentifierError(f"a {level} level retrieve needs {keyword}")
            continue
        filters.append((keyword, [v for v in value.split("\\") if v]))
    if not filters:
        raise IdentifierError("the identifier selects nothing")
    return filters


def instances_to_retrieve(db: Database, store: PacsStore, identifier: Dataset, model: str) -> list[tuple[str, str, str, Path]]:
    """(SOP class, SOP instance, transfer syntax, file) of everything a C-MOVE/C-GET identifier selects."""
    filters = retrieve_filters(identifier, model)
    statement = (
        select(Instance.sop_class_uid, Instance.sop_instance_uid, Instance.transfer_syntax_uid, Instance.path)
        .join(Series, Series.series_uid == Instance.series_uid)  # type: ignore[arg-type]
        .join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
        .join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]
        .order_by(Instance.series_uid, Instance.instance_number, Instance.sop_instance_uid)
    )
    columns = {"PatientID": Patient.patient_id, "StudyInstanceUID": Study.study_uid, "SeriesInstanceUID": Series.series_uid,
               "SOPInstanceUID": Instance.sop_instance_uid}
    for keyword, values in filters:
        statement = statement.where(columns[keyword].in_(values))  # type: ignore[attr-defined]
    with db.session() as session:
        return [(cls, sop, ts, store.path(path)) for cls, sop, ts, path in session.execute(statement)]


def storage_contexts(instances: list[tuple[str, str, str, Path]]) -> list[PresentationContext]:
    """Presentation contexts to send these instances: per SOP class one offering explicit and implicit VR little endian,
    and one more per other stored syntax.

    Separate contexts, because a peer accepts one syntax per context: this way it can take the
    stored syntax (sent byte for byte) and still an uncompressed one (sent transcoded) when it
    cannot decode the stored one. Beyond 128 contexts the stored-syntax ones are left out first
    (their instances go transcoded), then SOP classes beyond the 128th (their instances fail).
    """
    stored: dict[str, list[str]] = {}
    for sop_class, _, syntax, _ in instances:
        syntaxes = stored.setdefault(sop_class, [])
        if syntax and syntax != ExplicitVRLittleEndian and syntax not in syntaxes:
            syntaxes.append(syntax)
    if len(stored) > MAX_CONTEXTS:
        log.warning("%d SOP classes to send, more than the %d presentation contexts an association has: instances of the rest fail",
                    len(stored), MAX_CONTEXTS)
    contexts = [build_context(sop_class, list(UNCOMPRESSED)) for sop_class in list(stored)[:MAX_CONTEXTS]]
    extra = [(sop_class, syntax) for sop_class, syntaxes in stored.items() for syntax in syntaxes]
    for sop_class, syntax in extra[:MAX_CONTEXTS - len(contexts)]:
        contexts.append(build_context(sop_class, [syntax]))
    return contexts


def sending_syntax(accepted: list[PresentationContext], sop_class: str, stored: str) -> str | None:
    """The transfer syntax an instance is sent in: the stored one if the peer accepted it for the SOP class,
    else the first accepted uncompressed syntax it can be re-encoded to; None when there is none.

    Only contexts where Vireo may send (as SCU of C-STORE) count, as pynetdicom's send_c_store has it.
    """
    offered = [str(cx.transfer_syntax[0]) for cx in accepted if cx.abstract_syntax == sop_class and cx.as_scu and cx.transfer_syntax]
    if stored in offered:
        return stored
    return next((target for target in UNCOMPRESSED if target in offered and transcode_refusal(stored, target) is None), None)


def outgoing_dataset(path: Path, sop_class: str, accepted: list[PresentationContext]) -> Dataset:
    """The stored file as a dataset pynetdicom sends in an accepted syntax: as stored, or re-encoded uncompressed.

    Raises CannotTranscode (with a plain reason) when the peer accepted nothing this instance can be sent in.
    """
    content = path.read_bytes()
    dataset = dcmread(io.BytesIO(content))
    stored = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    target = sending_syntax(accepted, sop_class, stored)
    if target is None:
        offered = sorted({syntax_label(str(cx.transfer_syntax[0])) for cx in accepted if cx.abstract_syntax == sop_class and cx.transfer_syntax})
        raise CannotTranscode(f"stored in {syntax_label(stored)}; the peer accepted "
                              f"{', '.join(offered) or 'no context for its SOP class'}, none of which it can be re-encoded to")
    if target == stored:
        return dataset
    return dcmread(io.BytesIO(transcoded(content, stored, target)))


def unreachable(host: str, port: int) -> bool:
    """Whether nothing answers on a C-MOVE destination's port.

    pynetdicom answers a failed sub-association with a bare 0xA801; asking first lets the
    refusal say which destination and address could not be reached.
    """
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT):
            return False
    except OSError:
        return True


class _Accepted:
    """Catches the sub-association pynetdicom opens to a C-MOVE destination: its accepted contexts decide each syntax."""

    def __init__(self) -> None:
        self.assoc: Any = None

    def __call__(self, event: evt.Event) -> None:
        self.assoc = event.assoc

    def contexts(self) -> list[PresentationContext]:
        return list(self.assoc.accepted_contexts) if self.assoc is not None else []


class QueryRetrieveSCP:
    """The C-FIND/C-MOVE/C-GET handlers the DICOM receiver binds."""

    def __init__(self, db: Database, store: PacsStore, ae_title: str, destinations: dict[str, tuple[str, int]]) -> None:
        self.db = db
        self.store = store
        self.ae_title = ae_title
        self.destinations = destinations

    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_C_FIND, self.handle_find), (evt.EVT_C_MOVE, self.handle_move), (evt.EVT_C_GET, self.handle_get)]

    def handle_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        model = str(event.request.AffectedSOPClassUID)
        try:
            identifier = event.identifier
            responses = list(find_responses(self.db, identifier, model, self.ae_title))
        except (IdentifierError, dicom_query.QueryError) as exc:
            log.warning("C-FIND refused: %s", exc)
            yield _failure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
            return
        except Exception as exc:
            log.exception("C-FIND failed")
            yield _failure(UNABLE_TO_PROCESS, str(exc))
            return
        for response in responses:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, response

    def refusal(self, event: evt.Event) -> Dataset | None:
        """The failure status (with Vireo's reason) a C-MOVE or C-GET gets before anything is sent, or None to serve it.

        The receiver's associations ask this before pynetdicom starts the retrieve: pynetdicom's C-MOVE
        needs a destination before it takes a status, and has no way to give an unknown one a reason.
        """
        if event.event == evt.EVT_C_MOVE:
            destination = _destination(event)
            if destination not in self.destinations:
                log.warning("C-MOVE to unknown destination %r (configure it in VIREO_DICOM_DESTINATIONS)", destination)
                return _failure(MOVE_DESTINATION_UNKNOWN, f"move destination unknown: {destination or '(none)'} is not configured")[0]
        try:
            retrieve_filters(event.identifier, str(event.request.AffectedSOPClassUID))
        except IdentifierError as exc:
            log.warning("retrieve refused: %s", exc)
            return _failure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))[0]
        except Exception as exc:  # an identifier that does not decode, or whose elements fail on first access
            log.warning("retrieve refused, identifier unreadable: %s", exc)
            return _failure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "identifier cannot be decoded")[0]
        if event.event == evt.EVT_C_MOVE:
            destination = _destination(event)
            host, port = self.destinations[destination]
            if unreachable(host, port):
                log.warning("C-MOVE destination %s at %s:%d cannot be reached", destination, host, port)
                return _failure(MOVE_DESTINATION_UNKNOWN, f"could not reach {destination} at {host}:{port}")[0]
        return None

    def handle_move(self, event: evt.Event) -> Iterator[Any]:
        if self.refusal(event) is not None:
            # Only where no refusal was answered first (an association not the receiver's): pynetdicom's bare 0xA801.
            yield None, None
            return
        address = self.destinations[_destination(event)]
        selected = instances_to_retrieve(self.db, self.store, event.identifier, str(event.request.AffectedSOPClassUID))
        accepted = _Accepted()
        yield address[0], address[1], {"contexts": storage_contexts(selected), "evt_handlers": [(evt.EVT_ACCEPTED, accepted)]}
        yield len(selected)
        yield from self._send(event, selected, accepted.contexts)

    def handle_get(self, event: evt.Event) -> Iterator[Any]:
        refused = self.refusal(event)
        if refused is not None:
            yield 1
            yield refused, None
            return
        selected = instances_to_retrieve(self.db, self.store, event.identifier, str(event.request.AffectedSOPClassUID))
        yield len(selected)
        yield from self._send(event, selected, lambda: list(event.assoc.accepted_contexts))

    @staticmethod
    def _send(event: evt.Event, selected: list[tuple[str, str, str, Path]],
              accepted: Callable[[], list[PresentationContext]]) -> Iterator[tuple[int, Any]]:
        """One instance at a time, in a syntax the peer accepted (`accepted` is asked once the association is up).

        An instance that cannot be read, or sent in anything accepted, is yielded as a bare
        dataset, which pynetdicom counts as one failed sub-operation; the rest still go.
        """
        for sop_class, sop, _, path in selected:
            if event.is_cancelled:
                yield CANCEL, None
                return
            try:
                dataset = outgoing_dataset(path, sop_class, accepted())
            except CannotTranscode as exc:
                log.warning("instance %s cannot be sent in a syntax the peer accepted: %s", sop, exc)
                dataset = _unsendable(sop)
            except Exception as exc:  # a file gone or unreadable counts as one failed sub-operation
                log.warning("instance %s could not be read for a retrieve: %s", sop, exc)
                dataset = _unsendable(sop)
            yield PENDING, dataset


def _failure(status: int, comment: str) -> tuple[Dataset, None]:
    """A failure status with an ErrorComment saying why (pynetdicom adds the failed-instance list where one belongs)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = error_comment(comment)
    return ds, None


def _unsendable(sop: str) -> Dataset:
    """A stand-in pynetdicom fails to send, so the instance counts as a failed sub-operation under its UID."""
    dataset = Dataset()
    dataset.SOPInstanceUID = sop
    return dataset


def _destination(event: evt.Event) -> str:
    """A C-MOVE's destination AE title, unpadded ('' when the request has none)."""
    destination = event.move_destination
    if destination is None:
        return ""
    return (destination.decode(errors="replace") if isinstance(destination, bytes) else str(destination)).strip()


def query_retrieve_models() -> list[str]:
    return [str(m) for m in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS)]
