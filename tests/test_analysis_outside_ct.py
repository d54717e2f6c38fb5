"""The analysis DAGs against CTs and SEGs made outside Vireo, checked by an outsider's own numpy.

The CT generator here is not Vireo's phantoms: it writes pydicom slices the way a checker
would, from shapes defined in *patient* coordinates (LPS mm) — air, a soft-tissue body ellipse
with noise, two lungs, a spine, a patient table below the body (apart from it) — sampled at
each pixel's own patient position. Unsigned storage with intercept −1024 and slope ≠ 1, slice
spacing ≠ pixel spacing ≠ thickness, files sent in random order with scrambled InstanceNumbers,
one head-first-supine series and one feet-first-supine series whose ImageOrientationPatient
row direction is flipped (−x: the patient's left is on the image's left) and whose lungs meet
at the midline (one air component the DAG must split on the patient's side, not the image's),
and one oblique series (turned 20° in-plane and tilted 12°). Left and right are
the *patient's* (left is +x in LPS), so a DAG that sides lungs by column index fails the flip.

SEGs fed to `measure-segments` are made by highdicom from the masks here (not by Vireo):
frames in shuffled source order with one empty segment, and one referencing only some slices.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SIZE, SLICES = 96, 16
PIXEL_MM, SLICE_MM, THICKNESS_MM = 3.2, 4.5, 4.0
SLOPE, INTERCEPT = 0.5, -1024.0  # stored = (HU + 1024) / 0.5, unsigned
DATASET = "outside"

def _oblique(turn_deg: float, tilt_deg: float) -> tuple[float, ...]:
    """Row and column directions turned in-plane about z, then tilted about the row direction."""
    t, g = np.radians(turn_deg), np.radians(tilt_deg)
    row = np.array([np.cos(t), np.sin(t), 0.0])
    col = np.array([-np.sin(t), np.cos(t), 0.0])
    col = np.cos(g) * col + np.sin(g) * np.cross(row, col)
    return tuple(round(float(v), 6) for v in (*row, *col))


ORIENTATIONS = {"HFS": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), "FFS": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0), "oblique": _oblique(20, 12)}


# ---- the outsider's phantom, defined in patient space ----------------------------------------

def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _truth_at(x: np.ndarray, y: np.ndarray, z: np.ndarray, touching: bool) -> dict[str, np.ndarray]:
    """Masks of the shapes at patient points (mm, LPS): the patient's left lung is at +x.

    `touching`: the lungs meet at the midline (x = 0), so they are one air component to split.
    """
    body = _ellipse(x, y, 0, 0, 130, 90)
    lung_z = np.abs(z) <= 30  # the lungs end inside the volume (top and bottom slices have none)
    if touching:
        return {"body": body, "left lung": _ellipse(x, y, 30, -5, 45, 50) & (x > 0) & lung_z,
                "right lung": _ellipse(x, y, -30, -5, 45, 50) & (x < 0) & lung_z,
                "spine": _ellipse(x, y, 0, 62, 16, 16), "table": (np.abs(x) <= 140) & (y >= 100) & (y <= 112)}
    return {"body": body, "left lung": _ellipse(x, y, 55, -5, 38, 55) & lung_z, "right lung": _ellipse(x, y, -58, -5, 40, 58) & lung_z,
            "spine": _ellipse(x, y, 0, 62, 16, 16), "table": (np.abs(x) <= 140) & (y >= 100) & (y <= 112)}


@dataclass
class OutsideCt:
    """One generated series: its datasets in spatial order, HU and truth on that grid, and where its files are."""

    series_uid: str
    images: list[pydicom.Dataset]
    hu: np.ndarray
    truth: dict[str, np.ndarray]
    paths: list[Path]


def _write_ct(out: Path, position: str, study_uid: str, seed: int) -> OutsideCt:
    rng = np.random.default_rng(seed)
    orientation = np.asarray(ORIENTATIONS[position])
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    half = (SIZE - 1) / 2 * PIXEL_MM
    series_uid = generate_uid()
    frame_uid = generate_uid(entropy_srcs=[study_uid, "frame"])
    zs = (np.arange(SLICES) - (SLICES - 1) / 2) * SLICE_MM + 1.7
    if position == "FFS":
        zs = zs[::-1]  # written feet first
    instance_numbers = list(range(1, SLICES + 1))
    random.Random(seed).shuffle(instance_numbers)  # numbers that say nothing about position
    out.mkdir(parents=True, exist_ok=True)
    records = []
    cols, rows = np.meshgrid(np.arange(SIZE), np.arange(SIZE))
    for k, z in enumerate(zs):
        # the image centre at x = y = 0, whatever the row direction
        origin = -half * row_dir - half * col_dir + normal * float(np.dot(normal, [0, 0, z]))
        points = origin[:, None, None] + row_dir[:, None, None] * cols * PIXEL_MM + col_dir[:, None, None] * rows * PIXEL_MM
        truth = _truth_at(points[0], points[1], points[2], touching=position == "FFS")
        hu = np.full((SIZE, SIZE), -1000.0)
        hu[truth["table"]] = 250.0
        hu[truth["body"]] = 40.0
        hu[truth["left lung"] | truth["right lung"]] = -850.0
        hu[truth["spine"]] = 700.0
        hu = np.rint(hu + rng.normal(0, 15, hu.shape)).clip(-1024, 3000)
        stored = np.rint((hu - INTERCEPT) / SLOPE).astype(np.uint16)
        hu = stored.astype(float) * SLOPE + INTERCEPT  # what the file says, exactly
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Outside^Checker", "OUT-1", "19600101", "O"
        ds.StudyDate = ds.SeriesDate = "20260301"
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.Manufacturer, ds.SeriesNumber = "CT", "Outside checker", 1 + list(ORIENTATIONS).index(position)
        ds.SeriesDescription, ds.BodyPartExamined = f"checker chest {position}", "CHEST"
        ds.PatientPosition = "FFS" if position == "FFS" else "HFS"
        ds.InstanceNumber = instance_numbers[k]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [round(float(v), 4) for v in origin]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing, ds.SliceThickness = [PIXEL_MM, PIXEL_MM], THICKNESS_MM
        ds.KVP, ds.AcquisitionNumber = 120, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = SIZE
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = SLOPE, INTERCEPT, "HU"
        ds.PixelData = stored.tobytes()
        path = out / f"{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        records.append((float(np.dot(normal, origin)), ds, hu, truth, path))
    records.sort(key=lambda r: r[0])  # spatial order along the normal
    images = [r[1] for r in records]
    return OutsideCt(series_uid, images, np.stack([r[2] for r in records]),
                     {name: np.stack([r[3][name] for r in records]) for name in ("body", "left lung", "right lung")}, [r[4] for r in records])


def _seg(images: list[pydicom.Dataset], masks: dict[str, np.ndarray], description: str, order: list[int]) -> hd.seg.Segmentation:
    """A highdicom SEG of `masks` (on `images`' grid, given to highdicom in the order `order`), its frames then shuffled."""
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=label, segmented_property_category=codes.SCT.Organ, segmented_property_type=codes.SCT.Lung,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL) for n, label in enumerate(masks, start=1)]
    stack = np.stack([m[order] for m in masks.values()], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=[images[i] for i in order], pixel_array=stack, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=50, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="Outside checker", manufacturer_model_name="numpy", software_versions="1", device_serial_number="1",
        series_description=description)
    # highdicom writes frames in spatial order; another tool may not: shuffle them (with their functional groups)
    frame_bytes = SIZE * SIZE // 8  # BINARY frames are bit-packed; 96² bits is whole bytes, so frames move as byte runs
    frames = list(seg.PerFrameFunctionalGroupsSequence)
    shuffled = list(range(len(frames)))
    random.Random(len(frames)).shuffle(shuffled)
    seg.PerFrameFunctionalGroupsSequence = [frames[i] for i in shuffled]
    seg.PixelData = b"".join(seg.PixelData[i * frame_bytes:(i + 1) * frame_bytes] for i in shuffled)
    return hd.seg.Segmentation.from_dataset(seg)


@dataclass
class World:
    process: VireoProcess
    api: Any
    cts: dict[str, OutsideCt]
    segs: dict[str, tuple[str, dict[str, np.ndarray]]]  # name -> (series uid, masks on the HFS grid)
    done: dict[str, dict[str, Any]]

    def run(self, dag_id: str, **body: Any) -> dict[str, Any]:
        """Run a workflow of one job (one series, or one dataset) to its end."""
        workflow = create(self.api, name=dag_id, dag_id=dag_id, **body)
        (job,) = workflow["jobs"]
        return wait_job(self.api, job["id"], ENDED, timeout=180)

    def files(self, series_uid: str) -> list[Path]:
        (folder,) = (self.process.data_dir / "pacs").glob(f"*/{series_uid}")
        return sorted(folder.glob("*.dcm"))


@pytest.fixture(scope="module")
def world(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    out = tmp_path_factory.mktemp("outside")
    study = generate_uid()
    cts = {p: _write_ct(out / p, p, study, seed) for p, seed in (("HFS", 11), ("FFS", 12), ("oblique", 14))}
    hfs = cts["HFS"]
    order = list(range(SLICES))
    random.Random(5).shuffle(order)
    truth = {"body": hfs.truth["body"], "left lung": hfs.truth["left lung"], "nothing": np.zeros_like(hfs.truth["body"]),
             "right lung": hfs.truth["right lung"]}
    partial_slices = list(range(3, SLICES - 4))
    partial = {"left lung": hfs.truth["left lung"][partial_slices]}
    # a SEG of images the PACS never receives
    orphan_ct = _write_ct(out / "orphan", "HFS", generate_uid(), 13)
    segs_made = {
        "truth": (_seg(hfs.images, truth, "checker ground truth", order), truth),
        "partial": (_seg([hfs.images[i] for i in partial_slices], partial, "checker partial", list(range(len(partial_slices)))),
                    {"left lung": np.isin(np.arange(SLICES), partial_slices)[:, None, None] & hfs.truth["left lung"]}),
        "orphan": (_seg(orphan_ct.images, {"body": orphan_ct.truth["body"]}, "checker orphan", list(range(SLICES))), {}),
    }
    paths = [p for ct in cts.values() for p in ct.paths]
    for name, (seg, _) in segs_made.items():
        seg.save_as(out / f"{name}-seg.dcm", enforce_file_format=True)
        paths.append(out / f"{name}-seg.dcm")
    random.Random(7).shuffle(paths)  # slices arrive in any order
    subprocess.run(["dcmsend", "-aec", DATASET, "127.0.0.1", str(vireo.dicom_port), *map(str, paths)], check=True, capture_output=True, timeout=120)
    vireo.wait_for_instances(len(paths), timeout=60)
    with vireo.client() as api:
        yield World(vireo, api, cts, {n: (str(s.SeriesInstanceUID), m) for n, (s, m) in segs_made.items()}, {})


# ---- the outsider's own computations ---------------------------------------------------------

def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def _read_seg(path: Path, images: list[pydicom.Dataset]) -> dict[str, np.ndarray]:
    """A SEG's segments on `images`' grid (in their order), by label, read with highdicom's own API."""
    seg = hd.seg.segread(path)
    labels = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    present = [i for i, ds in enumerate(images) if str(ds.SOPInstanceUID) in referenced]
    masks = {label: np.zeros((len(images), SIZE, SIZE), dtype=bool) for label in labels.values()}
    pixels = seg.get_pixels_by_source_instance([str(images[i].SOPInstanceUID) for i in present], segment_numbers=sorted(labels),
                                               combine_segments=False, assert_missing_frames_are_empty=True)
    for k, number in enumerate(sorted(labels)):
        masks[labels[number]][present] = pixels[..., k] > 0
    return masks


def _centroid_lps(mask: np.ndarray, images: list[pydicom.Dataset]) -> np.ndarray:
    z, y, x = np.nonzero(mask)
    o = np.asarray(images[0].ImageOrientationPatient, dtype=float)
    ipp = np.asarray([images[k].ImagePositionPatient for k in z], dtype=float)
    return (ipp + x[:, None] * PIXEL_MM * o[:3] + y[:, None] * PIXEL_MM * o[3:]).mean(axis=0)


def _surface(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask)
    for axis in range(3):
        for step in (-1, 1):
            inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def _hd95(a: np.ndarray, b: np.ndarray) -> float:
    scale = np.array([SLICE_MM, PIXEL_MM, PIXEL_MM])
    pa, pb = np.argwhere(_surface(a)) * scale, np.argwhere(_surface(b)) * scale

    def nearest(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.concatenate([np.sqrt(((chunk[:, None, :] - q[None]) ** 2).sum(-1)).min(1) for chunk in np.array_split(p, max(1, len(p) // 500))])

    return float(max(np.percentile(nearest(pa, pb), 95), np.percentile(nearest(pb, pa), 95)))


def _logs(world: World, job: dict[str, Any]) -> str:
    return str(world.api.get(f"/api/jobs/{job['id']}/logs").text)


# ---- the checks ------------------------------------------------------------------------------

@pytest.mark.parametrize("position", list(ORIENTATIONS))
def test_segments_match_the_outsiders_truth_in_patient_left_and_right(world: World, position: str) -> None:
    ct = world.cts[position]
    job = world.run("segment-body-and-lungs", series=[ct.series_uid], conf={"results_dataset": DATASET})
    assert job["status"] == "finished", _logs(world, job)
    world.done[f"segment {position}"] = job
    seg_uid = next(r["seg_series"] for r in world.api.get(f"/api/jobs/{job['id']}/files/segments.json").json()["segments"])
    (path,) = world.files(seg_uid)
    found = _read_seg(path, ct.images)
    for label in ("body", "left lung", "right lung"):
        assert _dice(found[label], ct.truth[label]) >= 0.95, (position, label, _dice(found[label], ct.truth[label]))
    assert _centroid_lps(found["left lung"], ct.images)[0] > 0 > _centroid_lps(found["right lung"], ct.images)[0]
    world.segs[f"auto {position}"] = (seg_uid, found)


def test_measurements_of_an_outside_seg_equal_numpy(world: World) -> None:
    """Frames in shuffled order, an empty segment, a SEG that covers only some slices: numbers as numpy has them."""
    ct = world.cts["HFS"]
    rows, reports = [], []
    for name in ("truth", "partial"):
        job = world.run("measure-segments", series=[world.segs[name][0]])
        assert job["status"] == "finished", _logs(world, job)
        rows += job["result"]["tables"][0]["rows"]
        reports.append(world.api.get(f"/api/jobs/{job['id']}/files/measurements.json").json()["measurements"][0]["sr_series"])
    # each SR (one of a one-segment SEG, one with an empty segment) is valid and names every segment
    for sr_uid, labels in zip(reports, (list(world.segs["truth"][1]), list(world.segs["partial"][1]))):
        (path,) = world.files(sr_uid)
        groups = hd.sr.MeasurementReport.from_sequence([hd.sr.srread(path)]).get_volumetric_roi_measurement_groups()
        assert sorted(str(g.tracking_identifier) for g in groups) == sorted(labels)
        checked = subprocess.run(["dciodvfy", str(path)], check=False, capture_output=True, text=True, timeout=120)
        assert [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")] == []
    voxel_mm3 = PIXEL_MM * PIXEL_MM * SLICE_MM
    expected = [*world.segs["truth"][1].items(), *world.segs["partial"][1].items()]
    assert [r["label"] for r in rows] == [label for label, _ in expected]
    for row, (label, mask) in zip(rows, expected):
        assert row["voxels"] == int(mask.sum()), label
        assert row["volume_ml"] == pytest.approx(mask.sum() * voxel_mm3 / 1000, abs=1e-3)
        if not mask.any():
            assert row["mean"] is None and row["voxels"] == 0
            continue
        inside = ct.hu[mask]
        for key, value in (("mean", inside.mean()), ("sd", inside.std()), ("min", inside.min()), ("max", inside.max()),
                           ("p5", np.percentile(inside, 5)), ("p50", np.median(inside)), ("p95", np.percentile(inside, 95))):
            assert row[key] == pytest.approx(value, abs=1e-3), (label, key)
        assert [row[f"centroid_mm_{a}"] for a in "xyz"] == pytest.approx(list(_centroid_lps(mask, ct.images)), abs=1e-3), label


def test_measurements_on_the_flipped_feet_first_image_are_in_patient_coordinates(world: World) -> None:
    """Vireo's own SEG of the flipped FFS series, measured: centroids where the outsider's LPS arithmetic puts them."""
    if "auto FFS" not in world.segs:
        pytest.skip("the segmentation test did not run first")
    ct, (seg_uid, masks) = world.cts["FFS"], world.segs["auto FFS"]
    job = world.run("measure-segments", series=[seg_uid])
    assert job["status"] == "finished", _logs(world, job)
    rows = {r["label"]: r for r in job["result"]["tables"][0]["rows"]}
    for label, mask in masks.items():
        row = rows[label]
        assert row["voxels"] == int(mask.sum()) and row["mean"] == pytest.approx(ct.hu[mask].mean(), abs=1e-3), label
        assert [row[f"centroid_mm_{a}"] for a in "xyz"] == pytest.approx(list(_centroid_lps(mask, ct.images)), abs=1e-3), label
    assert rows["left lung"]["centroid_mm_x"] > 0 > rows["right lung"]["centroid_mm_x"]


def test_measuring_the_image_finds_the_outside_segs_that_reference_it(world: World) -> None:
    """SEGs sent from outside count as results of their image series, like Vireo's own."""
    job = world.run("measure-segments", series=[world.cts["HFS"].series_uid])
    assert job["status"] == "finished", _logs(world, job)
    measured = {r["seg_series"] for r in world.api.get(f"/api/jobs/{job['id']}/files/measurements.json").json()["measurements"]}
    assert {world.segs["truth"][0], world.segs["partial"][0]} <= measured


def test_evaluation_scores_equal_numpy(world: World) -> None:
    if "auto HFS" not in world.segs:
        pytest.skip("the segmentation test did not run first")
    job = world.run("evaluate-segmentations", dataset=DATASET, conf={"reference_description": "checker ground truth",
                                                                      "test_description": "automatic"})
    assert job["status"] == "finished", _logs(world, job)
    rows = {r["reference_label"]: r for r in job["result"]["tables"][0]["rows"]}
    truth, auto = world.segs["truth"][1], world.segs["auto HFS"][1]
    assert set(rows) == {"body", "left lung", "right lung"}  # "nothing" has no partner
    voxel_ml = PIXEL_MM * PIXEL_MM * SLICE_MM / 1000
    for label, row in rows.items():
        a, b = truth[label], auto[label]
        assert row["dice"] == pytest.approx(_dice(a, b), abs=1e-4), label
        assert row["jaccard"] == pytest.approx(np.count_nonzero(a & b) / np.count_nonzero(a | b), abs=1e-4), label
        assert row["volume_difference_ml"] == pytest.approx((int(b.sum()) - int(a.sum())) * voxel_ml, abs=1e-4), label
        if label != "body":
            assert row["hausdorff95_mm"] == pytest.approx(_hd95(a, b), abs=1e-3), label


def test_a_seg_of_images_not_in_the_pacs_fails_in_plain_words(world: World) -> None:
    job = world.run("measure-segments", series=[world.segs["orphan"][0]])
    assert job["status"] == "failed"
    assert "that SEG" in job["error"] and "is not in the PACS" in job["error"], job
    assert "Traceback" not in job["error"] and "/work" not in job["error"]
