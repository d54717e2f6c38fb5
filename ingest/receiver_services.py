"""What the DICOM receiver serves beyond pynetdicom's own lists, and how it answers what it does not serve.

pynetdicom accepts a storage context only for the SOP classes it lists and, once associated,
aborts the association when a request names a SOP class it has no service class for (a
C-STORE whose Affected SOP Class UID a sender misread, a private storage class). A receiver
must instead answer every request it can parse with a status and keep the association, as
DCMTK's storescp does; and it should store every storage-like SOP class, as Orthanc
(`UnknownSopClassAccepted`) and dcm4chee do, except DICOMDIR, which is media, not an object.

pynetdicom's `_config.UNRESTRICTED_STORAGE_SERVICE` does the storage half of this, but it is
process-wide (it also changes the C-GET client in ingest.pacs_client) and its negotiation takes
each context's first proposed transfer syntax, ignoring the receiver's preference. So the
receiver does it per association instead:

* at A-ASSOCIATE (EVT_REQUESTED, before negotiation) the storage-like abstract syntaxes the
  requestor proposes are added to that association's supported contexts;
* `ReceiverAssociation` serves every C-STORE on a storage-like context with the Storage service class
  (a C-STORE on Verification or a query model gets 0x0211), checks a C-MOVE or
  C-GET before pynetdicom starts it (pynetdicom's C-MOVE wants a destination before a status can
  be given), and answers a request for which no service exists with a failure status.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import QueryRetrieveServiceClass, ServiceClass, StorageServiceClass, VerificationServiceClass
from pynetdicom.sop_class import uid_to_service_class

from ingest.dicom_transport import BulkRequestHandler
from ingest.intake import error_comment
from ingest.streaming_dul import stream_store

log = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: a file-set's index, never sent as an object
# PS3.4 Annex B: the composite storage SOP classes are numbered under this arc (retired and unnamed ones too).
STORAGE_ARC = "1.2.840.10008.5.1.4.1.1."
# PS3.7 C.5 (Unrecognized Operation): the operation is not one the SOP class (as negotiated) has.
UNRECOGNIZED_OPERATION = 0x0211
_STORAGE_WORD = re.compile(r"\bStorage\b")
_OPERATIONS = {C_ECHO: "C-ECHO", C_FIND: "C-FIND", C_GET: "C-GET", C_MOVE: "C-MOVE"}

# Checks a C-MOVE or C-GET request (as the event its handler would get): a failure status to answer, or None to serve it.
RetrieveCheck = Callable[[evt.Event], "Dataset | None"]


def is_storage_like(uid: str) -> bool:
    """Whether an abstract syntax is one to accept as storage: any storage SOP class, known, retired or private.

    Known classes are what pynetdicom or pydicom say they are; a UID neither knows (private, or
    newer than both) is taken as storage, since storage is what such classes almost always are.
    DICOMDIR is refused.
    """
    if uid == MEDIA_STORAGE_DIRECTORY or not UID(uid).is_valid:
        return False
    service = uid_to_service_class(uid)
    if service is not ServiceClass:
        return issubclass(service, StorageServiceClass)
    entry = UID_dictionary.get(uid)
    if entry is None:
        return True
    name, kind = entry[0], entry[1]
    if kind != "SOP Class":
        return False
    return uid.startswith(STORAGE_ARC) or (bool(_STORAGE_WORD.search(name)) and "Commitment" not in name)


def storage_like_contexts(proposed: list[PresentationContext], supported: set[str], transfer_syntaxes: list[str]) -> list[PresentationContext]:
    """Supported contexts to add for the storage-like abstract syntaxes a requestor proposes that are not yet supported."""
    added: list[PresentationContext] = []
    seen = set(supported)
    for context in proposed:
        uid = str(context.abstract_syntax or "")
        if not uid or uid in seen or not is_storage_like(uid):
            continue
        seen.add(uid)
        try:
            offer = build_context(uid, transfer_syntaxes)
        except ValueError:  # a UID pynetdicom will not carry
            continue
        # Both roles, like the listed storage classes: a C-GET requestor takes the SCP role to receive.
        offer.scu_role = True
        offer.scp_role = True
        added.append(offer)
    return added


def storage_offer(transfer_syntaxes: list[str]) -> Callable[[evt.Event], None]:
    """An EVT_REQUESTED handler that widens one association's supported contexts to every storage-like proposal."""

    def offer(event: evt.Event) -> None:
        acceptor = event.assoc.acceptor
        primitive = event.assoc.requestor.primitive
        if primitive is None:
            return
        current = list(acceptor.supported_contexts)
        added = storage_like_contexts(
            list(primitive.presentation_context_definition_list), {str(c.abstract_syntax) for c in current}, transfer_syntaxes
        )
        if added:
            acceptor.supported_contexts = current + added

    return offer


def serves(service: type[ServiceClass], msg: Any, abstract_syntax: str) -> bool:
    """Whether pynetdicom's service class has an SCP for this DIMSE-C request on this context (else it would abort)."""
    if issubclass(service, StorageServiceClass):
        return isinstance(msg, C_STORE)
    if issubclass(service, VerificationServiceClass):
        return isinstance(msg, C_ECHO)
    if issubclass(service, QueryRetrieveServiceClass):
        models = getattr(QueryRetrieveServiceClass, "_SUPPORTED_UIDS", None)  # pynetdicom's own list of models per operation
        return models is None or abstract_syntax in models.get(_OPERATIONS.get(type(msg), ""), ())
    return service is not ServiceClass


def _short(uid: str) -> str:
    """A SOP class in few characters for a 64-character ErrorComment: its keyword (Verification), else its UID."""
    return UID(uid).keyword or uid


def failure(status: int, reason: str) -> Dataset:
    """A status dataset: the code and the reason as an ErrorComment."""
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = error_comment(reason)
    return answer


class ReceiverAssociation(Association):
    """An acceptor association that answers every parsable request with a status instead of aborting.

    Only `_serve_request` (pynetdicom's dispatcher from request to service class) is overridden,
    and it hands back to pynetdicom for everything pynetdicom serves itself.
    """

    retrieve_check: RetrieveCheck | None = None

    def _serve_request(self, msg: Any, context_id: int) -> None:
        context = self._accepted_cx.get(context_id)
        if context is None or self._sent_release or not msg.is_valid_request:
            # An unaccepted context carries nothing decodable (pynetdicom aborts); the rest pynetdicom ignores with a warning.
            super()._serve_request(msg, context_id)
            return
        class_uid = self._service_uid(msg)
        service = uid_to_service_class(class_uid)
        if isinstance(msg, C_STORE) and not is_storage_like(str(context.abstract_syntax)):
            # A context negotiated for Verification or a query model carries no objects to store.
            self._answer(msg, context_id, failure(UNRECOGNIZED_OPERATION, f"unrecognized operation: no C-STORE on {_short(str(context.abstract_syntax))}"))
            return
        if isinstance(msg, C_STORE) and not issubclass(service, StorageServiceClass):
            # Whatever SOP class the request names, the Storage service answers it (the handler decides the status).
            self._run(StorageServiceClass(self), msg, context)
            return
        if type(msg) in _OPERATIONS and not serves(service, msg, str(context.abstract_syntax)):
            self._answer(msg, context_id, failure(UNRECOGNIZED_OPERATION, f"unrecognized operation: no {_OPERATIONS[type(msg)]} for {_short(class_uid)}"))
            return
        refusal = self._retrieve_refusal(msg, context)
        if refusal is not None:
            self._answer(msg, context_id, refusal)
            return
        super()._serve_request(msg, context_id)

    def _retrieve_refusal(self, msg: Any, context: PresentationContext) -> Dataset | None:
        """The status a C-MOVE/C-GET is refused with before pynetdicom starts it, or None (a failing check refuses nothing)."""
        if not isinstance(msg, (C_MOVE, C_GET)) or self.retrieve_check is None:
            return None
        kind = evt.EVT_C_MOVE if isinstance(msg, C_MOVE) else evt.EVT_C_GET
        try:
            return self.retrieve_check(evt.Event(self, kind, {"request": msg, "context": context.as_tuple}))
        except Exception:  # the handler checks again and pynetdicom answers what it raises
            log.exception("the retrieve check failed")
            return None

    def _service_uid(self, msg: Any) -> str:
        """The UID pynetdicom picks the service class by: the request's SOP class, or its service class by common extended negotiation."""
        uid = getattr(msg, "AffectedSOPClassUID", None) or getattr(msg, "RequestedSOPClassUID", None) or ""
        try:
            return str(self.acceptor.accepted_common_extended[uid][0])
        except KeyError:
            return str(uid)

    def _run(self, service: ServiceClass, msg: Any, context: PresentationContext) -> None:
        """Serve one request as pynetdicom's dispatcher does: reactor paused, cancellations cleared, abort on a failure inside."""
        try:
            self.dimse.cancel_req = {}
            self._is_paused = True
            service.SCP(msg, context)
            self._is_paused = False
            self.dimse.cancel_req = {}
        except Exception:
            log.exception("the %s service failed", type(msg).__name__)
            self.abort()

    def _answer(self, msg: Any, context_id: int, status: Dataset) -> None:
        """Send the final response to a request without serving it."""
        response = type(msg)()
        response.MessageID = msg.MessageID
        response.MessageIDBeingRespondedTo = msg.MessageID
        response.AffectedSOPClassUID = msg.AffectedSOPClassUID
        for element in status:
            if hasattr(response, element.keyword):
                setattr(response, element.keyword, element.value)
        log.warning("%s refused (0x%04X): %s", type(msg).__name__, int(status.Status), status.get("ErrorComment", ""))
        self.dimse.send_msg(response, context_id)


class ReceiverRequestHandler(BulkRequestHandler):
    """Gives each association the receiver's dispatcher and the server's retrieve check."""

    def _create_association(self):  # type: ignore[no-untyped-def]
        assoc = super()._create_association()
        # The same trick as the socket's: pynetdicom built the association, the object gains the dispatcher.
        assoc.__class__ = ReceiverAssociation
        assoc.retrieve_check = getattr(self.server, "retrieve_check", None)
        stream_store(assoc, getattr(self.server, "store_service", None))
        return assoc
