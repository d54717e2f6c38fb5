"""What the index keeps of a DICOM instance: its UIDs, a few per-instance fields, and,
for the first instance of a series, its patient-, study- and series-level attributes by keyword.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

# Attributes of the Patient module (and the patient-level identifiers around it).
PATIENT_KEYWORDS = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "OtherPatientIDs", "OtherPatientNames", "EthnicGroup", "PatientComments", "PatientSpeciesDescription",
    "PatientBreedDescription", "PatientIdentityRemoved", "DeidentificationMethod",
})
# Attributes of the General Study and Patient Study modules.
STUDY_KEYWORDS = frozenset({
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
    "StudyDescription", "PatientAge", "PatientSize", "PatientWeight", "AdmittingDiagnosesDescription",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "RequestingPhysician", "RequestedProcedureDescription",
    "IssuerOfAccessionNumberSequence", "ClinicalTrialSponsorName", "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName", "ClinicalTrialSiteID", "ClinicalTrialSubjectID", "ClinicalTrialTimePointID",
})
# Attributes that differ from instance to instance: meaningless on a series document.
INSTANCE_KEYWORDS = frozenset({
    "SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation", "ContentTime", "ContentDate",
    "InstanceCreationTime", "InstanceCreationDate", "AcquisitionNumber", "AcquisitionTime", "AcquisitionDateTime",
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "LargestImagePixelValue",
    "SmallestImagePixelValue", "TriggerTime", "ImageComments", "InStackPositionNumber", "TemporalPositionIdentifier",
    "FileMetaInformationGroupLength",
})
_SKIPPED_VRS = frozenset({"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"})
MAX_TEXT = 1024


@dataclass
class InstanceMetadata:
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    patient_name: str
    modality: str
    series_description: str
    series_number: int | None
    study_date: str
    study_description: str
    instance_number: int | None
    slice_position: float | None
    number_of_frames: int
    referenced_series_uid: str | None
    # Filled only for the first instance the indexer sees of a series (costly to build).
    patient_attributes: dict[str, Any] = field(default_factory=dict)
    study_attributes: dict[str, Any] = field(default_factory=dict)
    series_attributes: dict[str, Any] = field(default_factory=dict)


class MissingAttribute(ValueError):
    """A Type 1 attribute the PACS cannot do without (the UIDs that place the file)."""


def raw_ascii(ds: Dataset, tag: int, vr: str) -> str | None:
    """An element's value straight from its bytes, or None where only pydicom's conversion gives the right answer.

    Converting an element through pydicom costs ~10 us (hooks, validation, value classes); the
    receiver reads ~20 per instance. For a value not converted yet, of the expected VR (or
    implicit), one value (no backslash), plain ASCII and no escape sequence (so every DICOM
    character set reads it alike), the decoded bytes stripped of padding are exactly what
    `_text` makes of pydicom's value. Everything else (already converted, several values,
    other characters, another VR, a missing element) returns None and goes the usual way.
    """
    raw = ds.get_item(tag)
    if raw is None or not isinstance(raw, RawDataElement) or raw.VR not in (vr, None):
        return None
    value = raw.value
    if value is None:
        return ""
    if not isinstance(value, bytes) or not value.isascii() or b"\\" in value or b"\x1b" in value:
        return None
    return value.decode("ascii").strip("\x00 ")


def _text(ds: Dataset, keyword: str, fast: tuple[int, str] | None = None) -> str:
    """A value as one string (several values joined by backslashes); `fast` = (tag, VR) tries the raw bytes first."""
    if fast is not None:
        text = raw_ascii(ds, *fast)
        if text is not None:
            return text
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip("\x00 ")


def _int(ds: Dataset, keyword: str, fast: int | None = None) -> int | None:
    """An IS value as an int, or None; `fast` = its tag tries the raw bytes first (pydicom decides anything unusual)."""
    if fast is not None:
        text = raw_ascii(ds, fast, "IS")
        if text is not None:
            if text == "":
                return None
            try:
                return int(text)
            except ValueError:
                pass  # "12.0" and the like: pydicom's IS decides
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def required_uid(ds: Dataset, keyword: str, tag: int | None = None) -> str:
    value = _text(ds, keyword, None if tag is None else (tag, "UI"))
    if not value:
        raise MissingAttribute(f"{keyword} is missing")
    return value


def _raw_numbers(ds: Dataset, tag: int) -> list[float] | None:
    """A DS element's values straight from its ASCII bytes (as `raw_ascii`), or None: then pydicom's DS decides."""
    raw = ds.get_item(tag)
    if raw is None or not isinstance(raw, RawDataElement) or raw.VR not in ("DS", None) or not isinstance(raw.value, bytes) or not raw.value.isascii():
        return None
    try:
        return [float(v) for v in raw.value.split(b"\\")]
    except ValueError:
        return None


def slice_position(ds: Dataset) -> float | None:
    """Distance along the slice normal: sorts slices by anatomy even when InstanceNumber lies."""
    position = _raw_numbers(ds, 0x00200032)
    o = _raw_numbers(ds, 0x00200037)
    try:
        if position is None:
            position = [float(v) for v in ds.ImagePositionPatient]
        if o is None:
            o = [float(v) for v in ds.ImageOrientationPatient]
    except (AttributeError, TypeError, ValueError):
        return None
    if len(position) != 3 or len(o) != 6:
        return None
    normal = (o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3])
    value = sum(p * n for p, n in zip(position, normal))
    return value if math.isfinite(value) else None


def referenced_series(ds: Dataset) -> str | None:
    """The image series a SEG or RTSTRUCT annotates, so its thumbnail can be drawn over it."""
    try:
        if "ReferencedSeriesSequence" in ds and ds.ReferencedSeriesSequence:
            return _text(ds.ReferencedSeriesSequence[0], "SeriesInstanceUID") or None
        if "ReferencedFrameOfReferenceSequence" in ds:
            frame = ds.ReferencedFrameOfReferenceSequence[0]
            study = frame.RTReferencedStudySequence[0]
            return _text(study.RTReferencedSeriesSequence[0], "SeriesInstanceUID") or None
        if "CurrentRequestedProcedureEvidenceSequence" in ds:  # an SR: the first series of its evidence (images first, as written back)
            evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
            return _text(evidence.ReferencedSeriesSequence[0], "SeriesInstanceUID") or None
    except (AttributeError, IndexError, KeyError):
        return None
    return None


def extract(ds: Dataset, *, with_attributes: bool) -> InstanceMetadata:
    """Index metadata of one instance; raises MissingAttribute when it cannot be placed in the PACS."""
    meta = InstanceMetadata(
        sop_instance_uid=required_uid(ds, "SOPInstanceUID", 0x00080018),
        sop_class_uid=required_uid(ds, "SOPClassUID", 0x00080016),
        series_uid=required_uid(ds, "SeriesInstanceUID", 0x0020000E),
        study_uid=required_uid(ds, "StudyInstanceUID", 0x0020000D),
        patient_id=_text(ds, "PatientID", (0x00100020, "LO")),
        patient_name=_text(ds, "PatientName"),  # PN: component groups and character sets are pydicom's
        modality=_text(ds, "Modality", (0x00080060, "CS")),
        series_description=_text(ds, "SeriesDescription", (0x0008103E, "LO")),
        series_number=_int(ds, "SeriesNumber", 0x00200011),
        study_date=_text(ds, "StudyDate", (0x00080020, "DA")),
        study_description=_text(ds, "StudyDescription", (0x00081030, "LO")),
        instance_number=_int(ds, "InstanceNumber", 0x00200013),
        slice_position=slice_position(ds),
        number_of_frames=_int(ds, "NumberOfFrames", 0x00280008) or 1,
        referenced_series_uid=referenced_series(ds),
    )
    if with_attributes:
        meta.patient_attributes, meta.study_attributes, meta.series_attributes = split_attributes(ds)
    return meta


def split_attributes(ds: Dataset) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Top-level public attributes by keyword, split into patient, study and series level."""
    patient: dict[str, Any] = {}
    study: dict[str, Any] = {}
    series: dict[str, Any] = {}
    for element in ds:
        if element.tag.is_private or element.tag.group == 0x0002:
            continue
        keyword = element.keyword
        if not keyword or keyword in INSTANCE_KEYWORDS or element.VR in _SKIPPED_VRS:
            continue
        value = json_value(element.value, element.VR)
        if value is None:
            continue
        target = patient if keyword in PATIENT_KEYWORDS else study if keyword in STUDY_KEYWORDS else series
        target[keyword] = value
    return patient, study, series


def json_value(value: Any, vr: str) -> Any:
    """A DICOM value as JSON: numbers for numeric VRs, text otherwise, lists for multiple values."""
    if isinstance(value, (MultiValue, list, tuple)):
        items = [json_value(v, vr) for v in value]
        items = [i for i in items if i is not None]
        return items or None
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return None
    if isinstance(value, PersonName):
        text = str(value).strip()
        return text or None
    if vr in ("IS", "SS", "US", "SL", "UL", "SV", "UV"):
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    if vr in ("DS", "FL", "FD"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None
    text = str(value).strip("\x00 ")
    if not text or len(text) > MAX_TEXT:
        return None
    return text
