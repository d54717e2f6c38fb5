"""The local executor: N worker processes; each job runs in a process of its own, in its own process group.

A worker is a long-lived, single-threaded process that imported the DAG modules once. For
each job it forks a child (cheap: everything is imported, and a single-threaded process
forks safely); the child makes itself a new session (its own process group), runs the job
and reports over a pipe to the worker, which relays to the engine. An abort signals the
child's whole group from here (SIGTERM, then SIGKILL after a grace period), so tools a step
started die with it; a crashing job never takes its worker down. One monitor thread here
reads every worker and notices workers that die (they are started again).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from core.workflows.context import JobSpec
from core.workflows.executor import ReportSink

log = logging.getLogger(__name__)

GRACE_SECONDS = 1.0  # between SIGTERM and SIGKILL of an aborted job's process group


# ---- the worker process ---------------------------------------------------------------------

def _worker_main(conn: Connection, preload: list[str]) -> None:
    """A worker: take a job, fork it into its own process group, relay its reports, report its exit."""
    import importlib

    for module in preload:
        loaded = importlib.import_module(module)
        # Heavy libraries a DAG module imports only inside its steps (so that Vireo itself starts fast):
        # imported once here, every forked job has them instead of importing them again.
        for name in getattr(loaded, "WORKER_IMPORTS", ()):
            importlib.import_module(name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return  # Vireo is gone
        reader, writer = multiprocessing.Pipe(duplex=False)
        pid = os.fork()
        if pid == 0:
            reader.close()
            conn.close()
            _job_child(spec, writer)
        writer.close()
        try:
            conn.send(("pid", pid))
            while True:
                try:
                    kind, data = reader.recv()
                except (EOFError, OSError):
                    break
                conn.send(("report", kind, data))
        except OSError:  # Vireo is gone: so is the job (a restarted Vireo fails it as interrupted)
            _kill_group(pid)
            return
        finally:
            reader.close()
        _, status = os.waitpid(pid, 0)
        _kill_group(pid)  # whatever the job started and left behind
        try:
            conn.send(("exit", os.waitstatus_to_exitcode(status)))
        except OSError:
            return


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _job_child(spec: JobSpec, writer: Connection) -> None:
    from core.workflows.runner import own_process_group, run_job

    code = 0
    try:
        cancelled = own_process_group()

        def report(kind: str, data: dict[str, Any]) -> None:
            try:
                writer.send((kind, data))
            except (BrokenPipeError, OSError):
                pass

        run_job(spec, report, cancelled, redirect_fds=True)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


# ---- the engine's side ----------------------------------------------------------------------

@dataclass
class _Worker:
    process: Any  # multiprocessing.Process
    conn: Connection
    spec: JobSpec | None = None
    child: int | None = None
    ended: bool = False
    kill_at: float | None = None
    killed: bool = False


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int, preload: list[str] | None = None) -> None:
        self.size = max(1, workers)
        self.preload = ["core.workflows.runner", *(preload or [])]
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._sink: ReportSink | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()

    def start(self, sink: ReportSink) -> None:
        self._sink = sink
        self._stopping = False
        # Workers start with the first jobs that need them: a Vireo that runs no jobs pays nothing for them.
        self._thread = threading.Thread(target=self._monitor, name="vireo-job-monitor", daemon=True)
        self._thread.start()

    def _spawn(self) -> _Worker:
        here, there = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(there, self.preload), name="vireo-worker", daemon=True)
        process.start()
        there.close()
        return _Worker(process, here)

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker.child is not None:
                _signal_group(worker.child, signal.SIGKILL)
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for worker in workers:
            worker.conn.close()
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()

    def free_slots(self) -> int:
        with self._lock:
            return self.size - sum(1 for w in self._workers if w.spec is not None)

    def submit(self, spec: JobSpec) -> None:
        with self._lock:
            worker = next((w for w in self._workers if w.spec is None), None)
            if worker is None and len(self._workers) < self.size:
                worker = self._spawn()
                self._workers.append(worker)
                self._wake()  # the monitor watches the new worker too
            if worker is None:
                raise RuntimeError("no idle worker")
            worker.spec, worker.child, worker.ended, worker.kill_at, worker.killed = spec, None, False, None, False
        worker.conn.send(spec)

    def kill(self, job_id: int, run: int) -> None:
        with self._lock:
            worker = next((w for w in self._workers if w.spec is not None and (w.spec.job_id, w.spec.run) == (job_id, run)), None)
        if worker is None:
            return
        worker.kill_at = time.monotonic() + GRACE_SECONDS
        if worker.child is not None:
            _signal_group(worker.child, signal.SIGTERM)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _monitor(self) -> None:
        while not self._stopping:
            with self._lock:
                workers = list(self._workers)
            readers: dict[Any, _Worker] = {}
            timeout = 0.5
            now = time.monotonic()
            for worker in workers:
                readers[worker.conn] = worker
                readers[worker.process.sentinel] = worker
                if worker.kill_at is not None and not worker.killed:
                    timeout = min(timeout, max(0.0, worker.kill_at - now))
            ready = wait([self._wake_r, *readers], timeout=timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for item in ready:
                worker = readers.get(item)
                if worker is None:
                    continue
                if item is worker.conn:
                    self._read(worker)
                elif not worker.process.is_alive():
                    self._replace(worker)
            for worker in workers:
                if worker.kill_at is not None and not worker.killed and time.monotonic() >= worker.kill_at and worker.child is not None:
                    worker.killed = True
                    _signal_group(worker.child, signal.SIGKILL)

    def _read(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                self._handle(worker, message)
        except (EOFError, OSError):
            pass

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        spec = worker.spec
        if spec is None:
            return
        if message[0] == "pid":
            worker.child = message[1]
            if worker.kill_at is not None:  # aborted before it had a pid
                _signal_group(worker.child, signal.SIGTERM)
        elif message[0] == "report":
            if message[1] == "ended":
                worker.ended = True
            self._emit(spec, message[1], message[2])
        elif message[0] == "exit":
            code = message[1]
            with self._lock:
                worker.spec, worker.child = None, None
            if not worker.ended:
                reason = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
                self._emit(spec, "ended", {"status": "failed", "error": f"job process {reason}", "failed_step": None})
            self._emit(spec, "released", {})

    def _replace(self, dead: _Worker) -> None:
        """A worker died (killed from outside): fail its job, start another worker."""
        self._read(dead)
        spec = dead.spec
        if dead.child is not None:
            _signal_group(dead.child, signal.SIGKILL)
        with self._lock:
            if dead in self._workers:
                self._workers[self._workers.index(dead)] = self._spawn()
        dead.conn.close()
        if spec is not None and not self._stopping:
            if not dead.ended:
                self._emit(spec, "ended", {"status": "failed", "error": "its worker process died", "failed_step": None})
            self._emit(spec, "released", {})
        log.warning("job worker %s died (exit code %s); started another", dead.process.pid, dead.process.exitcode)

    def _emit(self, spec: JobSpec, kind: str, data: dict[str, Any]) -> None:
        if self._sink is None:
            return
        try:
            self._sink(spec.job_id, spec.run, kind, data)
        except Exception:
            log.exception("handling %s of job %d failed", kind, spec.job_id)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        # Not yet its own group leader (it calls setsid first thing): signal the process itself.
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
