"""pynetdicom's acceptor socket, made fast for bulk C-STORE.

Two changes, both measured on the ingest benchmark:

* DCMTK senders keep Nagle's algorithm on unless `TCP_NODELAY=1` is in their environment.
  Their last, short segment of each message then waits for our ACK, which Linux delays by
  up to 40 ms: a 20-instances-per-second cliff. Asking for an immediate ACK
  (`TCP_QUICKACK`, which the kernel resets, so before every read) removes the cliff
  whatever the sender's settings.
* pynetdicom reads a PDU 4 KiB at a time into a growing bytearray; reading straight into
  one buffer of the PDU's size costs a fraction of that for 128 KiB PDUs.
"""

from __future__ import annotations

import socket
import socketserver

from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class BulkAssociationSocket(AssociationSocket):
    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        while received < nr_bytes:
            if _QUICKACK is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                except OSError:
                    pass
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
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        # pynetdicom built the socket already, and building another would announce the connection
        # twice to its state machine: the socket object keeps its state and gains the faster reads.
        assoc.dul.socket.__class__ = BulkAssociationSocket
        return assoc


class ReceiverServer(ThreadedAssociationServer):
    """A threaded association server we run ourselves (so it can use BulkRequestHandler)."""

    def shutdown(self) -> None:
        # pynetdicom's version also unregisters from the AE's list of servers it started itself.
        socketserver.BaseServer.shutdown(self)
        self.server_close()
