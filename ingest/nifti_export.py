"""The way back: a dataset's image series and SEGs as an nnU-Net v2 dataset (a zip with dataset.json).

A case is a study. Its image series, ordered by SeriesNumber, are the channels
(`<case>_0000.nii.gz`, …); a SEG that references one of them becomes `labelsTr/<case>.nii.gz`
and puts the case in `imagesTr/`; cases without a SEG go to `imagesTs/`. Label values are
those the SEG's segments were imported with (their `99VIREO` type code), else the segment
numbers. Volumes are read by SimpleITK (which orders slices by position and applies the
rescale), so the NIfTI geometry is the series' own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ExportSeries:
    series_uid: str
    study_uid: str
    modality: str
    files: list[Path]
    number: int
    description: str
    patient_id: str


def _case_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", text).strip("-") or "case"


def describe(series: Any) -> ExportSeries:
    from pydicom import dcmread

    first = dcmread(series.files[0], stop_before_pixels=True)
    return ExportSeries(series.series_uid, series.study_uid, series.modality, list(series.files), int(first.get("SeriesNumber") or 0),
                        str(first.get("SeriesDescription") or ""), str(first.get("PatientID") or ""))


def write_image(series: ExportSeries, target: Path) -> None:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(series.files[0].parent), series.series_uid)
    reader.SetFileNames(list(names) or [str(p) for p in series.files])
    sitk.WriteImage(reader.Execute(), str(target), useCompression=True)


def write_label(seg_path: Path, image: ExportSeries, image_nifti: Path, target: Path) -> list[tuple[str, int]]:
    """The SEG as a label map on the grid of its image; returns the (name, value) of its segments."""
    import highdicom as hd
    import nibabel as nib
    import SimpleITK as sitk

    seg = hd.seg.segread(seg_path)
    reader = sitk.ImageSeriesReader()
    ordered = list(reader.GetGDCMSeriesFileNames(str(image.files[0].parent), image.series_uid)) or [str(p) for p in image.files]
    from pydicom import dcmread

    uids = [str(dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID) for p in ordered]
    numbers = list(seg.get_segment_numbers())
    values = []
    for number in numbers:
        described = seg.get_segment_description(number)
        code = described.segmented_property_type
        value = int(code.value) if code.scheme_designator == "99VIREO" and str(code.value).isdigit() else number
        values.append((described.segment_label, value))
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True, ignore_spatial_locations=True)
    lookup = np.zeros(max(numbers) + 1, dtype=np.uint16)
    for number, (_, value) in zip(numbers, values, strict=True):
        lookup[number] = value
    labels = lookup[pixels].transpose(2, 1, 0)  # (slices, rows, columns) -> (i, j, k)
    reference = nib.load(str(image_nifti))
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    nib.save(nib.Nifti1Image(labels.astype(dtype), reference.affine), str(target))
    return values


def export_nnunet(series: list[Any], out_dir: Path, name: str, log: Any) -> dict[str, Any]:
    """Write the nnU-Net v2 folder for the given input series; returns its dataset.json."""
    described = [describe(s) for s in series if s.files]
    studies: dict[str, list[ExportSeries]] = {}
    for s in described:
        studies.setdefault(s.study_uid, []).append(s)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    channel_names: dict[str, str] = {}
    labels: dict[str, int] = {"background": 0}
    training = 0
    used: set[str] = set()
    channels_expected: int | None = None
    for study_uid, members in sorted(studies.items()):
        images = sorted((s for s in members if s.modality not in ("SEG", "RTSTRUCT", "SR", "PR", "KO")), key=lambda s: (s.number, s.series_uid))
        segs = [s for s in members if s.modality == "SEG"]
        if not images:
            log.warning("study %s has no image series: left out", study_uid)
            continue
        if channels_expected is None:
            channels_expected = len(images)
            for index, image in enumerate(images):
                channel_names[str(index)] = image.description if len(images) > 1 and image.description else image.modality
        if len(images) != channels_expected:
            log.warning("study %s has %d image series, not %d channels: left out", study_uid, len(images), channels_expected)
            continue
        case = _case_name(images[0].patient_id or study_uid)
        while case in used:
            case += "-1"
        used.add(case)
        seg = _seg_for(segs, images)
        folder = "imagesTr" if seg else "imagesTs"
        for index, image in enumerate(images):
            write_image(image, out_dir / folder / f"{case}_{index:04d}.nii.gz")
        if seg:
            seg_file, image = seg
            for label_name, value in write_label(seg_file, image, out_dir / folder / f"{case}_{images.index(image):04d}.nii.gz", out_dir / "labelsTr" / f"{case}.nii.gz"):
                labels.setdefault(label_name, value)
            training += 1
        log.info("case %s: %d channels%s", case, len(images), ", with label" if seg else "")
    spec = {"name": name, "channel_names": channel_names, "labels": labels, "numTraining": training, "file_ending": ".nii.gz"}
    (out_dir / "dataset.json").write_text(json.dumps(spec, indent=1))
    return spec


def _seg_for(segs: list[ExportSeries], images: list[ExportSeries]) -> tuple[Path, ExportSeries] | None:
    """The first SEG whose source images belong to one of the image series, with that series."""
    from pydicom import dcmread

    by_uid = {image.series_uid: image for image in images}
    for seg in segs:
        ds = dcmread(seg.files[0], stop_before_pixels=True)
        for item in ds.get("ReferencedSeriesSequence", []):
            if str(item.SeriesInstanceUID) in by_uid:
                return seg.files[0], by_uid[str(item.SeriesInstanceUID)]
    return None
