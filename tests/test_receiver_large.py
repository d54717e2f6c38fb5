"""A large multi-frame instance is streamed to disk as it arrives: the receiver's memory stays flat.

Real dcmsend, real Vireo (its receiver workers by default). The peak resident memory of every
process of the receiver is reset before the transfer (`/proc/PID/clear_refs`), then read.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.support.large_dicom import write_large_multiframe
from tests.support.vireo import VireoProcess
from tests.test_receiver_workers import worker_pids

FRAMES = 480  # 512 x 512 x 2 bytes: 252 MB
MAX_GROWTH_MB = 64


def _kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow  # 252 MB written, sent and stored: ~6 s
def test_a_quarter_gigabyte_instance_is_received_with_flat_memory(vireo: VireoProcess, tmp_path: Path) -> None:
    source = tmp_path / "large.dcm"
    header = write_large_multiframe(source, FRAMES)
    assert subprocess.run(["echoscu", "127.0.0.1", str(vireo.dicom_port)], capture_output=True, timeout=60).returncode == 0  # workers start
    assert vireo.process is not None
    processes = [vireo.process.pid, *worker_pids(vireo)]
    baseline = {}
    for pid in processes:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        baseline[pid] = _kb(pid, "VmRSS")
    sent = subprocess.run(["dcmsend", "-v", "127.0.0.1", str(vireo.dicom_port), "--call", "LARGE", str(source)], capture_output=True, text=True, timeout=300)
    assert "with status SUCCESS  : 1" in sent.stdout + sent.stderr, sent.stdout[-500:]
    growth_mb = max(_kb(pid, "VmHWM") - baseline[pid] for pid in processes) / 1024
    assert growth_mb <= MAX_GROWTH_MB, f"a receiver process grew by {growth_mb:.0f} MB for a {source.stat().st_size / 1e6:.0f} MB instance"
    page = vireo.series(dataset="LARGE")
    assert page["items"][0]["instances"] == 1
    stored = vireo.data_dir / "pacs" / header.StudyInstanceUID / header.SeriesInstanceUID / f"{header.SOPInstanceUID}.dcm"
    assert _data_set(stored) == _data_set(source)  # byte for byte as sent (the file meta is the receiver's own)


def _data_set(path: Path) -> str:
    """SHA-256 of a Part 10 file's data set: everything after its file meta information."""
    with open(path, "rb") as file:
        head = file.read(144)
        file.seek(144 + int.from_bytes(head[140:144], "little"))  # after (0002,0000) UL: preamble 128 + DICM 4 + 12
        digest = hashlib.sha256()
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
