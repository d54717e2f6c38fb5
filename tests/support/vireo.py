"""A real Vireo process for tests: `python main.py` on free ports with its own data dir."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "test-admin-pw"


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Port 0 would hand out an ephemeral port, which the kernel also gives to every outgoing connection
    the suite makes (thousands of HTTP and DICOM clients): between this call and the server's bind,
    one of them can take it, and the server dies with "address already in use". Below that range only
    another listener can, and a random pick makes that unlikely.
    """
    top = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(max(1024, top - 12000), top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # that range is full: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VireoProcess:
    """Starts, kills and restarts one Vireo on the same data dir and ports."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.extra_env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def url(self) -> str:
        scheme = "https" if self.extra_env.get("VIREO_SSL_CERTFILE") else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def auth(self) -> tuple[str, str]:
        return ("admin", ADMIN_PASSWORD)

    def client(self, **kwargs: object) -> httpx.Client:
        kwargs.setdefault("auth", self.auth)
        kwargs.setdefault("verify", False)  # a test certificate is self-signed
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def start(self, timeout: float = 60) -> VireoProcess:
        self.launch()
        return self.wait_started(timeout)

    def launch(self) -> VireoProcess:
        """Start the process without waiting for it (see `start_all`)."""
        env = {
            **os.environ,
            "VIREO_DATA_DIR": str(self.data_dir),
            "VIREO_HTTP_PORT": str(self.http_port),
            "VIREO_DICOM_PORT": str(self.dicom_port),
            "VIREO_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VIREO_THUMBNAIL_QUIET_SECONDS": "1",
            # One receiver worker (the default is one per core): the same code path, half the start-up CPU per
            # Vireo. tests/test_receiver_workers.py and tests/test_durability.py run the default.
            "VIREO_DICOM_WORKERS": "1",
            **self.extra_env,
        }
        for inherited in ("NICEGUI_USER_SIMULATION", "PYTEST_CURRENT_TEST"):
            env.pop(inherited, None)  # NiceGUI would think it runs inside a test
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, str(ROOT / "main.py")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_started(self, timeout: float = 60) -> VireoProcess:
        """Wait until health answers and the DICOM port is open; RuntimeError (with the log) if not."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Vireo exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1, verify=False).status_code == 200 and self._dicom_open():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Vireo did not start within {timeout} s:\n{self.log()}")

    def _dicom_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                return True
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as a power cut of the process."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def series(self, **params: object) -> dict:
        with self.client() as c:
            response = c.get("/api/series", params={"limit": 1000, **params})
            response.raise_for_status()
            return response.json()

    def wait_for_instances(self, expected: int, timeout: float = 30, **params: object) -> dict:
        deadline = time.monotonic() + timeout
        page = self.series(**params)
        while sum(i["instances"] for i in page["items"]) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
            page = self.series(**params)
        return page


def start_all(*processes: VireoProcess, timeout: float = 90) -> tuple[VireoProcess, ...]:
    """Start several Vireos at once and wait for all: their start-ups (mostly imports) overlap, which saves
    a fixture with three sites several seconds over starting them one after the other."""
    for process in processes:
        process.launch()
    for process in processes:
        process.wait_started(timeout)
    return processes
