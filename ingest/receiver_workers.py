"""Receiver worker processes: storage associations served on every core, one PACS store and one index.

Python runs one thread at a time per process, so a receiver in one process gains nothing from
a second association. The receiver therefore keeps the port, the admission rules and every
association that queries or retrieves (C-FIND, C-MOVE, C-GET need the database), and hands
each association that only stores (and echoes) to a worker process (ingest.receiver_worker),
socket and all, once its A-ASSOCIATE-RQ has arrived:

* the worker negotiates, receives, checks and stores durably as the receiver itself would
  (the same DicomReceiver class), and answers each C-STORE;
* it sends each stored instance's index record here; this process's index writer commits it
  (one writer, group commits, live updates to the pages) and tells the worker when, so the
  worker can answer an A-RELEASE-RQ only once its association's instances are searchable;
* the connection's handler thread here waits for the association's end, so the per-peer
  connection count stays exact.

Workers start with the first storage association (a Vireo that never receives pays nothing),
which is served here meanwhile; one that dies is started again, and its associations' senders
hear the connection close before any Success for what was not stored.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pynetdicom.pdu import A_ASSOCIATE_RQ

from ingest.receiver_services import is_storage_like
from ingest.worker_channel import Channel, ChannelClosed

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
WORKER_MODULE = "ingest.receiver_worker"
# A worker that dies sooner than this after its start is restarted ever later (up to MAX_RESTART_DELAY).
STABLE_SECONDS = 10.0
# A worker ended by SIGTERM or SIGINT most likely got the signal its whole process group got: the receiver
# waits this long for its own stop before calling it a failure (and restarting it, which waits a second anyway).
SHUTDOWN_GRACE = 3.0
_SHUTDOWN_SIGNALS = frozenset({-signal.SIGTERM, -signal.SIGINT})
MAX_RESTART_DELAY = 30.0
# How long an association waits for a worker that is starting, before it is served in the main process.
START_WAIT = 10.0
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to serve associations as the receiver would (JSON on its command line)."""

    store_root: str
    ae_title: str
    allowed_calling_aets: tuple[str, ...] = ()
    log_level: int = logging.INFO


def storage_only(request: bytes) -> bool:
    """Whether an A-ASSOCIATE-RQ proposes only storage and Verification: an association a worker serves."""
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(request)
    except Exception:  # pynetdicom here judges it (and aborts it)
        return False
    contexts = pdu.presentation_context
    return bool(contexts) and all(str(c.abstract_syntax) == VERIFICATION or is_storage_like(str(c.abstract_syntax)) for c in contexts)


class Worker:
    """One worker process, and the associations it serves now."""

    def __init__(self, number: int, config: WorkerConfig, indexer: Any, on_exit: Any) -> None:
        self.number = number
        self.indexer = indexer
        self.started = time.monotonic()
        self.started_at = time.time()  # wall clock, as folder modification times
        self.ready = threading.Event()
        self.alive = True
        self.active: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._on_exit = on_exit
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, json.dumps(asdict(config)), str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.channel = Channel(ours)
        threading.Thread(target=self._read, name=f"vireo-receiver-worker-{number}", daemon=True).start()

    def reserve(self, conn_id: int) -> threading.Event | None:
        """Count an association as this worker's before it is sent (None: the worker is gone)."""
        done = threading.Event()
        with self._lock:
            if not self.alive:
                return None
            self.active[conn_id] = done
        return done

    def hand_off(self, sock: socket.socket, request: bytes, address: Any, conn_id: int, done: threading.Event) -> bool:
        """Give the worker a reserved association; returns once it has ended (False: the worker could not take it)."""
        try:
            self.channel.send(("assoc", conn_id, request, tuple(address)), fd=sock.fileno())
        except OSError:
            with self._lock:
                self.active.pop(conn_id, None)
            return False
        done.wait()
        return True

    @property
    def load(self) -> int:
        return len(self.active)

    def _read(self) -> None:
        try:
            while True:
                message, _ = self.channel.receive()
                kind = message[0]
                if kind == "index":
                    seq, item = message[1], message[2]
                    self.indexer.submit(item, linger=True).add_done_callback(lambda future, seq=seq: self._indexed(seq, future))
                elif kind == "released":
                    with self._lock:
                        done = self.active.pop(message[1], None)
                    if done is not None:
                        done.set()
                elif kind == "ready":
                    self.ready.set()
        except (ChannelClosed, OSError, EOFError, ValueError) as exc:
            if not isinstance(exc, ChannelClosed):
                log.warning("receiver worker %d: control channel failed: %s", self.number, exc)
        except Exception:
            log.exception("receiver worker %d: unreadable message", self.number)
        finally:
            self._exited()

    def _indexed(self, seq: int, future: Future[None]) -> None:
        error = future.exception()
        if error is not None:
            log.error("receiver worker %d: an acknowledged instance could not be indexed: %s", self.number, error)
        try:
            self.channel.send(("indexed", seq, None if error is None else "indexing failed"))
        except OSError:
            pass

    def _exited(self) -> None:
        with self._lock:
            self.alive = False
            ended, self.active = list(self.active.values()), {}
        for done in ended:  # their connections closed with the process
            done.set()
        self.channel.close()
        self._on_exit(self)

    def stop(self) -> None:
        try:
            self.channel.send(("stop",))
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WorkerPool:
    """`count` workers, started with the first storage association; each association goes to the least busy."""

    def __init__(self, count: int, config: WorkerConfig, indexer: Any, catch_up: Any = None) -> None:
        self.count = count
        # Called (in a thread of its own) with a dead worker's start time: indexes what it stored but never handed over.
        self.catch_up = catch_up
        self.config = config
        self.indexer = indexer
        self.workers: list[Worker | None] = [None] * count
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._started = False
        self._stopping = threading.Event()  # set by stop()
        self._delays = [1.0] * count
        self._tried = [False] * count  # whether a worker was ever started (or failed to start) in each place
        self._spawns: queue.Queue[tuple[int, float]] = queue.Queue()

    @property
    def load(self) -> int:
        """Associations the workers serve now."""
        return sum(w.load for w in self.workers if w is not None)

    def takes(self, request: bytes) -> bool:
        """Whether a worker serves this association (it only stores), starting the workers on first need."""
        if not storage_only(request):
            return False
        self._ensure_started()
        return True

    def hand_off(self, sock: socket.socket, request: bytes, address: Any) -> bool:
        """Serve the association in the least busy ready worker, waiting for its end; False: none is ready, serve it here.

        While the workers start (the first association) this waits up to START_WAIT for all of them to be
        ready: a sender's first association is as fast as the later ones, and concurrent first
        associations spread over the workers.
        """
        deadline = time.monotonic() + START_WAIT
        while not self._stopping.is_set() and time.monotonic() < deadline:
            starting = [n for n, w in enumerate(self.workers) if not self._tried[n] or (w is not None and w.alive and not w.ready.is_set())]
            if not starting:
                break
            time.sleep(0.02)
        conn_id = next(self._ids)
        with self._lock:  # choose and count in one step, or concurrent associations all pick the same worker
            ready = [w for w in self.workers if w is not None and w.alive and w.ready.is_set()]
            if not ready:
                return False
            worker = min(ready, key=lambda w: w.load)
            done = worker.reserve(conn_id)
        if done is None:
            return False
        return worker.hand_off(sock, request, address, conn_id, done)

    def _ensure_started(self) -> None:
        with self._lock:
            if self._started or self._stopping.is_set():
                return
            self._started = True
            threading.Thread(target=self._spawner, name="vireo-receiver-workers", daemon=True).start()
            for number in range(self.count):
                self._spawns.put((number, 0.0))

    def _spawner(self) -> None:
        """Start (and restart) the workers, always from this one thread that lives as long as the process.

        A worker asks Linux to kill it when its parent goes (PR_SET_PDEATHSIG), and Linux means the
        thread that started it: a handler or timer thread would take its worker with it when it ends.
        """
        while True:
            number, not_before = self._spawns.get()
            time.sleep(max(0.0, not_before - time.monotonic()))
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self.workers[number] = Worker(number, self.config, self.indexer, self._exited)
                except OSError:
                    log.exception("receiver worker %d could not be started; associations are served in the main process", number)
                    self.workers[number] = None
                self._tried[number] = True

    def _exited(self, worker: Worker) -> None:
        if self._stopping.is_set():
            return
        code = worker.process.wait()
        # A worker that got its process group's signal first waits for its parent's own stop.
        if code in _SHUTDOWN_SIGNALS and self._stopping.wait(SHUTDOWN_GRACE):
            return  # the whole process group was told to stop (a service manager, Ctrl-C): not a failure to report
        lived = time.monotonic() - worker.started
        delay = self._delays[worker.number] = 1.0 if lived > STABLE_SECONDS else min(MAX_RESTART_DELAY, self._delays[worker.number] * 2)
        log.warning("receiver worker %d exited (status %s) after %.0f s; starting it again in %.0f s", worker.number, code, lived, delay)
        self._spawns.put((worker.number, time.monotonic() + delay))
        if self.catch_up is not None:
            threading.Thread(target=self._catch_up, args=(worker.started_at,), name="vireo-receiver-catch-up", daemon=True).start()

    def _catch_up(self, since: float) -> None:
        try:
            count = self.catch_up(since - 60)  # folder times are coarse; a minute more costs only a few stat calls
            if count:
                log.warning("indexed %d instances a receiver worker had stored before it exited", count)
        except Exception:
            log.exception("catching up after a receiver worker failed; a reindex indexes what it stored")

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
        self._spawns.put((0, 0.0))  # wakes the spawner, which sees the stop
        for worker in self.workers:
            if worker is not None:
                worker.stop()
