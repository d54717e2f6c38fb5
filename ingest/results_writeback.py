"""How an analysis DAG writes back what it made: DICOM SEG and TID 1500 SR into the PACS, tables into the job's files.

Why one module: every analysis DAG (segmentation, measurements, evaluation) must store its
results the same way the receiver stores anything — through `Intake` (dedup, index, dataset,
thumbnails, events) — in the source series' study, referencing the source images, with the
algorithm identified. Writing that once keeps results findable (`Modality:SEG`), viewable as
overlays and linked to their source (`core.derived_series.results_of` / `source_of`).

Public API (all take the step's `JobContext` where they need the database or the store):

- `load_series_volume(ctx, series_uid) -> (SimpleITK.Image, list[pydicom.Dataset])`: a series'
  slices sorted along the slice normal (whole datasets, so a SEG or SR can reference them), as a float32 volume in patient geometry (LPS origin, spacing, direction)
  with the modality rescale applied (CT: Hounsfield units).
- `Segment(label, mask, ...)`: one segment; `mask` is a bool numpy array (slices, rows, columns)
  in the order of the datasets `load_series_volume` returned.
- `build_seg(source_images, segments, *, algorithm=Algorithm(...), series_description, ...) -> Dataset`:
  a BINARY highdicom SEG, one segment per `Segment` (numbers 1..n), AUTOMATIC, with
  AlgorithmIdentification and RecommendedDisplayCIELabValue.
- `seg_masks(seg, source_images) -> dict[int, numpy bool array]`: a stored SEG's segments back
  on the image grid of `source_images` (segment number -> (slices, rows, columns) mask).
- `build_measurement_sr(source_images, measurements, *, seg=None, algorithm=..., series_description) -> Dataset`:
  a TID 1500 Comprehensive 3D SR. `measurements` are plain dicts, one per segment:
  `{"segment_number": 1, "label": "body", "measurements": [{"name": "Volume", "value": 1234.5, "unit": "mm3"}, ...]}`;
  names in `KNOWN_MEASUREMENTS` get their SNOMED/DCM code, others a private 99VIREO code; `unit` is UCUM.
- `store_derived(ctx, datasets, *, dataset_name=None, source_series_uid) -> list[str]`: stores the
  datasets through `Intake` into `dataset_name` (default: the dataset the job ran on, else every
  dataset the source series belongs to), draws their thumbnails, tells pages; returns the stored
  SeriesInstanceUIDs.
- `write_csv(ctx, name, rows) -> Path` and `write_json(ctx, name, payload) -> Path`: files under the
  job's output (downloadable from the job).
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk
    from pydicom.dataset import Dataset

    from core.workflows.context import JobContext

MANUFACTURER = "Vireo"
SEG_SERIES_NUMBER = 400
SR_SERIES_NUMBER = 401
ANALYSIS_AET = "VIREO-ANALYSIS"
# Distinct, readable colours for segments 1..n (sRGB), turned into CIELab as RecommendedDisplayCIELabValue wants.
PALETTE = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0), (204, 121, 167), (120, 120, 120))
# Measurement names with standard codes (TID 1419 / 1410 concepts); anything else gets a private code.
KNOWN_MEASUREMENTS: dict[str, tuple[str, str, str]] = {
    "Volume": ("118565006", "SCT", "Volume"),
    "Surface area": ("C0JK", "IBSI", "Surface area of mesh"),
    "Mean": ("373098007", "SCT", "Mean"),
    "Standard deviation": ("386136009", "SCT", "Standard Deviation"),
    "Minimum": ("255605001", "SCT", "Minimum"),
    "Maximum": ("56851009", "SCT", "Maximum"),
    "Median": ("C0JD", "IBSI", "Median"),
}


@dataclass(frozen=True)
class Algorithm:
    """What made a result: its name and version go into every SEG segment and SR measurement."""

    name: str
    version: str = "1"
    family: str = "ArtificialIntelligence"  # a concept of codes.cid7162 (ArtificialIntelligence, ...)


@dataclass
class Segment:
    """One segment to write: a label, its bool mask (slices, rows, columns) and what it is."""

    label: str
    mask: np.ndarray
    category: str = "Tissue"  # codes.SCT concept name (Tissue, Organ, AnatomicalStructure, ...)
    property_type: str | tuple[str, str] | None = None  # codes.SCT keyword ("Head"), or a SNOMED (code, meaning); None: a private code
    color: tuple[int, int, int] | None = None  # sRGB; None: from PALETTE
    extra: dict[str, Any] = field(default_factory=dict)


# ---- reading a series ------------------------------------------------------------------------

def series_files(ctx: JobContext, series_uid: str) -> list[Path]:
    """The stored files of any series in the index (not only the job's input), in index order."""
    from sqlalchemy import select

    from core.models import Instance

    with ctx.db.engine.connect() as conn:
        rows = conn.execute(
            select(Instance.path).where(Instance.series_uid == series_uid)
            .order_by(Instance.slice_position, Instance.instance_number, Instance.sop_instance_uid)  # type: ignore[arg-type]
        ).scalars().all()
    return [ctx.store.path(p) for p in rows]


def read_series(ctx: JobContext, series_uid: str) -> list[Dataset]:
    from pydicom import dcmread

    files = series_files(ctx, series_uid)
    if not files:
        raise ValueError(f"series {series_uid} has no instances in the PACS")
    return [dcmread(path) for path in files]


def _slice_normal(ds: Dataset) -> np.ndarray:
    o = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float)
    return np.cross(o[:3], o[3:])


def sort_spatially(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Slices in order along their normal (ImagePositionPatient · normal), the way a volume stacks them."""
    if not datasets:
        return []
    if "ImageOrientationPatient" not in datasets[0] or any("ImagePositionPatient" not in ds for ds in datasets):
        raise ValueError("the series has no patient geometry (ImageOrientationPatient/ImagePositionPatient): it cannot be read as a volume")
    normal = _slice_normal(datasets[0])
    return sorted(datasets, key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))


def volume_from_datasets(datasets: Sequence[Dataset]) -> tuple[sitk.Image, list[Dataset]]:
    """Single-frame slices as a float32 SimpleITK image in patient geometry (rescale applied), with the sorted datasets."""
    import SimpleITK as sitk

    ordered = sort_spatially(datasets)
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in ordered):
        raise ValueError("multi-frame images are not supported here: the series must have one image per slice")
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in ordered}
    if len(shapes) != 1:
        raise ValueError("the slices of the series differ in size, so they do not form a volume")
    planes = []
    for ds in ordered:
        pixels = ds.pixel_array.astype(np.float32)
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        planes.append(pixels * slope + intercept)
    array = np.stack(planes)  # (slices, rows, columns)
    image = sitk.GetImageFromArray(array)
    first = ordered[0]
    o = np.asarray([float(v) for v in first.ImageOrientationPatient], dtype=float)
    normal = np.cross(o[:3], o[3:])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    if len(ordered) > 1:
        positions = [float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for ds in ordered]
        slice_spacing = float(np.median(np.diff(positions))) or float(first.get("SliceThickness", 1) or 1)
    else:
        slice_spacing = float(first.get("SliceThickness", 1) or 1)
    image.SetSpacing((column_spacing, row_spacing, abs(slice_spacing)))
    image.SetOrigin(tuple(float(v) for v in first.ImagePositionPatient))
    # Columns of the direction matrix: the row direction (along a row, i.e. x index), the column direction, the normal.
    direction = np.column_stack([o[:3], o[3:], normal])
    image.SetDirection(tuple(direction.flatten()))
    return image, ordered


def load_series_volume(ctx: JobContext, series_uid: str) -> tuple[sitk.Image, list[Dataset]]:
    """A stored series as a volume in patient geometry, with its datasets sorted spatially (see `volume_from_datasets`)."""
    return volume_from_datasets(read_series(ctx, series_uid))


# ---- SEG -------------------------------------------------------------------------------------

def _algorithm_identification(algorithm: Algorithm) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(name=algorithm.name[:64], family=getattr(codes.cid7162, algorithm.family), version=algorithm.version[:64])


def _sct(name: str | tuple[str, str]) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if isinstance(name, tuple):
        return hd.sr.CodedConcept(value=name[0], scheme_designator="SCT", meaning=name[1])
    return getattr(codes.SCT, name)


def _private_code(label: str) -> Any:
    import highdicom as hd

    value = "".join(ch if ch.isalnum() else "-" for ch in label.upper())[:16] or "SEGMENT"
    return hd.sr.CodedConcept(value=value, scheme_designator="99VIREO", meaning=label[:64])


def derived_uid(*parts: object) -> str:
    """A stable UID from its parts, so a job run again makes the same instances (which the PACS then keeps once)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


@functools.cache
def _segmentation_class() -> type:
    """highdicom's Segmentation with a faster overlap check for stacks of bool masks.

    Why: highdicom decides SegmentsOverlap by summing the (frames, rows, columns, segments)
    stack along its last axis, which costs about 15 s for a 512×512×300 CT with three
    segments on two cores; pairwise `logical_and(...).any()` gives the same answer in a
    fraction of that. Anything but a BINARY bool stack goes to highdicom's own check.
    """
    import highdicom as hd

    class FastOverlapSegmentation(hd.seg.Segmentation):  # type: ignore[misc]
        @classmethod
        def _check_and_cast_pixel_array(cls, pixel_array: Any, segment_numbers: Any, segmentation_type: Any, dtype: type) -> Any:
            if (isinstance(pixel_array, np.ndarray) and pixel_array.dtype == np.bool_ and pixel_array.ndim == 4
                    and hd.seg.SegmentationTypeValues(segmentation_type) == hd.seg.SegmentationTypeValues.BINARY
                    and pixel_array.shape[-1] == len(segment_numbers) > 1):
                count = pixel_array.shape[-1]
                overlap = any(np.logical_and(pixel_array[..., i], pixel_array[..., j]).any() for i in range(count) for j in range(i + 1, count))
                return pixel_array, hd.seg.SegmentsOverlapValues.YES if overlap else hd.seg.SegmentsOverlapValues.NO
            return super()._check_and_cast_pixel_array(pixel_array, segment_numbers, segmentation_type, dtype)

    return FastOverlapSegmentation


def build_seg(
    source_images: Sequence[Dataset],
    segments: Sequence[Segment],
    *,
    algorithm: Algorithm,
    series_description: str,
    series_number: int = SEG_SERIES_NUMBER,
    uid_seed: str | None = None,
) -> Dataset:
    """A BINARY DICOM SEG over `source_images` (sorted as the masks are), one segment per entry, AUTOMATIC.

    `uid_seed` (e.g. the job's workflow id and DAG) makes the UIDs stable; None draws new ones.
    """
    import highdicom as hd

    if not segments:
        raise ValueError("a SEG needs at least one segment")
    shape = (len(source_images), int(source_images[0].Rows), int(source_images[0].Columns))
    ident = _algorithm_identification(algorithm)
    descriptions = []
    stack = np.zeros((*shape, len(segments)), dtype=bool)
    for number, segment in enumerate(segments, start=1):
        if segment.mask.shape != shape:
            raise ValueError(f"segment {segment.label}: mask shape {segment.mask.shape} differs from the image's {shape}")
        stack[..., number - 1] = segment.mask
        color = segment.color or PALETTE[(number - 1) % len(PALETTE)]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.label[:64],
            segmented_property_category=_sct(segment.category),
            segmented_property_type=_sct(segment.property_type) if segment.property_type else _private_code(segment.label),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=ident,
            display_color=hd.color.CIELabColor.from_rgb(*color),  # RecommendedDisplayCIELabValue
        ))
    seed = uid_seed or derived_uid(*(ds.SOPInstanceUID for ds in source_images[:1]), np.random.random())
    seg = _segmentation_class()(
        source_images=list(source_images),
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid(seed, "seg-series"),
        series_number=series_number,
        sop_instance_uid=derived_uid(seed, "seg-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version[:64],
        device_serial_number="1",
        content_label="SEGMENTATION",
        content_description=series_description[:64],
        series_description=series_description[:64],
        omit_empty_frames=True,
    )
    return seg


def seg_masks(seg: Dataset, source_images: Sequence[Dataset]) -> dict[int, np.ndarray]:
    """A SEG's segments on the grid of `source_images` (in their order): segment number -> bool (slices, rows, columns)."""
    import highdicom as hd

    segmentation = seg if isinstance(seg, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(seg, copy=False)
    numbers = [int(item.SegmentNumber) for item in segmentation.SegmentSequence]
    referenced = {str(uid) for _, _, uid in segmentation.get_source_image_uids()}
    uids = [str(ds.SOPInstanceUID) for ds in source_images]
    shape = (len(uids), int(source_images[0].Rows), int(source_images[0].Columns))
    masks = {number: np.zeros(shape, dtype=bool) for number in numbers}
    present = [i for i, uid in enumerate(uids) if uid in referenced]
    if not present:
        return masks
    pixels = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=[uids[i] for i in present], segment_numbers=numbers, combine_segments=False,
        ignore_spatial_locations=True, assert_missing_frames_are_empty=True,
    )
    for k, number in enumerate(numbers):
        masks[number][present] = pixels[..., k] > 0
    return masks


# ---- SR (TID 1500) ---------------------------------------------------------------------------

def _concept(name: str) -> Any:
    import highdicom as hd

    if name in KNOWN_MEASUREMENTS:
        value, scheme, meaning = KNOWN_MEASUREMENTS[name]
        return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)
    return _private_code(name)


def _unit(unit: str) -> Any:
    import highdicom as hd

    unit = unit or "1"
    return hd.sr.CodedConcept(value=unit, scheme_designator="UCUM", meaning={"1": "no units", "mm3": "cubic millimeter", "mm2": "square millimeter",
                                                                            "mm": "millimeter", "[hnsf'U]": "Hounsfield unit", "ml": "milliliter"}.get(unit, unit))


def _referenced_segment(seg: Dataset, segment_number: int, source_series_uid: str) -> Any:
    """The SR's reference to one segment of `seg`: the images its frames derive from, else its source series.

    Why not highdicom's `ReferencedSegment.from_segmentation`: it reads the segment number only
    from the per-frame groups, so a SEG made elsewhere with one segment (whose number sits in the
    shared functional groups, as highdicom itself writes it) breaks it, and a segment with no
    frames (an empty label) has nothing to reference; TID 1500 then allows the source series.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset as Empty

    shared = (seg.get("SharedFunctionalGroupsSequence") or [Empty()])[0]
    sources: dict[str, str] = {}
    for frame in seg.get("PerFrameFunctionalGroupsSequence", []):
        identification = frame.get("SegmentIdentificationSequence") or shared.get("SegmentIdentificationSequence") or []
        if not identification or int(identification[0].ReferencedSegmentNumber) != segment_number:
            continue
        for derivation in frame.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                sources.setdefault(str(source.ReferencedSOPInstanceUID), str(source.ReferencedSOPClassUID))
    common = {"sop_class_uid": str(seg.SOPClassUID), "sop_instance_uid": str(seg.SOPInstanceUID), "segment_number": segment_number}
    if sources:
        return hd.sr.ReferencedSegment(**common, source_images=[hd.sr.SourceImageForSegmentation(cls, uid) for uid, cls in sources.items()])
    return hd.sr.ReferencedSegment(**common, source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid))


def build_measurement_sr(
    source_images: Sequence[Dataset],
    measurements: Sequence[dict[str, Any]],
    *,
    algorithm: Algorithm,
    series_description: str,
    seg: Dataset | None = None,
    series_number: int = SR_SERIES_NUMBER,
    uid_seed: str | None = None,
) -> Dataset:
    """A TID 1500 Measurement Report (Comprehensive 3D SR): one measurement group per segment dict.

    Each dict: `segment_number` (in `seg`), `label` (tracking identifier), `measurements`: a list of
    `{"name", "value", "unit"}` (UCUM units, e.g. "mm3", "[hnsf'U]", "1"). With `seg`, each group
    references its segment and the SEG is part of the evidence, else the group references the images.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=derived_uid("vireo-device", algorithm.name), name=algorithm.name[:64]),
    )
    context = hd.sr.ObservationContext(observer_device_context=observer)
    groups = []
    for item in measurements:
        label = str(item.get("label") or f"segment {item.get('segment_number')}")
        values = [
            hd.sr.Measurement(name=_concept(str(m["name"])), value=float(m["value"]), unit=_unit(str(m.get("unit", "1"))),
                              algorithm_id=hd.sr.AlgorithmIdentification(name=algorithm.name[:64], version=algorithm.version[:64]))
            for m in item.get("measurements", []) if m.get("value") is not None and np.isfinite(float(m["value"]))
        ]
        tracking = hd.sr.TrackingIdentifier(uid=derived_uid(uid_seed or "", "tracking", label, item.get("segment_number")), identifier=label[:64])
        if seg is not None:
            referenced = _referenced_segment(seg, int(item["segment_number"]), str(source_images[0].SeriesInstanceUID))
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, referenced_segment=referenced, finding_type=_private_code(label), measurements=values,
                algorithm_id=hd.sr.AlgorithmIdentification(name=algorithm.name[:64], version=algorithm.version[:64]),
            ))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(tracking_identifier=tracking, finding_type=_private_code(label), measurements=values))
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=codes.LN.CTUnspecifiedBodyRegion if source_images[0].Modality == "CT" else _private_code("Imaging procedure"),
        imaging_measurements=groups, title=codes.cid7021.ImagingMeasurementReport,
    )
    evidence = list(source_images) + ([seg] if seg is not None else [])
    seed = uid_seed or derived_uid(source_images[0].SOPInstanceUID, np.random.random())
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=derived_uid(seed, "sr-series"),
        series_number=series_number,
        sop_instance_uid=derived_uid(seed, "sr-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=series_description[:64],
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    return sr


# ---- storing ---------------------------------------------------------------------------------

def part10_bytes(ds: Dataset) -> bytes:
    from pydicom import dcmwrite

    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def default_dataset(ctx: JobContext, source_series_uid: str) -> list[str | None]:
    """Where results go when the user named no dataset: the job's dataset, else the source series' datasets (or none)."""
    if ctx.spec.dataset:
        return [ctx.spec.dataset]
    from sqlalchemy import select

    from core.models import Dataset as DatasetRow
    from core.models import DatasetSeries

    with ctx.db.engine.connect() as conn:
        names = conn.execute(
            select(DatasetRow.name).join(DatasetSeries, DatasetSeries.dataset_id == DatasetRow.id)  # type: ignore[arg-type]
            .where(DatasetSeries.series_uid == source_series_uid).order_by(DatasetRow.name)
        ).scalars().all()
    return list(names) or [None]


def store_derived(ctx: JobContext, datasets: Sequence[Dataset], *, dataset_name: str | None = None, source_series_uid: str) -> list[str]:
    """Store results through the receiver's own intake into `dataset_name` (default: see `default_dataset`).

    Returns the stored SeriesInstanceUIDs (in order of first appearance). Thumbnails are drawn
    and open pages are told. A refused instance fails the step with the intake's plain reason.
    """
    from ingest.intake import Origin
    from ingest.upload_import import ImportReport, PacsImporter, draw_thumbnails

    targets = [dataset_name] if dataset_name else default_dataset(ctx, source_series_uid)
    contents = [(str(ds.SOPInstanceUID), part10_bytes(ds)) for ds in datasets]
    stored: list[str] = []
    for target in targets:
        report = ImportReport(upload=f"results of {source_series_uid}", dataset=target)
        with PacsImporter(ctx.db, ctx.store, Origin(dataset=target, calling_aet=ANALYSIS_AET)) as importer:
            for name, content in contents:
                if not importer.add(name, content, report):
                    raise RuntimeError(f"the PACS refused a result: {report.skipped[-1]['reason']}")
            importer.flush(report)
    for ds in datasets:
        if str(ds.SeriesInstanceUID) not in stored:
            stored.append(str(ds.SeriesInstanceUID))
    draw_thumbnails(ctx, stored)
    return stored


# ---- job files -------------------------------------------------------------------------------

def _replace(path: Path, text: str) -> Path:
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)
    return path


def write_csv(ctx: JobContext, name: str, rows: Iterable[dict[str, Any]]) -> Path:
    """A CSV under the job's output (columns: every key, in first-seen order)."""
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = _StringBuffer()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return _replace(ctx.output_file(name), buffer.text())


def write_json(ctx: JobContext, name: str, payload: Any) -> Path:
    """A JSON file under the job's output."""
    return _replace(ctx.output_file(name), json.dumps(payload, indent=1, allow_nan=False, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


class _StringBuffer:
    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def text(self) -> str:
        return "".join(self._parts)
