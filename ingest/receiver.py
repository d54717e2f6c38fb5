"""The DICOM receiver: a pynetdicom AE answering C-ECHO and C-STORE on the DICOM port
(and C-FIND, C-MOVE and C-GET through ingest.query_retrieve).

A plain C-STORE takes the fast path (ingest.streaming_dul): its data set is written to a part
file as it arrives, then checked, flushed and linked into the PACS store (ingest.intake), and
answered Success once durable; the index commit follows the answer (group commits through
ingest.indexer), and the association's release waits for it. A crash in between loses nothing
acknowledged: the start-up recovery indexes what was linked since the last heartbeat.
Associations that only store run in receiver worker processes (ingest.receiver_workers), one
per core, with this same class; those that query or retrieve run here.

A dataset that cannot be stored gets the failure status PS3.4 names for it, with an
ErrorComment, and the association carries on; so does every other request pynetdicom alone
would abort for (ingest.receiver_services), and every storage-like SOP class is accepted. The
called AE title names the dataset the series joins. A connection takes an association slot
only once its A-ASSOCIATE-RQ has arrived whole, within `associate_deadline` seconds, and each
peer address holds at most `max_connections_per_peer` connections (ingest.dicom_admission).
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from core.pacs_store import PacsStore, Part
from ingest.dicom_admission import DEFAULT_ASSOCIATE_DEADLINE, DEFAULT_MAX_CONNECTIONS_PER_PEER, Admission, AdmissionLimits
from ingest.dicom_transport import ReceiverServer
from ingest.dimse_wire import C_STORE_RQ, Command
from ingest.intake import (
    DATASET_MISMATCH_WARNING,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    AdmittedInstance,
    Intake,
    Origin,
    StoreRefused,
    error_comment,
    metadata_document,
    parse_dataset,  # noqa: F401  (part of this module's interface, as before the intake moved out)
)
from ingest.receiver_services import ReceiverRequestHandler, is_storage_like, storage_offer
from ingest.receiver_workers import WorkerConfig, WorkerPool
from ingest.streaming_dul import Outcome, accepted_syntax

if TYPE_CHECKING:  # the database side: a receiver worker process has none
    from ingest.indexer import IndexWriter
    from ingest.query_retrieve import QueryRetrieveSCP

log = logging.getLogger(__name__)

# DCMTK caps the PDUs it sends at 128 KiB; offering that much cuts per-PDU overhead 8x against the 16 KiB default.
MAX_PDU = 131072


@dataclass(frozen=True)
class ReceiverConfig:
    host: str
    port: int
    ae_title: str = "VIREO"
    max_associations: int = 16
    allowed_calling_aets: frozenset[str] = frozenset()
    max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    associate_deadline: float = DEFAULT_ASSOCIATE_DEADLINE
    # Worker processes that storage associations are handed to (ingest.receiver_workers); 0: all served in this process.
    workers: int = 0


class DicomReceiver:
    def __init__(self, config: ReceiverConfig, store: PacsStore, indexer: IndexWriter, query_retrieve: QueryRetrieveSCP | None = None) -> None:
        self.config = config
        self.query_retrieve = query_retrieve
        self.store = store
        self.indexer = indexer
        self.intake = Intake(store, indexer)
        self._server: ReceiverServer | None = None
        self._workers: WorkerPool | None = None
        # One thread: documents are made, and instances queued for the index, in the order they were answered.
        self._after_answer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vireo-after-answer")

    @property
    def port(self) -> int:
        """The bound port (differs from the configured one when that was 0)."""
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._server = self.build_server()
        if self.config.workers > 0:
            config = WorkerConfig(
                store_root=str(self.store.root), ae_title=self.config.ae_title, allowed_calling_aets=tuple(sorted(self.config.allowed_calling_aets)),
                log_level=logging.getLogger().getEffectiveLevel(),
            )
            self._workers = WorkerPool(self.config.workers, config, self.indexer, self._catch_up)
            self._server.workers = self._workers
        threading.Thread(target=self._server.serve_forever, name="vireo-dicom-server", daemon=True).start()
        log.info("DICOM receiver listening on %s:%d as %s (%d worker processes)", self.config.host, self.port, self.config.ae_title, self.config.workers)

    def _catch_up(self, since: float) -> int:
        from ingest.reindex import catch_up  # database side; never imported by a worker

        return catch_up(self.store, self.indexer, since)

    def build_server(self) -> ReceiverServer:
        """The configured association server, bound but not yet serving (a receiver worker serves handed-over sockets with it)."""
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = MAX_PDU
        ae.network_timeout = 120
        ae.acse_timeout = 30
        ae.dimse_timeout = 120
        ae.require_called_aet = False  # any called AE title is accepted: it names the dataset
        if self.config.allowed_calling_aets:
            ae.require_calling_aet = sorted(self.config.allowed_calling_aets)
        for context in AllStoragePresentationContexts:
            # Both roles: senders store to us, and a C-GET requestor takes the SCP role to receive from us.
            ae.add_supported_context(context.abstract_syntax, accepted_transfer_syntaxes(), scu_role=True, scp_role=True)
        ae.add_supported_context(Verification)
        # Storage classes outside pynetdicom's list (retired, private, non-patient) are offered per association.
        handlers = [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_REQUESTED, storage_offer(accepted_transfer_syntaxes())),
        ]
        if self.query_retrieve is not None:
            from ingest.query_retrieve import query_retrieve_models

            for model in query_retrieve_models():
                ae.add_supported_context(model)
            handlers += self.query_retrieve.handlers()
        server = ae.make_server(
            (self.config.host, self.config.port), evt_handlers=handlers, server_class=ReceiverServer, request_handler=ReceiverRequestHandler
        )
        server.admission = Admission(AdmissionLimits(self.config.associate_deadline, self.config.max_connections_per_peer))
        server.store_service = self
        if self.query_retrieve is not None:
            server.retrieve_check = self.query_retrieve.refusal
        return server

    def stop(self) -> None:
        """Stop listening and abort transfers under way (their senders hear no Success and resend)."""
        if self._workers is not None:
            self._workers.stop()
            self._workers = None
        if self._server is not None:
            active = self._server.active_associations
            self._server.shutdown()
            for association in active:
                association.abort()
            self._server = None

    def fast_eligible(self, assoc: Any, context: PresentationContext, command: Command) -> bool:
        """Whether a C-STORE goes the fast way (ingest.streaming_dul): a plain one, on its own storage context.

        Anything else takes pynetdicom's path through `handle_store` and ingest.receiver_services,
        which answer a SOP class that differs from its context, or a C-STORE on a context for
        Verification or a query model, with the statuses those need.
        """
        return (
            command.command_field == C_STORE_RQ
            and command.has_data_set
            and command.message_id is not None
            and bool(command.sop_instance_uid)
            and command.sop_class_uid == str(context.abstract_syntax)
            and is_storage_like(command.sop_class_uid)
            and not assoc._sent_release
        )

    def store_streamed(self, assoc: Any, context: PresentationContext, command: Command, part: Part, content: bytearray | None) -> Outcome:
        """A C-STORE that arrived into `part`: checked, flushed and linked; answered before it is indexed.

        Success means the instance is durable; the index commit follows the answer (`Outcome.index`),
        and the association's release waits for it. A crash in between loses nothing: the start-up
        recovery indexes files linked since the last heartbeat (ingest.reindex.recover).
        """
        origin = _origin(assoc)
        try:
            item, ds = self.intake.receive_part(
                part, content, accepted_syntax(context), origin, sop_class_uid=command.sop_class_uid, sop_instance_uid=command.sop_instance_uid
            )
        except StoreRefused as refused:
            if refused.status != OUT_OF_RESOURCES:
                log.warning("C-STORE from %s refused (0x%04X): %s", origin.calling_aet, refused.status, refused.comment)
            return Outcome(refused.status, error_comment(refused.comment))
        except Exception:  # a defect must not cost the association: the sender hears a failure and may resend
            log.exception("C-STORE from %s failed", origin.calling_aet)
            return Outcome(OUT_OF_RESOURCES, "storage failed: internal error, send it again later")

        def index() -> Future[None]:
            return self._index_after_answer(item, ds)

        if item.warning:
            log.warning("C-STORE from %s stored with a warning (0x%04X): %s", origin.calling_aet, DATASET_MISMATCH_WARNING, item.warning)
            return Outcome(DATASET_MISMATCH_WARNING, error_comment(item.warning), index)
        return Outcome(SUCCESS, None, index)

    def _index_after_answer(self, item: AdmittedInstance, ds: Dataset) -> Future[None]:
        """Queue the instance for the index; in the receiver's own process, with its metadata document made first.

        A receiver worker hands it on as it is: the main process makes the document once the
        series is quiet (ingest.document_backfill), since making it here took the worker's
        interpreter lock from the association's thread just as the next instance arrived.
        In the main process the document is made in a thread of its own meanwhile.
        """
        if getattr(self.indexer, "documents_made_by_receiver", False):
            return self.indexer.submit(item, linger=True)
        indexed: Future[None] = Future()

        def work() -> None:
            try:
                item.metadata_document = metadata_document(ds, item.meta)
                self.indexer.submit(item, linger=True).add_done_callback(lambda done: _copy_outcome(done, indexed))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                indexed.set_exception(exc)

        self._after_answer.submit(work)
        return indexed

    def handle_store(self, event: evt.Event) -> int | Dataset:
        """One C-STORE that pynetdicom decoded (not the fast path's): check, store durably, index, then answer."""
        request = event.request
        origin = _origin(event.assoc)
        mismatch = unnegotiated_class(str(request.AffectedSOPClassUID), str(event.context.abstract_syntax))
        if mismatch is not None:
            log.warning("C-STORE from %s refused (0x%04X): %s", _calling(event), SOP_CLASS_NOT_SUPPORTED, mismatch)
            return _status(SOP_CLASS_NOT_SUPPORTED, mismatch)
        try:
            item = self.intake.ingest(
                event.encoded_dataset(include_meta=True),
                str(event.context.transfer_syntax),
                origin,
                sop_class_uid=str(request.AffectedSOPClassUID),
                sop_instance_uid=str(request.AffectedSOPInstanceUID),
            )
        except StoreRefused as refused:
            if refused.status != OUT_OF_RESOURCES:
                log.warning("C-STORE from %s refused (0x%04X): %s", _calling(event), refused.status, refused.comment)
            return _status(refused.status, refused.comment)
        if item.warning:
            # Stored as sent; the sender learns what in it disagrees (PS3.4 B.2.3).
            log.warning("C-STORE from %s stored with a warning (0x%04X): %s", _calling(event), DATASET_MISMATCH_WARNING, item.warning)
            return _status(DATASET_MISMATCH_WARNING, item.warning)
        return SUCCESS


def unnegotiated_class(affected: str, negotiated: str) -> str | None:
    """Why a C-STORE's SOP class is not its presentation context's, or None.

    A context's abstract syntax is the one SOP class its requests may name (PS3.8 presentation context); a request
    naming another one (a sender that misread the UID, as DCMTK reads an RLE file's UN-encoded
    SOPClassUID as `31`) names a class never negotiated: 0x0122, SOP class not supported.
    """
    if affected == negotiated:
        return None
    log.warning("C-STORE names SOP class %s on a context for %s", affected, negotiated)
    return f"SOP class {_short_class(affected)} not negotiated; context: {_short_class(negotiated)}"


def _short_class(uid: str) -> str:
    """A SOP class in few characters for a 64-character ErrorComment: its keyword (CTImageStorage), else its UID."""
    return UID(uid).keyword or uid


def dataset_name(called_ae_title: str) -> str | None:
    """The dataset a called AE title names, made a valid dataset name (slashes and leading dots are legal in AE titles)."""
    name = called_ae_title.strip().replace("/", "_").replace("\\", "_").lstrip(".")
    return name or None


def _copy_outcome(source: Future[None], target: Future[None]) -> None:
    error = source.exception()
    if error is None:
        target.set_result(None)
    else:
        target.set_exception(error)


def _origin(assoc: Any) -> Origin:
    """Where an association's instances come from: its AE titles (the called one names the dataset) and address."""
    primitive = assoc.requestor.primitive
    called = str(primitive.called_ae_title).strip() if primitive is not None else ""
    calling = str(assoc.requestor.ae_title).strip()
    return Origin(dataset=dataset_name(called), calling_aet=calling, called_aet=called, peer_address=str(assoc.requestor.address))


def handle_echo(event: evt.Event) -> int:
    return SUCCESS


def _calling(event: evt.Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = error_comment(comment)
    return status


def accepted_transfer_syntaxes() -> list[str]:
    """Every transfer syntax, in the order pynetdicom picks from a proposed context.

    The acceptor's order decides within each proposed context. Explicit VR comes first (it
    keeps the VRs); compressed syntaxes next, ahead of implicit VR and big endian. Senders such
    as dcmsend and storescu propose a compressed file's own syntax in a context of its own, so
    compressed data is accepted as it is; a context offering both gets explicit VR.
    """
    uids = [UID(uid) for uid in ALL_TRANSFER_SYNTAXES]
    order = [ExplicitVRLittleEndian, *[u for u in uids if u.is_compressed], DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, *uids]
    return list(dict.fromkeys(str(u) for u in order))
