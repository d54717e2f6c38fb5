"""`segment-body-and-lungs`: a CT's body contour and lungs (an MR's head), written back as a DICOM SEG.

One job per input series (the engine runs them side by side, on the local pool or Dask);
each reports its progress through the stages of its series (read, segment, SEG, store).
The SEG's UIDs derive from the DAG, its version and the source series, so running it again
stores the same instances, which the PACS keeps once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.workflows.context import JobContext
from core.workflows.dag import Dag, DagInput, Step

# Imported by each job worker at its start rather than by every job (highdicom alone takes a second).
WORKER_IMPORTS = ("SimpleITK", "highdicom", "ingest.results_writeback", "ingest.analysis.body_lungs")

VERSION = "1"
ALGORITHM_NAME = "Vireo body and lungs"
SUMMARY_JSON = "segments.json"
SUMMARY_CSV = "segments.csv"


# What every analysis DAG that stores results asks: where they go. (A comment, not a docstring: pydantic would
# publish a docstring as the form's description.)
class ResultsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    results_dataset: str | None = Field(None, max_length=64, title="Results dataset",
                                        description="the dataset the results join (created if missing); empty: the dataset the job ran on")

    @field_validator("results_dataset")
    @classmethod
    def _dataset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().replace("/", "_").replace("\\", "_").lstrip(".")
        return value or None


def _segments_of(modality: str, image: Any) -> list[Any]:
    from ingest.analysis import body_lungs as bl
    from ingest.results_writeback import Segment

    if modality == "CT":
        masks = bl.segment_ct(image)
        return [
            Segment("body", bl.as_array(masks.body), category="AnatomicalStructure", property_type=("38266002", "Entire body")),
            Segment("right lung", bl.as_array(masks.right_lung), category="AnatomicalStructure", property_type=("3341006", "Right lung")),
            Segment("left lung", bl.as_array(masks.left_lung), category="AnatomicalStructure", property_type=("44029006", "Left lung")),
        ]
    return [Segment("head", bl.as_array(bl.head_mask(image)), category="AnatomicalStructure", property_type="Head")]


def _segment(ctx: JobContext) -> None:
    from ingest.results_writeback import Algorithm, build_seg, load_series_volume, store_derived, write_csv, write_json

    conf: ResultsConfig = ctx.conf  # type: ignore[assignment]
    rows: list[dict[str, Any]] = []
    for series in ctx.series:
        ctx.check_cancelled()
        if series.modality not in ("CT", "MR"):
            ctx.log.info("series %s is %s, not CT or MR: nothing to segment", series.series_uid, series.modality or "of no modality")
            continue
        stages = 4
        ctx.progress(0, stages, force=True)
        image, datasets = load_series_volume(ctx, series.series_uid)
        ctx.log.info("series %s: %d slices of %d×%d", series.series_uid, len(datasets), image.GetSize()[0], image.GetSize()[1])
        ctx.progress(1, stages, force=True)
        segments = _segments_of(series.modality, image)
        ctx.progress(2, stages, force=True)
        description = "Body and lungs (automatic)" if series.modality == "CT" else "Head mask (automatic)"
        seg = build_seg(datasets, [s for s in segments if s.mask.any()] or segments[:1], algorithm=Algorithm(ALGORITHM_NAME, VERSION),
                        series_description=description, uid_seed=f"segment-body-and-lungs/{VERSION}/{series.series_uid}")
        ctx.progress(3, stages, force=True)
        stored = store_derived(ctx, [seg], dataset_name=conf.results_dataset, source_series_uid=series.series_uid)
        voxel_ml = float(image.GetSpacing()[0] * image.GetSpacing()[1] * image.GetSpacing()[2]) / 1000.0
        for number, segment in enumerate(segments, start=1):
            voxels = int(segment.mask.sum())
            rows.append({"source_series": series.series_uid, "seg_series": stored[0], "segment_number": number, "label": segment.label,
                         "voxels": voxels, "volume_ml": round(voxels * voxel_ml, 3)})
            ctx.log.info("%s: %d voxels, %.1f ml", segment.label, voxels, voxels * voxel_ml)
        ctx.progress(stages, stages, force=True)
    write_json(ctx, SUMMARY_JSON, {"segments": rows})
    write_csv(ctx, SUMMARY_CSV, rows)


segment_body_and_lungs = Dag(
    dag_id="segment-body-and-lungs",
    description="Segment a CT's body contour and right and left lungs (an MR's head) with thresholds and morphology; stores a DICOM SEG beside the images.",
    steps=[Step("segment", _segment)],
    config=ResultsConfig,
    version=VERSION,
    input=DagInput.SERIES,
    tags=("analysis", "segmentation"),
)
