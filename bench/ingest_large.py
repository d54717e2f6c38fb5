"""The ingest benchmark's large-object case (`bench/ingest.py --large`): one ~2 GB multi-frame instance.

Issue 19 asks that a 2 GB multi-frame object be received, stored and indexed with the receiver's
RSS growing by at most 200 MB, and that WADO-RS serves its frames without reading the whole file.
This module:

* generates the object once under the bench cache (Multi-frame Grayscale Word SC, 16-bit,
  1024x1024, explicit VR little endian): pydicom writes the header, then the Pixel Data element
  header and the frames are appended in chunks, so the object is never held in memory; every
  frame is a different deterministic pattern, so a frame served from the wrong offset shows;
  dciodvfy checks it once (its verdict is cached with the file);
* sends it with dcmsend to a fresh Vireo, sampling the whole process tree's VmRSS (worker
  processes included) against the baseline taken just before sending, through receipt, until
  it is searchable;
* fetches the first, middle and last frame over WADO-RS, timing each, sampling RSS growth
  during each, and compares the bytes with the file's;
* sends the same file to storescp (TCP_NODELAY=1 both sides) for the time scale.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from bench.ingest_procs import _status_kb, tree_pids, tree_rss_kb
from bench.ingest_servers import (
    ADMIN_PASSWORD,
    BenchError,
    StoreSCP,
    Vireo,
    check_dcmsend,
    child_env,
    http_get_bytes,
    log,
)

ROWS = COLUMNS = 1024
BITS_STORED = 12
SC_WORD_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture Image Storage
FORMAT_VERSION = 1  # bump when the generated file changes, so the cache is rebuilt
TARGET_GROWTH_MB = 200.0  # MB = 10^6 bytes
INFO = "object.json"


@dataclass
class LargeObject:
    path: Path
    frames: int
    rows: int
    columns: int
    frame_bytes: int
    pixel_offset: int  # where the Pixel Data value starts in the file
    size: int
    study_uid: str
    series_uid: str
    sop_uid: str
    dciodvfy: list[str]  # its error and warning lines ([] = clean)

    def frame_at(self, number: int) -> bytes:
        """Frame `number` (from 1) as stored in the file, read without touching the rest."""
        with open(self.path, "rb") as f:
            f.seek(self.pixel_offset + (number - 1) * self.frame_bytes)
            return f.read(self.frame_bytes)


def frame_pixels(index: int, rows: int, columns: int) -> np.ndarray:
    """Frame `index` (from 0): a diagonal ramp shifted per frame, 12 bits stored."""
    ramp = np.arange(rows * columns, dtype=np.uint32) * 7 + index * 131
    return (ramp & ((1 << BITS_STORED) - 1)).astype("<u2")


def _header(frames: int) -> Any:
    """Every attribute of the object but Pixel Data, which is appended after it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SC_WORD_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SC_WORD_MULTIFRAME
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "BENCHLARGE"
    ds.Modality = "OT"
    ds.ConversionType = "SYN"
    ds.Manufacturer = "Vireo bench"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"Large multi-frame {ROWS}x{COLUMNS}x{frames}"
    ds.StudyDescription = "Vireo ingest bench, large object"
    ds.PatientName = "Bench^Large"
    ds.PatientID = "BENCHLARGE"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.BodyPartExamined = "CHEST"  # unpaired, so General Series needs no Laterality
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00182001  # Page Number Vector
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.PageNumberVector = list(range(1, frames + 1))
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.PresentationLUTShape = "IDENTITY"
    return ds


def _write(path: Path, frames: int) -> LargeObject:
    """Header with pydicom, then Pixel Data's element header and the frames one by one (never all in memory)."""
    import struct

    ds = _header(frames)
    frame_bytes = ROWS * COLUMNS * 2
    value_length = frames * frame_bytes
    if value_length >= 0xFFFFFFFF:
        raise BenchError(f"{frames} frames of {frame_bytes} bytes do not fit a 32-bit element length")
    with open(path, "wb") as f:
        ds.save_as(f, enforce_file_format=True)
        f.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0" + struct.pack("<I", value_length))
        offset = f.tell()
        f.writelines(frame_pixels(k, ROWS, COLUMNS).tobytes() for k in range(frames))
        size = f.tell()
    return LargeObject(path, frames, ROWS, COLUMNS, frame_bytes, offset, size, str(ds.StudyInstanceUID),
                       str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), [])


def _dciodvfy(path: Path) -> list[str]:
    r = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=1800, check=False,
                       env=child_env(False))
    lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines()]
    return [ln for ln in lines if ln.startswith(("Error", "Warning"))]


def large_object(cache_root: Path, gb: float) -> LargeObject:
    """The cached object of about `gb` GB (10^9 bytes), generated and checked with dciodvfy the first time."""
    frame_bytes = ROWS * COLUMNS * 2
    frames = max(3, round(gb * 1e9 / frame_bytes))
    where = cache_root / f"large-v{FORMAT_VERSION}-{ROWS}x{COLUMNS}x{frames}"
    info = where / INFO
    if info.exists():
        d = json.loads(info.read_text())
        obj = LargeObject(**{**d, "path": Path(d["path"])})
        if obj.path.exists() and obj.path.stat().st_size == obj.size:
            return obj
    shutil.rmtree(where, ignore_errors=True)
    partial = cache_root / f"{where.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log(f"large: writing {frames} frames of {ROWS}x{COLUMNS} 16-bit ({frames * frame_bytes / 1e9:.2f} GB) ...")
    t0 = time.perf_counter()
    obj = _write(partial / "large.dcm", frames)
    log(f"large: written in {time.perf_counter() - t0:.1f} s; dciodvfy ...")
    t0 = time.perf_counter()
    obj.dciodvfy = _dciodvfy(obj.path)
    log(f"large: dciodvfy took {time.perf_counter() - t0:.1f} s: "
        + ("no errors or warnings" if not obj.dciodvfy else "; ".join(obj.dciodvfy[:5])))
    partial.rename(where)
    obj.path = where / "large.dcm"
    info.write_text(json.dumps({**asdict(obj), "path": str(obj.path)}, indent=1))
    return obj


# --------------------------------------------------------------------------
# Memory of a process tree during one phase
# --------------------------------------------------------------------------


class RssWatch:
    """Peak VmRSS summed over a process tree, sampled every `interval` s, against the sum just before the phase.

    Every process's peak (VmHWM) is also reset at the start (/proc/PID/clear_refs, needs root) and
    summed at the end: a cross-check that catches a spike shorter than the sampling interval.
    """

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self.hwm_reset = all(self._clear_hwm(pid) for pid in tree_pids(root))
        self.baseline_kb = tree_rss_kb(root)
        self.peak_kb = self.baseline_kb
        self.hwm_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _clear_hwm(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def _sample(self) -> None:
        total = 0
        for pid in tree_pids(self.root):
            total += _status_kb(pid, "VmRSS")
            self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), _status_kb(pid, "VmHWM"))
        self.peak_kb = max(self.peak_kb, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, float | None]:
        self._stop.set()
        self._thread.join()
        self._sample()
        mb = 1024 / 1e6
        hwm = (sum(self.hwm_kb.values()) - self.baseline_kb) * mb if self.hwm_reset else None
        return {"baseline_mb": self.baseline_kb * mb, "peak_mb": self.peak_kb * mb,
                "growth_mb": (self.peak_kb - self.baseline_kb) * mb, "hwm_growth_mb": hwm}


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def _send(obj: LargeObject, port: int, aet: str, log_path: Path) -> tuple[float, str, list[str]]:
    cmd = ["dcmsend", "-v", "127.0.0.1", str(port), "--call", aet, str(obj.path)]
    with open(log_path, "wb") as out:
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=child_env(True), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            check=False).returncode
        seconds = time.perf_counter() - t0
    check_dcmsend(log_path.read_text(errors="replace"), rc, 1, f"large -> {aet}")
    return seconds, "TCP_NODELAY=1 " + shlex.join(cmd), cmd


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def multipart_single_part(content_type: str, body: bytes) -> bytes:
    """The content of the one part of a multipart/related answer."""
    boundary = next((p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")
                     if p.strip().lower().startswith("boundary=")), None)
    if not boundary:
        raise BenchError(f"frames answer is not multipart: Content-Type {content_type!r}")
    delim = b"--" + boundary.encode()
    start = body.index(delim) + len(delim)
    start = body.index(b"\r\n\r\n", start) + 4
    end = body.index(b"\r\n" + delim, start)
    return body[start:end]


def _fetch_frames(vireo: Vireo, obj: LargeObject) -> list[dict[str, Any]]:
    base = (f"http://127.0.0.1:{vireo.http_port}/dicomweb/studies/{obj.study_uid}/series/{obj.series_uid}"
            f"/instances/{obj.sop_uid}/frames/")
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    out = []
    for number in (1, (obj.frames + 1) // 2, obj.frames):
        watch = RssWatch(vireo.pid)
        t0 = time.perf_counter()
        error = None
        try:
            headers, body = http_get_bytes(base + str(number), auth=("admin", ADMIN_PASSWORD), timeout=900,
                                           headers={"Accept": accept})
            got = multipart_single_part(headers.get("content-type", ""), body)
        except (OSError, ValueError, BenchError) as exc:
            got, error = b"", f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - t0
        mem = watch.stop()
        equal = got == obj.frame_at(number)
        out.append({"frame": number, "seconds": seconds, "bytes": len(got), "equal": equal, "error": error, **mem})
        log(f"large: frame {number}: {seconds:.3f} s, {len(got)} bytes, "
            f"{'equal to the file' if equal else 'DIFFERENT from the file'}, RSS growth {mem['growth_mb']:.0f} MB"
            + (f" ({error})" if error else ""))
    return out


def run_large(args: argparse.Namespace, logs: Path, cache_root: Path) -> dict[str, Any]:
    obj = large_object(cache_root, args.large_gb)
    result: dict[str, Any] = {"object": {**asdict(obj), "path": str(obj.path)}}
    log(f"large: {obj.path} ({obj.size / 1e9:.2f} GB, {obj.frames} frames)")

    workdir = Path(tempfile.mkdtemp(prefix="vireo-large-", dir=args.workdir))
    vireo = Vireo(workdir, False, {"vireo_workers": args.vireo_workers})
    try:
        _warm(obj.path)
        vireo.start()
        time.sleep(3.0)  # let start-up work settle before the baseline
        expected = _One(obj.series_uid)
        vireo.searchable(expected)  # warm the HTTP path
        whole = RssWatch(vireo.pid)  # also covers the work after Success (thumbnail) and the frame fetches
        receipt = RssWatch(vireo.pid)
        to_searchable = RssWatch(vireo.pid)
        seconds, command, _ = _send(obj, vireo.dicom_port, vireo.aet, logs / "dcmsend-large-vireo.log")
        mem_receipt = receipt.stop()
        t1 = time.perf_counter()
        searchable_s = None
        while time.perf_counter() - t1 < args.searchable_timeout:
            if vireo.searchable(expected):
                searchable_s = time.perf_counter() - t1
                break
            time.sleep(0.05)
        mem_searchable = to_searchable.stop()
        log(f"large: vireo Success after {seconds:.1f} s ({obj.size / 1e6 / seconds:.0f} MB/s), RSS growth "
            f"{mem_receipt['growth_mb']:.0f} MB during receipt, "
            + (f"searchable +{searchable_s:.2f} s" if searchable_s is not None else "NOT searchable"))
        result["vireo"] = {"seconds": seconds, "command": command, "server_env": vireo.env_note,
                           "server_command": vireo.command_line, "server_env_set": vireo.env_shown, "receipt": mem_receipt,
                           "until_searchable": mem_searchable, "searchable_s": searchable_s,
                           "processes": len(tree_pids(vireo.pid))}
        result["frames"] = _fetch_frames(vireo, obj) if searchable_s is not None else []
        time.sleep(max(0.0, args.settle))  # post-ingest work (the thumbnail) may still be running
        result["vireo"]["whole"] = whole.stop()
        result["vireo"]["settle_s"] = args.settle
    finally:
        vireo.stop()
        if vireo.log_path.exists():
            shutil.copy(vireo.log_path, logs / "server-vireo-large.log")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        os.sync()

    workdir = Path(tempfile.mkdtemp(prefix="storescp-large-", dir=args.workdir))
    scp = StoreSCP(workdir, True)
    try:
        _warm(obj.path)
        scp.start()
        seconds, command, _ = _send(obj, scp.dicom_port, scp.aet, logs / "dcmsend-large-storescp.log")
        log(f"large: storescp Success after {seconds:.1f} s")
        result["storescp"] = {"seconds": seconds, "command": command, "server_env": scp.env_note,
                              "server_command": scp.command_line, "server_env_set": scp.env_shown}
    finally:
        scp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        os.sync()
    return result


@dataclass
class _One:
    """The expectation "this series, one instance" in the shape Server.searchable takes."""

    uid: str

    @property
    def series(self) -> dict[str, int]:
        return {self.uid: 1}

    @property
    def instances(self) -> int:
        return 1


def _env_text(side: dict[str, Any]) -> str:
    env = side.get("server_env_set") or {}
    return "".join(f"{k}={v} " for k, v in sorted(env.items()) if k != "VIREO_ADMIN_PASSWORD")


def print_large(res: dict[str, Any], out: TextIO) -> list[tuple[str, str, str, bool]]:
    """The large case's lines of the report, and its checks for the summary."""
    o, v, s = res["object"], res.get("vireo"), res.get("storescp")
    gb = o["size"] / 1e9
    print(file=out)
    print(f"--- case large: one {gb:.2f} GB Multi-frame Grayscale Word SC instance ({o['rows']}x{o['columns']} x "
          f"{o['frames']} frames, 16-bit, explicit VR little endian, native), {o['path']}", file=out)
    print("  dciodvfy: " + ("no errors or warnings" if not o["dciodvfy"] else "; ".join(o["dciodvfy"][:6])), file=out)
    checks: list[tuple[str, str, str, bool]] = []
    if v:
        print(f"  sender: {v['command']}", file=out)
        print(f"  vireo: {v['server_env']}\n      $ {_env_text(v)}{v['server_command']}", file=out)
        r, u = v["receipt"], v["until_searchable"]
        hwm = f"{r['hwm_growth_mb']:.0f} MB" if r["hwm_growth_mb"] is not None else "n/a"
        print(f"  vireo:    Success after {v['seconds']:.1f} s ({o['size'] / 1e6 / v['seconds']:.0f} MB/s); "
              f"process tree ({v['processes']} processes) RSS {r['baseline_mb']:.0f} MB before, peak "
              f"{r['peak_mb']:.0f} MB during receipt = +{r['growth_mb']:.0f} MB (sum of per-process peaks: +{hwm}); "
              f"until searchable +{u['growth_mb']:.0f} MB", file=out)
        srch = f"{v['searchable_s']:.2f} s after Success" if v["searchable_s"] is not None else "NOT searchable"
        print(f"            searchable: {srch}", file=out)
        if "whole" in v:
            w = v["whole"]
            print(f"            whole run (send, searchable, frames, {v['settle_s']:.0f} s settle for the thumbnail): peak "
                  f"+{w['growth_mb']:.0f} MB over the baseline", file=out)
        checks.append(("large: Vireo RSS growth during receipt", f"<= {TARGET_GROWTH_MB:.0f} MB",
                       f"{r['growth_mb']:.0f} MB", r["growth_mb"] <= TARGET_GROWTH_MB))
        checks.append(("large: Vireo searchable after Success", "yes", srch, v["searchable_s"] is not None))
        frames = res.get("frames") or []
        for f in frames:
            print(f"            WADO-RS frame {f['frame']:>5}: {f['seconds']:.3f} s, {f['bytes']} bytes, "
                  f"{'equal to the file' if f['equal'] else 'DIFFERENT from the file'}, RSS growth "
                  f"+{f['growth_mb']:.0f} MB" + (f" ({f['error']})" if f["error"] else ""), file=out)
        if frames:
            worst = max(f["growth_mb"] for f in frames)
            checks.append(("large: WADO-RS frames 1, middle, last equal the file", "3 of 3",
                           f"{sum(f['equal'] for f in frames)} of {len(frames)}", all(f["equal"] for f in frames)))
            checks.append(("large: Vireo RSS growth per frame fetch", f"<= {TARGET_GROWTH_MB:.0f} MB", f"{worst:.0f} MB",
                           worst <= TARGET_GROWTH_MB))
    if s:
        print(f"  storescp: {s['server_env']}\n      $ {_env_text(s)}{s['server_command']}", file=out)
        print(f"  storescp: Success after {s['seconds']:.1f} s ({o['size'] / 1e6 / s['seconds']:.0f} MB/s)"
              + (f"; Vireo/storescp time {v['seconds'] / s['seconds']:.2f}x" if v else ""), file=out)
    print("  (RSS: VmRSS summed over the process tree, sampled every 50 ms, minus the sum just before the phase)",
          file=out)
    return checks
