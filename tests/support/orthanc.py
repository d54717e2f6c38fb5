"""A real Orthanc (Debian package `orthanc`) for tests and benchmarks: another PACS to query, retrieve from and send to.

Start it only inside `tests.support.netns.private_network()`: Orthanc 1.10 listens on every
interface and cannot be told otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.vireo import free_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class OrthancProcess:
    def __init__(self, workdir: Path, ae_title: str = "ORTHANC", modalities: dict[str, tuple[str, str, int]] | None = None,
                 dicomweb: bool = False, extra: dict[str, Any] | None = None) -> None:
        if shutil.which("Orthanc") is None:
            raise RuntimeError("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb; scripts/setup.sh --test does)")
        self.workdir = workdir
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.modalities = modalities or {}
        self.dicomweb = dicomweb
        self.extra = extra or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60) -> OrthancProcess:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "Name": "vireo-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage), "StorageCompression": False,
            "HttpServerEnabled": True, "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": True, "DicomAet": self.ae_title, "DicomPort": self.dicom_port, "DicomCheckCalledAet": False,
            "DicomModalities": {name: list(entry) for name, entry in self.modalities.items()},
            "Plugins": [str(DICOMWEB_PLUGIN)] if self.dicomweb else [],
            **self.extra,
        }
        if self.dicomweb:
            config.setdefault("DicomWeb", {"Enable": True, "Root": "/dicom-web/"})
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        env = {**os.environ, "TCP_NODELAY": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(["Orthanc", str(path)], cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not start within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()
