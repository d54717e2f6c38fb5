"""Demo phantoms: CT torsos and MR heads made of ellipsoids, written as DICOM, DICOM SEG and NIfTI.

Why generated: a demo must never download patient data, yet should look like what scanners
emit. Each phantom is a volume in patient millimetres (LPS: x to the patient's left, y to the
back, z to the head) with tissues at plausible values (CT in Hounsfield units: fat -100, soft
tissue 40, lung -850, bone 300-1000; MR signal per T1/T2 weighting), so windowing, thumbnails
and the viewer behave as with real data. Geometry is consistent: axial slices with
ImageOrientationPatient (1,0,0,0,1,0), ImagePositionPatient of voxel (0, 0) per slice, equal
PixelSpacing, SliceThickness = slice spacing, and one FrameOfReference per study.
Everything is derived from a seed, so UIDs are stable and a re-run stores nothing twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, PYDICOM_ROOT_UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

UID_ROOT = PYDICOM_ROOT_UID  # pydicom's root for generated UIDs; ours are derived from names, not random


def derived_uid(*parts: object) -> str:
    """A stable UID from its parts: the same demo writes the same UIDs every time."""
    digest = int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24], 16)
    return (UID_ROOT + str(digest))[:64]


@dataclass(frozen=True)
class Patient:
    patient_id: str
    name: str
    sex: str
    birth_date: str


@dataclass(frozen=True)
class Study:
    patient: Patient
    key: str  # stable name inside the demo, part of every UID
    date: str
    description: str
    body_part: str

    @property
    def uid(self) -> str:
        return derived_uid("study", self.patient.patient_id, self.key)

    @property
    def frame_of_reference_uid(self) -> str:
        return derived_uid("frame", self.patient.patient_id, self.key)


@dataclass(frozen=True)
class Ellipsoid:
    """An axis-aligned ellipsoid in patient mm; `value` is what it sets where it lies."""

    centre: tuple[float, float, float]
    axes: tuple[float, float, float]
    value: float

    def mask(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        cx, cy, cz = self.centre
        ax, ay, az = self.axes
        dz = ((z - cz) / az) ** 2
        if dz >= 1:
            return np.zeros(x.shape, dtype=bool)
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 < 1 - dz


@dataclass(frozen=True)
class Grid:
    """Where the voxels are: `rows`×`columns` at `spacing` mm, slices from `z0` down by `step` mm."""

    rows: int
    columns: int
    spacing: float
    slices: int
    step: float
    z0: float

    @property
    def origin(self) -> tuple[float, float]:
        return (-(self.columns - 1) * self.spacing / 2, -(self.rows - 1) * self.spacing / 2)

    def plane(self) -> tuple[np.ndarray, np.ndarray]:
        x0, y0 = self.origin
        y, x = np.mgrid[0 : self.rows, 0 : self.columns].astype(np.float32)
        return x0 + x * self.spacing, y0 + y * self.spacing

    def z(self, k: int) -> float:
        return self.z0 - k * self.step  # head first: slice 1 is the most cranial


@dataclass
class Volume:
    """A phantom: voxel values per slice (k, row, column) and the named structures in it."""

    grid: Grid
    values: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # structure name → boolean (k, row, column)


# ---- CT: chest and abdomen ------------------------------------------------------------------

def ct_torso(seed: int, contrast: bool, slices: int = 32, size: int = 192) -> Volume:
    """Chest to upper abdomen: body, fat, lungs, heart, liver, spleen, kidneys, aorta, spine."""
    rng = np.random.default_rng(seed)
    wobble = lambda: float(rng.uniform(-6, 6))  # noqa: E731 - every patient a little different
    grid = Grid(size, size, 400 / size, slices, 6.0, 60.0)  # 60 mm above to 130 mm below the diaphragm's dome
    x, y = grid.plane()
    enhance = 1 if contrast else 0
    organs = {
        "lung": [Ellipsoid((-85 + wobble(), -5, 45), (62, 70, 95), -850), Ellipsoid((85 + wobble(), -5, 45), (60, 70, 95), -850)],
        "heart": [Ellipsoid((20 + wobble(), -35, 5), (58, 48, 45), 40 + 110 * enhance)],
        "liver": [Ellipsoid((-70 + wobble(), 5, -75), (80, 70, 70), 60 + 50 * enhance)],
        "spleen": [Ellipsoid((90 + wobble(), 45, -70), (32, 30, 45), 50 + 60 * enhance)],
        "right kidney": [Ellipsoid((-72 + wobble(), 60, -125), (27, 32, 45), 35 + 140 * enhance)],
        "left kidney": [Ellipsoid((72 + wobble(), 60, -120), (27, 32, 45), 35 + 140 * enhance)],
    }
    values = np.empty((slices, grid.rows, grid.columns), dtype=np.float32)
    labels = {name: np.zeros(values.shape, dtype=bool) for name in ("liver", "spleen", "right kidney", "left kidney")}
    outside = ((x / 175) ** 2 + (y / 125) ** 2) >= 1
    fat = ((x / 160) ** 2 + (y / 112) ** 2) >= 1
    aorta = (x - 12) ** 2 + (y - 45) ** 2 < 12**2
    vertebra = (x ** 2 + (y - 80) ** 2) < 19**2
    cortex = vertebra & ((x ** 2 + (y - 80) ** 2) > 16**2)
    canal = (x ** 2 + (y - 104) ** 2) < 7**2
    lamina = ((x / 24) ** 2 + ((y - 104) / 12) ** 2 < 1) & ~canal
    for k in range(slices):
        z = grid.z(k)
        hu = np.full(x.shape, 40.0, dtype=np.float32)
        hu[fat] = -100
        for name, parts in organs.items():
            for part in parts:
                m = part.mask(x, y, z)
                hu[m] = part.value
                if name in labels:
                    labels[name][k] |= m
        hu[aorta] = 40 + 210 * enhance
        disc = (z % 30) < 5  # an intervertebral disc every 3 cm
        hu[vertebra] = 80 if disc else 280
        hu[cortex & ~np.bool_(disc)] = 900
        hu[lamina] = 700
        hu[canal] = 20
        hu += rng.normal(0, 12, hu.shape).astype(np.float32)
        hu[outside] = -1000 + rng.normal(0, 4, int(outside.sum())).astype(np.float32)
        values[k] = hu
    return Volume(grid, values, labels)


# ---- MR: head ---------------------------------------------------------------------------------

MR_TISSUES = {  # signal per weighting: scalp fat, skull, CSF, grey matter, white matter, lesion
    "T1": {"fat": 900, "skull": 60, "csf": 180, "gm": 520, "wm": 760, "lesion": 380},
    "T2": {"fat": 450, "skull": 40, "csf": 1500, "gm": 820, "wm": 600, "lesion": 1250},
    "FLAIR": {"fat": 500, "skull": 40, "csf": 120, "gm": 700, "wm": 560, "lesion": 1100},
}


def mr_head(seed: int, weighting: str, slices: int = 20, size: int = 160, lesion: bool = False) -> Volume:
    """An axial head: scalp, skull, CSF, grey and white matter, lateral ventricles (and a lesion)."""
    rng = np.random.default_rng(seed)
    s = MR_TISSUES[weighting]
    grid = Grid(size, size, 240 / size, slices, 6.0, 60.0)
    x, y = grid.plane()
    shells = [
        Ellipsoid((0, 0, 0), (76, 96, 82), s["fat"]),
        Ellipsoid((0, 0, 0), (71, 91, 77), s["skull"]),
        Ellipsoid((0, 0, 0), (66, 86, 72), s["csf"]),
        Ellipsoid((0, 0, 0), (63, 83, 69), s["gm"]),
        Ellipsoid((0, 2, 3), (52, 72, 56), s["wm"]),
        Ellipsoid((-13, -5, 12), (8, 28, 16), s["csf"]),
        Ellipsoid((13, -5, 12), (8, 28, 16), s["csf"]),
    ]
    if lesion:
        shells.append(Ellipsoid((28 + float(rng.uniform(-5, 5)), 20, 18), (11, 13, 11), s["lesion"]))
    values = np.empty((slices, grid.rows, grid.columns), dtype=np.float32)
    labels = {"lesion": np.zeros(values.shape, dtype=bool)} if lesion else {}
    for k in range(slices):
        z = grid.z(k)
        signal = np.zeros(x.shape, dtype=np.float32)
        for shell in shells:
            m = shell.mask(x, y, z)
            signal[m] = shell.value
        if lesion:
            labels["lesion"][k] = shells[-1].mask(x, y, z)
        noisy = signal + rng.normal(0, 18, signal.shape) + 1j * rng.normal(0, 18, signal.shape)
        values[k] = np.abs(noisy)  # magnitude images: Rician noise, never negative
    return Volume(grid, values, labels)


# ---- DICOM ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeriesSpec:
    study: Study
    modality: str  # CT or MR
    number: int
    description: str
    weighting: str = ""  # MR: T1, T2, FLAIR
    contrast: bool = False

    @property
    def uid(self) -> str:
        return derived_uid("series", self.study.uid, self.number)


def _header(spec: SeriesSpec, now: datetime) -> Dataset:
    ds = Dataset()
    p, st = spec.study.patient, spec.study
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = p.name, p.patient_id, p.sex, p.birth_date
    ds.PatientAge = f"{max(0, int(st.date[:4]) - int(p.birth_date[:4])):03d}Y"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = st.uid, st.date, "091500"
    ds.StudyID, ds.AccessionNumber = st.key[:16], ("A" + derived_uid("acc", st.uid)[-10:])
    ds.ReferringPhysicianName = "Demo^Referrer"
    ds.StudyDescription = st.description
    ds.Modality = spec.modality
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = spec.uid, spec.number, spec.description
    ds.SeriesDate, ds.SeriesTime = st.date, f"09{20 + spec.number:02d}00"
    ds.BodyPartExamined = st.body_part
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = st.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer, ds.ManufacturerModelName = "Vireo Demo", f"Phantom {spec.modality}"
    ds.InstitutionName, ds.StationName = "Vireo Demo Hospital", "DEMO01"
    ds.DeviceSerialNumber, ds.SoftwareVersions = "DEMO0001", "1.0"
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDate, ds.ContentDate = st.date, st.date
    ds.AcquisitionTime, ds.ContentTime = ds.SeriesTime, ds.SeriesTime
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.BurnedInAnnotation = "NO"
    return ds


def _modality_module(ds: Dataset, spec: SeriesSpec, grid: Grid) -> None:
    if spec.modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.BitsStored, ds.HighBit = 12, 11
        ds.KVP, ds.XRayTubeCurrent, ds.ExposureTime = 120, 220, 500
        ds.ConvolutionKernel = "B30f"
        ds.ReconstructionDiameter = round(grid.columns * grid.spacing, 2)
        ds.GantryDetectorTilt, ds.TableHeight, ds.RotationDirection = 0, 150, "CW"
        ds.ContrastBolusAgent = "Iomeprol 350" if spec.contrast else None
        if not spec.contrast:
            del ds.ContrastBolusAgent
        ds.ProtocolName = spec.description
        ds.WindowCenter, ds.WindowWidth = 40, 400
    else:
        protocol = {  # scanning sequence, variant, TR, TE, flip angle, TI (only for inversion recovery, PS3.3 C.8.3.1)
            "T1": ("GR", "SP", 2000.0, 3.0, 9.0, None),
            "T2": ("SE", "SK", 4500.0, 95.0, 150.0, None),
            "FLAIR": ("IR", "SK", 9000.0, 85.0, 150.0, 2500.0),
        }[spec.weighting]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant = protocol[0], protocol[1]
        ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
        ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = protocol[2], protocol[3], protocol[4]
        if protocol[5] is not None:
            ds.InversionTime = protocol[5]
        ds.EchoTrainLength, ds.NumberOfAverages = 1, 1
        ds.MagneticFieldStrength, ds.ImagingFrequency, ds.ImagedNucleus = 3.0, 123.2, "1H"
        ds.SpacingBetweenSlices = grid.step
        ds.ProtocolName = spec.description
        ds.WindowCenter, ds.WindowWidth = 600, 1200


def write_series(spec: SeriesSpec, volume: Volume, out_dir: Path) -> list[Path]:
    """One DICOM file per slice (Explicit VR Little Endian) under `out_dir`; returns the paths."""
    grid = volume.grid
    now = datetime.now()
    out_dir.mkdir(parents=True, exist_ok=True)
    sop_class = CTImageStorage if spec.modality == "CT" else MRImageStorage
    stored = np.clip(np.rint(volume.values + (1024 if spec.modality == "CT" else 0)), 0, 4095 if spec.modality == "CT" else 65535).astype("<u2")
    x0, y0 = grid.origin
    paths = []
    for k in range(grid.slices):
        ds = _header(spec, now)
        _modality_module(ds, spec, grid)
        sop_uid = derived_uid("instance", spec.uid, k)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.InstanceNumber = k + 1
        z = grid.z(k)
        ds.ImagePositionPatient = [round(x0, 4), round(y0, 4), round(z, 4)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = round(z, 4)
        ds.SliceThickness = grid.step
        ds.PixelSpacing = [round(grid.spacing, 6), round(grid.spacing, 6)]
        ds.Rows, ds.Columns = grid.rows, grid.columns
        ds["PixelData"] = DataElement(0x7FE00010, "OW", stored[k].tobytes())
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        path = out_dir / f"{k + 1:04d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


SEGMENT_CODES = {  # SNOMED CT codes of the structures the demo segments
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "right kidney": ("9846003", "Right kidney"),
    "left kidney": ("18639004", "Left kidney"),
    "lesion": ("52988006", "Lesion"),
}


def write_seg(source: list[Path], volume: Volume, spec: SeriesSpec, number: int, out_dir: Path) -> Path:
    """A binary DICOM SEG (highdicom) of the volume's labelled structures over its source slices."""
    import highdicom as hd
    from pydicom import dcmread
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    from ingest.segment_colours import segment_colour

    images = [dcmread(p) for p in source]
    names = [n for n in volume.labels if volume.labels[n].any()]
    mask = np.stack([volume.labels[n] for n in names], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(name="vireo-demo-phantom", family=codes.cid7162.ArtificialIntelligence, version="1.0")
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name,
            segmented_property_category=codes.SCT.Organ if name != "lesion" else codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=Code(SEGMENT_CODES[name][0], "SCT", SEGMENT_CODES[name][1]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=segment_colour(i + 1),  # viewers draw each segment in its own, stable colour
        )
        for i, name in enumerate(names)
    ]
    series_uid = derived_uid("seg", spec.uid)
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=series_uid,
        series_number=number,
        sop_instance_uid=derived_uid("seg-instance", series_uid),
        instance_number=1,
        manufacturer="Vireo Demo",
        manufacturer_model_name="Phantom segmenter",
        software_versions="1.0",
        device_serial_number="DEMOSEG1",
        series_description=f"SEG {', '.join(names)}",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "seg.dcm"
    seg.save_as(path)
    return path


# ---- NIfTI ------------------------------------------------------------------------------------

def write_nifti(volume: Volume, path: Path, label: str | None = None) -> None:
    """The volume (or one structure of it, as a 0/1 label map) as NIfTI with its RAS affine.

    NIfTI voxel (i, j, k) is (column, row, slice); DICOM's LPS becomes RAS by flipping x and y.
    Slice k sits at z0 - k·step, so the third axis points to the feet.
    """
    import nibabel as nib

    grid = volume.grid
    x0, y0 = grid.origin
    affine = np.array([
        [-grid.spacing, 0, 0, -x0],
        [0, -grid.spacing, 0, -y0],
        [0, 0, -grid.step, grid.z0],
        [0, 0, 0, 1],
    ])
    data = volume.labels[label].astype(np.uint8) if label else np.rint(volume.values).astype(np.int16)
    image = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), affine)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
