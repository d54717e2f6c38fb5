"""DICOM attribute matching over the index: the engine behind QIDO-RS and C-FIND.

Both ask the same question — which patients, studies, series or instances match these
attribute values, under DICOM's matching rules (PS3.4 C.2.2.2: single value, universal,
wildcard `*`/`?`, UID list, date/time range) — so both are answered here, straight from
the patient/study/series/instance tables, never by reading files. Results are DICOM JSON
objects carrying every attribute the index knows at that level; callers keep the ones
their client asked for.

Person names match case-insensitively; with fuzzy matching a value also matches the start
of any name component ("jo" finds "Doe^John"). Matching on an attribute the index cannot
answer at a level is not an error: it is reported in `QueryResult.ignored`, as QIDO-RS
reports it in a Warning header.
"""

from __future__ import annotations

import fnmatch
import json
import re
from functools import lru_cache
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydicom.datadict import tag_for_keyword
from sqlalchemy import Select, Text, and_, cast, exists, func, literal_column, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from core.dicom_json import attributes_json, element_json, key_of, tag_hex, vr_of
from core.models import Instance, InstanceDocument, Patient, Series, Study

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
MAX_RESULTS = 10_000

# Where a keyword lives (the ingest path files attributes the same way, see ingest/metadata.py).
PATIENT_LEVEL = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "OtherPatientIDs", "OtherPatientNames", "EthnicGroup", "PatientComments", "PatientSpeciesDescription",
    "PatientBreedDescription", "PatientIdentityRemoved", "DeidentificationMethod",
    "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
})
STUDY_LEVEL = frozenset({
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
    "StudyDescription", "PatientAge", "PatientSize", "PatientWeight", "AdmittingDiagnosesDescription",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "RequestingPhysician", "RequestedProcedureDescription",
    "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "SOPClassesInStudy",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID",
    "ClinicalTrialSubjectID", "ClinicalTrialTimePointID",
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


class QueryError(ValueError):
    """A query that cannot be run as given; the message says why."""


def level_of(keyword: str) -> str:
    if keyword in PATIENT_LEVEL:
        return "PATIENT"
    if keyword in STUDY_LEVEL:
        return "STUDY"
    if keyword in IMAGE_LEVEL:
        return "IMAGE"
    return "SERIES"


@dataclass
class Query:
    level: str
    matches: dict[str, str] = field(default_factory=dict)  # keyword → DICOM matching value ('' is universal)
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    fields: frozenset[str] | None = None  # keywords the caller keeps (None: every attribute the index has)


@dataclass
class QueryResult:
    items: list[dict[str, Any]]  # DICOM JSON objects
    more: bool  # more results exist beyond `limit`
    ignored: list[str]  # keywords that could not be matched at this level


# --------------------------------------------------------------------------- matching


def _split(value: str) -> list[str]:
    return [v for v in re.split(r"[\\,]", value) if v != ""]


def _wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _glob_pattern(value: str) -> str:
    return value.replace("[", "[[]")


def _range_bounds(value: str, vr: str) -> tuple[str, str]:
    low, _, high = value.partition("-")
    if vr == "TM":
        low = low.split(".")[0].ljust(6, "0") if low else ""
        high = (high.split(".")[0].ljust(6, "0") + ".999999") if high else ""
    elif vr == "DT":
        high = high + "\uffff" if high else ""
    return low, high


class _Matcher:
    """Builds SQL conditions for one dialect (SQLite wildcards are GLOB, to stay case-sensitive as DICOM is)."""

    def __init__(self, dialect: str, fuzzy: bool) -> None:
        self.sqlite = dialect == "sqlite"
        self.fuzzy = fuzzy

    def condition(self, expr: Any, keyword: str, value: str, numeric: bool = False) -> ColumnElement[bool] | None:
        vr = vr_of(keyword)
        value = value.strip()
        if value in ("", "*"):
            return None
        if numeric or vr in ("IS", "US", "SS", "UL", "SL", "DS", "FL", "FD"):
            try:
                numbers = [float(v) for v in _split(value)]
            except ValueError:
                raise QueryError(f"{keyword} takes numbers, not {value!r}") from None
            return expr.in_(numbers) if len(numbers) > 1 else expr == numbers[0]
        if vr in ("UI", "CS", "AE") and (len(_split(value)) > 1) and not _wildcard(value):
            return expr.in_(_split(value))
        if vr in ("DA", "TM", "DT") and "-" in value:
            low, high = _range_bounds(value, vr)
            parts = [c for c in ((expr >= low) if low else None, (expr <= high) if high else None) if c is not None]
            return and_(*parts, expr != "") if parts else None
        if vr == "PN":
            return self._person_name(expr, value)
        if _wildcard(value):
            if self.sqlite:
                return expr.op("GLOB")(_glob_pattern(value))
            return expr.like(_like_pattern(value), escape="\\")
        return expr == value

    def _person_name(self, expr: Any, value: str) -> ColumnElement[bool]:
        lowered = func.lower(expr)
        text = value.lower()
        if self.fuzzy:
            # Each word of the query must start some name component (family, given, middle…).
            words = [w for w in re.split(r"[\s^=,]+", text.replace("*", " ").replace("?", " ")) if w]
            if not words:
                return expr.is_not(None)
            clauses = []
            for word in words:
                pattern = _like_pattern(word)
                clauses.append(or_(lowered.like(pattern + "%", escape="\\"), lowered.like("%^" + pattern + "%", escape="\\"),
                                   lowered.like("% " + pattern + "%", escape="\\"), lowered.like("%=" + pattern + "%", escape="\\")))
            return and_(*clauses)
        if _wildcard(text):
            condition = lowered.like(_like_pattern(text), escape="\\")
            prefix = re.split(r"[*?]", text, maxsplit=1)[0]
            if prefix:
                # A range on the prefix: an index on lower(name) finds the candidates (LIKE alone cannot use it);
                # for a plain "prefix*" the range is the whole condition.
                upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                in_range = and_(lowered >= prefix, lowered < upper)
                return in_range if text == prefix + "*" else and_(in_range, condition)
            return condition
        return lowered == text


def _json_text(column: Any, keyword: str, dialect: str) -> Any:
    """The attribute's text, written with a literal path so the expression indexes of migration 0002 apply."""
    if dialect == "postgresql":
        return column.op("->>")(literal_column(f"'{keyword}'"))
    return func.json_extract(column, literal_column(f"'$.{keyword}'"))


def _json_number(column: Any, keyword: str) -> Any:
    return column[keyword].as_float()


def _attribute_expr(level: str, keyword: str, dialect: str = "sqlite") -> tuple[Any, bool] | None:
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
    return (_json_number(attributes, keyword) if numeric else _json_text(attributes, keyword, dialect)), numeric


# --------------------------------------------------------------------------- search


def search(session: Session, query: Query) -> QueryResult:
    if query.level not in LEVELS:
        raise QueryError(f"query level must be one of {', '.join(LEVELS)}, not {query.level!r}")
    dialect = session.get_bind().dialect.name
    matcher = _Matcher(dialect, query.fuzzy)
    order = LEVELS.index(query.level)
    own: list[ColumnElement[bool]] = []  # conditions on the query level's own table (and, for instances, the series)
    upper: list[ColumnElement[bool]] = []  # conditions on the study or patient
    joins: set[str] = set()  # tables above the query level that conditions need ("study", "patient")
    post_filters: dict[str, str] = {}
    ignored: list[str] = []
    for keyword, value in query.matches.items():
        if keyword in RETURN_ONLY or value.strip() in ("", "*"):
            continue
        level = level_of(keyword)
        if keyword == "ModalitiesInStudy":
            if order < 1:
                ignored.append(keyword)
                continue
            values = _split(value)
            member = select(Series.series_uid).where(Series.study_uid == Study.study_uid)
            member = member.where(Series.modality.in_(values) if not _wildcard(value) else matcher.condition(Series.modality, "Modality", value))  # type: ignore[attr-defined, arg-type]
            upper.append(exists(member))
            joins.add("study")
            continue
        if LEVELS.index(level) > order:
            ignored.append(keyword)  # a key below the query level (PS3.4 C.4.1.1.3.1): not a matching key here
            continue
        if level == "PATIENT" and order > 0 and keyword not in ("PatientID",):
            level = "STUDY"  # studies carry their patient's attributes as each study recorded them
        if level == "IMAGE" and _attribute_expr("IMAGE", keyword) is None:
            post_filters[keyword] = value
            continue
        found = _attribute_expr(level, keyword, dialect)
        assert found is not None
        condition = matcher.condition(found[0], keyword, value, found[1])
        if condition is not None:
            (upper if level in ("PATIENT", "STUDY") else own).append(condition)
            joins.update({"PATIENT": ("study", "patient"), "STUDY": ("study",)}.get(level, ()))
    limit = MAX_RESULTS if query.limit is None else max(0, min(query.limit, MAX_RESULTS))
    offset = max(0, query.offset)
    conditions = own + upper
    if query.level == "PATIENT":
        items, more = _patients(session, conditions, limit, offset, query.fields)
    elif query.level == "STUDY":
        items, more = _studies(session, conditions, joins, limit, offset, query.fields)
    elif query.level == "SERIES":
        items, more = _series(session, own, upper, joins, limit, offset, query.fields)
    else:
        items, more = _instances(session, conditions, post_filters, limit, offset, query.fields)
    return QueryResult(items=items, more=more, ignored=ignored)


def _page(session: Session, statement: Select[Any], limit: int, offset: int) -> tuple[list[Any], bool]:
    rows = list(session.execute(statement.limit(limit + 1).offset(offset)).all())
    return rows[:limit], len(rows) > limit


def _patients(
    session: Session, conditions: list[ColumnElement[bool]], limit: int, offset: int, fields: frozenset[str] | None
) -> tuple[list[dict[str, Any]], bool]:
    statement = select(Patient).where(*conditions).order_by(Patient.patient_id)
    rows, more = _page(session, statement, limit, offset)
    pks = [r[0].id for r in rows]
    counts: dict[int, tuple[int, int, int]] = {}
    if pks:
        aggregate = (
            select(Study.patient_pk, func.count(func.distinct(Study.study_uid)), func.count(Series.series_uid), func.coalesce(func.sum(Series.instance_count), 0))
            .join(Series, Series.study_uid == Study.study_uid, isouter=True)  # type: ignore[arg-type]
            .where(Study.patient_pk.in_(pks))  # type: ignore[attr-defined]
            .group_by(Study.patient_pk)
        )
        counts = {pk: (studies, series, instances) for pk, studies, series, instances in session.execute(aggregate)}
    items = []
    for (patient,) in rows:
        studies, series, instances = counts.get(patient.id, (0, 0, 0))
        values = {**patient.attributes, "PatientID": patient.patient_id, "PatientName": patient.patient_name,
                  "NumberOfPatientRelatedStudies": studies, "NumberOfPatientRelatedSeries": series,
                  "NumberOfPatientRelatedInstances": instances}
        items.append(attributes_json(values, only=fields))
    return items, more


def _study_layers(study: Any, patient: Any) -> list[dict[str, Any] | str]:
    """A study's values, lowest priority first: column defaults, the recorded attributes (a dict, or its JSON text), the index's own keys."""
    defaults = {"PatientName": patient.patient_name, "StudyDate": study.study_date, "StudyDescription": study.study_description}
    return [defaults, study.attributes, {"PatientID": patient.patient_id, "StudyInstanceUID": study.study_uid}]


def _merged(layers: list[dict[str, Any] | str]) -> dict[str, Any]:
    """One dict of the layers' values, later layers winning; recorded attributes may come as their JSON text."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(_recorded(layer) if isinstance(layer, str) else layer)
    return merged


def _study_values(study: Any, patient: Any) -> dict[str, Any]:
    return _merged(_study_layers(study, patient))


@lru_cache(maxsize=4096)
def _recorded(text: str) -> dict[str, Any]:
    """Recorded attributes from their JSON text, as stored; remembered, and never mutated by callers.

    A pure function of the text: the pages a viewer asks for again (a study list refreshed,
    the next page and back) cost a lookup per row instead of a parse.
    """
    return json.loads(text)


def _dicom_json(fields: frozenset[str] | None, layers: list[dict[str, Any] | str]) -> dict[str, Any]:
    """A result as DICOM JSON from layers of values (later ones win; recorded attributes come as their JSON text),
    with only `fields` when given: a page converts the ~30 attributes asked for, not all the index holds
    (converting every recorded attribute of every row was most of a QIDO request's time)."""
    merged = _merged(layers)
    if fields is None:
        return attributes_json(merged)
    picked: dict[str, dict[str, Any]] = {}
    for keyword in fields & merged.keys():
        key = key_of(keyword)
        if key is not None:
            picked[key[0]] = element_json(keyword, merged[keyword], key[1])
    return {tag: picked[tag] for tag in sorted(picked)}


def _study_aggregates(session: Session, study_uids: list[str], with_sop_classes: bool = True) -> dict[str, dict[str, Any]]:
    """ModalitiesInStudy and the related-series/instance counts of these studies."""
    result: dict[str, dict[str, Any]] = {}
    if not study_uids:
        return result
    modalities: dict[str, set[str]] = defaultdict(set)
    counts = select(Series.study_uid, Series.modality, func.count(), func.coalesce(func.sum(Series.instance_count), 0)).where(
        Series.study_uid.in_(study_uids)  # type: ignore[attr-defined]
    ).group_by(Series.study_uid, Series.modality)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for uid, modality, series, instances in session.connection().execute(counts):
        if modality:
            modalities[uid].add(modality)
        totals[uid][0] += series
        totals[uid][1] += int(instances)
    sop_classes: dict[str, set[str]] = defaultdict(set)
    classes = None if not with_sop_classes else select(Series.study_uid, Instance.sop_class_uid).join(Instance, Instance.series_uid == Series.series_uid).where(  # type: ignore[arg-type]
        Series.study_uid.in_(study_uids)  # type: ignore[attr-defined]
    ).distinct()
    for uid, sop_class in session.connection().execute(classes) if classes is not None else []:
        sop_classes[uid].add(sop_class)
    for uid in study_uids:
        result[uid] = {
            "ModalitiesInStudy": sorted(modalities[uid]),
            "NumberOfStudyRelatedSeries": totals[uid][0],
            "NumberOfStudyRelatedInstances": totals[uid][1],
            "SOPClassesInStudy": sorted(sop_classes[uid]),
        }
    return result


class _SeriesRow(NamedTuple):
    series_uid: str
    study_uid: str
    modality: str
    series_description: str
    series_number: int | None
    instance_count: int
    attributes: str


class _StudyRow(NamedTuple):
    study_uid: str
    study_date: str
    study_description: str
    attributes: str


class _PatientRow(NamedTuple):
    patient_id: str
    patient_name: str


_SERIES_COLUMNS = _SeriesRow._fields
_STUDY_COLUMNS = _StudyRow._fields
_PATIENT_COLUMNS = _PatientRow._fields
_SERIES_END = len(_SERIES_COLUMNS)
_STUDY_END = _SERIES_END + len(_STUDY_COLUMNS)


def _columns(table: Any, names: tuple[str, ...], prefix: str) -> list[Any]:
    """The columns, recorded attributes as their JSON text (parsed once per distinct text, see _recorded)."""
    return [(cast(table.__table__.c[name], Text) if name == "attributes" else table.__table__.c[name]).label(prefix + name) for name in names]


def _split_row(row: Any) -> tuple[_SeriesRow | None, _StudyRow, _PatientRow]:
    """A row of the labelled columns (series, study, patient; or study, patient) as named tuples: plain columns cost far less than ORM entities."""
    values = tuple(row)
    if len(values) == _STUDY_END + len(_PATIENT_COLUMNS):
        return _SeriesRow._make(values[:_SERIES_END]), _StudyRow._make(values[_SERIES_END:_STUDY_END]), _PatientRow._make(values[_STUDY_END:])
    middle = len(_STUDY_COLUMNS)
    return None, _StudyRow._make(values[:middle]), _PatientRow._make(values[middle:])


def _joined_study(statement: Select[Any]) -> Select[Any]:
    return statement.join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]


def _keys_page(session: Session, statement: Select[Any], limit: int, offset: int) -> tuple[list[Any], bool]:
    """One page of primary keys. Sorting and skipping happen on these narrow rows; only the page's rows are read whole."""
    keys = list(session.connection().execute(statement.limit(limit + 1).offset(offset)).scalars())  # Core: no ORM result processing
    return keys[:limit], len(keys) > limit


def _in_order(rows: list[Any], keys: list[Any], key: Any) -> list[Any]:
    by_key = {key(row): row for row in rows}
    return [by_key[k] for k in keys if k in by_key]


def _studies(
    session: Session, conditions: list[ColumnElement[bool]], joins: set[str], limit: int, offset: int, fields: frozenset[str] | None
) -> tuple[list[dict[str, Any]], bool]:
    keys = select(Study.study_uid)
    if "patient" in joins:
        keys = _joined_study(keys)
    keys = keys.where(*conditions).order_by(Study.study_date.desc(), Study.study_uid)  # type: ignore[attr-defined]
    uids, more = _keys_page(session, keys, limit, offset)
    statement = _joined_study(select(*_columns(Study, _STUDY_COLUMNS, "st_"), *_columns(Patient, _PATIENT_COLUMNS, "pa_")))
    found = [_split_row(row)[1:] for row in session.connection().execute(statement.where(Study.study_uid.in_(uids)))]  # type: ignore[attr-defined]
    rows = _in_order(found, uids, lambda row: row[0].study_uid)
    aggregates = _study_aggregates(session, [study.study_uid for study, _ in rows], fields is None or "SOPClassesInStudy" in fields)
    return [_dicom_json(fields, [*_study_layers(study, patient), aggregates[study.study_uid]]) for study, patient in rows], more


def _series_layers(series: Any) -> list[dict[str, Any] | str]:
    defaults: dict[str, Any] = {"SeriesDescription": series.series_description}
    if series.series_number is not None:
        defaults["SeriesNumber"] = series.series_number
    own = {"SeriesInstanceUID": series.series_uid, "StudyInstanceUID": series.study_uid, "Modality": series.modality,
           "NumberOfSeriesRelatedInstances": series.instance_count}
    return [defaults, series.attributes, own]


def _series_values(series: Any) -> dict[str, Any]:
    return _merged(_series_layers(series))


def _series(
    session: Session, conditions: list[ColumnElement[bool]], upper: list[ColumnElement[bool]], joins: set[str], limit: int,
    offset: int, fields: frozenset[str] | None,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of series. Conditions on the study or patient become `study_uid IN (matching studies)`: the series
    are then walked in the order index, study by study, with no sort of every match (a join sorted them all)."""
    keys = select(Series.series_uid).where(*conditions)
    if upper:
        studies = select(Study.study_uid)
        if "patient" in joins:
            studies = studies.join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]
        keys = keys.where(Series.study_uid.in_(studies.where(*upper)))  # type: ignore[attr-defined]
    keys = keys.order_by(Series.study_uid, Series.series_number, Series.series_uid)
    uids, more = _keys_page(session, keys, limit, offset)
    statement = (
        select(*_columns(Series, _SERIES_COLUMNS, "se_"), *_columns(Study, _STUDY_COLUMNS, "st_"), *_columns(Patient, _PATIENT_COLUMNS, "pa_"))
        .join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
        .join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]
        .where(Series.series_uid.in_(uids))  # type: ignore[attr-defined]
    )
    rows = _in_order([_split_row(row) for row in session.connection().execute(statement)], uids, lambda row: row[0].series_uid)
    return [_dicom_json(fields, [*_study_layers(study, patient), *_series_layers(series)]) for series, study, patient in rows], more


def _instances(
    session: Session, conditions: list[ColumnElement[bool]], post_filters: dict[str, str], limit: int, offset: int,
    fields: frozenset[str] | None,
) -> tuple[list[dict[str, Any]], bool]:
    statement = (
        select(Instance, Series, Study, Patient, InstanceDocument.document)
        .join(Series, Series.series_uid == Instance.series_uid)  # type: ignore[arg-type]
        .join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
        .join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]
        .join(InstanceDocument, InstanceDocument.sop_instance_uid == Instance.sop_instance_uid, isouter=True)  # type: ignore[arg-type]
        .where(*conditions)
        .order_by(Instance.series_uid, Instance.instance_number, Instance.sop_instance_uid)
    )
    if post_filters:
        # Attributes only the instance documents hold: matched here, over at most MAX_RESULTS candidates.
        rows = [r for r in session.execute(statement.limit(MAX_RESULTS)).all() if _document_matches(r[4], post_filters)]
        rows, more = rows[offset : offset + limit], len(rows) > offset + limit
    else:
        rows, more = _page(session, statement, limit, offset)
    items = []
    for instance, series, study, patient, document in rows:
        values = {**_study_values(study, patient), **_series_values(series), "SOPInstanceUID": instance.sop_instance_uid,
                  "SOPClassUID": instance.sop_class_uid, "InstanceNumber": instance.instance_number,
                  "AvailableTransferSyntaxUID": instance.transfer_syntax_uid}
        item = json.loads(document) if document else {}
        item.update(attributes_json(values, only=fields))
        if instance.number_of_frames > 1 or "00280008" in item:
            item["00280008"] = {"vr": "IS", "Value": [instance.number_of_frames]}
        items.append(item)
    return items, more


def _document_matches(document: str | None, filters: dict[str, str]) -> bool:
    if document is None:
        return False
    parsed = json.loads(document)
    for keyword, wanted in filters.items():
        element = parsed.get(tag_hex(int(tag_for_keyword(keyword) or 0)), {})
        values = [v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in element.get("Value", [])]
        options = _split(wanted) if not _wildcard(wanted) else [wanted]
        if not any(fnmatch.fnmatchcase(v, option) for v in values for option in options):
            return False
    return True
