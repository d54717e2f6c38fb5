"""Run a piece of CPU-bound work in a forked child while this process goes on with another.

A job runs in a single-threaded process of its own (core/workflows/local_executor.py), and
Python's threads share one core for pure-Python work such as pydicom's writer; a fork gives
the job the machine's second core with no pickling (the child sees the parent's memory).
Forking a process that has other threads is unsafe (a lock held by another thread stays
held in the child), so in such a process the work simply runs here, first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


class SideProcessFailed(RuntimeError):
    """The forked work raised; the message is the child's error."""


def run_beside(work: Callable[[], None], what: str) -> Callable[[], None]:
    """Start `work` in a forked child; the returned function waits for it and raises SideProcessFailed if it failed.

    The child belongs to the job's process group, so aborting the job stops it too.
    """
    if threading.active_count() > 1 or not hasattr(os, "fork"):
        work()
        return lambda: None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: do the work, report an error through the pipe, never return into the caller
        os.close(read_end)
        code = 0
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - everything must reach the parent
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:4000])
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)

    def wait() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SideProcessFailed(f"{what} failed: {message or f'the process ended with status {code}'}")

    return wait
