"""One NIfTI case to DICOM: an image series (one instance per slice) and, with a label map, a DICOM SEG.

Geometry: NIfTI's affine maps voxel (i, j, k) to RAS millimetres; DICOM speaks LPS, so the
affine is flipped in x and y. A DICOM slice is voxel plane k; its columns run along i and
its rows along j, so the row direction (ImageOrientationPatient[:3]) is the affine's first
column, the column direction its second, PixelSpacing is (|j step|, |i step|) and
ImagePositionPatient is the LPS position of voxel (0, 0, k).

Values: integer data that fits 16 bits is stored as is; anything else (floats, wider
integers) is stored as 16-bit integers with RescaleSlope/RescaleIntercept chosen so the
range is preserved (to within half a slope step).

The SEG is made with highdicom: one segment per `seg_info` label (segment numbers 1..n in
`seg_info` order; the label value is kept as the segment's type code), referencing every
slice of the image series, in the same study and frame of reference.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage, generate_uid
from pydicom.valuerep import validate_value

from ingest.segment_colours import segment_colour
from ingest.side_process import run_beside

# Modalities accepted for converted images (Kaapana's itk2dcm whitelist, PS3.3 C.7.3.1.1.1).
MODALITIES = frozenset({
    "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CR", "CT", "DG", "DOC", "DX", "ECG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL",
    "IVOCT", "IVUS", "KER", "KO", "LEN", "LS", "MG", "MR", "M3D", "NM", "OAM", "OCT", "OP", "OPM", "OPT", "OPTBSV", "OPTENF", "OPV",
    "OSS", "OT", "PLAN", "PR", "PT", "PX", "REG", "RESP", "RF", "RG", "RTDOSE", "RTIMAGE", "RTPLAN", "RTRECORD", "RTSTRUCT", "RWV",
    "SM", "SMR", "SR", "SRF", "STAIN", "TG", "US", "VA", "XA", "XC",
})
TAG_KEY = re.compile(r"^[0-9a-fA-F]{4}\|[0-9a-fA-F]{4}$")
MANUFACTURER = "Vireo"
SEG_SERIES_NUMBER = 300


class CaseError(ValueError):
    """A case that cannot be converted; the message names the file and the problem."""


@dataclass
class SegLabel:
    value: int
    name: str


@dataclass
class SegInfo:
    labels: list[SegLabel]
    algorithm: str = ""
    body_part: str = ""


@dataclass
class NiftiCase:
    """One image file to convert, with its tags and (optionally) its label map."""

    image: Path
    label: str  # how messages name it (path relative to the upload)
    case_id: str  # file stem: Study ID and PatientID fallback
    series_number: int
    tags: dict[str, Any] = field(default_factory=dict)  # "gggg|eeee" -> value; they win over the defaults
    modality: str = "OT"
    description: str = ""
    operator: str = ""
    segmentation: Path | None = None
    seg_info: SegInfo | None = None
    # What the UIDs are derived from (the upload's content hash and the import's settings): converting the
    # same upload again gives the same UIDs, so a restarted import stores nothing twice. Empty: random UIDs.
    uid_seed: str = ""

    def uid(self, role: str) -> str:
        """The UID of one object of this case (`series`, `slice-12`, …): derived from `uid_seed` when there is one."""
        return generate_uid(entropy_srcs=[self.uid_seed, self.label, role]) if self.uid_seed else generate_uid()


@dataclass
class ConvertedCase:
    series_uid: str
    study_uid: str
    image_files: list[Path]
    seg_file: Path | None
    seg_series_uid: str | None


def check_tags(tags: dict[str, Any], where: str) -> dict[str, Any]:
    """Tags as `meta_data.json` gives them, checked: keys `gggg|eeee` of known attributes, values valid for their VR."""
    checked = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not TAG_KEY.match(key):
            raise CaseError(f"{where}: tag key {key!r} is not of the form gggg|eeee")
        tag = Tag(int(key[:4], 16), int(key[5:], 16))
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise CaseError(f"{where}: tag {key} is not a known DICOM attribute") from None
        if vr == "SQ" or tag.group in (0x0002, 0x7FE0):
            raise CaseError(f"{where}: tag {key} ({keyword_for_tag(tag)}) cannot be set from meta_data.json")
        if isinstance(value, (dict, list)) and vr not in ("DS", "IS", "FD", "FL", "US", "SS", "UL", "SL", "CS", "LO", "SH"):
            raise CaseError(f"{where}: tag {key} ({keyword_for_tag(tag)}) has a value of the wrong type: {value!r}")
        try:
            if vr in ("US", "SS", "UL", "SL"):
                value = int(value)
            elif vr in ("FD", "FL"):
                value = float(value)
            elif not isinstance(value, list):
                value = str(value)
            for item in value if isinstance(value, list) else [value]:
                validate_value(vr, item, pydicom_config.RAISE)
        except (ValueError, TypeError) as exc:
            raise CaseError(f"{where}: tag {key} ({keyword_for_tag(tag)}) value {value!r} is not valid for VR {vr}: {exc}") from None
        checked[key.lower()] = value
    return checked


def load_volume(path: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The voxel array (3-D, scaled values) and RAS affine of a NIfTI file.

    The voxel count is checked from the header before any data is read: a few hundred
    kilobytes of `.nii.gz` can announce gigabytes of zeros.
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as exc:
        raise CaseError(f"{label}: not a readable NIfTI file ({_reason(exc, path)})") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CaseError(f"{label}: not a NIfTI file")
    check_voxel_count(tuple(int(n) for n in image.header.get_data_shape()), label)
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as exc:
        raise CaseError(f"{label}: not a readable NIfTI file ({_reason(exc, path)})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim != 3:
        raise CaseError(f"{label}: a {data.ndim}-D image with shape {data.shape}; one 3-D volume per file is expected")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise CaseError(f"{label}: the image holds NaN or infinite values")
    return data, np.asarray(image.affine, dtype=float)


def check_voxel_count(shape: tuple[int, ...], label: str, limit: int | None = None) -> None:
    """CaseError when an image of `shape` has more voxels than VIREO_NIFTI_MAX_VOXELS allows."""
    from ingest.import_limits import NIFTI_VOXELS_VARIABLE, nifti_voxel_limit

    limit = nifti_voxel_limit() if limit is None else limit
    voxels = int(np.prod(shape, dtype=object)) if shape else 0
    if voxels > limit:
        size = " x ".join(str(n) for n in shape)
        raise CaseError(f"{label}: {size} is {voxels:,} voxels, more than an import takes ({limit:,}; {NIFTI_VOXELS_VARIABLE})")


def _reason(exc: Exception, path: Path) -> str:
    """A reader's error without the server's path to the file (the label names it for people)."""
    return str(exc).replace(str(path), "the file").replace(path.name, "the file") or type(exc).__name__


def _stored_values(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The 16-bit values to store and the slope and intercept that restore the original ones."""
    if data.dtype.kind in "iub" or (data.size and np.array_equal(data, np.round(data))):
        low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        if low >= -32768 and high <= 32767:
            return data.astype(np.int16), 1.0, 0.0
        if low >= 0 and high <= 65535:
            return data.astype(np.uint16), 1.0, 0.0
    low, high = float(data.min()), float(data.max())
    slope = (high - low) / 65535.0 if high > low else 1.0
    stored = np.round((data.astype(np.float64) - low) / slope).clip(0, 65535).astype(np.uint16)
    return stored, slope, low


def _ds_number(value: float) -> str:
    """A DS string (at most 16 characters) as close to `value` as fits."""
    for digits in range(14, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.6g}"


def geometry(affine: np.ndarray) -> tuple[list[float], list[float], float, np.ndarray]:
    """ImageOrientationPatient, PixelSpacing, slice spacing and the LPS affine of a RAS affine."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    step_i, step_j, step_k = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    spacing_i, spacing_j, spacing_k = (float(np.linalg.norm(v)) for v in (step_i, step_j, step_k))
    if min(spacing_i, spacing_j, spacing_k) <= 0:
        raise CaseError("the affine is singular")
    orientation = [*(step_i / spacing_i), *(step_j / spacing_j)]
    return [float(v) for v in orientation], [spacing_j, spacing_i], spacing_k, lps


def _image_dataset(case: NiftiCase, sop_class: str, now: datetime) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = case.case_id
    ds.PatientID = case.case_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = case.case_id[:16]
    ds.AccessionNumber = ""
    ds.SeriesNumber = case.series_number
    ds.SeriesDescription = case.description or case.case_id
    ds.OperatorsName = case.operator
    ds.Manufacturer = MANUFACTURER
    ds.PositionReferenceIndicator = ""
    ds.Laterality = ""  # Type 2C on whether the body part is paired, which a NIfTI file does not say: empty is "unknown"
    ds.ImageType = _image_type(sop_class)
    ds.PatientOrientation = ""
    ds.AcquisitionNumber = 1
    ds.BurnedInAnnotation = "NO"
    if sop_class == CTImageStorage:
        ds.KVP = ""
        ds.PatientPosition = "HFS"
    elif sop_class == MRImageStorage:
        ds.PatientPosition = "HFS"
        ds.ScanningSequence = "RM"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = ""
        ds.RepetitionTime = ""
        ds.EchoTime = ""
        ds.EchoTrainLength = ""
    else:
        ds.ConversionType = "WSD"
    return ds


def _image_type(sop_class: str) -> list[str]:
    """ImageType as each IOD wants it: CT and MR need value 3 (PS3.3 C.8.2.1.1.1, C.8.3.1.1.1); converted images are derived."""
    if sop_class == CTImageStorage:
        return ["DERIVED", "SECONDARY", "AXIAL"]
    if sop_class == MRImageStorage:
        return ["DERIVED", "SECONDARY", "OTHER"]
    return ["DERIVED", "SECONDARY"]


def _set_rescale(ds: Dataset, sop_class: str, slope: float, intercept: float) -> None:
    """The Modality LUT, where each IOD expects it.

    CT always carries it (Type 1), in Hounsfield units. Secondary Capture must then say
    what the rescaled values are (RescaleType, Type 1C): "US", unspecified. The MR IOD has
    no Modality LUT; it is written only when the stored values need one to mean the
    original ones (floats), as scanners do, since readers (dcm2niix, pydicom) apply it.
    """
    if sop_class == MRImageStorage and slope == 1.0 and intercept == 0.0:
        return
    ds.RescaleIntercept = _ds_number(intercept)
    ds.RescaleSlope = _ds_number(slope)
    if sop_class == CTImageStorage:
        ds.RescaleType = "HU"
    elif sop_class == SecondaryCaptureImageStorage:
        ds.RescaleType = "US"


def _apply_tags(ds: Dataset, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        tag = Tag(int(key[:4], 16), int(key[5:], 16))
        ds.add_new(tag, dictionary_VR(tag), value)


def _sop_class(modality: str) -> str:
    return {"CT": CTImageStorage, "MR": MRImageStorage}.get(modality, SecondaryCaptureImageStorage)


def _attach_file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def convert_case(case: NiftiCase, out_dir: Path) -> ConvertedCase:
    """Write the case's DICOM files under `out_dir`; CaseError (naming the file) if it cannot be converted."""
    data, affine, label_map = _load_case(case)
    orientation, pixel_spacing, slice_spacing, lps = geometry(affine)
    stored, slope, intercept = _stored_values(data)
    modality = str(case.tags.get("0008|0060") or case.modality or "OT").upper()
    if modality not in MODALITIES:
        raise CaseError(f"{case.label}: modality {modality!r} is not a DICOM modality")
    sop_class = _sop_class(modality)
    now = datetime.now()
    template = _image_dataset(case, sop_class, now)
    template.Modality = modality
    template.StudyInstanceUID = case.uid("study")
    template.SeriesInstanceUID = case.uid("series")
    template.FrameOfReferenceUID = case.uid("frame-of-reference")
    try:
        _apply_tags(template, case.tags)
    except Exception as exc:
        raise CaseError(f"{case.label}: a tag from meta_data.json cannot be applied: {exc}") from exc
    if not str(template.get("PatientName", "")):
        template.PatientName = str(template.PatientID)
    template.ImageOrientationPatient = [_ds_number(v) for v in orientation]
    template.PixelSpacing = [_ds_number(v) for v in pixel_spacing]
    template.SliceThickness = _ds_number(slice_spacing)
    template.SpacingBetweenSlices = _ds_number(slice_spacing)
    template.SamplesPerPixel = 1
    template.PhotometricInterpretation = "MONOCHROME2"
    template.Rows, template.Columns = int(data.shape[1]), int(data.shape[0])
    template.BitsAllocated = template.BitsStored = 16
    template.HighBit = 15
    template.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    _set_rescale(template, sop_class, slope, intercept)
    low, high = float(data.min()), float(data.max())
    template.WindowCenter = _ds_number((low + high) / 2)
    template.WindowWidth = _ds_number(max(high - low, 1.0))

    series_dir = out_dir / template.SeriesInstanceUID
    series_dir.mkdir(parents=True, exist_ok=True)

    def make_slice(k: int) -> tuple[Dataset, Path]:
        ds = Dataset()
        ds.update(template)
        ds.SOPInstanceUID = case.uid(f"slice-{k}")
        ds.InstanceNumber = k + 1
        position = lps @ np.array([0.0, 0.0, float(k), 1.0])
        ds.ImagePositionPatient = [_ds_number(float(v)) for v in position[:3]]
        ds.SliceLocation = _ds_number(float(np.dot(position[:3], np.cross(orientation[:3], orientation[3:]))))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        _attach_file_meta(ds)
        return ds, series_dir / f"slice{k:04d}.dcm"

    seg_file = seg_uid = None
    if label_map is not None and case.seg_info is not None:
        # The SEG needs every slice's dataset; a second process writes them while this one makes the SEG
        # (the two take about as long).
        slices = [make_slice(k) for k in range(data.shape[2])]

        def write_slices() -> None:
            for ds, path in slices:
                ds.save_as(path, enforce_file_format=True)

        slices_written = run_beside(write_slices, f"{case.label}: writing the image slices")
        try:
            seg_file, seg_uid = _write_seg(case, [ds for ds, _ in slices], label_map, out_dir)
        finally:
            slices_written()
        files = [path for _, path in slices]
    else:
        files = []
        for k in range(data.shape[2]):  # one slice in memory at a time
            ds, path = make_slice(k)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return ConvertedCase(template.SeriesInstanceUID, template.StudyInstanceUID, files, seg_file, seg_uid)


def _load_case(case: NiftiCase) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The image, its affine and the checked label map (None without a segmentation).

    The two files are read at once: gunzipping them is most of the reading and zlib
    lets other threads run meanwhile.
    """
    if case.segmentation is None:
        data, affine = load_volume(case.image, case.label)
        return data, affine, None
    seg_label = _seg_label(case)
    if case.seg_info is None:
        raise CaseError(f"{seg_label}: a segmentation needs seg_info.json (label names and values)")
    with ThreadPoolExecutor(max_workers=1) as pool:
        labels_read = pool.submit(load_volume, case.segmentation, seg_label)
        data, affine = load_volume(case.image, case.label)
        labels, seg_affine = labels_read.result()
    return data, affine, _checked_label_map(case, labels, seg_affine, data.shape, affine)


def _seg_label(case: NiftiCase) -> str:
    assert case.segmentation is not None
    return case.label.rsplit("/", 1)[0] + "/" + case.segmentation.name if "/" in case.label else case.segmentation.name


def _checked_label_map(case: NiftiCase, labels: np.ndarray, seg_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    assert case.seg_info is not None
    seg_label = _seg_label(case)
    if labels.shape != shape:
        raise CaseError(f"{seg_label}: shape {labels.shape} differs from the image's {shape}")
    if not np.allclose(seg_affine, affine, atol=1e-3):
        raise CaseError(f"{seg_label}: its geometry (affine) differs from the image's")
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise CaseError(f"{seg_label}: label values must be whole numbers")
    low, high = (float(labels.min()), float(labels.max())) if labels.size else (0.0, 0.0)
    if low < 0 or high > 65535:
        raise CaseError(f"{seg_label}: label values must lie between 0 and 65535 (found {low:g} to {high:g})")
    labels = labels.astype(np.uint16 if high > 255 else np.uint8, copy=False)
    counts = np.bincount(labels.ravel(order="K"), minlength=1)  # far faster than np.unique; order K: no copy of the volume
    present = {int(v) for v in np.flatnonzero(counts)} - {0}
    known = {item.value for item in case.seg_info.labels}
    unknown = sorted(present - known)
    if unknown:
        raise CaseError(f"{seg_label}: label values {unknown} are not in seg_info.json")
    return labels


def _write_seg(case: NiftiCase, images: list[Dataset], labels: np.ndarray, out_dir: Path) -> tuple[Path, str]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    assert case.seg_info is not None
    info = case.seg_info
    lookup = np.zeros(max([item.value for item in info.labels] + [int(labels.max()), 0]) + 1, dtype=np.uint8)
    for number, item in enumerate(info.labels, start=1):
        lookup[item.value] = number
    frames = np.ascontiguousarray(lookup[labels].transpose(2, 1, 0))  # (slices, rows, columns)
    algorithm = hd.AlgorithmIdentificationSequence(name=(info.algorithm or "nifti import")[:64], family=codes.cid7162.ArtificialIntelligence, version="1")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=item.name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=hd.sr.CodedConcept(value=str(item.value), scheme_designator="99VIREO", meaning=item.name[:64]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=segment_colour(number),  # viewers draw each segment in its own, stable colour
        )
        for number, item in enumerate(info.labels, start=1)
    ]
    seg_uid = case.uid("seg-series")
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=seg_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=case.uid("seg-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="Vireo NIfTI import",
        software_versions="1",
        device_serial_number="1",
        content_label="SEGMENTATION",
        content_description=(info.algorithm or "segmentation")[:64],
        omit_empty_frames=True,
    )
    seg.SeriesDescription = (f"{info.algorithm}-{info.body_part}" if info.body_part else info.algorithm or "segmentation")[:64]
    if info.body_part:
        seg.BodyPartExamined = re.sub(r"[^A-Z0-9 _]", "_", info.body_part.upper())[:16]
    path = out_dir / seg_uid / "seg.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path, seg_uid
