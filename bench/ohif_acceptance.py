#!/usr/bin/env python3
"""Issue 16's acceptance check, as an outside checker runs it: OHIF through Vireo's own pages.

Why a script beside the tests: the data is made here, not by Vireo (a CT written with pydicom,
a SEG over it with highdicom) and sent with DCMTK's dcmsend to a fresh Vireo. Headless
Chromium (WebGL through SwiftShader) then logs in, opens the Datasets page, the CT card's
detail panel and its OHIF tab, then "Open full screen", and reads the viewport canvas back:
the image must have non-uniform pixels and the SEG's colour must appear. Every request the
browser made must have gone to 127.0.0.1 and none may have failed (4xx/5xx).

    .venv/bin/python bench/ohif_acceptance.py        # prints the findings; exit status 1 on a failure
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import chromium_executable
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess
from tests.test_ohif_viewer import CANVAS_STATS, WEBGL_ARGS

SLICES, SIZE = 16, 128
TIMEOUT_MS = 120_000


def write_ct(out: Path) -> list[Path]:
    """A CT of a bright disc in noise, written with plain pydicom (nothing from Vireo)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 < (SIZE / 3) ** 2
    rng = np.random.default_rng(3)
    files = []
    for z in range(SLICES):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"ct{z:03}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "Checker^Carla", "ACCEPT-1", "F", "19800101"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "20240301", "101010", "A1", "", "1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = "CT", 1, z + 1, "acceptance CT"
        ds.Manufacturer, ds.PositionReferenceIndicator = "checker", ""
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(z * 2)], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 2
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", SIZE, SIZE
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = 0, 1, 40, 400
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        image = (rng.normal(-100, 20, (SIZE, SIZE)) + disc * 180).astype(np.int16)
        ds.PixelData = image.tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)
        files.append(Path(ds.filename))
    return files


def write_seg(ct_files: list[Path], out: Path) -> Path:
    """A binary SEG (highdicom) of the disc's centre over every CT slice."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(f) for f in ct_files]
    yy, xx = np.mgrid[:SIZE, :SIZE]
    mask = np.broadcast_to(((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 < (SIZE / 6) ** 2), (len(sources), SIZE, SIZE)).astype(bool)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="core", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=90, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="checker", manufacturer_model_name="by hand", software_versions="1",
        device_serial_number="1", series_description="acceptance SEG")
    path = out / "seg.dcm"
    seg.save_as(path)
    return path


def stats(frame: Any, condition: str) -> dict[str, float]:
    frame.wait_for_function(f"() => {{ const s = ({CANVAS_STATS})(); return s && {condition}; }}", timeout=TIMEOUT_MS, polling=250)
    return frame.evaluate(CANVAS_STATS)


def main() -> int:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="ohif-accept-"))
    (work / "data").mkdir()
    vireo = VireoProcess(work / "data" / "vireo").start()
    problems: list[str] = []
    try:
        (work / "ct").mkdir()
        ct = write_ct(work / "ct")
        seg = write_seg(ct, work)
        subprocess.run(["dcmsend", "-aet", "CHECKER", "-aec", "VIREO", "127.0.0.1", str(vireo.dicom_port), *map(str, [*ct, seg])],
                       check=True, capture_output=True)
        vireo.wait_for_instances(len(ct) + 1, timeout=60)
        import pydicom
        ct_uid = pydicom.dcmread(ct[0], stop_before_pixels=True).SeriesInstanceUID
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_executable(), headless=True, args=WEBGL_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            hosts: set[str | None] = set()
            failed: list[str] = []
            context.on("request", lambda r: hosts.add(urlsplit(r.url).hostname))
            context.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page = context.new_page()
            page.goto(f"{vireo.url}/login?next=%2F")
            page.get_by_label("User name").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            card = page.locator(f"[data-testid=series-card][data-uid='{ct_uid}']")
            card.wait_for(timeout=TIMEOUT_MS)
            card.hover()
            card.get_by_test_id("open-detail").click()
            page.get_by_test_id("viewer-tab-ohif").click()
            page.get_by_test_id("ohif-frame").wait_for(timeout=TIMEOUT_MS)
            page.wait_for_function("() => document.querySelector('[data-testid=ohif-frame]').contentWindow.document.querySelector('canvas')", timeout=TIMEOUT_MS)
            inner = next(f for f in page.frames if "/ohif/viewer" in f.url)
            panel = stats(inner, "s.lit > 0.05 && s.coloured > 0.001")
            print(f"panel: canvas {panel['width']}×{panel['height']}, lit {panel['lit']:.1%}, SEG colour {panel['coloured']:.2%}")
            with context.expect_page() as opened:
                page.get_by_test_id("ohif-full-screen").click()
            full = opened.value
            whole = stats(full, "s.lit > 0.05 && s.coloured > 0.001")
            print(f"full screen: canvas {whole['width']}×{whole['height']}, lit {whole['lit']:.1%}, SEG colour {whole['coloured']:.2%}")
            browser.close()
        print(f"hosts requested: {sorted(h or '?' for h in hosts)}; failed responses: {len(failed)}")
        if hosts - {"127.0.0.1"}:
            problems.append(f"requests left the machine: {hosts}")
        problems += [f"failed: {f}" for f in failed]
    except Exception as error:  # noqa: BLE001 - a checker's report, not a crash
        problems.append(f"{type(error).__name__}: {error}")
    finally:
        vireo.stop()
    for problem in problems:
        print("PROBLEM:", problem)
    print("acceptance: " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
