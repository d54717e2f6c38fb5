"""Query/Retrieve SCP on the DICOM port: C-FIND, C-MOVE and C-GET (PS3.4 Annex C).

Patient root and study root, at the patient, study, series and image levels. C-FIND runs
the same matching engine as QIDO-RS (core.dicom_query) and answers with exactly the keys
the identifier asked for. C-MOVE sends to destinations configured by AE title
(`VIREO_DICOM_DESTINATIONS`), never to an address a request names; C-GET sends back over
the requesting association. Both send the stored files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
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
MAX_CONTEXTS = 128
# Unique keys that select what a retrieve sends, per level.
UNIQUE_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


class IdentifierError(ValueError):
    """A C-FIND/C-MOVE/C-GET identifier that cannot be answered; the message says why."""


def _level(identifier: Dataset, model: str) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in dicom_query.LEVELS:
        raise IdentifierError(f"QueryRetrieveLevel must be one of {', '.join(dicom_query.LEVELS)}, not {level!r}")
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
    """Presentation contexts to send these instances: each SOP class with its stored syntaxes and the uncompressed ones."""
    syntaxes: dict[str, list[str]] = {}
    for sop_class, _, syntax, _ in instances:
        syntaxes.setdefault(sop_class, [])
        if syntax and syntax not in syntaxes[sop_class]:
            syntaxes[sop_class].append(syntax)
    contexts = []
    for sop_class, stored in list(syntaxes.items())[:MAX_CONTEXTS]:
        contexts.append(build_context(sop_class, list(dict.fromkeys([*stored, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))))
    return contexts


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
        return None

    def handle_move(self, event: evt.Event) -> Iterator[Any]:
        if self.refusal(event) is not None:
            # Only where no refusal was answered first (an association not the receiver's): pynetdicom's bare 0xA801.
            yield None, None
            return
        address = self.destinations[_destination(event)]
        selected = instances_to_retrieve(self.db, self.store, event.identifier, str(event.request.AffectedSOPClassUID))
        yield address[0], address[1], {"contexts": storage_contexts(selected)}
        yield len(selected)
        yield from self._send(event, selected)

    def handle_get(self, event: evt.Event) -> Iterator[Any]:
        refused = self.refusal(event)
        if refused is not None:
            yield 1
            yield refused, None
            return
        selected = instances_to_retrieve(self.db, self.store, event.identifier, str(event.request.AffectedSOPClassUID))
        yield len(selected)
        yield from self._send(event, selected)

    @staticmethod
    def _send(event: evt.Event, selected: list[tuple[str, str, str, Path]]) -> Iterator[tuple[int, Any]]:
        """One instance at a time, read as stored (pynetdicom sends it in its own syntax where the peer accepts that)."""
        for _, sop, _, path in selected:
            if event.is_cancelled:
                yield CANCEL, None
                return
            try:
                dataset = dcmread(path)
            except Exception as exc:  # a file gone or unreadable counts as one failed sub-operation
                log.warning("instance %s could not be read for a retrieve: %s", sop, exc)
                dataset = Dataset()
                dataset.SOPInstanceUID = sop
            yield PENDING, dataset


def _failure(status: int, comment: str) -> tuple[Dataset, None]:
    """A failure status with an ErrorComment saying why (pynetdicom adds the failed-instance list where one belongs)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = error_comment(comment)
    return ds, None


def _destination(event: evt.Event) -> str:
    """A C-MOVE's destination AE title, unpadded ('' when the request has none)."""
    destination = event.move_destination
    if destination is None:
        return ""
    return (destination.decode(errors="replace") if isinstance(destination, bytes) else str(destination)).strip()


def query_retrieve_models() -> list[str]:
    return [str(m) for m in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS)]
