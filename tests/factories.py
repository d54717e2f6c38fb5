"""Realistic synthetic DICOM test data for Vireo's tests and benchmarks.

Why this module exists: a PACS has to be exercised with data that looks like
what scanners emit (complete, standard-conformant IODs, realistic sizes and
UID structure, a mix of modalities and transfer syntaxes, and some broken
files), but we cannot ship patient data.  Everything here is generated from a
seed, so a benchmark run is reproducible and two engineers get byte-identical
inputs.

Import-path note: benchmark scripts do ``sys.path.insert(0, repo_root)`` and
``from tests.factories import ...`` without a ``tests/__init__.py``; therefore
this module only uses absolute imports of third-party packages and the stdlib.

UID note: all UIDs are *derived* (hashed) from the seed and the arguments, not
random.  Identical calls therefore produce identical instances (same UIDs);
pass a different ``seed`` (or explicit ``study_uid``/``series_uid``) when you
need distinct objects with otherwise identical parameters.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    BasicTextSRStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = [
    "COMPRESS_SYNTAXES",
    "SeriesFiles",
    "compress",
    "copy_series",
    "not_dicom",
    "truncate",
    "without_sop_instance_uid",
    "write_basic_text_sr",
    "write_dataset",
    "write_encapsulated_pdf",
    "write_enhanced_ct",
    "write_multiframe_sc",
    "write_secondary_capture",
    "write_seg",
    "write_series",
]

# pydicom's registered root; suffixes are hashes so they never collide with
# UIDs that real scanners produce.
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."
_IMPLEMENTATION_VERSION = "VIREO_SYNTH_1"
_CHARSET = "ISO_IR 192"  # UTF-8, so non-ASCII patient names round-trip.
_NOISE_BANK = 5  # distinct noise fields per series; cycling them is cheap.


@dataclass
class SeriesFiles:
    """What a writer produced: enough to assert on without re-reading files."""

    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    paths: list[Path] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------
# UIDs and small helpers
# --------------------------------------------------------------------------


def _uid(*parts: object) -> str:
    """Deterministic UID from arbitrary parts, so seeds make reruns identical."""
    return str(generate_uid(prefix=_UID_PREFIX, entropy_srcs=["vireo", *map(str, parts)]))


def _digits(*parts: object, n: int = 8) -> str:
    """Deterministic numeric string (accession numbers, serials)."""
    h = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return str(int(h, 16))[:n]


def _age(birth_date: str, on_date: str) -> str:
    """DICOM AS value ('054Y') so Patient Study module looks filled in."""
    try:
        b = date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
        d = date(int(on_date[:4]), int(on_date[4:6]), int(on_date[6:8]))
    except (ValueError, IndexError):
        return ""
    years = d.year - b.year - ((d.month, d.day) < (b.month, b.day))
    return f"{max(0, min(years, 999)):03d}Y"


def _file_meta(sop_class: str, sop_uid: str, transfer_syntax: str) -> FileMetaDataset:
    """Part 10 header; explicit so files are valid without pydicom guessing."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    return meta


def _save(ds: Dataset, path: Path) -> Path:
    """Write Part 10 with a valid meta header (the one format PACS accept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """One Code Sequence item, for hand-built SR and document headers."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


# --------------------------------------------------------------------------
# Patient / study identity shared between objects of the same study
# --------------------------------------------------------------------------

_PATIENT_STUDY_TAGS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
# Copied into derived objects too: an unpaired body part means no Laterality.
_DERIVED_EXTRA_TAGS = ("BodyPartExamined",)


@dataclass(frozen=True)
class _Subject:
    """Patient + study identity; derived objects (SEG, SR, PDF) reuse it."""

    patient_id: str = "PAT0001"
    patient_name: str = "Doe^Jane"
    patient_sex: str = "F"
    patient_birth_date: str = "19700101"
    study_uid: str = ""
    study_date: str = "20240102"
    study_time: str = "093000"
    study_description: str = "CT CHEST"
    accession_number: str = ""
    study_id: str = "1"

    def apply(self, ds: Dataset) -> None:
        """Fill Patient, Patient Study and General Study modules."""
        ds.SpecificCharacterSet = _CHARSET
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.PatientBirthDate = self.patient_birth_date
        ds.PatientSex = self.patient_sex
        ds.PatientAge = _age(self.patient_birth_date, self.study_date)
        ds.StudyInstanceUID = self.study_uid
        ds.StudyDate = self.study_date
        ds.StudyTime = self.study_time
        ds.StudyID = self.study_id
        ds.AccessionNumber = self.accession_number
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.StudyDescription = self.study_description


def _default_subject(seed: int) -> _Subject:
    """The patient/study write_series uses with all defaults (CT)."""
    s = _Subject()
    study_uid = _uid("study", seed, s.patient_id, s.study_date, s.study_description)
    return _Subject(
        study_uid=study_uid,
        accession_number="ACC" + _digits(seed, s.patient_id, s.study_date, s.study_description),
        study_id=_digits(study_uid, n=4),
    )


def _copy_patient_study(source: SeriesFiles | Path | None, ds: Dataset, seed: int) -> None:
    """Put a derived object in the same study as its source (or the default)."""
    src = _source_first(source)
    if src is None:
        _default_subject(seed).apply(ds)
        return
    for keyword in _PATIENT_STUDY_TAGS:
        if keyword in src:
            setattr(ds, keyword, src[keyword].value)


def _body_part(source: SeriesFiles | Path | None) -> str:
    """Source's Body Part Examined (unpaired, so Laterality may be absent)."""
    src = _source_first(source)
    return str(src.get("BodyPartExamined", "CHEST")) if src is not None else "CHEST"


def _source_first(source: SeriesFiles | Path | None) -> Dataset | None:
    """Header of the first source instance (for referencing), if any."""
    if source is None:
        return None
    path = source.paths[0] if isinstance(source, SeriesFiles) else Path(source)
    return dcmread(path, stop_before_pixels=True)


def _equipment(ds: Dataset, manufacturer: str, model: str) -> None:
    """General Equipment module (all Type 2/3 we care about)."""
    ds.Manufacturer = manufacturer
    ds.InstitutionName = "Vireo General Hospital"
    ds.StationName = "SYNTH01"
    ds.ManufacturerModelName = model
    ds.DeviceSerialNumber = "SN" + _digits(manufacturer, model, n=6)
    ds.SoftwareVersions = "1.0"


def _series_header(
    ds: Dataset,
    *,
    modality: str,
    series_uid: str,
    series_number: int,
    description: str,
    series_date: str,
    series_time: str,
) -> None:
    """General Series module (the bits every object needs)."""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = series_date
    ds.SeriesTime = series_time
    ds.SeriesDescription = description


def _sop_common(ds: Dataset, sop_class: str, sop_uid: str, when: tuple[str, str]) -> None:
    """SOP Common module; creation date makes the instance look produced."""
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = when


# --------------------------------------------------------------------------
# Phantoms (precomputed grids; per-slice work is a handful of comparisons)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Normalised image coordinates in [-1, 1]; built once per series."""

    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray


def _grid(rows: int, columns: int) -> _Grid:
    """Coordinate grid; y grows towards the patient's back (image bottom)."""
    y, x = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : columns * 1j].astype(np.float32)
    return _Grid(x=x, y=y, angle=np.arctan2(y, x))


def _ellipse(g: _Grid, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    """Boolean ellipse mask; a zero axis gives an empty mask."""
    if ax <= 0 or ay <= 0:
        return np.zeros(g.x.shape, dtype=bool)
    return ((g.x - cx) / ax) ** 2 + ((g.y - cy) / ay) ** 2 <= 1.0


def _bump(t: float, lo: float, hi: float) -> float:
    """0 outside [lo, hi], smooth 1 in the middle: organ extent along z."""
    if t <= lo or t >= hi:
        return 0.0
    return float(np.sin(np.pi * (t - lo) / (hi - lo)) ** 0.5)


def _ct_hu(g: _Grid, t: float) -> np.ndarray:
    """Thorax/abdomen phantom in HU at height t (0 = inferior, 1 = superior).

    Why: a middle slice should look like a body (fat, soft tissue, ribs,
    spine, lungs, heart, liver) so viewers, windowing and SEG tests see
    plausible contrast, and compression ratios resemble real CT.
    """
    hu = np.full(g.x.shape, -1000, dtype=np.int16)
    hu[_ellipse(g, 0, 0.02, 0.88, 0.64)] = -90  # subcutaneous fat
    hu[_ellipse(g, 0, 0.02, 0.80, 0.56)] = 40  # soft tissue / muscle
    ring = _ellipse(g, 0, 0.02, 0.76, 0.52) & ~_ellipse(g, 0, 0.02, 0.71, 0.47)
    hu[ring & (np.cos(g.angle * 14) > 0.1)] = 700  # ribs
    hu[_ellipse(g, 0, 0.02, 0.71, 0.47)] = 35  # inner soft tissue
    lung = _bump(t, 0.35, 1.02)
    hu[_ellipse(g, -0.36, -0.02, 0.26 * lung, 0.37 * lung)] = -800
    hu[_ellipse(g, 0.36, -0.02, 0.26 * lung, 0.37 * lung)] = -800
    heart = _bump(t, 0.42, 0.8)
    hu[_ellipse(g, 0.08, -0.12, 0.22 * heart, 0.18 * heart)] = 50
    liver = _bump(t, -0.3, 0.5)
    hu[_ellipse(g, -0.3, -0.02, 0.36 * liver, 0.3 * liver)] = 60
    hu[_ellipse(g, 0.06, 0.24, 0.05, 0.05)] = 45  # aorta
    hu[_ellipse(g, 0, 0.38, 0.09, 0.085)] = 700  # vertebral body
    hu[_ellipse(g, 0, 0.38, 0.035, 0.035)] = 20  # spinal canal
    return hu


# Signal intensities (arbitrary units) per tissue for the MR weightings.
_MR_TISSUE = {
    #        fat  skull  csf   gm   wm
    "T1": (900, 60, 250, 550, 760),
    "T2": (600, 50, 1500, 820, 620),
    "FLAIR": (500, 50, 90, 720, 560),
}


def _mr_signal(g: _Grid, t: float, contrast: str) -> np.ndarray:
    """Axial head phantom at height t (0 = skull base, 1 = vertex)."""
    fat, skull, csf, gm, wm = _MR_TISSUE.get(contrast, _MR_TISSUE["T1"])
    s = max(0.25, _bump(t, -0.45, 1.05))
    img = np.zeros(g.x.shape, dtype=np.int32)
    img[_ellipse(g, 0, 0, 0.72 * s, 0.86 * s)] = fat  # scalp
    img[_ellipse(g, 0, 0, 0.68 * s, 0.82 * s)] = skull
    img[_ellipse(g, 0, 0, 0.62 * s, 0.76 * s)] = csf
    img[_ellipse(g, 0, 0, 0.60 * s, 0.74 * s)] = gm
    img[_ellipse(g, 0, 0, 0.48 * s, 0.62 * s)] = wm
    v = _bump(t, 0.35, 0.75)
    img[_ellipse(g, -0.09, -0.05, 0.06 * v, 0.26 * v)] = csf  # ventricles
    img[_ellipse(g, 0.09, -0.05, 0.06 * v, 0.26 * v)] = csf
    return img


def _noise_bank(rng: np.random.Generator, rows: int, columns: int, sigma: float) -> np.ndarray:
    """A few noise fields, cycled over slices: realistic texture, no per-slice RNG."""
    return rng.normal(0.0, sigma, (_NOISE_BANK, rows, columns)).astype(np.int16)


def _phantom_levels(slices: int) -> int:
    """How many distinct anatomical levels to compute (cache size per series)."""
    return max(1, min(slices, 48))


# --------------------------------------------------------------------------
# CT / MR single-frame series
# --------------------------------------------------------------------------

_MR_PROTOCOLS: dict[str, dict[str, object]] = {
    "T1": {"ScanningSequence": "SE", "SequenceVariant": "SK", "RepetitionTime": 550.0,
           "EchoTime": 12.0, "EchoTrainLength": 1, "FlipAngle": 90.0, "SequenceName": "se2d1"},
    "T2": {"ScanningSequence": "SE", "SequenceVariant": "SK", "RepetitionTime": 4200.0,
           "EchoTime": 95.0, "EchoTrainLength": 15, "FlipAngle": 150.0,
           "SequenceName": "tse2d1_15"},
    "FLAIR": {"ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP"],
              "RepetitionTime": 9000.0, "EchoTime": 85.0, "EchoTrainLength": 16,
              "InversionTime": 2500.0, "FlipAngle": 150.0, "SequenceName": "tir2d1_16"},
}


def _ct_module(ds: Dataset, kernel: str, slice_thickness: float, fov: float) -> None:
    """CT Image module + acquisition details a real scanner fills in."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.DataCollectionDiameter = 500
    ds.ReconstructionDiameter = round(fov, 3)
    ds.DistanceSourceToDetector = 1040
    ds.DistanceSourceToPatient = 570
    ds.GantryDetectorTilt = 0
    ds.TableHeight = 150
    ds.RotationDirection = "CW"
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = 250
    ds.Exposure = 125
    ds.FilterType = "BODY FILTER"
    ds.GeneratorPower = 30
    ds.FocalSpots = 1.2
    ds.ConvolutionKernel = kernel
    ds.SpiralPitchFactor = 0.984
    ds.CTDIvol = 8.5
    ds.CTDIPhantomTypeCodeSequence = [_code_item("113691", "DCM", "IEC Body Dosimetry Phantom")]
    ds.ScanOptions = "HELICAL MODE"
    ds.BodyPartExamined = "CHEST"
    ds.ProtocolName = f"CHEST {slice_thickness:g}mm"


def _mr_module(ds: Dataset, contrast: str, rows: int, columns: int, thk: float) -> None:
    """MR Image module; the IR variants carry Inversion Time as required."""
    protocol = _MR_PROTOCOLS.get(contrast, _MR_PROTOCOLS["T1"])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    for keyword, value in protocol.items():
        setattr(ds, keyword, value)
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.NumberOfAverages = 1
    ds.ImagingFrequency = 63.8832
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = 1
    ds.MagneticFieldStrength = 1.5
    ds.SpacingBetweenSlices = thk
    ds.NumberOfPhaseEncodingSteps = rows
    ds.PercentSampling = 100
    ds.PercentPhaseFieldOfView = 100
    ds.PixelBandwidth = 200
    ds.ReceiveCoilName = "HEAD_16"
    ds.TransmitCoilName = "BODY"
    ds.AcquisitionMatrix = [0, columns, rows, 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.VariableFlipAngleFlag = "N"
    ds.SAR = 0.8
    ds.dBdt = 0.0
    ds.BodyPartExamined = "HEAD"
    ds.ProtocolName = f"{contrast} AX"


def _image_pixel_module(
    ds: Dataset, rows: int, columns: int, signed: bool, bits_stored: int
) -> None:
    """Image Pixel module for 16-bit monochrome frames."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0


def _transfer_writer(transfer_syntax_uid: str) -> Callable[[Dataset, np.ndarray], None]:
    """Per-instance pixel setter: raw bytes for native syntaxes, pydicom otherwise."""
    ts = UID(transfer_syntax_uid)
    native = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
    if ts in native:

        def raw(ds: Dataset, arr: np.ndarray) -> None:
            ds["PixelData"] = DataElement(0x7FE00010, "OW", arr.tobytes())

        return raw
    encodable = {RLELossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000}
    if ts not in encodable:
        raise ValueError(
            f"write_series cannot encode {ts!r}; write Explicit VR LE and use compress()"
        )

    lossy: dict[str, object] = {}
    if ts == JPEGLSNearLossless:
        lossy = {"jls_error": 2}
    elif ts == JPEG2000:
        lossy = {"j2k_psnr": [80]}

    def encoded(ds: Dataset, arr: np.ndarray) -> None:
        ds.compress(ts, arr, generate_instance_uid=False, **lossy)
        if lossy:  # the template says "00"; a lossy series must say otherwise
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionMethod = (
                "ISO_14495_1" if ts == JPEGLSNearLossless else "ISO_15444_1")

    return encoded


def write_series(
    out_dir: Path,
    *,
    modality: str = "CT",
    slices: int = 10,
    rows: int = 64,
    columns: int = 64,
    patient_id: str = "PAT0001",
    patient_name: str = "Doe^Jane",
    patient_sex: str = "F",
    patient_birth_date: str = "19700101",
    study_uid: str | None = None,
    series_uid: str | None = None,
    study_date: str = "20240102",
    study_time: str = "093000",
    study_description: str | None = None,
    series_description: str | None = None,
    series_number: int = 1,
    accession_number: str | None = None,
    manufacturer: str = "Vireo Synthetic",
    slice_thickness: float | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    instance_number_start: int = 1,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    seed: int = 0,
    kernel: str = "STANDARD",
    window: tuple[float, float] | None = None,
    mr_contrast: str = "T1",
) -> SeriesFiles:
    """Write one axial CT or MR series, one Part 10 file per slice.

    Files go to ``out_dir/<series_uid>/<instance_number:04d>.dcm``.  Defaults
    that depend on the modality (``None`` above): study description "CT CHEST"
    / "MR BRAIN", series description "Axial 5mm" / "<contrast> AX", slice
    thickness 5 / 4 mm, field of view 350 / 240 mm, window 40/400 for CT and
    data-derived for MR.  ``mr_contrast`` is one of T1, T2, FLAIR (FLAIR uses
    an inversion-recovery sequence).  ``transfer_syntax_uid`` may be any native
    little-endian syntax (deflated included) or one pydicom can encode (RLE,
    JPEG-LS, JPEG 2000); for everything else write native and ``compress()``.

    Speed: the phantom is computed for at most 48 anatomical levels per series
    and noise comes from a small bank, then a single template Dataset is
    mutated and written per slice, so 512x512 CT writes thousands of slices a
    minute.
    """
    modality = modality.upper()
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be CT or MR, not {modality!r}")
    if slices < 1:
        raise ValueError("slices must be >= 1")
    is_ct = modality == "CT"
    study_description = study_description or ("CT CHEST" if is_ct else "MR BRAIN")
    series_description = series_description or ("Axial 5mm" if is_ct else f"{mr_contrast} AX")
    thk = float(slice_thickness if slice_thickness is not None else (5.0 if is_ct else 4.0))
    fov = 350.0 if is_ct else 240.0
    spacing = pixel_spacing or (round(fov / rows, 6), round(fov / columns, 6))
    study_uid = study_uid or _uid("study", seed, patient_id, study_date, study_description)
    if accession_number is None:
        accession_number = "ACC" + _digits(seed, patient_id, study_date, study_description)
    series_uid = series_uid or _uid(
        "series", seed, study_uid, modality, series_number, series_description,
        slices, rows, columns,
    )
    subject = _Subject(
        patient_id=patient_id, patient_name=patient_name, patient_sex=patient_sex,
        patient_birth_date=patient_birth_date, study_uid=study_uid, study_date=study_date,
        study_time=study_time, study_description=study_description,
        accession_number=accession_number, study_id=_digits(study_uid, n=4),
    )
    sop_class = CTImageStorage if is_ct else MRImageStorage
    acq_time = f"{study_time[:2]}{min(59, int(study_time[2:4] or 0) + series_number):02d}00"

    ds = Dataset()
    subject.apply(ds)
    _series_header(ds, modality=modality, series_uid=series_uid, series_number=series_number,
                   description=series_description, series_date=study_date, series_time=acq_time)
    ds.PatientPosition = "HFS"
    ds.OperatorsName = "Tech^Tom"
    # One frame of reference per study and modality, as when a scanner
    # reconstructs several series from the same acquisition.
    ds.FrameOfReferenceUID = _uid("for", study_uid, modality)
    ds.PositionReferenceIndicator = ""
    _equipment(ds, manufacturer, "SynthScan CT 64" if is_ct else "SynthScan MR 1.5T")
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study_date
    ds.AcquisitionTime = acq_time
    ds.ContentDate = study_date
    ds.ContentTime = acq_time
    ds.PatientOrientation = ["L", "P"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelSpacing = list(spacing)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = thk
    if is_ct:
        _ct_module(ds, kernel, thk, fov)
        _image_pixel_module(ds, rows, columns, signed=True, bits_stored=16)
        center, width = window or (40.0, 400.0)
    else:
        _mr_module(ds, mr_contrast, rows, columns, thk)
        _image_pixel_module(ds, rows, columns, signed=False, bits_stored=12)
        center, width = window or (700.0, 1400.0)
    ds.WindowCenter = center
    ds.WindowWidth = width
    _sop_common(ds, sop_class, "", (study_date, acq_time))

    x0 = -fov / 2 + spacing[1] / 2
    y0 = -fov / 2 + spacing[0] / 2
    z_top = thk * (slices - 1) / 2
    set_pixels = _transfer_writer(transfer_syntax_uid)
    slice_pixels = _slice_source(modality, rows, columns, slices, seed, mr_contrast)
    folder = Path(out_dir) / series_uid
    result = SeriesFiles(patient_id, study_uid, series_uid, modality)
    for i in range(slices):
        number = instance_number_start + i
        sop_uid = _uid("sop", series_uid, number)
        z = round(z_top - i * thk, 4)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [round(x0, 4), round(y0, 4), z]
        ds.SliceLocation = z
        ds.file_meta = _file_meta(sop_class, sop_uid, transfer_syntax_uid)
        set_pixels(ds, slice_pixels(i))
        result.paths.append(_save(ds, folder / f"{number:04d}.dcm"))
        result.sop_uids.append(sop_uid)
    return result


def _slice_source(
    modality: str, rows: int, columns: int, slices: int, seed: int, contrast: str
) -> Callable[[int], np.ndarray]:
    """Return i -> stored pixel array, caching the phantom per anatomical level."""
    g = _grid(rows, columns)
    rng = np.random.default_rng(seed)
    levels = _phantom_levels(slices)
    cache: dict[int, np.ndarray] = {}
    if modality == "CT":
        noise = _noise_bank(rng, rows, columns, 12.0)

        def ct(i: int) -> np.ndarray:
            level = round((1 - i / max(1, slices - 1)) * (levels - 1))
            if level not in cache:
                cache[level] = _ct_hu(g, level / max(1, levels - 1)) + np.int16(1024)
            return cache[level] + noise[i % _NOISE_BANK]

        return ct
    noise = _noise_bank(rng, rows, columns, 15.0)

    def mr(i: int) -> np.ndarray:
        level = round((1 - i / max(1, slices - 1)) * (levels - 1))
        if level not in cache:
            cache[level] = _mr_signal(g, level / max(1, levels - 1), contrast)
        return np.clip(cache[level] + noise[i % _NOISE_BANK], 0, 4095).astype(np.uint16)

    return mr


# --------------------------------------------------------------------------
# The benchmark dataset
# --------------------------------------------------------------------------

_NAMES = ("Doe^Jane", "Roe^Richard", "Smith^Alice", "Nguyen^Bao", "Müller^Jürgen",
          "Garcia^Maria", "Okafor^Chidi", "Tanaka^Yuki")
_CT_PROTOCOLS = (
    ("Axial 5mm SOFT", "STANDARD", (40.0, 400.0)),
    ("Axial 2.5mm LUNG", "LUNG", (-600.0, 1500.0)),
    ("Axial 2.5mm BONE", "BONE", (500.0, 2000.0)),
)
_MR_SERIES = ("T1", "T2", "FLAIR")


def write_dataset(
    out_dir: Path,
    *,
    patients: int = 4,
    studies_per_patient: int = 2,
    series_per_study: int = 3,
    ct_slices: tuple[int, int] = (108, 195),
    mr_slices: tuple[int, int] = (48, 96),
    ct_size: int = 512,
    mr_size: int = 256,
    seed: int = 0,
) -> list[SeriesFiles]:
    """Write the reference benchmark mix: even studies CT chest, odd MR brain.

    With defaults: 4 patients x 2 studies x 3 series = 24 series, about 2,600
    instances and ~1 GB.  Slice counts are drawn (inclusive ranges) from a
    generator seeded with ``seed``, so the same seed always yields the same
    dataset.  Shrink ``ct_size``/``mr_size``/slice ranges for unit tests.
    """
    rng = np.random.default_rng(seed)
    out: list[SeriesFiles] = []
    for p in range(patients):
        patient_id = f"PAT{p + 1:04d}"
        name = _NAMES[p % len(_NAMES)] + ("" if p < len(_NAMES) else f"{p // len(_NAMES)}")
        year, month, day = (int(rng.integers(1940, 1990)), int(rng.integers(1, 13)),
                            int(rng.integers(1, 29)))
        birth = f"{year}{month:02d}{day:02d}"
        sex = "F" if p % 2 == 0 else "M"
        for s in range(studies_per_patient):
            is_ct = s % 2 == 0
            study_date = f"2024{1 + (p * studies_per_patient + s) % 12:02d}{1 + 2 * s % 28:02d}"
            study_time = f"{8 + s % 10:02d}{(7 * p) % 60:02d}00"
            description = "CT CHEST ABDOMEN" if is_ct else "MR BRAIN"
            study_uid = _uid("ds-study", seed, patient_id, s)
            for n in range(series_per_study):
                lo, hi = ct_slices if is_ct else mr_slices
                common: dict[str, Any] = dict(
                    patient_id=patient_id, patient_name=name, patient_sex=sex,
                    patient_birth_date=birth, study_uid=study_uid, study_date=study_date,
                    study_time=study_time, study_description=description,
                    accession_number="ACC" + _digits(seed, patient_id, s),
                    series_number=n + 1, slices=int(rng.integers(lo, hi + 1)),
                    seed=int(_digits(seed, p, s, n, n=9)),
                )
                if is_ct:
                    desc, kernel, window = _CT_PROTOCOLS[n % len(_CT_PROTOCOLS)]
                    series = write_series(
                        out_dir, modality="CT", rows=ct_size, columns=ct_size,
                        series_description=desc, kernel=kernel, window=window,
                        slice_thickness=5.0 if "5mm" in desc else 2.5, **common,
                    )
                else:
                    contrast = _MR_SERIES[n % len(_MR_SERIES)]
                    series = write_series(
                        out_dir, modality="MR", rows=mr_size, columns=mr_size,
                        series_description=f"{contrast} AX", mr_contrast=contrast, **common,
                    )
                out.append(series)
    return out


# --------------------------------------------------------------------------
# Derived objects: SEG, SC, SR, PDF, multi-frame
# --------------------------------------------------------------------------


def _middle(items: Sequence[Path], k: int) -> list[Path]:
    """The k central items (all if fewer): where the anatomy is."""
    k = max(1, min(k, len(items)))
    start = (len(items) - k) // 2
    return list(items[start : start + k])


def _property_type(label: str) -> Code:
    """SNOMED code for a label when pydicom knows it, else 'Tissue'."""
    from pydicom.sr.codedict import codes

    key = "".join(part.capitalize() for part in label.replace("-", " ").split())
    try:
        return getattr(codes.SCT, key)
    except AttributeError:
        return codes.SCT.Tissue


def write_seg(
    out_dir: Path,
    source: SeriesFiles,
    *,
    labels: Mapping[int, str] = MappingProxyType({1: "liver"}),
    algorithm: str = "synthetic-threshold",
    frames: int = 5,
    series_number: int = 100,
) -> Path:
    """Binary DICOM SEG (highdicom) over the ``frames`` middle source slices.

    One segment per label; keys must be 1..N (DICOM segment numbers).  Each
    label is a sphere-ish blob displaced horizontally so segments do not
    overlap.  Empty frames are omitted by highdicom, so the SEG references
    only slices that contain a blob.  Same patient/study as ``source``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    numbers = sorted(labels)
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError("label keys must be consecutive segment numbers starting at 1")
    images = [dcmread(p) for p in _middle(source.paths, frames)]
    images.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    rows, columns = int(images[0].Rows), int(images[0].Columns)
    g = _grid(rows, columns)
    mask = np.zeros((len(images), rows, columns, len(numbers)), dtype=np.uint8)
    centre = (len(images) - 1) / 2
    for j in range(len(numbers)):
        cx = -0.3 + 0.35 * j
        for f in range(len(images)):
            r = 0.18 * np.sqrt(max(0.0, 1 - ((f - centre) / (centre + 1)) ** 2))
            mask[f, :, :, j] = _ellipse(g, cx, 0.0, r, r * 0.8)
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm, family=codes.cid7162.ArtificialIntelligence, version="1.0"
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=labels[n],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=_property_type(labels[n]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        for n in numbers
    ]
    series_uid = _uid("seg-series", source.series_uid, tuple(sorted(labels.items())), algorithm)
    seg = hd.seg.Segmentation(
        source_images=images, pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series_uid,
        series_number=series_number, sop_instance_uid=_uid("seg", series_uid),
        instance_number=1, manufacturer="Vireo Synthetic",
        manufacturer_model_name="synthetic-seg", software_versions="1.0",
        device_serial_number="SEG0001", series_description=f"SEG {algorithm}",
    )
    return _save(seg, Path(out_dir) / series_uid / "0001.dcm")


def _study_object(
    source: SeriesFiles | Path | None,
    *,
    sop_class: str,
    sop_uid: str,
    series_uid: str,
    modality: str,
    series_number: int,
    description: str,
    seed: int,
) -> Dataset:
    """Dataset with patient/study/series/equipment/SOP common filled in."""
    ds = Dataset()
    _copy_patient_study(source, ds, seed)
    when = (str(ds.StudyDate) or "20240102", "120000")
    _series_header(ds, modality=modality, series_uid=series_uid, series_number=series_number,
                   description=description, series_date=when[0], series_time=when[1])
    _equipment(ds, "Vireo Synthetic", "Vireo Workstation")
    ds.ContentDate, ds.ContentTime = when
    ds.InstanceNumber = 1
    _sop_common(ds, sop_class, sop_uid, when)
    return ds


def _derived_ids(kind: str, source: SeriesFiles | Path | None, seed: int) -> tuple[str, str]:
    """(series_uid, sop_uid) for a single-instance derived series."""
    anchor = source.series_uid if isinstance(source, SeriesFiles) else str(source)
    series_uid = _uid(kind, "series", anchor, seed)
    return series_uid, _uid(kind, "sop", series_uid)


def _result(ds: Dataset, path: Path) -> SeriesFiles:
    """SeriesFiles for a one-instance series."""
    return SeriesFiles(str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                       str(ds.Modality), [path], [str(ds.SOPInstanceUID)])


def _sc_equipment(ds: Dataset) -> None:
    """SC Equipment module: Conversion Type is Type 1 for every SC/DOC."""
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = "Vireo Synthetic"
    ds.SecondaryCaptureDeviceManufacturerModelName = "Vireo Workstation"
    ds.SecondaryCaptureDeviceSoftwareVersions = "1.0"


def write_secondary_capture(
    out_dir: Path,
    source: SeriesFiles | Path | None = None,
    *,
    rows: int = 256,
    columns: int = 256,
    rgb: bool = False,
    series_number: int = 900,
    seed: int = 0,
) -> SeriesFiles:
    """8-bit Secondary Capture (MONOCHROME2 or RGB): a screenshot-like object.

    Why: 8-bit is what JPEG baseline needs, and SC exercises the code paths
    for images without geometry (no Image Plane module).
    """
    series_uid, sop_uid = _derived_ids("sc", source, seed)
    ds = _study_object(source, sop_class=SecondaryCaptureImageStorage, sop_uid=sop_uid,
                       series_uid=series_uid, modality="OT", series_number=series_number,
                       description="Secondary capture", seed=seed)
    _sc_equipment(ds)
    ds.BodyPartExamined = _body_part(source)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = ds.ContentDate, ds.ContentTime
    g = _grid(rows, columns)
    grey = np.clip((_ct_hu(g, 0.6).astype(np.int32) + 1000) // 8, 0, 255).astype(np.uint8)
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if rgb:
        pixels = np.stack([grey, np.flipud(grey), np.fliplr(grey)], axis=-1)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    else:
        pixels = grey
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds["PixelData"] = DataElement(0x7FE00010, "OB", pixels.tobytes())
    ds.file_meta = _file_meta(SecondaryCaptureImageStorage, sop_uid, ExplicitVRLittleEndian)
    return _result(ds, _save(ds, Path(out_dir) / series_uid / "0001.dcm"))


def write_multiframe_sc(
    out_dir: Path,
    source: SeriesFiles | Path | None = None,
    *,
    frames: int = 8,
    rows: int = 128,
    columns: int = 128,
    series_number: int = 910,
    seed: int = 0,
) -> SeriesFiles:
    """Multi-frame Grayscale Word SC (16-bit, unsigned): a simple multi-frame.

    Why: exercises NumberOfFrames handling (frame offsets, per-frame
    thumbnails) without the functional-group machinery of enhanced IODs.
    """
    series_uid, sop_uid = _derived_ids("mfsc", source, seed)
    sop_class = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds = _study_object(source, sop_class=sop_class, sop_uid=sop_uid, series_uid=series_uid,
                       modality="OT", series_number=series_number,
                       description="Multi-frame capture", seed=seed)
    _sc_equipment(ds)
    ds.BodyPartExamined = _body_part(source)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time (Cine module)
    ds.FrameTime = 100.0
    _image_pixel_module(ds, rows, columns, signed=False, bits_stored=12)
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter, ds.WindowWidth = 1024, 2048
    g = _grid(rows, columns)
    stack = np.stack([
        np.clip(_ct_hu(g, f / max(1, frames - 1)).astype(np.int32) + 1024, 0, 4095)
        for f in range(frames)
    ]).astype(np.uint16)
    ds["PixelData"] = DataElement(0x7FE00010, "OW", stack.tobytes())
    ds.file_meta = _file_meta(sop_class, sop_uid, ExplicitVRLittleEndian)
    return _result(ds, _save(ds, Path(out_dir) / series_uid / "0001.dcm"))


def write_enhanced_ct(
    out_dir: Path,
    source: SeriesFiles | None = None,
    *,
    frames: int = 8,
    series_number: int = 920,
    seed: int = 0,
) -> SeriesFiles:
    """Legacy Converted Enhanced CT (1.2.840.10008.5.1.4.1.1.2.2), multi-frame.

    Built with highdicom from ``frames`` middle slices of a CT ``source`` (a
    small CT series is written to a temporary directory when omitted), so it
    has real shared/per-frame functional groups and dimension indices: the
    shape enhanced CT exports from modern scanners take.
    """
    import highdicom as hd

    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            source = write_series(Path(tmp), modality="CT", slices=frames, seed=seed)
        if source.modality != "CT":
            raise ValueError("write_enhanced_ct needs a CT source series")
        legacy = [dcmread(p) for p in _middle(source.paths, frames)]
    for ds in legacy:  # enhanced IODs use volume terms, not the legacy "AXIAL"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    series_uid = _uid("enh-ct", "series", source.series_uid, frames, seed)
    sop_uid = _uid("enh-ct", "sop", series_uid)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=1,
    )
    enhanced.SeriesDescription = "Enhanced CT (legacy converted)"
    # highdicom lists the sources in the Common Instance Reference module, but
    # dciodvfy only accepts that module when Referenced/Source Image sequences
    # exist; the per-frame Conversion Source Attributes still reference them.
    if "ReferencedSeriesSequence" in enhanced:
        del enhanced.ReferencedSeriesSequence
    return _result(enhanced, _save(enhanced, Path(out_dir) / series_uid / "0001.dcm"))


def _sr_text(relationship: str, code: tuple[str, str, str], text: str) -> Dataset:
    """One TEXT content item of a Basic Text SR tree."""
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_code_item(*code)]
    item.TextValue = text
    return item


def write_basic_text_sr(
    out_dir: Path,
    source: SeriesFiles | Path | None = None,
    *,
    findings: str = "No focal lesion. Lungs are clear.",
    impression: str = "Normal synthetic study.",
    series_number: int = 901,
    seed: int = 0,
) -> SeriesFiles:
    """Basic Text SR report (hand-built; no pixel data), in the source's study.

    Why hand-built: highdicom has no Basic Text SR class, and radiology
    reports in the wild are mostly Basic Text SR.  When ``source`` is given,
    the report lists its images in Current Requested Procedure Evidence (only
    for a SeriesFiles source; a bare Path just supplies patient and study).
    """
    series_uid, sop_uid = _derived_ids("sr", source, seed)
    ds = _study_object(source, sop_class=BasicTextSRStorage, sop_uid=sop_uid,
                       series_uid=series_uid, modality="SR", series_number=series_number,
                       description="Report", seed=seed)
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code_item("18748-4", "LN", "Diagnostic imaging report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = [
        _sr_text("CONTAINS", ("121071", "DCM", "Finding"), findings),
        _sr_text("CONTAINS", ("121073", "DCM", "Impression"), impression),
    ]
    if isinstance(source, SeriesFiles):
        ds.CurrentRequestedProcedureEvidenceSequence = [_evidence(source)]
    ds.file_meta = _file_meta(BasicTextSRStorage, sop_uid, ExplicitVRLittleEndian)
    return _result(ds, _save(ds, Path(out_dir) / series_uid / "0001.dcm"))


def _evidence(source: SeriesFiles) -> Dataset:
    """Hierarchical SOP Instance Reference to every instance of ``source``."""
    first = _source_first(source)
    sop_class = str(first.SOPClassUID) if first is not None else CTImageStorage
    series = Dataset()
    series.SeriesInstanceUID = source.series_uid
    refs = []
    for uid in source.sop_uids:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = uid
        refs.append(ref)
    series.ReferencedSOPSequence = refs
    study = Dataset()
    study.StudyInstanceUID = source.study_uid
    study.ReferencedSeriesSequence = [series]
    return study


def _tiny_pdf(text: str) -> bytes:
    """A one-page PDF with a correct xref table (viewers reject wrong offsets)."""
    safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 18 Tf 72 720 Td ({safe}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def write_encapsulated_pdf(
    out_dir: Path,
    source: SeriesFiles | Path | None = None,
    *,
    title: str = "Synthetic report",
    text: str = "Vireo synthetic PDF report",
    series_number: int = 902,
    seed: int = 0,
) -> SeriesFiles:
    """Encapsulated PDF (modality DOC) holding a tiny but valid PDF."""
    series_uid, sop_uid = _derived_ids("pdf", source, seed)
    ds = _study_object(source, sop_class=EncapsulatedPDFStorage, sop_uid=sop_uid,
                       series_uid=series_uid, modality="DOC", series_number=series_number,
                       description="Scanned documents", seed=seed)
    _sc_equipment(ds)
    ds.ConversionType = "SD"
    ds.AcquisitionDateTime = ds.ContentDate + ds.ContentTime
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = DicomSequence()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf = _tiny_pdf(text)
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.file_meta = _file_meta(EncapsulatedPDFStorage, sop_uid, ExplicitVRLittleEndian)
    return _result(ds, _save(ds, Path(out_dir) / series_uid / "0001.dcm"))


# --------------------------------------------------------------------------
# Transfer syntax variants
# --------------------------------------------------------------------------

# syntax name -> (DCMTK tool + args) or None when pydicom does the work.
_DCMTK: dict[str, list[str] | None] = {
    "jpeg-baseline": ["dcmcjpeg", "+eb", "+q", "90"],
    "jpeg-extended": ["dcmcjpeg", "+ee", "+q", "90"],
    "jpeg-lossless": ["dcmcjpeg", "+e1"],
    "jpeg-lossless-p14": ["dcmcjpeg", "+el"],
    "jpeg-ls": ["dcmcjpls", "+el"],
    "jpeg-ls-near": ["dcmcjpls", "+en"],
    "jpeg2000": None,
    "jpeg2000-lossy": None,
    "rle": ["dcmcrle"],
    "deflated": ["dcmconv", "+td"],
    "implicit": ["dcmconv", "+ti"],
    "explicit": ["dcmconv", "+te"],
}
COMPRESS_SYNTAXES: tuple[str, ...] = tuple(_DCMTK)


def _run(cmd: Sequence[str]) -> None:
    """Run a DCMTK tool, surfacing its stderr when it fails."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _to_8bit_sc(path: Path, out: Path) -> Path:
    """Window a >8-bit image into an 8-bit SC so JPEG baseline is legal.

    CT/MR Image IODs require 16 bits allocated, so an 8-bit rendering must
    become a derived Secondary Capture (new SOP Instance UID, same study);
    frames beyond the first are dropped.
    """
    src = dcmread(path)
    frame = src.pixel_array
    frame = frame[0] if frame.ndim == 3 and int(src.get("NumberOfFrames", 1)) > 1 else frame
    values = frame.astype(np.float64) * float(src.get("RescaleSlope", 1)) + float(
        src.get("RescaleIntercept", 0))
    wc, ww = _first_window(src, values)
    grey = np.clip((values - (wc - 0.5 - (ww - 1) / 2)) / max(ww - 1, 1) * 255, 0, 255)
    ds = Dataset()
    for keyword in _PATIENT_STUDY_TAGS + _DERIVED_EXTRA_TAGS:
        if keyword in src:
            setattr(ds, keyword, src[keyword].value)
    series_uid = _uid("8bit", "series", src.SeriesInstanceUID)
    sop_uid = _uid("8bit", "sop", src.SOPInstanceUID)
    _series_header(ds, modality=str(src.Modality), series_uid=series_uid,
                   series_number=int(src.get("SeriesNumber") or 0) + 500,
                   description="8-bit rendering", series_date=str(src.get("StudyDate", "")),
                   series_time=str(src.get("StudyTime", "")))
    _equipment(ds, "Vireo Synthetic", "Vireo Workstation")
    _sc_equipment(ds)
    ds.InstanceNumber = src.get("InstanceNumber", 1)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.ContentDate, ds.ContentTime = str(src.get("StudyDate", "")), str(src.get("StudyTime", ""))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = frame.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds["PixelData"] = DataElement(0x7FE00010, "OB", grey.astype(np.uint8).tobytes())
    _sop_common(ds, SecondaryCaptureImageStorage, sop_uid, (ds.ContentDate, ds.ContentTime))
    ds.file_meta = _file_meta(SecondaryCaptureImageStorage, sop_uid, ExplicitVRLittleEndian)
    return _save(ds, out)


def _first_window(ds: Dataset, values: np.ndarray) -> tuple[float, float]:
    """First VOI window of the image, else min/max of the data."""
    if "WindowCenter" in ds and "WindowWidth" in ds:
        wc, ww = ds.WindowCenter, ds.WindowWidth
        wc = wc[0] if isinstance(wc, Sequence) and not isinstance(wc, str) else wc
        ww = ww[0] if isinstance(ww, Sequence) and not isinstance(ww, str) else ww
        return float(wc), float(ww)
    lo, hi = float(values.min()), float(values.max())
    return (lo + hi) / 2, max(hi - lo, 1.0)


def _pydicom_j2k(path: Path, out: Path, lossless: bool) -> None:
    """JPEG 2000 via pydicom + pylibjpeg-openjpeg (DCMTK has no J2K codec)."""
    ds = dcmread(path)
    if lossless:
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    else:
        ds.compress(JPEG2000, encoding_plugin="pylibjpeg", j2k_psnr=[80])
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_15444_1"
    _save(ds, out)


def _pydicom_jls_near(path: Path, out: Path) -> None:
    """Near-lossless JPEG-LS (NEAR=2, like dcmcjpls +en) via pyjpegls."""
    ds = dcmread(path)
    ds.compress(JPEGLSNearLossless, jls_error=2)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_14495_1"
    _save(ds, out)


def compress(path: Path, out: Path, syntax: str) -> Path:
    """Re-encode ``path`` into ``out`` using a named transfer syntax.

    ``syntax`` is one of COMPRESS_SYNTAXES:

    * ``jpeg-baseline`` (1.2.840.10008.1.2.4.50, dcmcjpeg +eb, lossy 8-bit).
      8-bit sources are encoded as they are; deeper sources are first windowed
      (first VOI window, else min/max) into an 8-bit *Secondary Capture*,
      because CT/MR IODs forbid 8 bits allocated.  Only the first frame of a
      multi-frame source survives that conversion.  dcmcjpeg assigns a new
      SOP Instance UID (lossy).
    * ``jpeg-extended`` (.4.51, dcmcjpeg +ee, lossy 12-bit; DCMTK rescales
      16-bit data into 12 bits and records it in the rescale attributes).
    * ``jpeg-lossless`` (.4.70, process 14 SV1, dcmcjpeg +e1) and
      ``jpeg-lossless-p14`` (.4.57, dcmcjpeg +el).
    * ``jpeg-ls`` (.4.80, dcmcjpls lossless) / ``jpeg-ls-near`` (.4.81, NEAR=2;
      signed data goes through pydicom + pyjpegls because dcmcjpls refuses it).
    * ``jpeg2000`` (.4.90 lossless) / ``jpeg2000-lossy`` (.4.91), via pydicom
      and pylibjpeg-openjpeg (DCMTK 3.6.7 has no JPEG 2000 encoder).
    * ``rle`` (.5, dcmcrle), ``deflated`` (.1.99, dcmconv +td),
      ``implicit`` (1.2.840.10008.1.2, dcmconv +ti), ``explicit`` (.1.2.1).

    Big endian is deliberately not offered (retired, pydicom 3 won't write it).
    """
    if syntax not in _DCMTK:
        raise ValueError(f"unknown syntax {syntax!r}; choose from {COMPRESS_SYNTAXES}")
    path, out = Path(path), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if syntax.startswith("jpeg2000"):
        _pydicom_j2k(path, out, lossless=syntax == "jpeg2000")
        return out
    cmd = _DCMTK[syntax]
    assert cmd is not None
    header = dcmread(path, stop_before_pixels=True)
    if syntax == "jpeg-ls-near" and int(header.get("PixelRepresentation", 0)) == 1:
        _pydicom_jls_near(path, out)  # dcmcjpls 3.6.7 refuses signed near-lossless
        return out
    if syntax == "jpeg-baseline" and int(header.BitsAllocated) > 8:
        with tempfile.TemporaryDirectory() as tmp:
            eight = _to_8bit_sc(path, Path(tmp) / "8bit.dcm")
            _run([*cmd, str(eight), str(out)])
        return out
    _run([*cmd, str(path), str(out)])
    return out


# --------------------------------------------------------------------------
# Broken inputs (ingest must reject or quarantine them, never crash)
# --------------------------------------------------------------------------


def truncate(path: Path, out: Path, keep_fraction: float = 0.6) -> Path:
    """Copy the first ``keep_fraction`` of the bytes: an interrupted transfer."""
    if not 0 <= keep_fraction <= 1:
        raise ValueError("keep_fraction must be within [0, 1]")
    data = Path(path).read_bytes()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data[: int(len(data) * keep_fraction)])
    return out


def without_sop_instance_uid(path: Path, out: Path, *, strip_meta: bool = False) -> Path:
    """Rewrite without (0008,0018); with ``strip_meta`` also drop (0002,0003).

    By default the meta header keeps MediaStorageSOPInstanceUID (what broken
    exporters actually produce); ``strip_meta`` makes the instance fully
    anonymous, which needs writing without file-format enforcement.
    """
    ds = dcmread(path)
    del ds.SOPInstanceUID
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if strip_meta:
        del ds.file_meta.MediaStorageSOPInstanceUID
        dcmwrite(out, ds, enforce_file_format=False)
        return out
    return _save(ds, out)


def not_dicom(out: Path, *, kind: str = "text", size: int = 4096, seed: int = 0) -> Path:
    """A ``.dcm``-named file that is not DICOM: 'text', 'random' or 'empty'."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "text":
        out.write_text("This is not a DICOM file.\n" * max(1, size // 26), encoding="utf-8")
    elif kind == "random":
        noise = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
        out.write_bytes(noise.tobytes())
    elif kind == "empty":
        out.write_bytes(b"")
    else:
        raise ValueError("kind must be 'text', 'random' or 'empty'")
    return out


def copy_series(series: SeriesFiles, out_dir: Path) -> SeriesFiles:
    """Copy a series' files elsewhere (e.g. to ingest the same data twice)."""
    folder = Path(out_dir) / series.series_uid
    folder.mkdir(parents=True, exist_ok=True)
    paths = [Path(shutil.copy2(p, folder / p.name)) for p in series.paths]
    return SeriesFiles(series.patient_id, series.study_uid, series.series_uid,
                       series.modality, paths, list(series.sop_uids))
