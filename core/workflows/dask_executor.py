"""The Dask executor: jobs run on a Dask distributed cluster (`VIREO_DASK_SCHEDULER`), same DAG code.

A Dask task hands the job to a job host beside its worker thread (`job_host`: imports the DAG
code once, forks each job into a process group of its own), forwards the job's reports to Vireo as Dask events (`Worker.log_event` → the client's
`subscribe_topic`), and watches for an abort marker in the job's run folder — the data dir
is shared between Vireo and the workers, which is also how logs reach the log viewer. An
abort (or timeout) writes the marker; the task sends SIGTERM to the job's group, SIGKILL
after a grace period. Workers need Vireo installed (the same DAG code) and the data dir at
the same path.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from multiprocessing.connection import Connection

from core.workflows.context import JobSpec
from core.workflows.executor import ReportSink

log = logging.getLogger(__name__)

TOPIC = "vireo-jobs"
ABORT_MARKER = "abort"
GRACE_SECONDS = 1.0


class _JobHost:
    """A long-lived `core.workflows.job_host` process beside a Dask worker thread (one per thread)."""

    def __init__(self) -> None:
        here, there = socket.socketpair()
        env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "1"}  # looking for pydantic plugins costs a fresh process 0.1 s
        self.process = subprocess.Popen(
            [sys.executable, "-m", "core.workflows.job_host", str(there.fileno())], pass_fds=(there.fileno(),), env=env,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        there.close()
        self.conn = Connection(here.detach())

    def alive(self) -> bool:
        return self.process.poll() is None


_hosts: dict[int, _JobHost] = {}
_hosts_lock = threading.Lock()


def _host() -> _JobHost:
    with _hosts_lock:
        host = _hosts.get(threading.get_ident())
        if host is None or not host.alive():
            host = _hosts[threading.get_ident()] = _JobHost()
        return host


def run_on_dask_worker(spec_data: dict[str, Any]) -> dict[str, Any]:
    """The Dask task: run one job through this thread's job host, forward its reports, honour abort markers."""
    from distributed import get_worker

    spec = JobSpec(**spec_data)
    worker = get_worker()

    def forward(kind: str, data: dict[str, Any]) -> None:
        worker.log_event(TOPIC, {"job": spec.job_id, "run": spec.run, "kind": kind, "data": data})

    marker = spec.run_dir / ABORT_MARKER
    host = _host()
    host.conn.send(spec)
    outcome: dict[str, Any] = {}
    child: int | None = None
    kill_at: float | None = None
    code: int | None = None
    while code is None:
        try:
            ready = host.conn.poll(0.05)
            while ready:
                message = host.conn.recv()
                if message[0] == "pid":
                    child = message[1]
                elif message[0] == "report":
                    if message[1] == "ended":
                        outcome.update(message[2])
                    forward(message[1], message[2])
                elif message[0] == "exit":
                    code = message[1]
                    break
                ready = host.conn.poll()
        except (EOFError, OSError):
            code = -9  # the host died (killed from outside); the next task starts another
            break
        if child is not None:
            if kill_at is None and marker.exists():
                kill_at = time.monotonic() + GRACE_SECONDS
                _signal_group(child, signal.SIGTERM)
            elif kill_at is not None and time.monotonic() >= kill_at:
                _signal_group(child, signal.SIGKILL)
    if not outcome:
        reason = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        outcome = {"status": "failed", "error": f"job process {reason}", "failed_step": None}
        forward("ended", outcome)
    return outcome


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class DaskExecutor:
    name = "dask"

    def __init__(self, address: str) -> None:
        self.address = address
        self._client: Any = None
        self._sink: ReportSink | None = None
        self._futures: dict[tuple[int, int], Any] = {}
        self._specs: dict[tuple[int, int], JobSpec] = {}
        self._ended: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._slots = 0
        self._slots_at = 0.0
        # Events and task ends are handled in order on a thread of ours, never on the Dask client's event loop.
        self._inbox: queue.Queue[tuple[str, tuple[int, int], Any, int] | None] = queue.Queue()
        self._dispatcher: threading.Thread | None = None

    def start(self, sink: ReportSink) -> None:
        from distributed import Client

        self._sink = sink
        self._dispatcher = threading.Thread(target=self._dispatch, name="vireo-dask-reports", daemon=True)
        self._dispatcher.start()
        self._client = Client(self.address, timeout="20s", name="vireo")
        self._client.subscribe_topic(TOPIC, self._on_event)
        log.info("running jobs on the Dask cluster at %s", self.address)

    def stop(self) -> None:
        with self._lock:
            keys = list(self._specs)
        for key in keys:
            self.kill(*key)
        if self._client is not None:
            deadline = time.monotonic() + GRACE_SECONDS + 2
            while self._futures and time.monotonic() < deadline:
                time.sleep(0.05)
            self._client.close()
            self._client = None
        self._inbox.put(None)

    def free_slots(self) -> int:
        now = time.monotonic()
        if now - self._slots_at > 2.0:
            try:
                self._slots = sum(self._client.nthreads().values())
            except Exception:
                log.exception("could not ask the Dask scheduler for its workers")
            self._slots_at = now
        with self._lock:
            return self._slots - len(self._futures)

    def submit(self, spec: JobSpec) -> None:
        key = (spec.job_id, spec.run)
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        (spec.run_dir / ABORT_MARKER).unlink(missing_ok=True)
        future = self._client.submit(run_on_dask_worker, dataclasses.asdict(spec), key=f"vireo-job-{spec.job_id}-run-{spec.run}", pure=False)
        with self._lock:
            self._futures[key] = future
            self._specs[key] = spec
        future.add_done_callback(lambda f: self._inbox.put(("done", key, f, 0)))

    def kill(self, job_id: int, run: int) -> None:
        with self._lock:
            spec = self._specs.get((job_id, run))
            future = self._futures.get((job_id, run))
        if spec is None:
            return
        (spec.run_dir / ABORT_MARKER).touch()
        if future is not None and future.status == "pending":
            future.cancel()  # not started on a worker yet: it never will

    def _on_event(self, event: Any) -> None:
        _, message = event
        self._inbox.put(("event", (int(message["job"]), int(message["run"])), message, 0))

    def _dispatch(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            what, key, payload, attempt = item
            if what == "event":
                if payload["kind"] == "ended":
                    with self._lock:
                        self._ended.add(key)
                self._emit(key, payload["kind"], payload["data"])
            elif key not in self._ended and payload.status == "finished" and attempt < 20:
                # The task's result can overtake its last events: wait for them a little.
                threading.Timer(0.05, self._inbox.put, args=(("done", key, payload, attempt + 1),)).start()
            else:
                self._done(key, payload)

    def _done(self, key: tuple[int, int], future: Any) -> None:
        with self._lock:
            ended = key in self._ended
        if not ended:
            if future.status == "finished":
                outcome = future.result()
            elif future.status == "cancelled":
                outcome = {"status": "aborted", "error": "aborted before it started"}
            else:
                outcome = {"status": "failed", "error": f"Dask task failed: {future.exception()!r}"}
            self._emit(key, "ended", outcome)
        with self._lock:
            self._futures.pop(key, None)
            self._specs.pop(key, None)
            self._ended.discard(key)
        self._emit(key, "released", {})

    def _emit(self, key: tuple[int, int], kind: str, data: dict[str, Any]) -> None:
        if self._sink is None:
            return
        try:
            self._sink(key[0], key[1], kind, data)
        except Exception:
            log.exception("handling %s of job %d failed", kind, key[0])
