"""The local executor: each job in a process of its own (its own process group), N at a time.

Processes are forked from a multiprocessing *forkserver* that imported the DAG modules
once, so starting a job costs a fork, not a Python start-up, and a job never inherits the
threads and locks of the web server. Each job reports over a pipe of its own (a job killed
mid-message can only break its own pipe); one monitor thread reads every pipe and notices
every exit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from core.workflows.context import JobSpec
from core.workflows.executor import ReportSink

log = logging.getLogger(__name__)

GRACE_SECONDS = 1.0  # between SIGTERM and SIGKILL of an aborted job's process group


@dataclass
class _Running:
    spec: JobSpec
    process: Any  # multiprocessing.Process
    conn: Connection
    ended: bool = False
    kill_at: float | None = None
    killed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _job_main(spec: JobSpec, conn: Connection) -> None:
    """Entry point of a job process (runs in the forkserver's child)."""
    from core.workflows.runner import own_process_group, run_job

    cancelled = own_process_group()

    def report(kind: str, data: dict[str, Any]) -> None:
        try:
            conn.send((kind, data))
        except (BrokenPipeError, OSError):
            pass

    try:
        run_job(spec, report, cancelled, redirect_fds=True)
    finally:
        conn.close()
        os._exit(0)


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int, preload: list[str] | None = None) -> None:
        self.workers = max(1, workers)
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["core.workflows.runner", *(preload or [])])
        self._running: dict[tuple[int, int], _Running] = {}
        self._lock = threading.Lock()
        self._sink: ReportSink | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()

    def start(self, sink: ReportSink) -> None:
        self._sink = sink
        self._stopping = False
        self._thread = threading.Thread(target=self._monitor, name="vireo-job-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            running = list(self._running.values())
        for job in running:
            _signal_group(job, signal.SIGKILL)
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def free_slots(self) -> int:
        with self._lock:
            return self.workers - len(self._running)

    def submit(self, spec: JobSpec) -> None:
        parent, child = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=_job_main, args=(spec, child), name=f"vireo-job-{spec.job_id}", daemon=False)
        process.start()
        child.close()
        with self._lock:
            self._running[(spec.job_id, spec.run)] = _Running(spec, process, parent)
        self._wake()

    def kill(self, job_id: int, run: int) -> None:
        with self._lock:
            job = self._running.get((job_id, run))
        if job is None:
            return
        job.kill_at = time.monotonic() + GRACE_SECONDS
        _signal_group(job, signal.SIGTERM)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _monitor(self) -> None:
        while not self._stopping or self._running:
            with self._lock:
                jobs = list(self._running.values())
            readers: dict[Any, _Running] = {}
            for job in jobs:
                if not job.conn.closed:
                    readers[job.conn] = job
                readers[job.process.sentinel] = job
            timeout = 0.5
            now = time.monotonic()
            for job in jobs:
                if job.kill_at is not None and not job.killed:
                    timeout = min(timeout, max(0.0, job.kill_at - now))
            ready = wait([self._wake_r, *readers], timeout=timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for item in ready:
                job = readers.get(item)
                if job is None:
                    continue
                if item is job.conn:
                    self._drain(job)
            for job in jobs:
                if job.kill_at is not None and not job.killed and time.monotonic() >= job.kill_at:
                    job.killed = True
                    _signal_group(job, signal.SIGKILL)
                if not job.process.is_alive():
                    self._finish(job)
            if self._stopping and not self._running:
                break

    def _drain(self, job: _Running) -> None:
        try:
            while not job.conn.closed and job.conn.poll():
                kind, data = job.conn.recv()
                if kind == "ended":
                    job.ended = True
                self._emit(job, kind, data)
        except (EOFError, OSError):
            job.conn.close()

    def _finish(self, job: _Running) -> None:
        if not job.conn.closed:
            self._drain(job)
            job.conn.close()
        job.process.join(timeout=0)
        # Tools the job started may outlive it in its group; a finished run leaves nothing behind.
        _signal_group(job, signal.SIGKILL, fallback=False)
        with self._lock:
            self._running.pop((job.spec.job_id, job.spec.run), None)
        if not job.ended:
            code = job.process.exitcode
            reason = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
            self._emit(job, "ended", {"status": "failed", "error": f"job process {reason}", "failed_step": None})
        self._emit(job, "released", {})

    def _emit(self, job: _Running, kind: str, data: dict[str, Any]) -> None:
        if self._sink is None:
            return
        try:
            self._sink(job.spec.job_id, job.spec.run, kind, data)
        except Exception:
            log.exception("handling %s of job %d failed", kind, job.spec.job_id)


def _signal_group(job: _Running, sig: int, fallback: bool = True) -> None:
    pid = job.process.pid
    if pid is None:
        return
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        # Not yet its own group leader (it calls setsid first thing): signal the process itself.
        if not fallback:
            return
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
