"""Who gets to the DICOM receiver's association slots: connections must ask properly and quickly.

pynetdicom starts an association thread for every TCP connection and counts every such thread
against `maximum_associations`, whether or not its peer ever sent a byte; the thread waits 30 s
for the A-ASSOCIATE-RQ, and one whose request trickles in a byte at a time blocks in its read
for ever. Sixteen idle connections so closed the receiver to every real sender.

So a connection reaches pynetdicom only with its A-ASSOCIATE-RQ complete:

* the request handler reads the first PDU itself (`read_associate_rq`), which must be an
  A-ASSOCIATE-RQ of sane length arriving whole within a deadline (5 s; real senders take
  milliseconds), else the connection is closed. Association slots are then taken only by peers
  that asked for an association, and the hot path (every later PDU) is untouched;
* `Admission` counts open connections per peer address. Past the cap, a new connection from that
  address is still admitted, and the address's oldest connection still waiting for its request
  is closed instead: a sender's request follows its connect within a round trip, so real
  senders on the same host as an attacker keep getting in. Only when every connection of the
  address is associated is the new one refused. Waiting connections of all peers together are
  bounded too (each costs a thread), the oldest going first.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_ASSOCIATE_DEADLINE = 5.0
DEFAULT_MAX_CONNECTIONS_PER_PEER = 32
# Connections of all peers that may wait for their A-ASSOCIATE-RQ at once (one thread each).
MAX_WAITING = 256
A_ASSOCIATE_RQ = 0x01
# Larger than any real request (128 contexts with every transfer syntax, user identity tokens), and
# only allocated as the bytes arrive.
MAX_ASSOCIATE_RQ_LENGTH = 1 << 20
_HEADER = struct.Struct(">BBL")  # PDU type, reserved, length of what follows
# Under attack every connection would be a log line: closes and refusals are told at most this often.
WARNING_INTERVAL = 60.0


@dataclass(frozen=True)
class AdmissionLimits:
    associate_deadline: float = DEFAULT_ASSOCIATE_DEADLINE
    max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    max_waiting: int = MAX_WAITING


def read_associate_rq(sock: socket.socket, deadline: float) -> bytes | None:
    """The peer's first PDU, when it is an A-ASSOCIATE-RQ that arrived whole within `deadline` seconds; else None.

    The socket's timeout is restored afterwards (pynetdicom reads with it).
    """
    end = time.monotonic() + deadline
    previous = sock.gettimeout()
    try:
        header = _read_exactly(sock, _HEADER.size, end)
        if header is None:
            return None
        pdu_type, _, length = _HEADER.unpack(header)
        if pdu_type != A_ASSOCIATE_RQ or length > MAX_ASSOCIATE_RQ_LENGTH:
            return None
        body = _read_exactly(sock, length, end)
        return None if body is None else bytes(header + body)
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


def _read_exactly(sock: socket.socket, count: int, end: float) -> bytearray | None:
    """`count` bytes before the monotonic time `end`, or None (timed out, closed, reset)."""
    data = bytearray()
    while len(data) < count:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return None
        try:
            sock.settimeout(remaining)
            chunk = sock.recv(min(count - len(data), 65536))
        except (OSError, ValueError):  # TimeoutError is an OSError; ValueError: closed under us
            return None
        if not chunk:
            return None
        data += chunk
    return data


class Admission:
    """Open connections by peer address, and which of them still wait for their A-ASSOCIATE-RQ.

    `admit` runs in the server's accept loop; `associated` and `release` in each connection's
    handler thread. Closing a connection from here is a `shutdown`: its handler thread, blocked
    reading, wakes and closes the socket itself.
    """

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self._lock = threading.Lock()
        self._peers: dict[socket.socket, str] = {}  # every open connection -> its peer address
        self._open: dict[str, int] = {}
        self._waiting: dict[socket.socket, None] = {}  # oldest first
        self._untold = 0  # closes and refusals since the last warning
        self._told = -WARNING_INTERVAL

    def admit(self, sock: socket.socket, peer: str) -> bool:
        """Whether to serve a new connection; may close an older waiting one to make room."""
        with self._lock:
            if self._open.get(peer, 0) >= self.limits.max_connections_per_peer:
                oldest = next((waiting for waiting in self._waiting if self._peers[waiting] == peer), None)
                if oldest is None:
                    self._warn(f"DICOM connection from {peer} refused: its {self._open[peer]} connections are all associations")
                    return False
                self._evict(oldest)
                self._warn(f"DICOM connection from {peer} closed: over its cap of {self.limits.max_connections_per_peer} connections, and still without an A-ASSOCIATE-RQ")
            if len(self._waiting) >= self.limits.max_waiting:
                self._evict(next(iter(self._waiting)))
                self._warn(f"DICOM connection closed: {self.limits.max_waiting} connections wait for their A-ASSOCIATE-RQ")
            self._peers[sock] = peer
            self._open[peer] = self._open.get(peer, 0) + 1
            self._waiting[sock] = None
            return True

    def associated(self, sock: socket.socket) -> bool:
        """The connection's request arrived: it no longer waits (and cannot be evicted). False if it was evicted already."""
        with self._lock:
            return self._waiting.pop(sock, False) is None

    def release(self, sock: socket.socket) -> None:
        """The connection is closed (idempotent)."""
        with self._lock:
            self._forget(sock)

    def close_waiting(self) -> None:
        """Close every connection still waiting for its request (the server stops)."""
        with self._lock:
            for sock in list(self._waiting):
                self._evict(sock)

    def open_connections(self, peer: str) -> int:
        with self._lock:
            return self._open.get(peer, 0)

    def _warn(self, message: str) -> None:
        """Log the first of a burst, then one line per WARNING_INTERVAL with how many were not told."""
        now = time.monotonic()
        if now - self._told < WARNING_INTERVAL:
            self._untold += 1
            return
        suffix = f" ({self._untold} more since the last such message)" if self._untold else ""
        log.warning("%s%s", message, suffix)
        self._told, self._untold = now, 0

    def _evict(self, sock: socket.socket) -> None:
        self._forget(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _forget(self, sock: socket.socket) -> None:
        self._waiting.pop(sock, None)
        peer = self._peers.pop(sock, None)
        if peer is None:
            return
        left = self._open[peer] - 1
        if left:
            self._open[peer] = left
        else:
            del self._open[peer]
