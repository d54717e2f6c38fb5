"""Zip and NIfTI bombs through the import DAGs of a real Vireo: refused with a reason, nothing left behind.

The bombs are made here, small: one Vireo runs with lowered limits (VIREO_IMPORT_MAX_UNPACKED_BYTES,
VIREO_NIFTI_MAX_VOXELS), so a few megabytes reach them; the module's default Vireo shows that the
default rules catch a bomb of many small entries (which the per-entry ratio rule once let through).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job

MiB = 1024 * 1024
NIFTI = "convert-niftis-to-dicoms-and-import-to-pacs"
DICOM_ZIP = "import-dicoms-in-zip-to-internal-pacs"
UNPACK_LIMIT = 8 * MiB
VOXEL_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def lowered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    process = VireoProcess(tmp_path_factory.mktemp("bombs") / "data",
                           VIREO_IMPORT_MAX_UNPACKED_BYTES=str(UNPACK_LIMIT), VIREO_NIFTI_MAX_VOXELS=str(VOXEL_LIMIT)).start()
    yield process
    process.stop()


def zipped(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def forged_sizes(archive: bytes, claimed: int) -> bytes:
    """The zip with every entry's uncompressed size rewritten to `claimed` (headers that lie)."""
    data = bytearray(archive)
    at = 0
    while (at := data.find(b"PK\x01\x02", at)) >= 0:  # central directory: uncompressed size at +24
        struct.pack_into("<I", data, at + 24, claimed)
        at += 4
    at = 0
    while (at := data.find(b"PK\x03\x04", at)) >= 0:  # local headers: uncompressed size at +22
        struct.pack_into("<I", data, at + 22, claimed)
        at += 4
    return bytes(data)


def nifti_gz(shape: tuple[int, ...], data_bytes: int) -> bytes:
    """A .nii.gz whose header announces `shape` (uint8) but that carries only `data_bytes` of zeros."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    return gzip.compress(header.binaryblock + b"\0" * 4 + bytes(data_bytes), compresslevel=9)


def run(server: VireoProcess, dag_id: str, name: str, content: bytes, **conf: object) -> tuple[dict, str]:
    with server.client() as api:
        assert api.post("/api/uploads", files={"file": (name, content)}, data={"path": name}).status_code == 201
        (job,) = create(api, dag_id=dag_id, conf={"upload": name, "dataset": "bombs", **conf})["jobs"]
        job = wait_job(api, job["id"], ENDED, timeout=120)
        return job, api.get(f"/api/jobs/{job['id']}/logs").text


def assert_nothing_left(server: VireoProcess, job: dict) -> None:
    work = server.data_dir / "jobs" / str(job["id"]) / f"run-{job['run']}" / "work"
    left = [p.relative_to(work).as_posix() for p in work.rglob("*")] if work.exists() else []
    assert left == [], left
    assert not any((server.data_dir / "pacs").rglob("*.dcm")), "nothing of a bomb reaches the PACS"


def test_a_zip_over_the_unpack_limit_is_refused_before_extraction(lowered: VireoProcess) -> None:
    honest = zipped({f"case{n}.nii": os.urandom(MiB) for n in range(12)}, zipfile.ZIP_STORED)  # 12 MiB, incompressible
    job, log = run(lowered, NIFTI, "big.zip", honest)
    assert job["status"] == "failed" and f"more than the limit of {UNPACK_LIMIT} bytes" in log, log
    assert_nothing_left(lowered, job)
    job, log = run(lowered, DICOM_ZIP, "big.zip", honest, extension="*")
    assert job["status"] == "failed" and f"more than the limit of {UNPACK_LIMIT} bytes" in log, log


def test_headers_that_lie_are_caught_while_unpacking(lowered: VireoProcess) -> None:
    """Entries that claim 1 KiB but hold 3 MiB of zeros each: counted while unpacked, never trusted."""
    real = zipped({f"scan{n}/img.nii": bytes(3 * MiB) for n in range(6)})
    forged = forged_sizes(real, 1024)
    for dag_id, extra in ((NIFTI, {}), (DICOM_ZIP, {"extension": "*"})):
        job, log = run(lowered, dag_id, "forged.zip", forged, **extra)
        assert job["status"] == "failed" and "cannot be unpacked" in log, log
        assert "Traceback" not in job["error"] and str(lowered.data_dir) not in log, job["error"]
        assert_nothing_left(lowered, job)


def test_a_nifti_announcing_more_voxels_than_allowed_is_refused_before_its_data_is_read(lowered: VireoProcess, tmp_path: Path) -> None:
    bomb = nifti_gz((2048, 2048, 2048), 64 * 1024)  # 8.6 billion voxels announced, a few kilobytes of file
    assert len(bomb) < 10_000
    job, log = run(lowered, NIFTI, "voxels.zip", zipped({"Bomb.nii.gz": bomb}))
    assert job["status"] == "failed" and "8,589,934,592 voxels" in log and "VIREO_NIFTI_MAX_VOXELS" in log, log
    assert_nothing_left(lowered, job)
    # a real volume of zeros just over the (lowered) limit: refused from its header too
    nib.save(nib.Nifti1Image(np.zeros((128, 128, 64), np.uint8), np.eye(4)), tmp_path / "Zeros.nii.gz")
    job, log = run(lowered, NIFTI, "zeros.zip", zipped({"Zeros.nii.gz": (tmp_path / "Zeros.nii.gz").read_bytes()}))
    assert job["status"] == "failed" and "128 x 128 x 64 is 1,048,576 voxels" in log, log
    assert_nothing_left(lowered, job)


def test_the_default_rules_catch_a_bomb_of_many_small_entries(vireo: VireoProcess) -> None:
    """96 entries of 1 MiB of zeros each: no entry passes the per-entry ratio floor, the archive as a whole does."""
    bomb = zipped({f"part{n:03d}.nii": bytes(MiB) for n in range(96)})
    assert len(bomb) < 200_000  # ~500-fold
    job, log = run(vireo, NIFTI, "many.zip", bomb)
    assert job["status"] == "failed" and "unpack" in log and "-fold together" in log and "zip bomb" in log, log
    assert_nothing_left(vireo, job)


def test_default_limits_are_sane() -> None:
    from app.settings import Settings
    from ingest import import_limits
    from ingest.archives import ARCHIVE_RATIO_FLOOR, MAX_RATIO, Limits

    settings = Settings()
    assert settings.import_max_unpacked_bytes == import_limits.DEFAULT_UNPACKED_BYTES == Limits(total_bytes=import_limits.DEFAULT_UNPACKED_BYTES).total_bytes
    assert settings.nifti_max_voxels == import_limits.DEFAULT_NIFTI_VOXELS
    assert 512 * 512 * 1000 <= import_limits.DEFAULT_NIFTI_VOXELS <= 2**30  # a thin-sliced CT passes; as float64 it stays below 8 GiB
    assert MAX_RATIO <= 1000 and ARCHIVE_RATIO_FLOOR <= 256 * MiB  # the 919-fold 2 GB bomb of issue 17 is refused
    assert 2 * 1024**3 > ARCHIVE_RATIO_FLOOR and 2 * 1024**3 / (2.3 * 1000**2) > MAX_RATIO
    assert import_limits.nifti_voxel_limit({"VIREO_NIFTI_MAX_VOXELS": "12"}) == 12
    assert import_limits.unpacked_bytes_limit({"VIREO_IMPORT_MAX_UNPACKED_BYTES": "junk"}) == import_limits.DEFAULT_UNPACKED_BYTES
