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
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import socketserver

from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
# A PDU longer than this is read pynetdicom's way (growing as data arrives): lengths come from the peer.
MAX_PREALLOCATED = 1 << 20
# Longest idle wait of the DUL thread: bounds how late it notices a timer or a request to stop.
IDLE_WAIT = 0.05


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's outgoing queue: every put also wakes the DUL thread out of its select."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        with contextlib.suppress(OSError):  # the pipe is full (a wake-up is pending anyway) or closed
            self._wake.send(b"\0")


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
        sock = self.socket
        assert sock is not None
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        while received < nr_bytes:
            if _QUICKACK is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            count = sock.recv_into(view[received:], nr_bytes - received)
            if not count:  # connection closed: return what arrived, as pynetdicom expects
                del view
                return buffer[:received]
            received += count
        del view
        return buffer


class BulkRequestHandler(RequestHandler):
    """Gives each association a BulkAssociationSocket (and no Nagle on our replies)."""

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
        outgoing = WakingQueue(writer)
        while not assoc.dul.to_provider_queue.empty():
            outgoing.put(assoc.dul.to_provider_queue.get_nowait())
        assoc.dul.to_provider_queue = outgoing
        assoc.dul._run_loop_delay = 0  # idle waiting happens in `ready`, on the socket and the wake-up pipe
        return assoc


class ReceiverServer(ThreadedAssociationServer):
    """A threaded association server we run ourselves (so it can use BulkRequestHandler)."""

    def shutdown(self) -> None:
        # pynetdicom's version also unregisters from the AE's list of servers it started itself.
        socketserver.BaseServer.shutdown(self)
        self.server_close()
