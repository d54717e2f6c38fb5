"""A receiver worker process: serves the storage associations the receiver hands it (see ingest.receiver_workers).

Started as `python -m ingest.receiver_worker CONFIG_JSON FD` by the receiver, with FD its end
of the control channel. It runs the receiver's own DicomReceiver (C-STORE fast path, checks,
durable store) without a listening socket and without a database: index records go to the
receiver, whose index writer commits them. When the channel closes (the receiver stopped or
was killed) the worker ends at once: whatever it had not answered was never acknowledged.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from core.pacs_store import PacsStore
from ingest.incoming import IncomingInstance
from ingest.receiver import DicomReceiver, ReceiverConfig
from ingest.receiver_services import ReceiverRequestHandler
from ingest.receiver_workers import WorkerConfig
from ingest.worker_channel import Channel, ChannelClosed

log = logging.getLogger("ingest.receiver_worker")


class IndexingFailed(RuntimeError):
    """The receiver could not index an instance this worker stored (it is durable; a restart or reindex indexes it)."""


class RemoteIndex:
    """The index writer as this worker sees it: records go over the channel, commits come back as futures.

    Records go without their metadata document: the receiver's process makes it (ingest.document_backfill).
    """

    documents_made_by_receiver = True

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._seq = itertools.count(1)
        self._pending: dict[int, Future[None]] = {}
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def knows_series(self, series_uid: str) -> bool:
        """Whether this worker sent the series before (its attributes went with its first instance)."""
        with self._lock:
            return series_uid in self._known

    def submit(self, item: IncomingInstance, *, linger: bool = True) -> Future[None]:
        future: Future[None] = Future()
        seq = next(self._seq)
        with self._lock:
            self._pending[seq] = future
            self._known.add(item.meta.series_uid)
        try:
            self.channel.send(("index", seq, item))
        except OSError as exc:
            with self._lock:
                self._pending.pop(seq, None)
            future.set_exception(IndexingFailed(f"the receiver is gone: {exc}"))
        return future

    def committed(self, seq: int, error: str | None) -> None:
        with self._lock:
            future = self._pending.pop(seq, None)
        if future is None:
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(IndexingFailed(error))


def serve(server: Any, channel: Channel, conn_id: int, request: bytes, address: tuple[Any, ...], fd: int) -> None:
    """One handed-over association, from its A-ASSOCIATE-RQ to its end, then tell the receiver."""
    sock = socket.socket(fileno=fd)
    try:
        handler = ReceiverRequestHandler.__new__(ReceiverRequestHandler)
        handler.request, handler.client_address, handler.server = sock, address, server
        handler.serve(request)
    except Exception:
        log.exception("association from %s failed", address[0] if address else "?")
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()
        try:
            channel.send(("released", conn_id))
        except OSError:
            pass


def die_with_parent() -> None:
    """Ask Linux to kill this process when the receiver's dies (even by SIGKILL), before the channel is read again."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the closed channel ends the worker


def main(argv: list[str]) -> int:
    die_with_parent()
    config = WorkerConfig(**json.loads(argv[1]))
    logging.basicConfig(level=config.log_level, stream=sys.stderr, format=f"%(asctime)s %(levelname)s %(name)s [receiver worker {os.getpid()}]: %(message)s")
    channel = Channel(socket.socket(fileno=int(argv[2])))
    index = RemoteIndex(channel)
    receiver = DicomReceiver(
        ReceiverConfig(host="127.0.0.1", port=0, ae_title=config.ae_title, allowed_calling_aets=frozenset(config.allowed_calling_aets)),
        PacsStore(Path(config.store_root)),
        index,  # type: ignore[arg-type]
    )
    server = receiver.build_server()
    server.socket.close()  # associations arrive over the channel, never on a port of the worker's own
    channel.send(("ready",))
    try:
        while True:
            message, fd = channel.receive()
            kind = message[0]
            if kind == "assoc" and fd is not None:
                _, conn_id, request, address = message
                threading.Thread(target=serve, args=(server, channel, conn_id, request, address, fd), name=f"association-{conn_id}", daemon=True).start()
            elif kind == "indexed":
                index.committed(message[1], message[2])
            elif kind == "stop":
                break
    except (ChannelClosed, OSError):
        pass  # the receiver is gone
    except BaseException:
        log.exception("control channel failed")
    os._exit(0)  # at once: associations under way were never answered, their senders resend


if __name__ == "__main__":
    sys.exit(main(sys.argv))
