"""`measure-segments` and `evaluate-segmentations`: numbers from SEGs, written back as SR, CSV, JSON and the job's result.

`measure-segments` runs once per input series: a SEG is measured on the image it references;
an image series has each SEG that references it measured. Per segment: volume, voxel count,
voxel-face surface area, bounding box, centroid and intensity statistics in the image's units
(see `segment_measurements`), stored as a TID 1500 SR beside the SEG (through
`ingest.results_writeback`), as `measurements.csv`/`.json`, and as the job's result (a table
the Result tab shows).

`evaluate-segmentations` runs once per dataset: SEGs that reference the same image are paired
— the *reference* ones (chosen by their SeriesDescription, e.g. "ground truth") against the
others — and each mapped segment pair is scored (see `segment_evaluation`). Results go to
`evaluation.csv`/`.json` and the job's result (a table and a chart).

The job's result has one shape for every analysis DAG, which `components.federated_result`
renders generically: `{"analysis": dag_id, "tables": [{"title", "rows"}], "charts": [{"title",
"categories", "series": [{"name", "values"}]}]}`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.workflows.context import JobContext
from core.workflows.dag import Dag, DagInput, Step
from ingest.analysis.segmentation_dags import ResultsConfig

# Imported by each job worker at its start rather than by every job (highdicom alone takes a second).
WORKER_IMPORTS = ("SimpleITK", "highdicom", "ingest.results_writeback", "ingest.analysis.segment_measurements", "ingest.analysis.segment_evaluation")

VERSION = "1"
MEASURE_ALGORITHM = "Vireo segment measurements"
MAX_RESULT_ROWS = 2000  # rows kept in the job's result (the CSV holds them all)


def seg_and_source(ctx: JobContext, seg_uid: str) -> tuple[Any, str]:
    """A stored SEG (the first instance of its series) and the image series it references."""
    from ingest.results_writeback import read_series

    seg = read_series(ctx, seg_uid)[0]
    if str(seg.get("Modality", "")) != "SEG":
        raise ValueError(f"series {seg_uid} is not a SEG")
    for item in seg.get("ReferencedSeriesSequence", []):
        return seg, str(item.SeriesInstanceUID)
    raise ValueError(f"SEG {seg_uid} names no referenced image series (ReferencedSeriesSequence)")


def load_referenced_images(ctx: JobContext, seg_uid: str, image_uid: str) -> tuple[Any, list[Any]]:
    """The image series a SEG references, as a volume; a plain-words failure when the PACS does not hold it.

    Why its own message: a SEG made elsewhere often arrives without its images, and "series … has
    no instances" does not tell the user which SEG needs which images sent first.
    """
    from ingest.results_writeback import load_series_volume, series_files

    if not series_files(ctx, image_uid):
        raise ValueError(f"the image series {image_uid} that SEG {seg_uid} was drawn on is not in the PACS: send those images, then run this again")
    return load_series_volume(ctx, image_uid)


def _segs_of(ctx: JobContext, series: Any) -> list[str]:
    """The SEG series to measure for one input series: itself, or the SEGs that reference it."""
    if series.modality == "SEG":
        return [series.series_uid]
    from core.derived_series import results_of

    with ctx.db.engine.connect() as conn:
        return [r.series_uid for r in results_of(conn, series.series_uid) if r.modality == "SEG"]


def segment_labels(seg: Any) -> dict[int, str]:
    return {int(item.SegmentNumber): str(item.get("SegmentLabel", "") or f"segment {item.SegmentNumber}") for item in seg.SegmentSequence}


def measure_one(ctx: JobContext, seg_uid: str, results_dataset: str | None) -> tuple[list[dict[str, Any]], str | None, float]:
    """Measure every segment of one SEG, store its SR; the rows, the SR's series UID and the seconds taken."""
    import highdicom as hd
    import SimpleITK as sitk

    from ingest.analysis.segment_measurements import Geometry, measure, sr_measurements, table_row
    from ingest.results_writeback import Algorithm, build_measurement_sr, seg_masks, store_derived

    started = time.perf_counter()
    seg, source_uid = seg_and_source(ctx, seg_uid)
    image, datasets = load_referenced_images(ctx, seg_uid, source_uid)
    values = sitk.GetArrayViewFromImage(image)
    geometry = Geometry.of(image)
    masks = seg_masks(seg, datasets)
    unit = "[hnsf'U]" if str(datasets[0].get("Modality", "")) == "CT" else "1"
    labels = segment_labels(seg)
    rows, report = [], []
    for number, mask in sorted(masks.items()):
        measured = measure(mask, values, geometry)
        rows.append({"seg_series": seg_uid, "source_series": source_uid, "segment_number": number, "label": labels.get(number, ""),
                     "unit": "HU" if unit == "[hnsf'U]" else "stored value", **table_row(measured)})
        report.append({"segment_number": number, "label": labels.get(number, ""), "measurements": sr_measurements(measured, unit)})
    elapsed = time.perf_counter() - started
    sr_uid = None
    if report:
        # seg_masks above may have made it a highdicom Segmentation in place already (no copy of a large SEG)
        segmentation = seg if isinstance(seg, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(seg, copy=False)
        sr = build_measurement_sr(datasets, report, algorithm=Algorithm(MEASURE_ALGORITHM, VERSION), seg=segmentation,
                                  series_description=f"Measurements of {str(seg.get('SeriesDescription', '') or 'SEG')}"[:64],
                                  uid_seed=f"measure-segments/{VERSION}/{seg_uid}")
        sr_uid = store_derived(ctx, [sr], dataset_name=results_dataset, source_series_uid=source_uid)[0]
        for row in rows:
            row["sr_series"] = sr_uid
    return rows, sr_uid, elapsed


def _measure(ctx: JobContext) -> None:
    from ingest.results_writeback import write_csv, write_json

    conf: ResultsConfig = ctx.conf  # type: ignore[assignment]
    segs = [uid for series in ctx.series for uid in _segs_of(ctx, series)]
    if not segs:
        raise ValueError("no SEG to measure: choose SEG series, or image series that have SEGs")
    rows: list[dict[str, Any]] = []
    ctx.progress(0, len(segs), force=True)
    for done, seg_uid in enumerate(segs, start=1):
        ctx.check_cancelled()
        found, sr_uid, seconds = measure_one(ctx, seg_uid, conf.results_dataset)
        ctx.log.info("SEG %s: %d segments measured in %.2f s, report %s", seg_uid, len(found), seconds, sr_uid)
        rows.extend(found)
        ctx.progress(done, len(segs), force=True)
    write_csv(ctx, "measurements.csv", rows)
    write_json(ctx, "measurements.json", {"measurements": rows})
    shown = ["label", "voxels", "volume_ml", "surface_mm2", "mean", "sd", "min", "max", "p5", "p50", "p95",
             "centroid_mm_x", "centroid_mm_y", "centroid_mm_z"]
    ctx.set_result({"analysis": "measure-segments", "tables": [{"title": "Measurements per segment (CSV: all columns)",
                                                                 "rows": [{k: r.get(k) for k in shown} for r in rows[:MAX_RESULT_ROWS]]}],
                    "charts": [], "segments": len(rows), "segs": len(segs)})


# ---- evaluation --------------------------------------------------------------------------------

class EvaluationConfig(BaseModel):
    """Which SEGs are the reference, which segments pair up."""

    model_config = ConfigDict(extra="forbid")

    reference_description: str = Field("ground truth", min_length=1, max_length=64, title="Reference SEG description",
                                       description="SEGs whose SeriesDescription contains this (any case) are the reference")
    test_description: str = Field("", max_length=64, title="Test SEG description",
                                  description="SEGs compared with the reference must contain this (empty: every other SEG)")
    label_map: dict[str, str] = Field(default_factory=dict, title="Segment label map",
                                      description='reference label → test label, e.g. {"lesion": "lesion auto"} or lesion=lesion auto; organ=organ auto '
                                                  "(empty: segments with the same label pair up)")

    @field_validator("label_map", mode="before")
    @classmethod
    def _pairs_text(cls, value: Any) -> Any:
        """The form's text: `a=b; c=d` (or commas), as well as a JSON object."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            pairs = [p for p in text.replace(",", ";").split(";") if p.strip()]
            if any("=" not in p for p in pairs):
                raise ValueError("write the label map as reference=test pairs separated by ';'")
            return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}
        return value


def _pairs(reference_labels: dict[int, str], test_labels: dict[int, str], label_map: dict[str, str]) -> list[tuple[int, int, str, str]]:
    """(reference number, test number, reference label, test label) for every mapped pair present in both."""
    by_label = {label.lower(): number for number, label in test_labels.items()}
    pairs = []
    for number, label in sorted(reference_labels.items()):
        wanted = {k.lower(): v for k, v in label_map.items()}.get(label.lower(), label if not label_map else None)
        if wanted is not None and wanted.lower() in by_label:
            test_number = by_label[wanted.lower()]
            pairs.append((number, test_number, label, test_labels[test_number]))
    return pairs


def _evaluate(ctx: JobContext) -> None:
    import pydicom

    from ingest.analysis.segment_evaluation import evaluate
    from ingest.results_writeback import seg_masks, write_csv, write_json

    conf: EvaluationConfig = ctx.conf  # type: ignore[assignment]
    by_image: dict[str, dict[str, list[Any]]] = {}
    for series in ctx.series:
        if series.modality != "SEG" or not series.files:
            continue
        seg = pydicom.dcmread(series.files[0])
        refs = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
        if not refs:
            continue
        description = str(seg.get("SeriesDescription", "") or "").lower()
        role = "reference" if conf.reference_description.lower() in description else (
            "test" if conf.test_description.lower() in description else None)
        if role:
            by_image.setdefault(refs[0], {"reference": [], "test": []})[role].append(seg)
    work = {uid: segs for uid, segs in by_image.items() if segs["reference"] and segs["test"]}
    if not work:
        raise ValueError(f"no image has both a reference SEG (description containing {conf.reference_description!r}) and another SEG to compare")
    rows: list[dict[str, Any]] = []
    ctx.progress(0, len(work), force=True)
    for done, (image_uid, segs) in enumerate(sorted(work.items()), start=1):
        ctx.check_cancelled()
        image, datasets = load_referenced_images(ctx, str(segs["reference"][0].SeriesInstanceUID), image_uid)
        spacing = tuple(float(s) for s in image.GetSpacing())
        for reference in segs["reference"]:
            reference_masks, reference_labels = seg_masks(reference, datasets), segment_labels(reference)
            for test in segs["test"]:
                test_masks, test_labels = seg_masks(test, datasets), segment_labels(test)
                for ref_number, test_number, ref_label, test_label in _pairs(reference_labels, test_labels, conf.label_map):
                    scores = evaluate(reference_masks[ref_number], test_masks[test_number], spacing)  # type: ignore[arg-type]
                    rows.append({"image_series": image_uid, "reference_seg": str(reference.SeriesInstanceUID), "test_seg": str(test.SeriesInstanceUID),
                                 "reference_label": ref_label, "test_label": test_label, "test_description": str(test.get("SeriesDescription", "")),
                                 **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()}})
        ctx.log.info("image %s: %d segment pair(s) scored", image_uid, len(rows))
        ctx.progress(done, len(work), force=True)
    write_csv(ctx, "evaluation.csv", rows)
    write_json(ctx, "evaluation.json", {"evaluation": rows})
    shown = ["reference_label", "test_label", "test_description", "dice", "jaccard", "hausdorff95_mm", "volume_difference_ml", "volume_difference_percent"]
    categories = [f"{r['reference_label']} ({i + 1})" for i, r in enumerate(rows[:MAX_RESULT_ROWS])]
    ctx.set_result({
        "analysis": "evaluate-segmentations", "pairs": len(rows), "images": len(work),
        "tables": [{"title": "Scores per segment pair", "rows": [{k: r.get(k) for k in shown} for r in rows[:MAX_RESULT_ROWS]]}],
        "charts": [{"title": "Overlap per segment pair", "categories": categories,
                    "series": [{"name": "Dice", "values": [r["dice"] for r in rows[:MAX_RESULT_ROWS]]},
                               {"name": "Jaccard", "values": [r["jaccard"] for r in rows[:MAX_RESULT_ROWS]]}]}],
    })


measure_segments = Dag(
    dag_id="measure-segments",
    description="Measure every segment of a SEG on its image: volume, surface, bounding box, centroid and intensity statistics; "
                "stores a TID 1500 measurement report (SR) beside it and a CSV.",
    steps=[Step("measure", _measure)],
    config=ResultsConfig,
    version=VERSION,
    input=DagInput.SERIES,
    tags=("analysis", "measurements"),
)

evaluate_segmentations = Dag(
    dag_id="evaluate-segmentations",
    description="Compare SEGs with reference SEGs of the same image (Dice, Jaccard, Hausdorff 95, volume difference per segment); CSV, JSON and a chart.",
    steps=[Step("evaluate", _evaluate)],
    config=EvaluationConfig,
    version=VERSION,
    input=DagInput.DATASET,
    tags=("analysis", "evaluation"),
)
