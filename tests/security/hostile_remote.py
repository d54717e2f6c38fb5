"""Small hostile HTTP servers on 127.0.0.1 that a Vireo registers as a remote: each misbehaves in one way.

Raw sockets on threads, so the misbehaviour is exact (a byte a second, a body that never
ends, a signed answer that is not the protocol). Every one is bounded: it stops after
`max_seconds` or `max_bytes`, whichever comes first, and when the client hangs up.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from federation import signing
from federation.identity import InstanceKey

Behaviour = Callable[["Exchange"], None]


@dataclass
class Exchange:
    """One accepted connection: the request read, and the socket to answer on."""

    conn: socket.socket
    headers: dict[str, str]
    body: bytes
    server: HostileRemote
    sent: int = 0

    def send(self, data: bytes) -> bool:
        """Send `data`; False once the client hung up or a bound is reached."""
        if self.server.stopping.is_set() or self.sent + len(data) > self.server.max_bytes:
            return False
        try:
            self.conn.sendall(data)
        except OSError:
            return False
        self.sent += len(data)
        self.server.most_sent = max(self.server.most_sent, self.sent)
        return True


@dataclass
class HostileRemote:
    """A server on 127.0.0.1 answering every request with `behaviour`; `most_sent`: the most bytes one answer got out."""

    behaviour: Behaviour
    max_seconds: float = 120.0
    max_bytes: int = 1 << 40  # per answer
    greeting: bytes | None = None  # sent at once on every connection, before reading anything
    most_sent: int = 0
    requests: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set() and time.monotonic() - self._started < self.max_seconds:
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        self._listener.close()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            if self.greeting is not None:  # a service that speaks first (or answers anything, TLS handshakes too)
                conn.sendall(self.greeting)
                return
            try:
                headers, body = _read_request(conn)
            except (OSError, ValueError):
                return
            self.requests += 1
            self.behaviour(Exchange(conn, headers, body, self))

    @property
    def expired(self) -> bool:
        return time.monotonic() - self._started >= self.max_seconds

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=5)


def _read_request(conn: socket.socket) -> tuple[dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("closed before the request ended")
        data += chunk
        if len(data) > 1 << 20:
            raise ValueError("request head too large")
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < min(length, 64 << 20):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return headers, body


# ---- behaviours ---------------------------------------------------------------------------
def trickle(exchange: Exchange) -> None:
    """A plausible answer, one byte a second, from the status line on: every read succeeds, nothing ever completes."""
    answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"instance": {"name": "slow"'
    for i in range(100_000):
        if exchange.server.expired or not exchange.send(answer[i:i + 1] if i < len(answer) else b" "):
            return
        time.sleep(1.0)


def endless_body(exchange: Exchange) -> None:
    """200 OK, chunked, then megabyte after megabyte as fast as the client takes them."""
    if not exchange.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"):
        return
    block = b" " * (1 << 20)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    while not exchange.server.expired and exchange.send(chunk):
        pass


def signed_answer(key: InstanceKey, name: str, body: bytes, status: int = 200) -> Behaviour:
    """An answer signed with `key` as `name` — a remote whose key is registered, sending what its code should not."""

    def answer(exchange: Exchange) -> None:
        nonce = exchange.headers.get(signing.NONCE_HEADER.lower(), "")
        caller = exchange.headers.get(signing.INSTANCE_HEADER.lower(), "")
        signature = signing.sign_response(key, nonce, status, body, name, caller)
        exchange.send(f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                      f"{signing.SIGNATURE_HEADER}: {signature}\r\nConnection: close\r\n\r\n".encode() + body)

    return answer


def silent(exchange: Exchange) -> None:
    """Takes the request and never says a word (until its bound)."""
    while not exchange.server.expired and not exchange.server.stopping.is_set():
        time.sleep(0.2)


def plain_http(text: bytes) -> Behaviour:
    """Some other HTTP service on the network (an intranet page, an admin console)."""

    def answer(exchange: Exchange) -> None:
        exchange.send(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(text) + text)

    return answer
