"""The C-STORE fast path: an association's P-DATA read in one buffer parse and written to disk as it arrives.

pynetdicom stays in charge of everything but the bulk of the traffic: negotiation, release,
abort, timers, and every request other than a plain C-STORE on its own storage context. For
each P-DATA-TF PDU of an established association (state Sta6), `StreamingDUL` walks the PDV
items in the buffer they were read into (ingest.dimse_wire):

* a command is collected, then decided on. A C-STORE-RQ whose SOP class is its storage
  context's goes the fast way; anything else (C-ECHO, C-FIND, a C-STORE on a context for
  another class) is handed to pynetdicom as the PDV items it would have read itself, so its
  answers (and ingest.receiver_services' statuses) are unchanged;
* a fast C-STORE's data set fragments go straight into a part file in the PACS store (and, up
  to `MEMORY_LIMIT`, into one buffer for the checks): memory stays flat for an object of any
  size;
* at its last fragment the receiver (`StoreService`) checks the instance, flushes and links
  it; the C-STORE-RSP goes out at once (Success means durable, not yet indexed), and the
  instance is handed to the index writer behind it;
* an A-RELEASE-RQ waits for the index commits of the association's instances before pynetdicom
  answers it: a sender that has released its association finds everything it sent searchable.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dul import DULServiceProvider
from pynetdicom.presentation import PresentationContext

from core.pacs_store import PacsStore, Part
from ingest.dimse_wire import (
    A_RELEASE_RQ,
    P_DATA_TF,
    Command,
    WireError,
    decode_command,
    p_data_pdu,
    pdvs,
    store_response_pdu,
)
from ingest.intake import OUT_OF_RESOURCES

log = logging.getLogger(__name__)

# An instance up to this size is read back whole from its part (page cache) for the checks that parse it in memory;
# a larger one is checked from its file (ingest.file_admission), so memory stays flat for any size.
MEMORY_LIMIT = 32 * 1024 * 1024
# The reused P-DATA buffer: the receiver's maximum PDU (ingest.receiver.MAX_PDU) and a little more; a longer PDU is read into its own.
PDU_BUFFER = 131072 + 4096
# How long a release waits for the index commits of its association's instances.
SETTLE_TIMEOUT = 60.0
_HEADER = struct.Struct(">BBL")
_PDU_TYPES = frozenset(range(0x01, 0x08))
_ABORT = 0x07
# Makes each association's next part file while the sender prepares the next instance (creating a file
# costs a filesystem journal entry, ~0.6 ms, with the GIL released): off the association's own thread.
_PART_MAKER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vireo-part-maker")


@dataclass
class Outcome:
    """What a fast C-STORE is answered with, and the index work that follows the answer (None when nothing was stored)."""

    status: int
    comment: str | None = None
    index: Any = None  # a callable returning the Future of the index commit, called after the response is out


class StoreService(Protocol):
    """The receiver's side of the fast path (ingest.receiver.DicomReceiver)."""

    store: PacsStore

    def fast_eligible(self, assoc: Any, context: PresentationContext, command: Command) -> bool: ...

    def store_streamed(self, assoc: Any, context: PresentationContext, command: Command, part: Part, content: bytes | None) -> Outcome: ...


class Incoming:
    """One C-STORE's data set on its way to disk: the Part 10 file its fragments are appended to."""

    def __init__(self, part: Part, prefix: bytes) -> None:
        self.part = part
        # A write that failed (a full disk): the rest of the data set is read and dropped, and the sender told why.
        self.failed: OSError | None = None
        self._write(prefix)

    def _write(self, data: bytes | memoryview) -> None:
        if self.failed is None:
            try:
                self.part.write(data)
            except OSError as exc:
                log.error("writing a received instance failed: %s", exc.strerror or exc)
                self.failed = exc

    def add(self, fragment: memoryview) -> None:
        self._write(fragment)

    def content(self) -> bytes | None:
        """The whole stream for the checks that parse it in memory, or None for a large one (checked from its file).

        Reading it back can fail as writing could (an I/O error): then `failed` says why and None is returned.
        """
        if self.part.size > MEMORY_LIMIT:
            return None
        try:
            return self.part.read()
        except OSError as exc:
            log.error("reading back a received instance failed: %s", exc.strerror or exc)
            self.failed = exc
            return None


def part10_prefix(command: Command, transfer_syntax: str) -> bytes:
    """Preamble, DICM and the file meta information, byte for byte as pynetdicom's `encoded_dataset(include_meta=True)`.

    Written by hand: pydicom's writer takes 0.3 ms per instance for these seven elements.
    """
    body = b"".join(
        (
            _OB_VERSION,
            _meta_element(0x0002, b"UI", command.sop_class_uid.encode("ascii"), b"\x00"),
            _meta_element(0x0003, b"UI", command.sop_instance_uid.encode("ascii"), b"\x00"),
            _meta_element(0x0010, b"UI", transfer_syntax.encode("ascii"), b"\x00"),
            _IMPLEMENTATION,
        )
    )
    return _PREAMBLE + _meta_element(0x0000, b"UL", struct.pack("<L", len(body)), b"") + body


def _meta_element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    """A group 0002 element with a 2-byte length (Explicit VR Little Endian), its value padded to even length."""
    if len(value) % 2:
        value += pad
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


_PREAMBLE = b"\x00" * 128 + b"DICM"
_OB_VERSION = struct.pack("<HH", 0x0002, 0x0001) + b"OB\x00\x00" + struct.pack("<L", 2) + b"\x00\x01"
_IMPLEMENTATION = _meta_element(0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID.encode("ascii"), b"\x00") + _meta_element(
    0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" "
)


def accepted_syntax(context: PresentationContext) -> str:
    """The one transfer syntax an accepted presentation context carries."""
    return str(context.transfer_syntax[0])


class MessageStream:
    """The DIMSE messages of one association, as its P-DATA arrives: fast C-STOREs kept, the rest handed on."""

    IDLE, FAST, PASS = "idle", "fast", "pass"

    def __init__(self, assoc: Any, service: StoreService) -> None:
        self.assoc = assoc
        self.service = service
        self.mode = self.IDLE
        self._command = bytearray()
        self._command_items: list[bytes] = []
        self._command_context: int | None = None
        self._request: Command | None = None
        self._context: PresentationContext | None = None
        self._incoming: Incoming | None = None
        self._indexing: list[Future[None]] = []
        # The next instance's part file, made (by _PART_MAKER) while the sender prepares that instance.
        self._spare: Future[Part] | None = None

    def feed(self, body: memoryview, send: Any) -> list[bytes]:
        """Take one P-DATA-TF body; returns the PDV items (with their length) that pynetdicom must get, in order."""
        passed: list[bytes] = []
        for pdv in pdvs(body):
            if self.mode == self.PASS:
                passed.append(bytes(body[pdv.item_start : pdv.end]))
                if pdv.is_last and not pdv.is_command:
                    self.mode = self.IDLE
            elif self.mode == self.FAST:
                if pdv.is_command or pdv.context_id != self._context_id():
                    raise WireError("a data set fragment of another context or a command arrived inside a C-STORE's data set")
                assert self._incoming is not None
                self._incoming.add(body[pdv.start : pdv.end])
                if pdv.is_last:
                    self._finish(send)
            elif pdv.is_command:
                if self._command_context is not None and pdv.context_id != self._command_context:
                    raise WireError("command fragments of one message on two presentation contexts")
                self._command_context = pdv.context_id
                self._command += body[pdv.start : pdv.end]
                self._command_items.append(bytes(body[pdv.item_start : pdv.end]))
                if pdv.is_last:
                    passed.extend(self._decide())
            else:  # a data set with no command before it: pynetdicom's to judge
                passed.append(bytes(body[pdv.item_start : pdv.end]))
        return passed

    def _context_id(self) -> int | None:
        return None if self._context is None else self._context.context_id

    def _decide(self) -> list[bytes]:
        """A whole command: start a fast C-STORE, or hand the command's items to pynetdicom."""
        items, self._command_items = self._command_items, []
        raw, self._command = self._command, bytearray()
        context_id, self._command_context = self._command_context, None
        try:
            command = decode_command(raw)
        except WireError:
            command = None
        context = self.assoc._accepted_cx.get(context_id)
        if command is not None and context is not None and self.service.fast_eligible(self.assoc, context, command):
            self._request, self._context = command, context
            part = self._take_spare()
            self._incoming = Incoming(part, part10_prefix(command, accepted_syntax(context)))
            self.mode = self.FAST
            return []
        self.mode = self.PASS if command is None or command.has_data_set else self.IDLE
        return items

    def _finish(self, send: Any) -> None:
        incoming, request, context = self._incoming, self._request, self._context
        assert incoming is not None and request is not None and context is not None
        self._incoming, self._request, self._context, self.mode = None, None, None, self.IDLE
        try:
            content = incoming.content() if incoming.failed is None else None
            if incoming.failed is not None:
                outcome = Outcome(OUT_OF_RESOURCES, f"storage failed: {incoming.failed.strerror or type(incoming.failed).__name__}")
            else:
                outcome = self.service.store_streamed(self.assoc, context, request, incoming.part, content)
        finally:
            incoming.part.discard()
        send(store_response_pdu(int(context.context_id), request, outcome.status, outcome.comment))
        if outcome.index is not None:
            self._indexing = [f for f in self._indexing if not f.done()]
            self._indexing.append(outcome.index())
        if self._spare is None:
            self._spare = _PART_MAKER.submit(self.service.store.open_part)

    def _take_spare(self) -> Part:
        """The part file made ahead; if making it failed (or none was made), one made here, raising here if that fails too."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.exception() is None:
            return spare.result()
        return self.service.store.open_part()

    def settle(self) -> None:
        """Wait until every instance this association stored is indexed (before its release is answered)."""
        pending, self._indexing = self._indexing, []
        for future in pending:
            try:
                future.result(timeout=SETTLE_TIMEOUT)
            except Exception:  # the file is durable and was acknowledged: a restart or reindex indexes it
                log.exception("an acknowledged instance could not be indexed yet")

    def abandon(self) -> None:
        """Drop a C-STORE cut off by an abort or a closed connection (its sender heard no Success), and the spare part."""
        if self._spare is not None:
            self._spare.add_done_callback(_discard_made_part)
            self._spare = None
        if self._incoming is not None:
            self._incoming.part.discard()
            self._incoming, self._request, self._context, self.mode = None, None, None, self.IDLE


def _discard_made_part(made: Future[Part]) -> None:
    if made.exception() is None:
        made.result().discard()


class StreamingDUL(DULServiceProvider):
    """pynetdicom's DUL with the P-DATA of an established association read by a `MessageStream`.

    P-DATA-TF bodies are read into one buffer per association, reused PDU after PDU: nothing
    of a body outlives its `feed` (fragments go to the part file, the rest is copied out), and
    a fresh 128 KiB buffer per PDU cost the kernel a page-zeroing each time.
    """

    stream: MessageStream
    _pdu_buffer: bytearray

    def _read_pdu_data(self) -> None:
        if self.state_machine.current_state != "Sta6":
            super()._read_pdu_data()
            return
        sock = self.socket
        assert sock is not None
        try:
            header = sock.recv(6)
            if len(header) < 6:
                raise ConnectionError("closed")
            pdu_type, _, length = _HEADER.unpack(header)
            if pdu_type not in _PDU_TYPES:
                log.error("unknown PDU type 0x%02X received", pdu_type)
                self.event_queue.put("Evt19")
                return
            reuse = pdu_type == P_DATA_TF and length <= len(self._pdu_buffer)
            body = memoryview(self._pdu_buffer)[:length] if reuse else sock.recv(length)
            if (sock.recv_into(body) if reuse else len(body)) != length:
                raise ConnectionError("closed inside a PDU")
        except (OSError, TimeoutError, ConnectionError):
            self.stream.abandon()
            self.event_queue.put("Evt17")  # transport connection closed
            return
        if pdu_type == P_DATA_TF:
            self._p_data(body if reuse else memoryview(body))
            return
        if pdu_type == A_RELEASE_RQ:
            self.stream.settle()
        if pdu_type in (A_RELEASE_RQ, _ABORT):
            self.stream.abandon()
        self._deliver(bytearray(header) + body)

    def _p_data(self, body: memoryview) -> None:
        try:
            passed = self.stream.feed(body, self._send_raw)
        except WireError as exc:
            log.error("invalid P-DATA-TF from %s: %s", self.assoc.requestor.address, exc)
            self.stream.abandon()
            self.event_queue.put("Evt19")  # invalid PDU: pynetdicom aborts the association
            return
        if passed:
            self._deliver(p_data_pdu(passed))

    def _send_raw(self, data: bytes) -> None:
        """Send a PDU from this (the DUL's) thread, the only one that writes to the socket."""
        sock = self.socket
        if sock is None or sock.socket is None:
            return
        try:
            sock.socket.sendall(data)
        except OSError:
            self.event_queue.put("Evt17")

    def _deliver(self, bytestream: bytearray) -> None:
        """Give a whole PDU to pynetdicom's state machine, as its own read would."""
        try:
            pdu, event = self._decode_pdu(bytestream)
        except Exception:
            log.exception("undecodable PDU")
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)


def stream_store(assoc: Any, service: StoreService | None) -> None:
    """Give an association (before it starts) the fast C-STORE path, if the server has a store service."""
    if service is None:
        return
    assoc.dul.__class__ = StreamingDUL
    assoc.dul.stream = MessageStream(assoc, service)
    assoc.dul._pdu_buffer = bytearray(PDU_BUFFER)


def abandon(assoc: Any) -> None:
    """After an association ended: remove a part its sender never finished."""
    stream = getattr(assoc.dul, "stream", None)
    if stream is not None:
        with contextlib.suppress(Exception):
            stream.abandon()
