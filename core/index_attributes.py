"""Where each attribute lives in the index, as SQL: the query level that holds a keyword, its column
or its path in a row's recorded attributes, and a person name's folded form (`names_folded`).

The ingest path files attributes the same way (ingest/metadata.py); expressions are written with
literal paths so the expression indexes of migrations 0002 and 0009 apply.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text, func, literal_column

from core.dicom_json import vr_of
from core.models import Instance, Patient, Series, Study
from core.person_names import groups_key

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# Where a keyword lives (sequences, which the index does not hold, only say at which level they are matched).
PATIENT_LEVEL = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "OtherPatientIDs", "OtherPatientNames", "EthnicGroup", "PatientComments", "PatientSpeciesDescription",
    "PatientBreedDescription", "PatientIdentityRemoved", "DeidentificationMethod",
    "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
    "OtherPatientIDsSequence", "IssuerOfPatientIDQualifiersSequence", "ReferencedPatientSequence",
})
STUDY_LEVEL = frozenset({
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
    "StudyDescription", "PatientAge", "PatientSize", "PatientWeight", "AdmittingDiagnosesDescription",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "RequestingPhysician", "RequestedProcedureDescription",
    "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "SOPClassesInStudy",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID",
    "ClinicalTrialSubjectID", "ClinicalTrialTimePointID", "ProcedureCodeSequence", "IssuerOfAccessionNumberSequence",
    "ReferencedStudySequence", "ReferringPhysicianIdentificationSequence", "PhysiciansOfRecordIdentificationSequence",
    "PhysiciansReadingStudyIdentificationSequence",
})
IMAGE_LEVEL = frozenset({
    "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "NumberOfFrames", "Rows", "Columns", "BitsAllocated",
    "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "ContentDate", "ContentTime",
    "AcquisitionNumber", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "WindowCenter", "WindowWidth",
    "InstanceCreationDate", "InstanceCreationTime", "ImageType", "PhotometricInterpretation", "SamplesPerPixel",
    "PixelSpacing", "SliceThickness", "ImageComments", "TransferSyntaxUID", "AvailableTransferSyntaxUID",
})
# Computed per result, never matched on.
RETURN_ONLY = frozenset({
    "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
    "SOPClassesInStudy", "InstanceAvailability", "RetrieveURL", "RetrieveAETitle", "QueryRetrieveLevel",
    "SpecificCharacterSet", "TimezoneOffsetFromUTC", "AvailableTransferSyntaxUID",
})


def level_of(keyword: str) -> str:
    if keyword in PATIENT_LEVEL:
        return "PATIENT"
    if keyword in STUDY_LEVEL:
        return "STUDY"
    if keyword in IMAGE_LEVEL:
        return "IMAGE"
    return "SERIES"


def json_text(column: Any, keyword: str, dialect: str) -> Any:
    """The attribute's text, written with a literal path so the expression indexes of migration 0002 apply."""
    if dialect == "postgresql":
        return column.op("->>", return_type=Text)(literal_column(f"'{keyword}'"))
    return func.json_extract(column, literal_column(f"'$.{keyword}'"), type_=Text)


def json_number(column: Any, keyword: str) -> Any:
    return column[keyword].as_float()


def attribute_expr(level: str, keyword: str, dialect: str = "sqlite") -> tuple[Any, bool] | None:
    """The SQL expression holding `keyword` in the table of `level` (and whether it is numeric), or None."""
    numeric = vr_of(keyword) in ("IS", "US", "SS", "UL", "SL", "DS", "FL", "FD")
    if level == "PATIENT":
        columns = {"PatientID": Patient.patient_id, "PatientName": Patient.patient_name}
        attributes = Patient.__table__.c.attributes  # type: ignore[attr-defined]
    elif level == "STUDY":
        columns = {"PatientID": Patient.patient_id, "StudyInstanceUID": Study.study_uid, "StudyDate": Study.study_date,
                   "StudyDescription": Study.study_description}
        attributes = Study.__table__.c.attributes  # type: ignore[attr-defined]
    elif level == "SERIES":
        columns = {"SeriesInstanceUID": Series.series_uid, "Modality": Series.modality, "SeriesDescription": Series.series_description,
                   "SeriesNumber": Series.series_number}
        attributes = Series.__table__.c.attributes  # type: ignore[attr-defined]
    else:
        columns = {"SOPInstanceUID": Instance.sop_instance_uid, "SOPClassUID": Instance.sop_class_uid,
                   "InstanceNumber": Instance.instance_number, "NumberOfFrames": Instance.number_of_frames}
        return (columns[keyword], numeric) if keyword in columns else None
    if keyword in columns:
        return columns[keyword], numeric
    return (json_number(attributes, keyword) if numeric else json_text(attributes, keyword, dialect)), numeric


_NAME_TABLES: dict[str, Any] = {"PATIENT": Patient, "STUDY": Study, "SERIES": Series}


def folded_name(column: Any, key: str, dialect: str) -> Any:
    """A folded name from `names_folded`, written as migration 0009's indexes are (quoted path; byte order on PostgreSQL)."""
    if dialect == "postgresql":
        return column.op("->>", return_type=Text)(literal_column(f"'{key}'")).collate("C")
    return func.json_extract(column, literal_column(f"'$.\"{key}\"'"), type_=Text)


def name_exprs(level: str, keyword: str, dialect: str) -> tuple[Any, Any] | None:
    """The folded name and its groups (core.person_names) of a PN attribute at `level`, or None (instances: documents only)."""
    table = _NAME_TABLES.get(level)
    if table is None:
        return None
    column = table.__table__.c.names_folded
    return folded_name(column, keyword, dialect), folded_name(column, groups_key(keyword), dialect)
