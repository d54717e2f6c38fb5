"""Oversized request bodies against a real Vireo: refused while they stream, before they take memory.

Each attack sends up to 400 MiB over a raw socket (so the test, not an HTTP client, decides
when to stop) and samples the server's resident memory (VmRSS) meanwhile. Anonymous callers
are refused before any body is read; a Content-Length over the route's limit gets 413 before
the body is sent; a chunked body is cut off with 413 as soon as it passes the limit.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.vireo import VireoProcess

MiB = 1024 * 1024
ATTACK_BYTES = 400 * MiB
PIECE = MiB
MAX_GROWTH_MB = 50
UPLOAD_LIMIT = 4 * MiB  # lowered for the test, so the upload route's own limit is quick to reach


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    process = VireoProcess(tmp_path_factory.mktemp("bodies") / "data", VIREO_MAX_UPLOAD_REQUEST_BYTES=str(UPLOAD_LIMIT)).start()
    yield process
    process.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class PeakMemory:
    """Samples a process's VmRSS every 20 ms while in use; `growth` is the peak over the starting value."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # what the server still does with the bytes it took
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))

    @property
    def growth(self) -> float:
        return self.peak - self.start


@dataclass
class Answer:
    status: int
    detail: str
    sent: int  # body bytes the server took before it answered
    headers: dict[str, str] = field(default_factory=dict)


def attack(port: int, method: str, path: str, *, chunked: bool, headers: dict[str, str] | None = None,
           size: int = ATTACK_BYTES, deadline: float = 60.0) -> Answer:
    """Send `size` body bytes (declared by Content-Length, or chunked) until the server answers; bounded in bytes and time."""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    piece = b"[" + b" " * (PIECE - 1)
    sent = 0
    ends = time.monotonic() + deadline
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if not chunked and select.select([sock], [], [], 2.0)[0]:  # a declared size over the limit is answered before the body goes
            return _read_answer(sock, sent)
        while sent < size and time.monotonic() < ends:
            if select.select([sock], [], [], 0)[0]:
                return _read_answer(sock, sent)
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        if chunked and sent >= size:
            sock.sendall(b"0\r\n\r\n")
        return _read_answer(sock, sent)


def _read_answer(sock: socket.socket, sent: int) -> Answer:
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    assert data, f"no answer after {sent} bytes"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(int(lines[0].split()[1]), json.loads(body or b"{}").get("detail", ""), sent, headers)


def _length(data: bytes) -> int:
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":", 1)[1])
    return 0


def basic(server: VireoProcess) -> dict[str, str]:
    user, password = server.auth
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_anonymous_bodies_are_refused_before_they_are_read(server: VireoProcess) -> None:
    assert server.process is not None
    for path in ("/api/federation/sync", "/api/tags", "/api/uploads", "/dicomweb/studies"):
        for chunked in (False, True):
            with PeakMemory(server.process.pid) as memory:
                answer = attack(server.http_port, "POST", path, chunked=chunked)
            assert answer.status in (401, 413), (path, chunked, answer)
            assert answer.detail and "Traceback" not in answer.detail and str(server.data_dir) not in answer.detail, answer
            assert answer.sent < 64 * MiB, (path, chunked, answer.sent)
            assert memory.growth < MAX_GROWTH_MB, (path, chunked, memory.growth)
            assert answer.headers.get("connection") == "close"
    # what an unsigned poll is told: the route itself still refuses (and audits) it
    unsigned = attack(server.http_port, "POST", "/api/federation/sync", chunked=True)
    assert unsigned.status == 401 and "unsigned" in unsigned.detail


def test_authenticated_oversize_bodies_get_413_with_the_limit(server: VireoProcess) -> None:
    assert server.process is not None
    with server.client() as api:  # the first login costs argon2 its 64 MiB; later ones within a minute are cached
        assert api.get("/api/tags").status_code == 200
    with PeakMemory(server.process.pid) as memory:
        declared = attack(server.http_port, "POST", "/api/tags", chunked=False, headers=basic(server))
    assert declared.status == 413 and declared.sent == 0, declared  # at once, before the body
    assert "at most 8 MiB" in declared.detail
    assert memory.growth < MAX_GROWTH_MB

    with PeakMemory(server.process.pid) as memory:
        streamed = attack(server.http_port, "POST", "/api/tags", chunked=True, headers=basic(server))
    assert streamed.status == 413 and "at most 8 MiB" in streamed.detail, streamed
    assert streamed.sent < 64 * MiB and memory.growth < MAX_GROWTH_MB, (streamed.sent, memory.growth)

    # the upload route has its own (here lowered) limit; a chunk within it still arrives whole
    with PeakMemory(server.process.pid) as memory:
        upload = attack(server.http_port, "PUT", "/api/uploads/big.bin?offset=0", chunked=True, headers=basic(server))
    assert upload.status == 413 and "at most 4 MiB" in upload.detail and "chunks" in upload.detail, upload
    assert memory.growth < MAX_GROWTH_MB
    with server.client() as api:
        fine = api.put("/api/uploads/fine.bin", params={"offset": 0, "total": 3 * MiB}, content=b"x" * (3 * MiB))
        assert fine.status_code == 201 and fine.json()["complete"] is True, fine.text
        too_big = api.post("/api/uploads", files={"file": ("blob", b"x" * (5 * MiB))}, data={"path": "form.bin"})
        assert too_big.status_code == 413 and "at most 4 MiB" in too_big.json()["detail"]
        assert api.get("/api/uploads/form.bin").status_code == 404
        assert api.get("/api/health").status_code == 200  # the server is fine afterwards


def test_a_forged_signature_reads_no_more_than_the_sync_limit(server: VireoProcess) -> None:
    from federation.signing import REQUIRED_HEADERS, TIMESTAMP_HEADER

    forged = {**{name: "0" * 64 for name in REQUIRED_HEADERS}, TIMESTAMP_HEADER: str(int(time.time()))}
    declared = attack(server.http_port, "POST", "/api/federation/sync", chunked=False, headers=forged)
    assert declared.status == 413 and declared.sent == 0 and "federation sync" in declared.detail, declared
    streamed = attack(server.http_port, "POST", "/api/federation/sync", chunked=True, headers=forged)
    assert streamed.status == 413 and streamed.sent < 80 * MiB, streamed
    stale = {**forged, TIMESTAMP_HEADER: str(int(time.time()) - 3600)}
    for headers in (stale, {k: v for k, v in forged.items() if k != TIMESTAMP_HEADER}):
        refused = attack(server.http_port, "POST", "/api/federation/sync", chunked=True, headers=headers)
        assert refused.status == 401 and refused.detail and refused.sent < 64 * MiB, refused  # the route's own reason
    assert httpx.get(f"{server.url}/api/health").status_code == 200


def test_small_bodies_are_untouched(server: VireoProcess) -> None:
    with server.client() as api:
        small = api.post("/api/tags", json={"series": [], "add": ["x"]})
        assert small.status_code == 400 and "413" not in small.text  # the route's own answer
        assert api.post("/api/tags", content=b"[" + b" " * (7 * MiB) + b"]", headers={"Content-Type": "application/json"}).status_code == 422
