"""Servers that cannot be told to listen on loopback only (DCMTK's storescp), reached through loopback anyway.

The server runs in a private network namespace (`unshare -n`, only `lo` inside), next to a
relay that accepts on a Unix socket and connects to the server inside. Outside, a relay
thread listens on 127.0.0.1 and forwards to that Unix socket (Unix sockets cross network
namespaces; TCP does not). So nothing listens on a non-loopback interface anywhere.

`python -m tests.support.isolated <unix socket> <port>` is the inner relay.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _splice(a: socket.socket, b: socket.socket) -> None:
    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()
    threading.Thread(target=_pipe, args=(b, a), daemon=True).start()


def _serve(listener: socket.socket, connect: object) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = connect()  # type: ignore[operator]
        except OSError:
            client.close()
            continue
        _splice(client, upstream)


@contextmanager
def isolated_storescp(out_dir: Path, ae_title: str = "ARCHIVE") -> Iterator[int]:
    """storescp writing into `out_dir`, reachable on the yielded loopback port."""
    sock_path = out_dir.parent / f".{out_dir.name}.sock"
    sock_path.unlink(missing_ok=True)
    inner = (
        f"ip link set lo up && (storescp -od {out_dir} -aet {ae_title} 11112 &) && "
        f"exec {sys.executable} -m tests.support.isolated {sock_path} 11112"
    )
    process = subprocess.Popen(["unshare", "-n", "--", "sh", "-c", inner], cwd=ROOT, start_new_session=True)
    listener = socket.socket()
    try:
        deadline = time.monotonic() + 10
        while not sock_path.exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the isolated storescp did not start")
            time.sleep(0.05)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)

        def connect() -> socket.socket:
            unix = socket.socket(socket.AF_UNIX)
            unix.connect(str(sock_path))
            return unix

        threading.Thread(target=_serve, args=(listener, connect), daemon=True).start()
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the relay and storescp (same session)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
        sock_path.unlink(missing_ok=True)


def _inner(sock_path: str, port: int) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(sock_path + ".part")
    os.rename(sock_path + ".part", sock_path)
    listener.listen(8)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait for storescp to listen
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    _serve(listener, lambda: socket.create_connection(("127.0.0.1", port)))


if __name__ == "__main__":
    _inner(sys.argv[1], int(sys.argv[2]))
