"""A real Dask cluster for tests: `dask scheduler` and a `dask worker` (two processes), on loopback only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.vireo import ROOT, free_port

DASK = str(Path(sys.executable).with_name("dask"))


@contextmanager
def dask_cluster(log_dir: Path, workers: int = 2) -> Iterator[str]:
    """Yield the scheduler address of a cluster with `workers` single-threaded worker processes."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    for inherited in ("NICEGUI_USER_SIMULATION", "PYTEST_CURRENT_TEST"):
        env.pop(inherited, None)
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            cwd=ROOT, env=env, stdout=open(log_dir / "scheduler.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        ))
        started.append(subprocess.Popen(
            [DASK, "worker", address, "--host", "127.0.0.1", "--nworkers", str(workers), "--nthreads", "1", "--no-dashboard",
             "--memory-limit", "0"],
            cwd=ROOT, env=env, stdout=open(log_dir / "worker.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        ))
        _wait_for_workers(address, workers, log_dir)
        yield address
    finally:
        for process in reversed(started):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in reversed(started):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _wait_for_workers(address: str, workers: int, log_dir: Path, timeout: float = 60) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(address, timeout="5s") as client:
                client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
                return
        except (OSError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dask cluster did not start: {exc}\n{(log_dir / 'worker.log').read_text()[-3000:]}") from exc
            time.sleep(0.5)
