"""pynetdicom's acceptor socket, made fast for bulk C-STORE.

Three changes, all measured on the ingest benchmark (bench/ingest.py):

* DCMTK senders keep Nagle's algorithm on unless `TCP_NODELAY=1` is in their environment.
  Their last, short segment of each message then waits for our ACK, which Linux delays by
  up to 40 ms: a 20-instances-per-second cliff. Asking for an immediate ACK
  (`TCP_QUICKACK`, which the kernel resets, so before every read) removes the cliff
  whatever the sender's settings.
* pynetdicom reads a PDU 4 KiB at a time into a growing bytearray; reading straight into
  one buffer of the PDU's size costs a fraction of that for 128 KiB PDUs.
* pynetdicom's DUL thread polls: when idle it sleeps 1 ms and looks again, a thousand
  wake-ups a second per association that cost a quarter of the receiver's CPU. Here it
  blocks in `select` on the socket and on a wake-up pipe that the association's outgoing
  queue writes to, so it wakes the moment there is something to read or to send.

And one for admission (ingest.dicom_admission): a connection becomes a pynetdicom association only
once its whole A-ASSOCIATE-RQ has arrived, within a deadline, so idle or trickling connections
never take an association slot; and the server caps the connections of each peer address.

And one fix for every association of the process, requestor ones above all (`_reactor_get_msg`):
pynetdicom's reactor can take the response a `send_c_*()` waits for and drop it ("Received
unexpected C-STORE service message"), so that the sender hears nothing until its DIMSE timeout.
The faster the peer answers, the likelier: against this receiver about one C-ECHO, or small or
quickly refused C-STORE, in 1,000 to 2,000 from a busy pynetdicom sender stalled (never against
storescp, which answers such a sender in tens of milliseconds). pynetdicom users in this process
(C-MOVE sub-associations, ingest.pacs_client) have the fix; a sender in another process needs
this module imported.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from typing import Any

from pynetdicom import association as pynetdicom_association
from pynetdicom import dul as pynetdicom_dul
from pynetdicom import evt
from pynetdicom import transport as pynetdicom_transport
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import (
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from ingest.dicom_admission import Admission, AdmissionLimits, read_associate_rq
from ingest.streaming_dul import abandon

log = logging.getLogger(__name__)

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
# A PDU longer than this is read pynetdicom's way (growing as data arrives): lengths come from the peer.
MAX_PREALLOCATED = 1 << 20
# Longest idle wait of the DUL thread: bounds how late it notices a timer or a request to stop.
IDLE_WAIT = 0.05


_pynetdicom_get_msg = DIMSEServiceProvider.get_msg


def _reactor_get_msg(self: DIMSEServiceProvider, block: bool = False) -> Any:
    """pynetdicom's `get_msg`, except that the reactor (its only non-blocking caller) takes nothing while a `send_*()` runs.

    A `send_*()` clears the reactor's checkpoint, then waits for `_is_paused`, sends, and waits for
    the reply. But the reactor sets `_is_paused` before its `checkpoint.wait()` and clears it only
    after: a reactor just past the wait looks paused, goes on to its non-blocking `get_msg`, and
    when the peer's reply is in by then (the reactor thread waiting for the GIL is enough) takes it
    and drops it, as it serves only requests. Looking at the checkpoint here, after the reactor has
    cleared `_is_paused`, closes that window: a `send_*()` that saw `_is_paused` had cleared the
    checkpoint before. (pynetdicom 3.0.4; nothing else calls `get_msg(block=False)`.)
    """
    if not block and not self.assoc._reactor_checkpoint.is_set():
        return None, None
    return _pynetdicom_get_msg(self, block)


DIMSEServiceProvider.get_msg = _reactor_get_msg  # type: ignore[method-assign]


def copy_contexts(contexts: Any, memo: Any = None) -> Any:
    """The acceptor's supported contexts copied for one association, as pynetdicom's `deepcopy` would, 200 times faster.

    pynetdicom deep-copies the receiver's 171 storage contexts (about 40 transfer syntaxes each)
    for every association: 85 ms of CPU, paid again by every short association (a C-ECHO, a
    sender per series). Negotiation changes a context's own fields and its list of transfer
    syntaxes, never the UIDs in it (immutable strings): a new object with a new list is enough.
    """
    if isinstance(contexts, list) and all(type(c) is PresentationContext for c in contexts):
        copies = []
        for context in contexts:
            copy = object.__new__(PresentationContext)
            copy.__dict__.update(context.__dict__)
            copy._transfer_syntax = list(context._transfer_syntax)
            copies.append(copy)
        return copies
    return deepcopy(contexts, memo)


pynetdicom_transport.deepcopy = copy_contexts  # used only by RequestHandler._create_association


class _NoZeroSleep:
    """pynetdicom.dul's `time`, but `sleep(0)` does nothing.

    A receiver's DUL loop has no delay (`_run_loop_delay = 0`: it waits in `select`, see
    BulkAssociationSocket.ready) and then calls `time.sleep(0)` on every idle turn, which gives
    up the GIL: any other thread of the process holding it then delays the association by up
    to the interpreter's switch interval (5 ms). Measured: a fifth of a receiving thread's time.
    Requestor DULs (1 ms delay) sleep as before.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


pynetdicom_dul.time = _NoZeroSleep()  # type: ignore[assignment]


# An acceptor's association reactor with nothing to do waits this long for work at most (its timers' resolution).
REACTOR_IDLE = 0.05


class _ReactorClock:
    """pynetdicom.association's `time`, but an acceptor's reactor waits for work instead of polling every millisecond.

    pynetdicom's `Association._run_reactor` sleeps 1 ms per turn and then looks for a request,
    a release or an abort: 1000 wake-ups a second per association, each taking the GIL from
    the thread that receives (measured: ~13 context switches per instance with four
    associations, a third of all the receiver's). Associations made by BulkRequestHandler
    carry `reactor_wake`, an Event set whenever something the reactor serves is queued (a
    DIMSE message, a primitive for the user: release, abort); their reactor's 1 ms sleep waits
    on it, up to REACTOR_IDLE (the ARTIM and network timers need no finer clock). Every other
    sleep (requestors, pynetdicom's 0.1 ms waits) is time.sleep.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        wake = getattr(threading.current_thread(), "reactor_wake", None)
        if wake is None or seconds != 0.001:
            time.sleep(seconds)
            return
        wake.wait(REACTOR_IDLE)
        wake.clear()  # before the reactor looks at its queues: a put after this wakes the next turn


pynetdicom_association.time = _ReactorClock()  # type: ignore[assignment]


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue whose every put also calls `wake`: the DUL's outgoing queue wakes its select, the reactor's queues its Event."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


def make_waking(owner: Any, name: str, wake: Callable[[], None]) -> None:
    """Replace the queue `owner.<name>` (before its association starts) by a WakingQueue holding the same items."""
    waking = WakingQueue(wake)
    old = getattr(owner, name)
    while not old.empty():
        waking.put(old.get_nowait())
    setattr(owner, name, waking)


def wake_reactor_on_work(assoc: Any) -> None:
    """Give an acceptor association (before it starts) the Event its reactor waits on, set by the queues it serves."""
    wake = threading.Event()
    make_waking(assoc.dimse, "msg_queue", wake.set)
    make_waking(assoc.dul, "to_user_queue", wake.set)
    assoc.reactor_wake = wake


def _poke(writer: socket.socket) -> None:
    """Wake the DUL thread out of its select (a full pipe means a wake-up is pending anyway; a closed one, nobody waits)."""
    with contextlib.suppress(OSError):
        writer.send(b"\0")


class BulkAssociationSocket(AssociationSocket):
    _wake_reader: socket.socket | None = None

    @property
    def ready(self) -> bool:
        """Whether data can be read, waiting (up to IDLE_WAIT) until data or an outgoing message arrives."""
        if self.socket is None or self._is_connected is False:
            return False
        watched = [self.socket] if self._wake_reader is None else [self.socket, self._wake_reader]
        try:
            readable, _, _ = select.select(watched, [], [], IDLE_WAIT)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed, as pynetdicom's own check does
            return False
        if self._wake_reader is not None and self._wake_reader in readable:
            with contextlib.suppress(OSError):  # BlockingIOError once drained
                while self._wake_reader.recv(4096):
                    continue
        return self.socket in readable

    def _shutdown_socket(self) -> None:
        """Close the wake-up pipe with the socket (every way an association ends passes here)."""
        super()._shutdown_socket()
        for end in (self._wake_reader, getattr(self, "_wake_writer", None)):
            if end is not None:
                end.close()

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > MAX_PREALLOCATED:
            # The length comes from the peer: never allocate more than a real PDU needs up front.
            return super().recv(nr_bytes)
        buffer = bytearray(nr_bytes)
        with memoryview(buffer) as view:
            received = self.recv_into(view)
        return buffer if received == nr_bytes else buffer[:received]

    def recv_into(self, view: memoryview) -> int:
        """Fill `view` from the socket; fewer bytes only when the connection closed (the C-STORE fast path reuses one buffer)."""
        sock = self.socket
        assert sock is not None
        wanted = len(view)
        received = 0
        while received < wanted:
            if _QUICKACK is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            count = sock.recv_into(view[received:], wanted - received)
            if not count:  # connection closed: what arrived, as pynetdicom expects
                return received
            received += count
        return received


class BulkRequestHandler(RequestHandler):
    """Admits a connection by its A-ASSOCIATE-RQ, then gives its association a BulkAssociationSocket (and no Nagle on our replies).

    pynetdicom's handler starts the association thread at once and returns; this one first reads
    the request (bounded in time and size), and then stays with the association until it ends,
    so that the server's per-peer count knows when the connection closes.
    """

    server: ReceiverServer

    def handle(self) -> None:
        admission = self.server.admission
        sock = self.request
        handed_off = False
        try:
            request = read_associate_rq(sock, admission.limits.associate_deadline)
            if request is None or not admission.associated(sock):
                # Debug only: under a slow-loris this is every connection (evictions are told, throttled, by Admission).
                log.debug("DICOM connection from %s closed: no complete A-ASSOCIATE-RQ within %.0f s", self.client_address[0], admission.limits.associate_deadline)
                return
            workers = self.server.workers
            if workers is not None and workers.takes(request):
                if workers.load + len(self.server.active_associations) >= self.server.ae.maximum_associations:
                    _reject_over_limit(sock, self.client_address)
                    return
                # A receiver worker process serves it; this thread waits for its end, for the per-peer count.
                handed_off = workers.hand_off(sock, request, self.client_address)
            if not handed_off:
                self.serve(request)
        finally:
            admission.release(sock)
            if handed_off:
                self.server.close_request(sock)  # the worker has the connection: close our descriptor, not the connection
            else:
                self.server.shutdown_request(sock)

    def serve(self, request: bytes) -> None:
        """Run the association whose A-ASSOCIATE-RQ was read at admission, in this thread, until it ends."""
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        _deliver(assoc, request)
        assoc.start()
        assoc.join()
        abandon(assoc)

    def _create_association(self):  # type: ignore[no-untyped-def]
        assoc = super()._create_association()
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # pynetdicom built the socket already, and building another would announce the connection
        # twice to its state machine: the socket object keeps its state and gains the faster reads.
        sock = assoc.dul.socket
        sock.__class__ = BulkAssociationSocket
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        sock._wake_reader, sock._wake_writer = reader, writer
        make_waking(assoc.dul, "to_provider_queue", lambda: _poke(writer))
        assoc.dul._run_loop_delay = 0  # idle waiting happens in `ready`, on the socket and the wake-up pipe
        wake_reactor_on_work(assoc)
        return assoc


# A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected-transient (2), by the service provider's presentation layer (3),
# local limit exceeded (2) — what pynetdicom answers past `maximum_associations`.
_OVER_LIMIT = bytes([0x03, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x02, 0x03, 0x02])


def _reject_over_limit(sock: socket.socket, address: Any) -> None:
    """Refuse an association past the receiver's limit, counted over its worker processes and itself."""
    log.warning("DICOM association from %s rejected: the receiver serves its maximum of associations already", address[0])
    with contextlib.suppress(OSError):
        sock.sendall(_OVER_LIMIT)


def _deliver(assoc: Any, request: bytes) -> None:
    """Hand the A-ASSOCIATE-RQ read at admission to the association's DUL, as its own read would (before it starts).

    Its state machine then finds, after the connection's Evt5, the request's Evt6, and the PDU in
    its receive queue; the wake-up pipe makes its first look at the socket return at once.
    """
    dul = assoc.dul
    try:
        pdu, event = dul._decode_pdu(bytearray(request))
    except Exception:  # as pynetdicom's own read: an undecodable PDU is Evt19, and the association is aborted
        log.warning("undecodable A-ASSOCIATE-RQ from %s", assoc.requestor.address)
        dul.event_queue.put("Evt19")
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(pdu)
    with contextlib.suppress(OSError):
        dul.socket._wake_writer.send(b"\0")


class ReceiverServer(ThreadedAssociationServer):
    """A threaded association server we run ourselves (so it can use BulkRequestHandler).

    `retrieve_check`, when set, vets each C-MOVE/C-GET before pynetdicom serves it (see
    ingest.receiver_services.ReceiverAssociation): an event in, a failure status or None out.
    """

    retrieve_check: Callable[[Any], Any] | None = None
    # The receiver's C-STORE fast path (ingest.streaming_dul.StoreService); None: every C-STORE goes through pynetdicom.
    store_service: Any = None
    # Receiver worker processes (ingest.receiver_workers.WorkerPool) that storage associations are handed to; None: all served here.
    workers: Any = None
    # Handler threads live as long as their association: stopping must not wait for them (DicomReceiver.stop aborts those).
    daemon_threads = True
    # socketserver's default backlog is 5: a burst of connects (many senders, or an attacker's churn) overflows it,
    # and the kernel then drops SYNs, which senders retry only after a second.
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.admission = Admission(AdmissionLimits())
        super().__init__(*args, **kwargs)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Runs in the accept loop, before a thread is started for the connection."""
        return self.admission.admit(request, str(client_address[0]))

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread for it (socketserver closes it): its place is given back
            self.admission.release(request)
            raise

    def shutdown(self) -> None:
        # pynetdicom's version also unregisters from the AE's list of servers it started itself.
        socketserver.BaseServer.shutdown(self)
        self.server_close()
        self.admission.close_waiting()
