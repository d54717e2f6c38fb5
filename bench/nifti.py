#!/usr/bin/env python3
"""Data Upload benchmark: NIfTI → DICOM + SEG import time, and upload throughput with the server's memory.

* convert and import: a 512×512×300 int16 CT NIfTI with a 3-label segmentation, zipped and
  uploaded, then `convert-niftis-to-dicoms-and-import-to-pacs`: wall time from the POST of the
  workflow until its job is finished (target ≤ 15 s on 2 cores), slices/s. Baseline in the same
  run: SimpleITK writing the same volume as a DICOM series (what Kaapana's itk2dcm does, without
  SEG, index or PACS). A small import runs first, untimed: the job workers start with the first
  job after Vireo starts, a one-off cost of a few seconds.
* upload: a 2 GB file through `PUT /api/uploads/{path}` in 8 MiB chunks (as the Data Upload page sends
  them; then the same through multipart `POST /api/uploads`) on loopback: MB/s (target ≥ 100 MB/s) and the server's peak RSS meanwhile (target
  ≤ 300 MB). Baseline in the same run: copying the same file on the same disk.

Usage (from the repository root):
    .venv/bin/python bench/nifti.py            # full run
    .venv/bin/python bench/nifti.py --small    # 128×128×60 volume, 256 MB upload
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.vireo import VireoProcess  # noqa: E402
from tests.support.workflows import ENDED, wait_job  # noqa: E402

CHUNK = 8 * 1024 * 1024


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def make_case(folder: Path, shape: tuple[int, int, int]) -> None:
    """A CT-like volume (a body of soft tissue with bone and noise) and a 3-label segmentation."""
    folder.mkdir(parents=True)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x**2 + (y * 1.3) ** 2) < 0.8
    rng = np.random.default_rng(0)
    volume = np.full(shape, -1000, dtype=np.int16)
    labels = np.zeros(shape, dtype=np.uint8)
    for k in range(shape[2]):
        plane = np.where(body, 40, -1000).astype(np.int16)
        plane[(x - 0.3) ** 2 + y**2 < 0.05] = 700
        volume[:, :, k] = plane + rng.integers(-20, 20, size=plane.shape, dtype=np.int16)
        labels[:, :, k][((x + 0.3) ** 2 + y**2) < 0.04 + 0.02 * np.sin(k / 20)] = 1
        labels[:, :, k][((x - 0.3) ** 2 + y**2) < 0.05] = 2
        labels[:, :, k][(x**2 + (y - 0.4) ** 2) < 0.01] = 3
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), folder / "Case1.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), folder / "Case1_segmentation.nii.gz")
    (folder / "seg_info.json").write_text(json.dumps({"algorithm": "bench", "task_body_part": "abdomen", "seg_info": [
        {"label_name": "liver", "label_int": 1}, {"label_name": "spleen", "label_int": 2}, {"label_name": "aorta", "label_int": 3}]}))


def simpleitk_baseline(nifti: Path, out: Path) -> float:
    """SimpleITK writing the volume as one DICOM file per slice (Kaapana's itk2dcm approach, uncompressed here)."""
    import SimpleITK as sitk

    out.mkdir(parents=True)
    started = time.perf_counter()
    image = sitk.Cast(sitk.ReadImage(str(nifti)), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        piece.SetMetaData("0008|0060", "CT")
        piece.SetMetaData("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        piece.SetMetaData("0020|0013", str(k))
        writer.SetFileName(str(out / f"slice{k:04d}.dcm"))
        writer.Execute(piece)
    return time.perf_counter() - started


def warm_up(vireo: VireoProcess, work: Path) -> None:
    """One small import first: job workers start with the first job after Vireo starts (seconds, once), which is not what is measured."""
    folder = work / "warm-up"
    make_case(folder, (32, 32, 4))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    with vireo.client() as api:
        assert api.post("/api/uploads", files={"file": ("warm.zip", buffer.getvalue())}, data={"path": "warm.zip"}).status_code == 201
        response = api.post("/api/workflows", json={"dag_id": "convert-niftis-to-dicoms-and-import-to-pacs", "conf": {"upload": "warm.zip", "dataset": "warm-up", "modality": "CT"}})
        assert response.status_code == 201, response.text
        assert wait_job(api, response.json()["jobs"][0]["id"], ENDED, timeout=300)["status"] == "finished"


def bench_convert(vireo: VireoProcess, work: Path, shape: tuple[int, int, int]) -> dict[str, float]:
    folder = work / "nifti"
    log(f"making a {shape[0]}×{shape[1]}×{shape[2]} int16 CT with a 3-label segmentation")
    make_case(folder, shape)
    warm_up(vireo, work)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    with vireo.client() as api:
        assert api.post("/api/uploads", files={"file": ("ct.zip", buffer.getvalue())}, data={"path": "ct.zip"}).status_code == 201
        started = time.perf_counter()
        response = api.post("/api/workflows", json={"dag_id": "convert-niftis-to-dicoms-and-import-to-pacs", "conf": {"upload": "ct.zip", "dataset": "bench", "modality": "CT"}})
        assert response.status_code == 201, response.text
        job = wait_job(api, response.json()["jobs"][0]["id"], ENDED, timeout=900)
        elapsed = time.perf_counter() - started
        assert job["status"] == "finished", api.get(f"/api/jobs/{job['id']}/logs").text
        steps = {s["name"]: s for s in api.get(f"/api/jobs/{job['id']}").json().get("steps", [])}
        for line in api.get(f"/api/jobs/{job['id']}/logs").text.splitlines():
            if line.startswith("=====") or " INFO " in line and "dciodvfy" not in line:
                log(line)
    baseline = simpleitk_baseline(folder / "Case1.nii.gz", work / "sitk")
    return {"seconds": elapsed, "slices_per_s": shape[2] / elapsed, "baseline_seconds": baseline, "steps": len(steps)}


def upload_file(api: Any, source: Path, size: int, name: str, raw: bool) -> float:
    """Seconds to send `source` in 8 MiB chunks: raw PUT bodies (the Data Upload page) or multipart POSTs."""
    with source.open("rb") as handle:
        started = time.perf_counter()
        offset = 0
        while True:
            chunk = handle.read(CHUNK)
            if raw:
                response = api.put(f"/api/uploads/{name}", params={"offset": offset, "total": size}, content=chunk)
            else:
                response = api.post("/api/uploads", files={"file": (name, chunk)}, data={"path": name, "offset": str(offset), "total": str(size)})
            assert response.status_code == 201, response.text
            offset += len(chunk)
            if response.json()["complete"]:
                return time.perf_counter() - started


def bench_upload(vireo: VireoProcess, work: Path, size: int) -> dict[str, float]:
    source = work / "big.bin"
    log(f"writing a {size / 1e9:.2f} GB test file")
    block = os.urandom(CHUNK)
    with source.open("wb") as handle:
        for _ in range(size // CHUNK):
            handle.write(block)
    started = time.perf_counter()
    shutil.copyfile(source, work / "copy.bin")
    copy_seconds = time.perf_counter() - started
    (work / "copy.bin").unlink()

    pid = vireo.process.pid  # type: ignore[union-attr]
    rss_before = rss_kib(pid)
    peak = [rss_before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with vireo.client() as api:
        seconds = upload_file(api, source, size, "big.bin", raw=True)
        api.delete("/api/uploads/big.bin")
        multipart_seconds = upload_file(api, source, size, "big-multipart.bin", raw=False)
    done.set()
    sampler.join()
    assert (vireo.data_dir / "uploads" / "big-multipart.bin").stat().st_size == size
    return {"mb_per_s": size / 1e6 / seconds, "multipart_mb_per_s": size / 1e6 / multipart_seconds, "copy_mb_per_s": size / 1e6 / copy_seconds, "peak_rss_mb": peak[0] / 1024, "rss_before_mb": rss_before / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="128×128×60 volume and a 256 MB upload")
    parser.add_argument("--upload-only", action="store_true", help="only the upload figures")
    parser.add_argument("--convert-only", action="store_true", help="only the NIfTI import figures")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    shape = (128, 128, 60) if args.small else (512, 512, 300)
    size = 256 * 1024 * 1024 if args.small else 2 * 1024 * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="vireo-nifti-bench-"))
    vireo = VireoProcess(work / "data").start()
    try:
        convert = None if args.upload_only else bench_convert(vireo, work, shape)
        upload = None if args.convert_only else bench_upload(vireo, work, size)
    finally:
        vireo.stop()
        shutil.rmtree(work, ignore_errors=True)
    target_seconds = 15.0 * shape[0] * shape[1] * shape[2] / (512 * 512 * 300)
    if convert is not None:
        print(f"NIfTI {shape[0]}x{shape[1]}x{shape[2]} int16 + 3-label SEG, convert and import: {convert['seconds']:.1f} s "
              f"({convert['slices_per_s']:.1f} slices/s); target <= {target_seconds:.1f} s: {'PASS' if convert['seconds'] <= target_seconds else 'FAIL'}; "
              f"SimpleITK baseline (image slices only, no SEG/index): {convert['baseline_seconds']:.1f} s, ratio {convert['seconds'] / convert['baseline_seconds']:.2f}")
    if upload is not None:
        print(f"upload of {size / 1e9:.2f} GB in 8 MiB chunks (PUT, as the Data Upload page): {upload['mb_per_s']:.0f} MB/s; "
              f"target >= 100 MB/s: {'PASS' if upload['mb_per_s'] >= 100 else 'FAIL'}; disk copy baseline {upload['copy_mb_per_s']:.0f} MB/s, "
              f"ratio {upload['mb_per_s'] / upload['copy_mb_per_s']:.2f}; multipart POST: {upload['multipart_mb_per_s']:.0f} MB/s")
        print(f"server peak RSS during the upload: {upload['peak_rss_mb']:.0f} MB (before: {upload['rss_before_mb']:.0f} MB); "
              f"target <= 300 MB: {'PASS' if upload['peak_rss_mb'] <= 300 else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"convert": convert, "upload": upload}, indent=1))


if __name__ == "__main__":
    main()
