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
from core.db import Database
from core.dicom_json import tag_hex
from core.models import Instance, Patient, Series, Study
from core.pacs_store import PacsStore

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


def identifier_matches(identifier: Dataset) -> tuple[dict[str, str], list[int]]:
    """The identifier's matching values by keyword, and every tag it asks to be returned."""
    matches: dict[str, str] = {}
    requested: list[int] = []
    for element in identifier:
        tag = int(element.tag)
        if element.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or element.tag.is_private or element.tag.group == 0x0000:
            continue
        requested.append(tag)
        if element.VR == "SQ" or not element.keyword:
            continue
        matches[element.keyword] = _match_value(element)
    return matches, requested


def find_responses(db: Database, identifier: Dataset, model: str, ae_title: str) -> Iterator[Dataset]:
    """The C-FIND responses to one identifier, each with exactly the requested keys."""
    level = _level(identifier, model)
    matches, requested = identifier_matches(identifier)
    with db.session() as session:
        result = dicom_query.search(session, dicom_query.Query(level=level, matches=matches, limit=dicom_query.MAX_RESULTS))
    for item in result.items:
        picked = {tag_hex(t): item[tag_hex(t)] for t in requested if tag_hex(t) in item}
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


def instances_to_retrieve(db: Database, store: PacsStore, identifier: Dataset, model: str) -> list[tuple[str, str, str, Path]]:
    """(SOP class, SOP instance, transfer syntax, file) of everything a C-MOVE/C-GET identifier selects."""
    level = _level(identifier, model)
    statement = (
        select(Instance.sop_class_uid, Instance.sop_instance_uid, Instance.transfer_syntax_uid, Instance.path)
        .join(Series, Series.series_uid == Instance.series_uid)  # type: ignore[arg-type]
        .join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
        .join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]
        .order_by(Instance.series_uid, Instance.instance_number, Instance.sop_instance_uid)
    )
    columns = {"PatientID": Patient.patient_id, "StudyInstanceUID": Study.study_uid, "SeriesInstanceUID": Series.series_uid,
               "SOPInstanceUID": Instance.sop_instance_uid}
    selected = False
    for position, current in enumerate(dicom_query.LEVELS):
        keyword = UNIQUE_KEYS[current]
        value = _match_value(identifier[keyword]) if keyword in identifier else ""
        if position > dicom_query.LEVELS.index(level) or not value:
            if current == level:
                raise IdentifierError(f"a {level} level retrieve needs {keyword}")
            continue
        values = [v for v in value.split("\\") if v]
        statement = statement.where(columns[keyword].in_(values))  # type: ignore[attr-defined]
        selected = True
    if not selected:
        raise IdentifierError("the identifier selects nothing")
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

    def _selected(self, event: evt.Event) -> list[tuple[str, str, str, Path]] | tuple[Dataset, None]:
        try:
            return instances_to_retrieve(self.db, self.store, event.identifier, str(event.request.AffectedSOPClassUID))
        except IdentifierError as exc:
            log.warning("retrieve refused: %s", exc)
            return _failure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))

    def handle_move(self, event: evt.Event) -> Iterator[Any]:
        destination = event.move_destination
        destination = (destination.decode() if isinstance(destination, bytes) else str(destination)).strip()
        address = self.destinations.get(destination)
        if address is None:
            log.warning("C-MOVE to unknown destination %r (configure it in VIREO_DICOM_DESTINATIONS)", destination)
            yield None, None
            return
        selected = self._selected(event)
        if isinstance(selected, tuple):
            # pynetdicom asks for the destination first; a refusal follows as the first status.
            yield address[0], address[1]
            yield 1
            yield selected
            return
        yield address[0], address[1], {"contexts": storage_contexts(selected)}
        yield len(selected)
        yield from self._send(event, selected)

    def handle_get(self, event: evt.Event) -> Iterator[Any]:
        selected = self._selected(event)
        if isinstance(selected, tuple):
            yield 1
            yield selected
            return
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
    ds.ErrorComment = comment[:64]
    return ds, None


def query_retrieve_models() -> list[str]:
    return [str(m) for m in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS)]
