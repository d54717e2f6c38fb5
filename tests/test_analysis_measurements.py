"""`measure-segments` and `evaluate-segmentations` end to end, checked against numpy on the known masks.

A small CT goes in with dcmsend, with two SEGs made here with highdicom from masks we know
(a "ground truth" and an "automatic" one, shifted and grown). Both DAGs run through
`POST /api/workflows`; the SR is read back with highdicom and checked with dciodvfy; every
number is recomputed here independently (brute-force neighbours, pairwise distances, the
slices' own ImagePositionPatient and rescale).
"""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from ingest.analysis.segment_evaluation import evaluate, surface
from ingest.analysis.segment_measurements import surface_area_mm2
from ingest.results_writeback import Algorithm, Segment, build_seg, sort_spatially
from tests.factories import write_series
from tests.support.browser import ARTIFACTS_DIR  # the browser fixtures come from conftest (pytest_plugins); importing them here would start a second Playwright
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess
from tests.support.workflows import ENDED, create, wait_job

pytestmark = pytest.mark.timeout(240)

SHAPE = (8, 32, 32)  # slices, rows, columns
SPACING = (0.8, 0.7)  # PixelSpacing: row spacing, column spacing
THICKNESS = 2.0


def _ball(centre: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    z, y, x = np.indices(SHAPE, dtype=float)
    d2 = ((z - centre[0]) * THICKNESS) ** 2 + ((y - centre[1]) * SPACING[0]) ** 2 + ((x - centre[2]) * SPACING[1]) ** 2
    return d2 <= radius_mm**2


def _box(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return mask


TRUTH = {"lesion": _ball((3.5, 15.0, 14.0), 5.0), "organ": _box((1, 4, 20), (6, 12, 29))}
AUTO = {"lesion auto": _ball((3.5, 16.0, 15.0), 5.5), "organ auto": _box((1, 5, 20), (7, 12, 30))}
LABEL_MAP = {"lesion": "lesion auto", "organ": "organ auto"}


class Case:
    def __init__(self, process: VireoProcess, images: list[pydicom.Dataset], truth_uid: str, auto_uid: str) -> None:
        self.process, self.images, self.truth_uid, self.auto_uid = process, images, truth_uid, auto_uid
        self.api = process.client()
        self.done: dict[str, dict[str, Any]] = {}  # dag id -> a finished job of it (for the page test)

    def files(self, series_uid: str) -> list[Path]:
        (folder,) = (self.process.data_dir / "pacs").glob(f"*/{series_uid}")
        return sorted(folder.glob("*.dcm"))

    def run(self, dag_id: str, timeout: float = 120, **body: Any) -> dict[str, Any]:
        workflow = create(self.api, name=dag_id, dag_id=dag_id, **body)
        jobs = [wait_job(self.api, job["id"], ENDED, timeout=timeout) for job in workflow["jobs"]]
        for job in jobs:
            assert job["status"] == "finished", self.api.get(f"/api/jobs/{job['id']}/logs").text
        self.done[dag_id] = {**jobs[0], "workflow_id": workflow["id"]}
        return jobs[0]


@pytest.fixture(scope="module")
def case(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    out = tmp_path_factory.mktemp("measure")
    ct = write_series(out / "ct", slices=SHAPE[0], rows=SHAPE[1], columns=SHAPE[2], pixel_spacing=SPACING, slice_thickness=THICKNESS, seed=3)
    images = sort_spatially([pydicom.dcmread(p) for p in ct.paths])
    paths = list(ct.paths)
    uids = []
    for description, masks in (("Lesions ground truth", TRUTH), ("Lesions automatic", AUTO)):
        seg = build_seg(images, [Segment(label, mask) for label, mask in masks.items()], algorithm=Algorithm("test masks"),
                        series_description=description, uid_seed=f"test/{description}")
        path = out / f"{description}.dcm"
        seg.save_as(path, enforce_file_format=True)
        paths.append(path)
        uids.append(str(seg.SeriesInstanceUID))
    subprocess.run(["dcmsend", "-aec", "lesions", "127.0.0.1", str(vireo.dicom_port), *map(str, paths)], check=True, capture_output=True, timeout=120)
    vireo.wait_for_instances(len(paths))
    c = Case(vireo, images, *uids)
    yield c
    c.api.close()


# ---- independent computations ----------------------------------------------------------------

def _hu(images: list[pydicom.Dataset]) -> np.ndarray:
    return np.stack([apply_modality_lut(ds.pixel_array, ds).astype(float) for ds in images])


def _faces(mask: np.ndarray, spacing_xyz: tuple[float, float, float]) -> float:
    """Exposed faces, counted voxel by voxel through its six neighbours."""
    sx, sy, sz = spacing_xyz
    area = 0.0
    for z, y, x in zip(*np.nonzero(mask)):
        for dz, dy, dx, a in ((1, 0, 0, sx * sy), (-1, 0, 0, sx * sy), (0, 1, 0, sx * sz), (0, -1, 0, sx * sz), (0, 0, 1, sy * sz), (0, 0, -1, sy * sz)):
            n = (z + dz, y + dy, x + dx)
            if not all(0 <= n[i] < SHAPE[i] for i in range(3)) or not mask[n]:
                area += a
    return area


def _centroid(mask: np.ndarray, images: list[pydicom.Dataset]) -> np.ndarray:
    points = []
    for z, y, x in zip(*np.nonzero(mask)):
        ds = images[z]
        o = np.asarray(ds.ImageOrientationPatient, dtype=float)
        points.append(np.asarray(ds.ImagePositionPatient, dtype=float) + x * float(ds.PixelSpacing[1]) * o[:3] + y * float(ds.PixelSpacing[0]) * o[3:])
    return np.mean(points, axis=0)


def _hd95(a: np.ndarray, b: np.ndarray, spacing_zyx: np.ndarray) -> float:
    pa, pb = np.argwhere(surface(a)) * spacing_zyx, np.argwhere(surface(b)) * spacing_zyx
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return float(max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95)))


def _surface_brute(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    for z, y, x in zip(*np.nonzero(mask)):
        for dz, dy, dx in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            n = (z + dz, y + dy, x + dx)
            if not all(0 <= n[i] < SHAPE[i] for i in range(3)) or not mask[n]:
                out[z, y, x] = True
    return out


# ---- pure functions ---------------------------------------------------------------------------

def test_surface_area_of_a_box_is_analytic_and_of_a_ball_counts_faces() -> None:
    spacing = (0.7, 0.8, 2.0)
    box = TRUTH["organ"]  # 5 slices × 8 rows × 9 columns
    nx, ny, nz = 9 * 0.7, 8 * 0.8, 5 * 2.0
    assert surface_area_mm2(box, spacing) == pytest.approx(2 * (nx * ny + nx * nz + ny * nz))
    assert surface_area_mm2(TRUTH["lesion"], spacing) == pytest.approx(_faces(TRUTH["lesion"], spacing))
    assert np.array_equal(surface(TRUTH["lesion"]), _surface_brute(TRUTH["lesion"]))


def test_evaluation_scores_match_numpy() -> None:
    spacing_xyz = (0.7, 0.8, 2.0)
    a, b = TRUTH["lesion"], AUTO["lesion auto"]
    scores = evaluate(a, b, spacing_xyz)
    assert scores["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert scores["jaccard"] == pytest.approx((a & b).sum() / (a | b).sum())
    assert scores["hausdorff95_mm"] == pytest.approx(_hd95(a, b, np.array([2.0, 0.8, 0.7])), abs=1e-4)
    assert evaluate(a, a, spacing_xyz)["hausdorff95_mm"] == pytest.approx(0.0, abs=1e-4) and evaluate(a, a, spacing_xyz)["dice"] == 1.0
    empty = np.zeros(SHAPE, dtype=bool)
    assert evaluate(a, empty, spacing_xyz)["hausdorff95_mm"] is None and evaluate(empty, empty, spacing_xyz)["dice"] == 1.0


# ---- through the doors ------------------------------------------------------------------------

def test_measure_segments_stores_a_valid_sr_with_the_right_numbers(case: Case) -> None:
    job = case.run("measure-segments", series=[case.truth_uid])
    result = job["result"]
    assert result["analysis"] == "measure-segments" and result["segments"] == 2
    rows = {r["label"]: r for r in result["tables"][0]["rows"]}
    hu = _hu(case.images)
    spacing_xyz = (float(case.images[0].PixelSpacing[1]), float(case.images[0].PixelSpacing[0]), THICKNESS)
    voxel = float(np.prod(spacing_xyz))
    for label, mask in TRUTH.items():
        row, inside = rows[label], hu[mask]
        assert row["voxels"] == int(mask.sum())
        assert row["volume_ml"] == pytest.approx(mask.sum() * voxel / 1000, abs=1e-3)
        assert row["surface_mm2"] == pytest.approx(_faces(mask, spacing_xyz), abs=1e-3)
        for key, expected in (("mean", inside.mean()), ("sd", inside.std()), ("min", inside.min()), ("max", inside.max()),
                              ("p5", np.percentile(inside, 5)), ("p50", np.median(inside)), ("p95", np.percentile(inside, 95))):
            assert row[key] == pytest.approx(expected, abs=1e-3), key
        centroid = _centroid(mask, case.images)
        assert [row[f"centroid_mm_{a}"] for a in "xyz"] == pytest.approx(list(centroid), abs=1e-3)
    # the CSV has every column, bounding box included
    with (case.process.data_dir / "jobs" / str(job["id"]) / "run-1" / "output" / "measurements.csv").open() as f:
        organ = next(r for r in csv.DictReader(f) if r["label"] == "organ")
    assert [int(organ[f"bbox_voxel_min_{a}"]) for a in ("slice", "row", "column")] == [1, 4, 20]
    assert [int(organ[f"bbox_voxel_max_{a}"]) for a in ("slice", "row", "column")] == [5, 11, 28]
    assert float(organ["bbox_mm_x"]) == pytest.approx(9 * spacing_xyz[0]) and float(organ["bbox_mm_z"]) == pytest.approx(5 * THICKNESS)
    # the SR: in the PACS, TID 1500, referencing the SEG's segments, valid
    sr_uid = next(iter({r["sr_series"] for r in csv.DictReader((case.process.data_dir / "jobs" / str(job["id"]) / "run-1" / "output" / "measurements.csv").open())}))
    (sr_path,) = case.files(sr_uid)
    sr = hd.sr.srread(sr_path)
    assert sr.StudyInstanceUID == case.images[0].StudyInstanceUID
    groups = hd.sr.MeasurementReport.from_sequence([sr]).get_volumetric_roi_measurement_groups()
    by_label = {str(g.tracking_identifier): g for g in groups}
    assert set(by_label) == set(TRUTH)
    for label, mask in TRUTH.items():
        group = by_label[label]
        assert group.referenced_segment is not None
        volume = next(m for m in group.get_measurements() if m.name.value == "118565006")
        assert volume.value == pytest.approx(mask.sum() * voxel, rel=1e-6) and volume.unit.value == "mm3"
        mean = next(m for m in group.get_measurements() if m.name.meaning == "Mean")
        assert mean.value == pytest.approx(hu[mask].mean(), abs=1e-3) and mean.unit.value == "[hnsf'U]"
    result = subprocess.run(["dciodvfy", str(sr_path)], capture_output=True, text=True, timeout=120)
    assert [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")] == []
    # the report is indexed as a result of the image series
    sr_doc = case.api.get(f"/api/series/{sr_uid}").json()
    assert sr_doc["Modality"] == "SR"


def test_measuring_an_image_series_measures_its_segs(case: Case) -> None:
    job = case.run("measure-segments", series=[case.images[0].SeriesInstanceUID])
    assert job["result"]["segs"] == 2 and job["result"]["segments"] == 4


def test_evaluate_segmentations_pairs_by_the_label_map(case: Case) -> None:
    job = case.run("evaluate-segmentations", dataset="lesions", conf={"reference_description": "ground truth", "label_map": LABEL_MAP})
    result = job["result"]
    rows = {r["reference_label"]: r for r in result["tables"][0]["rows"]}
    assert set(rows) == {"lesion", "organ"} and result["pairs"] == 2
    spacing_zyx = np.array([THICKNESS, float(case.images[0].PixelSpacing[0]), float(case.images[0].PixelSpacing[1])])
    for label, auto_label in LABEL_MAP.items():
        a, b, row = TRUTH[label], AUTO[auto_label], rows[label]
        assert row["test_label"] == auto_label
        assert row["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-4)
        assert row["jaccard"] == pytest.approx((a & b).sum() / (a | b).sum(), abs=1e-4)
        assert row["hausdorff95_mm"] == pytest.approx(_hd95(a, b, spacing_zyx), abs=1e-3)
        assert row["volume_difference_ml"] == pytest.approx((b.sum() - a.sum()) * spacing_zyx.prod() / 1000, abs=1e-4)
    (chart,) = result["charts"]
    assert [s["name"] for s in chart["series"]] == ["Dice", "Jaccard"] and len(chart["categories"]) == 2
    assert (case.process.data_dir / "jobs" / str(job["id"]) / "run-1" / "output" / "evaluation.json").is_file()


def test_evaluate_explains_when_nothing_pairs(case: Case) -> None:
    workflow = create(case.api, name="nothing", dag_id="evaluate-segmentations", dataset="lesions", conf={"reference_description": "no such"})
    job = wait_job(case.api, workflow["jobs"][0]["id"], ENDED, timeout=120)
    assert job["status"] == "failed"
    assert "no image has both a reference SEG" in case.api.get(f"/api/jobs/{job['id']}/logs").text


def test_the_result_tab_shows_the_table_and_the_chart(case: Case, browser_page) -> None:  # type: ignore[no-untyped-def]
    job = case.done.get("evaluate-segmentations") or case.run("evaluate-segmentations", dataset="lesions", conf={"label_map": LABEL_MAP})
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{case.process.url}/login?next=%2Fworkflows")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{case.process.url}/workflows", timeout=30000)
    row = page.locator(f"tr[data-workflow='{job['workflow_id']}']")
    row.wait_for(timeout=30000)
    row.locator(".expand-workflow").click()
    page.locator(f"tr[data-job='{job['id']}'] .job-details").click(timeout=30000)
    page.get_by_role("tab", name="Result").click(timeout=30000)
    table = page.locator(".q-table").filter(has_text="Dice")
    table.wait_for(timeout=30000)
    assert table.get_by_text("Hausdorff 95 (mm)").count() == 1 and table.get_by_text("lesion auto").count() == 1
    page.locator(".js-plotly-plot .bars").first.wait_for(timeout=30000)  # plotly drew its bars
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    for width, height in ((1280, 800), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(300)  # a resize reflows; nothing to wait on but the layout
        page.screenshot(path=str(ARTIFACTS_DIR / f"evaluation-result-{width}.png"))
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), width
    # the measurements' wider table scrolls inside itself, the page does not
    measured = case.done.get("measure-segments") or case.run("measure-segments", series=[case.truth_uid])
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{case.process.url}/workflows?workflow={measured['workflow_id']}")
    page.locator(f"tr[data-job='{measured['id']}'] .job-details").click(timeout=30000)
    page.get_by_role("tab", name="Result").click(timeout=30000)
    page.locator(".q-table").filter(has_text="Volume (mL)").wait_for(timeout=30000)
    page.screenshot(path=str(ARTIFACTS_DIR / "measurement-result-1280.png"))
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
