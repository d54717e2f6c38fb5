"""A private network namespace for tests that start Orthanc (which cannot be told to listen on loopback only).

`private_network()` moves the calling thread — and every process and thread it starts
while inside — into a fresh network namespace whose only interface is `lo`, and moves it
back on exit. Needs root (CAP_SYS_ADMIN), as bench/ingest.py's `unshare -n` does.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _interfaces() -> set[str]:
    with open("/proc/thread-self/net/dev") as f:
        return {line.split(":", 1)[0].strip() for line in f.readlines()[2:] if ":" in line}


@contextmanager
def private_network() -> Iterator[None]:
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise PermissionError(err, f"cannot create a private network namespace (needs root): {os.strerror(err)}")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            if _interfaces() != {"lo"}:
                raise RuntimeError(f"unexpected interfaces in the private network namespace: {sorted(_interfaces())}")
            yield
        finally:
            if _libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "could not return to the original network namespace")
    finally:
        os.close(original)
