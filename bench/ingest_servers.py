"""The servers the ingest benchmark feeds: Vireo, Orthanc (Debian package) and DCMTK's storescp.

Split from bench/ingest.py: each class knows how to start its server fresh on 127.0.0.1 in an
empty directory, when it is ready, and (where there is an index) when a set of series is fully
searchable, so every case of the benchmark and the large-object run start servers the same way.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
NETNS_MARK = "VIREO_BENCH_NETNS"
ADMIN_PASSWORD = "bench-admin-pw"
TARGETS = ("vireo", "orthanc", "storescp")

# Never let a proxy variable or a stray TCP_NODELAY leak into a child.
_SCRUB = {"TCP_NODELAY", "http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
          "ALL_PROXY", "no_proxy", "NO_PROXY", "PYTHONSTARTUP", "VIREO_DICOM_WORKERS"}
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never use a proxy


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


class Expected(Protocol):
    """What a server must hold before it counts as searchable."""

    series: dict[str, int]  # SeriesInstanceUID -> instance count
    instances: int



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, auth: tuple[str, str] | None = None, timeout: float = 5.0) -> Any:
    return json.loads(http_get_bytes(url, auth, timeout)[1])


def http_get_bytes(url: str, auth: tuple[str, str] | None = None, timeout: float = 5.0,
                   headers: dict[str, str] | None = None) -> tuple[dict[str, str], bytes]:
    """(response headers, body) of a GET; Basic auth as the bench logs in everywhere."""
    req = urllib.request.Request(url, headers=headers or {})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    with _HTTP.open(req, timeout=timeout) as r:
        return {k.lower(): v for k, v in r.headers.items()}, r.read()


def child_env(nodelay: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and k != NETNS_MARK}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    env.update(extra or {})
    return env


def dicom_echo(port: int, aet: str) -> bool:
    r = subprocess.run(["echoscu", "-q", "-to", "2", "-aec", aet, "127.0.0.1", str(port)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env(False))
    return r.returncode == 0


class Server:
    name = "?"
    aet = "ANY"
    env_note = ""

    def __init__(self, workdir: Path, server_nodelay: bool, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}
        self.workdir = workdir
        self.server_nodelay = server_nodelay
        self.proc: subprocess.Popen[bytes] | None = None
        self.dicom_port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.command_line = ""
        self.env_shown: dict[str, str] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> tuple[list[str], dict[str, str], Path | None]:
        raise NotImplementedError

    def start(self, timeout: float = 120.0) -> None:
        cmd, env, cwd = self.command()
        self.command_line = shlex.join(cmd)
        self.env_shown = {k: v for k, v in env.items() if k.startswith("VIREO_") or k == "TCP_NODELAY"}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (open as long as the server runs)
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} while starting; see {self.log_path}")
            if self.ready():
                return
            time.sleep(0.2)
        raise BenchError(f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}")

    def ready(self) -> bool:
        return dicom_echo(self.dicom_port, self.aet)

    def searchable(self, ds: Expected) -> bool | None:
        """True once the whole dataset is findable; None when the target has no index."""
        return None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self.proc = None


class Vireo(Server):
    name = "vireo"
    aet = "BENCH"  # the called AE title names the dataset

    def __init__(self, workdir: Path, server_nodelay: bool, options: dict[str, Any] | None = None) -> None:
        super().__init__(workdir, server_nodelay, options)
        self.http_port = free_port()
        self.data_dir = workdir / "vireo-data"
        self.workers: int | None = self.options.get("vireo_workers")
        self.env_note = "TCP_NODELAY unset; " + (f"VIREO_DICOM_WORKERS={self.workers}" if self.workers is not None
                                                  else "VIREO_DICOM_WORKERS unset (Vireo's default)")

    def command(self) -> tuple[list[str], dict[str, str], Path | None]:
        self.data_dir.mkdir()
        python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
        env = child_env(False, {
            "VIREO_DATA_DIR": str(self.data_dir), "VIREO_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VIREO_HTTP_PORT": str(self.http_port), "VIREO_DICOM_PORT": str(self.dicom_port),
            "VIREO_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1",
            **({"VIREO_DICOM_WORKERS": str(self.workers)} if self.workers is not None else {}),
        })
        return [python, str(REPO / "main.py")], env, REPO

    def ready(self) -> bool:
        try:
            ok = http_get(f"http://127.0.0.1:{self.http_port}/api/health", timeout=2).get("status") == "ok"
        except (OSError, ValueError):
            return False
        return ok and dicom_echo(self.dicom_port, self.aet)

    def searchable(self, ds: Expected) -> bool | None:
        page = http_get(f"http://127.0.0.1:{self.http_port}/api/series?limit=1000", auth=("admin", ADMIN_PASSWORD),
                        timeout=30)
        have = {item.get("SeriesInstanceUID"): int(item.get("instances") or 0) for item in page.get("items", [])}
        return all(have.get(uid) == n for uid, n in ds.series.items())


class Orthanc(Server):
    name = "orthanc"
    aet = "ORTHANC"

    def __init__(self, workdir: Path, server_nodelay: bool, options: dict[str, Any] | None = None) -> None:
        super().__init__(workdir, server_nodelay, options)
        self.http_port = free_port()
        self.env_note = ("TCP_NODELAY=1 (a tuned Orthanc)" if server_nodelay
                         else "TCP_NODELAY unset (as packaged: Nagle on at Orthanc's DCMTK side)")

    def command(self) -> tuple[list[str], dict[str, str], Path | None]:
        storage = self.workdir / "orthanc-storage"
        storage.mkdir()
        config = {
            "Name": "vireo-bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "Plugins": [],
            # Everything else is Orthanc's default, e.g. SyncStorageArea true (fsync per file).
        }
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=2))
        return ["Orthanc", str(cfg)], child_env(self.server_nodelay), self.workdir

    def ready(self) -> bool:
        try:
            http_get(f"http://127.0.0.1:{self.http_port}/system", timeout=2)
        except (OSError, ValueError):
            return False
        return dicom_echo(self.dicom_port, self.aet)

    def searchable(self, ds: Expected) -> bool | None:
        st = http_get(f"http://127.0.0.1:{self.http_port}/statistics", timeout=30)
        return int(st["CountInstances"]) >= ds.instances and int(st["CountSeries"]) >= len(ds.series)


class StoreSCP(Server):
    name = "storescp"
    aet = "STORESCP"

    def __init__(self, workdir: Path, server_nodelay: bool, options: dict[str, Any] | None = None) -> None:
        super().__init__(workdir, server_nodelay, options)
        self.fork = bool(self.options.get("storescp_fork"))
        self.env_note = ("TCP_NODELAY=1" if server_nodelay else "TCP_NODELAY unset (as packaged)") + (
            "; --fork (one child per association)" if self.fork else "; single process")

    def command(self) -> tuple[list[str], dict[str, str], Path | None]:
        out = self.workdir / "storescp-out"
        out.mkdir()
        # Bit-preserving (+B: writes the bytes as received, like Vireo), no fsync. Without --fork it serves
        # one association at a time, so concurrent senders get --fork to measure the ceiling, not a queue.
        return (["storescp", "--aetitle", self.aet, "+B", *(["--fork"] if self.fork else []), "-od", str(out),
                 str(self.dicom_port)], child_env(self.server_nodelay), self.workdir)


SERVERS: dict[str, type[Server]] = {"vireo": Vireo, "orthanc": Orthanc, "storescp": StoreSCP}


_SUMMARY = {
    "total": re.compile(r"Number of SOP instances\s*:\s*(\d+)"),
    "sent": re.compile(r"sent to the peer\s*:\s*(\d+)"),
    "success": re.compile(r"with status SUCCESS\s*:\s*(\d+)"),
}


def check_dcmsend(log_text: str, rc: int, expected: int, where: str) -> None:
    got = {k: (int(m.group(1)) if (m := rx.search(log_text)) else None) for k, rx in _SUMMARY.items()}
    problems = []
    if rc != 0:
        problems.append(f"exit status {rc}")
    for k, v in got.items():
        if v != expected:
            problems.append(f"{k}={v} (expected {expected})")
    for bad in re.findall(r"\* with status (?!SUCCESS)[A-Z ]+:\s*[1-9]\d*", log_text):
        problems.append(bad.strip())
    if problems:
        tail = "\n".join(log_text.strip().splitlines()[-15:])
        raise BenchError(f"dcmsend to {where} did not deliver every instance with SUCCESS: "
                         f"{'; '.join(problems)}\n--- dcmsend log tail ---\n{tail}")
