"""Vireo as a client of other PACS: query (C-FIND), retrieve (C-GET or C-MOVE) and send (C-STORE).

These are the steps the DAGs `query-pacs`, `retrieve-from-pacs` and `send-dicom` run; they
are plain functions, wrapped as DAGs in ingest/pacs_dags.py (send-dicom: ingest/dags.py):

* `query_pacs(node, level, filters, return_keys)` → list of keyword → value dicts;
* `retrieve_from_pacs(node, intake, db, study_uid, series_uids, method, dataset, …)` →
  `RetrieveReport`; instances come in through the same intake as the DICOM receiver
  (C-GET straight into it; C-MOVE via the receiver, the remote PACS knowing our AE title),
  and the retrieved series join `dataset`;
* `send_instances(node, paths, calling_ae)` → `SendReport`.

`QueryPacsConfig` and `RetrieveFromPacsConfig` are the DAGs' configurations (pydantic: the
engine renders them as forms and validates them on the API); `query_pacs_step(conf)` and
`retrieve_from_pacs_step(conf, intake, db)` run one of each.

Errors a person can act on (node unreachable, association rejected, a failure status)
raise `PacsError` with a message saying which node and what happened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, RLELossless,
)
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import select

from core import datasets
from core.db import Database
from core.dicom_json import parse_attribute
from core.models import Series
from ingest.intake import DATASET_MISMATCH_WARNING, SUCCESS, Intake, Origin, StoreRefused, error_comment
from ingest.query_retrieve import outgoing_dataset, storage_contexts

log = logging.getLogger(__name__)

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# What a C-GET accepts: uncompressed, and the compressed syntaxes archives commonly hold (stored as received).
RETRIEVE_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, JPEG2000, RLELossless,
]
TIMEOUT = 60


@dataclass(frozen=True)
class DicomNode:
    """A remote DICOM application entity."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class PacsError(RuntimeError):
    """Talking to another PACS failed; the message names the node and the reason."""


def _ae(calling_ae: str) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = TIMEOUT
    ae.dimse_timeout = TIMEOUT
    ae.network_timeout = TIMEOUT
    return ae


def _associate(ae: AE, node: DicomNode, **kwargs: Any) -> Any:
    try:
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, **kwargs)
    except OSError as exc:
        raise PacsError(f"cannot reach {node}: {exc}") from exc
    if not assoc.is_established:
        reason = "rejected the association" if assoc.is_rejected else "did not answer" if not assoc.is_aborted else "aborted the association"
        raise PacsError(f"{node} {reason} (is {ae.ae_title} allowed to call it?)")
    return assoc


def echo(node: DicomNode, calling_ae: str = "VIREO") -> None:
    """C-ECHO: raises PacsError unless the node answers."""
    ae = _ae(calling_ae)
    ae.add_requested_context(Verification)
    assoc = _associate(ae, node)
    try:
        status = assoc.send_c_echo()
        if not status or status.Status != SUCCESS:
            raise PacsError(f"{node} answered C-ECHO with {getattr(status, 'Status', 'no status')}")
    finally:
        assoc.release()


# --------------------------------------------------------------------------- DAG configurations


class PacsNodeConfig(BaseModel):
    """The remote PACS, as a DAG's form asks for it."""

    model_config = ConfigDict(extra="forbid")

    ae_title: str = PydanticField(min_length=1, max_length=16, description="the remote node's AE title")
    host: str = PydanticField(min_length=1, description="host name or address of the remote node")
    port: int = PydanticField(ge=1, le=65535, description="its DICOM port")

    def node(self) -> DicomNode:
        return DicomNode(self.ae_title, self.host, self.port)


class QueryPacsConfig(BaseModel):
    """Configuration of `query-pacs`."""

    model_config = ConfigDict(extra="forbid")

    node: PacsNodeConfig
    level: Literal["PATIENT", "STUDY", "SERIES", "IMAGE"] = "STUDY"
    filters: dict[str, str] = PydanticField(default_factory=dict, description="keyword → DICOM matching value (wildcards, ranges)")
    calling_ae: str = PydanticField(default="VIREO", min_length=1, max_length=16)


class RetrieveFromPacsConfig(BaseModel):
    """Configuration of `retrieve-from-pacs`."""

    model_config = ConfigDict(extra="forbid")

    node: PacsNodeConfig
    study_uid: str = PydanticField(min_length=1, max_length=64)
    series_uids: list[str] = PydanticField(default_factory=list, description="only these series (default: the whole study)")
    method: Literal["get", "move"] = "get"
    dataset: str | None = PydanticField(default=None, description="dataset the retrieved series join")
    calling_ae: str = PydanticField(default="VIREO", min_length=1, max_length=16)
    move_destination: str | None = PydanticField(default=None, max_length=16, description="C-MOVE destination AE (default: calling_ae)")


def query_pacs_step(conf: QueryPacsConfig) -> list[dict[str, Any]]:
    """What `query-pacs` runs."""
    return query_pacs(conf.node.node(), conf.level, conf.filters, calling_ae=conf.calling_ae)


def retrieve_from_pacs_step(conf: RetrieveFromPacsConfig, intake: Intake, db: Database) -> RetrieveReport:
    """What `retrieve-from-pacs` runs."""
    return retrieve_from_pacs(
        conf.node.node(), intake, db, conf.study_uid, conf.series_uids or None, method=conf.method, dataset=conf.dataset,
        calling_ae=conf.calling_ae, move_destination=conf.move_destination,
    )


# --------------------------------------------------------------------------- query


def _identifier(level: str, filters: dict[str, str], return_keys: Iterable[str]) -> Dataset:
    if level.upper() not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    ds = Dataset()
    ds.QueryRetrieveLevel = level.upper()
    for name in [*return_keys, *filters]:
        _, keyword = parse_attribute(name)
        if not keyword:
            raise ValueError(f"{name} names no DICOM attribute")
        setattr(ds, keyword, filters.get(name, filters.get(keyword, "")))
    return ds


def _plain(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for element in ds:
        if not element.keyword or element.VR == "SQ" or element.keyword == "QueryRetrieveLevel":
            continue
        value = element.value
        if value is None or value == "":
            out[element.keyword] = None
        elif type(value).__name__ == "MultiValue":
            out[element.keyword] = [str(v) for v in value]
        elif isinstance(value, (int, float)):
            out[element.keyword] = value
        else:
            out[element.keyword] = str(value)
    return out


def query_pacs(
    node: DicomNode,
    level: str = "STUDY",
    filters: dict[str, str] | None = None,
    return_keys: Sequence[str] = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyDescription", "ModalitiesInStudy"),
    calling_ae: str = "VIREO",
    patient_root: bool = False,
) -> list[dict[str, Any]]:
    """C-FIND `node` (study root unless `patient_root`); one dict of keyword → value per match."""
    model = PatientRootQueryRetrieveInformationModelFind if patient_root else StudyRootQueryRetrieveInformationModelFind
    keys = list(return_keys)
    if level.upper() == "SERIES":
        keys += [k for k in ("SeriesInstanceUID", "StudyInstanceUID", "Modality", "SeriesDescription", "SeriesNumber") if k not in keys]
    identifier = _identifier(level, filters or {}, keys)
    ae = _ae(calling_ae)
    ae.add_requested_context(model)
    assoc = _associate(ae, node)
    results: list[dict[str, Any]] = []
    try:
        for status, found in assoc.send_c_find(identifier, model):
            if status is None:
                raise PacsError(f"{node} stopped answering the C-FIND")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if found is not None:
                    results.append(_plain(found))
            elif code != SUCCESS:
                raise PacsError(f"{node} answered the C-FIND with status 0x{code:04X} {status.get('ErrorComment', '')}".strip())
    finally:
        assoc.release()
    return results


# --------------------------------------------------------------------------- retrieve


@dataclass
class RetrieveReport:
    method: str
    completed: int = 0
    failed: int = 0
    warnings: int = 0
    series_uids: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why instances could not be stored (C-GET)


def _retrieve_identifier(study_uid: str, series_uids: Sequence[str] | None) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = study_uid
    if series_uids:
        ds.QueryRetrieveLevel = "SERIES"
        ds.SeriesInstanceUID = list(series_uids) if len(series_uids) > 1 else series_uids[0]
    else:
        ds.QueryRetrieveLevel = "STUDY"
    return ds


def retrieve_from_pacs(
    node: DicomNode,
    intake: Intake,
    db: Database,
    study_uid: str,
    series_uids: Sequence[str] | None = None,
    *,
    method: str = "get",
    dataset: str | None = None,
    calling_ae: str = "VIREO",
    move_destination: str | None = None,
) -> RetrieveReport:
    """Fetch a study (or some of its series) from `node` into the PACS, adding its series to `dataset`.

    `method="get"` (C-GET) receives over the same association; `method="move"` (C-MOVE)
    asks `node` to send to `move_destination` (default: our AE title), which `node` must
    know, and the instances arrive through the DICOM receiver.
    """
    identifier = _retrieve_identifier(study_uid, series_uids)
    if method == "get":
        report = _get(node, intake, identifier, dataset, calling_ae)
    elif method == "move":
        report = _move(node, identifier, calling_ae, move_destination or calling_ae)
    else:
        raise ValueError(f"method must be 'get' or 'move', not {method!r}")
    with db.session() as session:
        query = select(Series.series_uid).where(Series.study_uid == study_uid)
        if series_uids:
            query = query.where(Series.series_uid.in_(list(series_uids)))  # type: ignore[attr-defined]
        report.series_uids = sorted(session.execute(query).scalars())
    if dataset and report.series_uids:
        _add_to_dataset(db, dataset, report.series_uids)
    if report.failed and not report.completed and not report.warnings:  # a warning sub-operation stored its instance
        raise PacsError(f"{node} sent nothing of study {study_uid}: {report.failed} failed" + (f" ({report.refused[0]})" if report.refused else ""))
    return report


def _add_to_dataset(db: Database, name: str, series_uids: list[str]) -> None:
    with db.session() as session:
        try:
            datasets.change_members(session, name, series_uids, [])
        except LookupError:
            datasets.create_dataset(session, name, series_uids)


def _get(node: DicomNode, intake: Intake, identifier: Dataset, dataset: str | None, calling_ae: str) -> RetrieveReport:
    report = RetrieveReport(method="get")
    lock = threading.Lock()
    origin = Origin(dataset=dataset, calling_aet=node.ae_title, called_aet=calling_ae, peer_address=node.host)

    def store(event: evt.Event) -> int | Dataset:
        try:
            item = intake.ingest(event.encoded_dataset(include_meta=True), str(event.context.transfer_syntax), origin,
                          sop_class_uid=str(event.request.AffectedSOPClassUID), sop_instance_uid=str(event.request.AffectedSOPInstanceUID))
        except StoreRefused as refused:
            with lock:
                report.refused.append(refused.comment)
            status = Dataset()
            status.Status = refused.status
            status.ErrorComment = error_comment(refused.comment)
            return status
        if item.warning:  # stored: the sending PACS counts it among its warning sub-operations
            status = Dataset()
            status.Status = DATASET_MISMATCH_WARNING
            status.ErrorComment = error_comment(item.warning)
            return status
        return SUCCESS

    ae = _ae(calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    contexts = list(StoragePresentationContexts)[:127]  # an association holds 128 contexts; one is the C-GET's
    roles = []
    for context in contexts:
        ae.add_requested_context(context.abstract_syntax, RETRIEVE_SYNTAXES)
        roles.append(build_role(context.abstract_syntax, scp_role=True))
    assoc = _associate(ae, node, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        _collect(node, assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet), report, "C-GET")
    finally:
        assoc.release()
    return report


def _move(node: DicomNode, identifier: Dataset, calling_ae: str, destination: str) -> RetrieveReport:
    report = RetrieveReport(method="move")
    ae = _ae(calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = _associate(ae, node)
    try:
        hint = f"; does it know the move destination {destination} (AE title, host and DICOM port of this Vireo)?"
        _collect(node, assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove), report, "C-MOVE", hint)
    finally:
        assoc.release()
    return report


def _collect(node: DicomNode, responses: Iterable[tuple[Dataset | None, Dataset | None]], report: RetrieveReport, what: str, hint: str = "") -> None:
    final = None
    for status, _ in responses:
        if status is None:
            raise PacsError(f"{node} stopped answering the {what}")
        final = status
    if final is None:
        raise PacsError(f"{node} gave no answer to the {what}")
    code = int(final.Status)
    report.completed = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
    report.failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
    report.warnings = int(final.get("NumberOfWarningSuboperations", 0) or 0)
    if code == 0xA801:
        raise PacsError(f"{node} does not know the move destination: add this Vireo's AE title, host and DICOM port to its modalities")
    if code not in (SUCCESS, 0xB000) and not report.completed and not report.warnings:
        comment = str(final.get("ErrorComment", "")).strip()
        raise PacsError(f"{node} answered the {what} with status 0x{code:04X}" + (f" ({comment})" if comment else "") + hint)


# --------------------------------------------------------------------------- send


@dataclass
class SendReport:
    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (SOP instance UID or file, why)


def send_instances(node: DicomNode, paths: Sequence[Path], calling_ae: str = "VIREO") -> SendReport:
    """C-STORE files to `node` (one association), each as stored or re-encoded to what the peer accepted; failures are reported per instance."""
    headers = []
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True)
        headers.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID), Path(path)))
    report = SendReport()
    if not headers:
        return report
    ae = _ae(calling_ae)
    assoc = _associate(ae, node, contexts=storage_contexts(headers))
    try:
        for sop_class, sop, _, path in headers:
            try:
                # As stored where the peer took that syntax, else re-encoded uncompressed (CannotTranscode is a ValueError).
                status = assoc.send_c_store(outgoing_dataset(path, sop_class, assoc.accepted_contexts))
            except (ValueError, AttributeError) as exc:
                report.failed.append((sop, str(exc)))
                continue
            code = int(status.Status) if status and "Status" in status else None
            if code is None:
                raise PacsError(f"{node} stopped answering after {report.sent} instances")
            if code == SUCCESS or 0xB000 <= code <= 0xBFFF:
                report.sent += 1
            else:
                report.failed.append((sop, f"status 0x{code:04X} {status.get('ErrorComment', '')}".strip()))
    finally:
        assoc.release()
    return report
