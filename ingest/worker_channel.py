"""The control channel between the receiver and its worker processes: framed messages, and sockets passed along.

One Unix stream socket pair per worker. A message is a pickled tuple behind a 4-byte length;
an association's socket travels as SCM_RIGHTS ancillary data with the message that hands it
over, and the reader keeps arriving descriptors in order until their message is read (a
stream socket delivers the descriptor with the first byte of that send). Both ends are this
program's own processes on a private socket pair, which is why pickle is fit here.
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading
from collections import deque
from typing import Any

_LENGTH = struct.Struct(">L")
_MAX_FDS = 16
# recv_fds allocates its whole buffer on every call: 1 MiB cost 17 µs a call against 4 µs for 64 KiB,
# twice per received instance (its index record in, the commit back). A longer message takes more calls.
_RECEIVE_SIZE = 1 << 16


class ChannelClosed(EOFError):
    """The other process is gone (its end of the pair closed)."""


class Channel:
    """One end of a worker's control socket: `send` from any thread, `receive` from one reader thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._buffer = bytearray()
        self._fds: deque[int] = deque()

    def send(self, message: tuple[Any, ...], fd: int | None = None) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _LENGTH.pack(len(data)) + data
        with self._send_lock:
            if fd is None:
                self.sock.sendall(frame)
            else:
                sent = socket.send_fds(self.sock, [frame], [fd])
                if sent < len(frame):
                    self.sock.sendall(frame[sent:])

    def receive(self) -> tuple[tuple[Any, ...], int | None]:
        """The next message and, for a hand-over, the descriptor that came with it."""
        while True:
            if len(self._buffer) >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(self._buffer)
                if len(self._buffer) >= _LENGTH.size + length:
                    data = bytes(self._buffer[_LENGTH.size : _LENGTH.size + length])
                    del self._buffer[: _LENGTH.size + length]
                    message = pickle.loads(data)
                    fd = self._fds.popleft() if message and message[0] == "assoc" and self._fds else None
                    return message, fd
            chunk, fds, _flags, _addr = socket.recv_fds(self.sock, _RECEIVE_SIZE, _MAX_FDS)
            if not chunk:
                raise ChannelClosed("the other end closed the channel")
            self._buffer += chunk
            self._fds.extend(fds)

    def close(self) -> None:
        for fd in self._fds:
            try:
                socket.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self.sock.close()
