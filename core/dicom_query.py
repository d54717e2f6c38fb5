"""DICOM attribute matching over the index: the engine behind QIDO-RS and C-FIND.

Both ask the same question — which patients, studies, series or instances match these
attribute values, under DICOM's matching rules (core.attribute_matching: single value,
universal, empty value, wildcard, UID list, date/time range, sequences) — so both are
answered here, from the patient/study/series/instance tables and the instance documents
kept at ingest, never by reading files. Results are DICOM JSON objects carrying every
attribute the index knows at that level; callers keep the ones their client asked for.

Person names match through their folded form (core.person_names: any case, accents, any
component group); with fuzzy matching a value also matches the start of any name component
("jo" finds "Doe^John"). Attributes no index column holds (and sequences) are matched on the
instance documents, over at most MAX_RESULTS candidates. Matching on an attribute the index
cannot answer at a level is not an error: it is reported in `QueryResult.ignored`, as QIDO-RS
reports it in a Warning header.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Select, Text, cast, exists, func, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from core.attribute_matching import (
    QueryError,
    SequenceKey,
    SqlMatcher,
    document_matches,
    is_empty_value,
    is_universal,
    is_universal_sequence,
    is_wildcard,
    returned_sequence,
    split_values,
)
from core.dicom_json import attributes_json, element_json, key_of, vr_of
from core.index_attributes import LEVELS, RETURN_ONLY, attribute_expr, level_of, name_exprs
from core.models import Instance, InstanceDocument, Patient, Series, Study

__all__ = ["LEVELS", "MAX_RESULTS", "Query", "QueryError", "QueryResult", "level_of", "search"]

MAX_RESULTS = 10_000


def _nothing_to_wait_for() -> None:
    return None


# Called before a query that reads instance documents (instance level, sequences, attributes no index column
# holds): the main process may still have to make those of instances a receiver worker has just stored
# (ingest.document_backfill). app.services sets it; core does not import ingest.
documents_ready: Callable[[], None] = _nothing_to_wait_for


@dataclass
class Query:
    level: str
    matches: dict[str, str] = field(default_factory=dict)  # keyword → DICOM matching value ('' is universal, '""' empty)
    sequences: dict[str, SequenceKey] = field(default_factory=dict)  # sequence keyword → item keys ({}: universal, returned whole)
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    fields: frozenset[str] | None = None  # keywords the caller keeps (None: every attribute the index has)


@dataclass
class QueryResult:
    items: list[dict[str, Any]]  # DICOM JSON objects
    more: bool  # more results exist beyond `limit`
    ignored: list[str]  # keywords that could not be matched at this level


# --------------------------------------------------------------------------- search


@dataclass
class _Plan:
    """What a query becomes: SQL conditions, and what only the instance documents can answer."""

    own: list[ColumnElement[bool]] = field(default_factory=list)  # on the query level's own table (instances: and the series)
    upper: list[ColumnElement[bool]] = field(default_factory=list)  # on the study or patient
    joins: set[str] = field(default_factory=set)  # tables above the query level the conditions need ("study", "patient")
    document_filters: dict[str, str] = field(default_factory=dict)  # instance attributes no index column holds
    sequences: dict[str, SequenceKey] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


@dataclass
class _DocumentMatch:
    """Matching (and the sequences returned) on instance documents; a study or series is represented by the
    first instance of each of its series."""

    filters: dict[str, str]
    sequences: dict[str, SequenceKey]
    fuzzy: bool

    @property
    def filtering(self) -> bool:
        return bool(self.filters) or not all(is_universal_sequence(keys) for keys in self.sequences.values())

    def first_match(self, documents: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((d for d in documents if document_matches(d, self.filters, self.sequences, self.fuzzy)), None)

    def returned(self, document: dict[str, Any] | None) -> dict[str, Any]:
        """The sequences a result carries: the matching items of each sequence key."""
        out: dict[str, Any] = {}
        for keyword, keys in self.sequences.items():
            key = key_of(keyword)
            if key is not None:
                out[key[0]] = returned_sequence((document or {}).get(key[0]), keys, self.fuzzy)
        return out


def search(session: Session, query: Query) -> QueryResult:
    """One page of matches at the query's level, as DICOM JSON (QueryError when the query cannot be run)."""
    if query.level not in LEVELS:
        raise QueryError(f"query level must be one of {', '.join(LEVELS)}, not {query.level!r}")
    dialect = session.get_bind().dialect.name
    plan = _plan(query, SqlMatcher(dialect, query.fuzzy), dialect)
    documents = _DocumentMatch(plan.document_filters, plan.sequences, query.fuzzy)
    if query.level == "IMAGE" or plan.document_filters or plan.sequences:
        documents_ready()
    limit = MAX_RESULTS if query.limit is None else max(0, min(query.limit, MAX_RESULTS))
    page = _Paging(session, max(0, query.offset), limit, query.level, documents)
    conditions = plan.own + plan.upper
    if query.level == "PATIENT":
        items, more = _patients(page, conditions, query.fields)
    elif query.level == "STUDY":
        items, more = _studies(page, conditions, plan.joins, query.fields)
    elif query.level == "SERIES":
        items, more = _series(page, plan.own, plan.upper, plan.joins, query.fields)
    else:
        items, more = _instances(page, conditions, query.fields)
    return QueryResult(items=items, more=more, ignored=plan.ignored)


def _plan(query: Query, matcher: SqlMatcher, dialect: str) -> _Plan:
    plan = _Plan()
    order = LEVELS.index(query.level)
    for keyword, value in query.matches.items():
        if keyword in RETURN_ONLY or is_universal(value):
            continue
        level = level_of(keyword)
        if keyword == "ModalitiesInStudy":
            if order < 1:
                plan.ignored.append(keyword)
                continue
            plan.upper.append(_modalities_in_study(matcher, value))
            plan.joins.add("study")
            continue
        if LEVELS.index(level) > order:
            plan.ignored.append(keyword)  # a key below the query level (PS3.4 C.4.1.1.3.1): not a matching key here
            continue
        if level == "PATIENT" and order > 0 and keyword not in ("PatientID",):
            level = "STUDY"  # studies carry their patient's attributes as each study recorded them
        if level == "IMAGE" and (vr_of(keyword) == "PN" or attribute_expr("IMAGE", keyword) is None):
            plan.document_filters[keyword] = value
            continue
        condition = _condition(level, keyword, value, dialect, query.fuzzy)
        if condition is not None:
            (plan.upper if level in ("PATIENT", "STUDY") else plan.own).append(condition)
            plan.joins.update({"PATIENT": ("study", "patient"), "STUDY": ("study",)}.get(level, ()))
    for keyword, keys in query.sequences.items():
        if LEVELS.index(level_of(keyword)) > order:
            plan.ignored.append(keyword)
        else:
            plan.sequences[keyword] = keys
    return plan


_KEYS: dict[str, Any] = {"PATIENT": Patient.id, "STUDY": Study.study_uid, "SERIES": Series.series_uid}


@lru_cache(maxsize=1024)
def _condition(level: str, keyword: str, value: str, dialect: str, fuzzy: bool) -> ColumnElement[bool] | None:
    """The SQL of one matching key, built once per distinct key and value (SQL expressions are immutable):
    viewers repeat their searches, and building a name match costs more than SQLite spends running it."""
    matcher = SqlMatcher(dialect, fuzzy)
    if vr_of(keyword) == "PN":
        names = name_exprs(level, keyword, dialect)
        assert names is not None
        return matcher.person_name(*names, value, key=_KEYS[level])
    found = attribute_expr(level, keyword, dialect)
    assert found is not None
    return matcher.condition(found[0], keyword, value, found[1])


def _modalities_in_study(matcher: SqlMatcher, value: str) -> ColumnElement[bool]:
    """ModalitiesInStudy matches a study holding a series of one of the modalities (`""`: a study with none)."""
    member = select(Series.series_uid).where(Series.study_uid == Study.study_uid)
    if is_empty_value(value):
        return ~exists(member.where(Series.modality != ""))
    if is_wildcard(value):
        return exists(member.where(matcher.condition(Series.modality, "Modality", value)))  # type: ignore[arg-type]
    return exists(member.where(Series.modality.in_(split_values(value))))  # type: ignore[attr-defined]


@dataclass
class _Paging:
    """One page of results: sorting and skipping on narrow key rows, then (when documents must be
    matched) on the keys whose documents match, at most MAX_RESULTS of them."""

    session: Session
    offset: int
    limit: int
    level: str
    documents: _DocumentMatch

    def keys(self, statement: Select[Any]) -> tuple[list[Any], bool, dict[Any, dict[str, Any]]]:
        """The page's keys, whether more follow, and each key's returned sequences."""
        connection = self.session.connection()
        if not self.documents.filtering:
            found = list(connection.execute(statement.limit(self.limit + 1).offset(self.offset)).scalars())
            keys = found[: self.limit]
            chosen = self._chosen(keys) if self.documents.sequences else {}
            return keys, len(found) > self.limit, {k: self.documents.returned(chosen.get(k)) for k in chosen}
        candidates = list(connection.execute(statement.limit(MAX_RESULTS)).scalars())
        representatives = _representatives(self.session, self.level, candidates)
        matched = {key: self.documents.first_match(representatives.get(key, [])) for key in candidates}
        accepted = [key for key in candidates if matched[key] is not None]
        keys = accepted[self.offset : self.offset + self.limit]
        return keys, len(accepted) > self.offset + self.limit, {k: self.documents.returned(matched[k]) for k in keys}

    def _chosen(self, keys: list[Any]) -> dict[Any, dict[str, Any]]:
        representatives = _representatives(self.session, self.level, keys)
        return {key: representatives[key][0] for key in keys if representatives.get(key)}


def _representatives(session: Session, level: str, keys: list[Any]) -> dict[Any, list[dict[str, Any]]]:
    """Instance documents standing for each key: its own (instances), else the first instance of each of its series."""
    found: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    owner = {"IMAGE": InstanceDocument.sop_instance_uid, "SERIES": Series.series_uid, "STUDY": Series.study_uid, "PATIENT": Study.patient_pk}[level]
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        statement = select(owner, InstanceDocument.document)
        if level == "IMAGE":
            statement = statement.where(owner.in_(chunk))  # type: ignore[attr-defined]
        else:
            series = select(Series.series_uid).where(owner.in_(chunk))  # type: ignore[attr-defined]
            if level == "PATIENT":
                series = series.join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
                statement = statement.join(Series, Series.series_uid == InstanceDocument.series_uid).join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
            else:
                statement = statement.join(Series, Series.series_uid == InstanceDocument.series_uid)  # type: ignore[arg-type]
            firsts = select(func.min(InstanceDocument.sop_instance_uid)).where(InstanceDocument.series_uid.in_(series)).group_by(InstanceDocument.series_uid)  # type: ignore[attr-defined]
            statement = statement.where(InstanceDocument.sop_instance_uid.in_(firsts))  # type: ignore[attr-defined]
        for key, document in session.connection().execute(statement):
            found[key].append(json.loads(document))
    return found


def _patients(page: _Paging, conditions: list[ColumnElement[bool]], fields: frozenset[str] | None) -> tuple[list[dict[str, Any]], bool]:
    pks, more, extras = page.keys(select(Patient.id).where(*conditions).order_by(Patient.patient_id))
    session = page.session
    found = [row[0] for row in session.execute(select(Patient).where(Patient.id.in_(pks)))] if pks else []  # type: ignore[union-attr]
    rows = _in_order(found, pks, lambda patient: patient.id)
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
    for patient in rows:
        studies, series, instances = counts.get(patient.id, (0, 0, 0))
        values = {**patient.attributes, "PatientID": patient.patient_id, "PatientName": patient.patient_name,
                  "NumberOfPatientRelatedStudies": studies, "NumberOfPatientRelatedSeries": series,
                  "NumberOfPatientRelatedInstances": instances}
        items.append({**attributes_json(values, only=fields), **extras.get(patient.id, {})})
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


def _in_order(rows: list[Any], keys: list[Any], key: Any) -> list[Any]:
    by_key = {key(row): row for row in rows}
    return [by_key[k] for k in keys if k in by_key]


def _studies(page: _Paging, conditions: list[ColumnElement[bool]], joins: set[str], fields: frozenset[str] | None) -> tuple[list[dict[str, Any]], bool]:
    keys = select(Study.study_uid)
    if "patient" in joins:
        keys = _joined_study(keys)
    keys = keys.where(*conditions).order_by(Study.study_date.desc(), Study.study_uid)  # type: ignore[attr-defined]
    uids, more, extras = page.keys(keys)
    session = page.session
    statement = _joined_study(select(*_columns(Study, _STUDY_COLUMNS, "st_"), *_columns(Patient, _PATIENT_COLUMNS, "pa_")))
    found = [_split_row(row)[1:] for row in session.connection().execute(statement.where(Study.study_uid.in_(uids)))]  # type: ignore[attr-defined]
    rows = _in_order(found, uids, lambda row: row[0].study_uid)
    aggregates = _study_aggregates(session, [study.study_uid for study, _ in rows], fields is None or "SOPClassesInStudy" in fields)
    return [{**_dicom_json(fields, [*_study_layers(study, patient), aggregates[study.study_uid]]), **extras.get(study.study_uid, {})}
            for study, patient in rows], more


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
    page: _Paging, conditions: list[ColumnElement[bool]], upper: list[ColumnElement[bool]], joins: set[str], fields: frozenset[str] | None,
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
    uids, more, extras = page.keys(keys)
    statement = (
        select(*_columns(Series, _SERIES_COLUMNS, "se_"), *_columns(Study, _STUDY_COLUMNS, "st_"), *_columns(Patient, _PATIENT_COLUMNS, "pa_"))
        .join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
        .join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]
        .where(Series.series_uid.in_(uids))  # type: ignore[attr-defined]
    )
    rows = _in_order([_split_row(row) for row in page.session.connection().execute(statement)], uids, lambda row: row[0].series_uid)
    return [{**_dicom_json(fields, [*_study_layers(study, patient), *_series_layers(series)]), **extras.get(series.series_uid, {})}
            for series, study, patient in rows], more


def _instances(page: _Paging, conditions: list[ColumnElement[bool]], fields: frozenset[str] | None) -> tuple[list[dict[str, Any]], bool]:
    statement = (
        select(Instance, Series, Study, Patient, InstanceDocument.document)
        .join(Series, Series.series_uid == Instance.series_uid)  # type: ignore[arg-type]
        .join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
        .join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]
        .join(InstanceDocument, InstanceDocument.sop_instance_uid == Instance.sop_instance_uid, isouter=True)  # type: ignore[arg-type]
        .where(*conditions)
        .order_by(Instance.series_uid, Instance.instance_number, Instance.sop_instance_uid)
    )
    documents = page.documents
    if documents.filtering:
        # Attributes only the instance documents hold: matched here, over at most MAX_RESULTS candidates.
        candidates = [(row, json.loads(row[4])) for row in page.session.execute(statement.limit(MAX_RESULTS)).all() if row[4]]
        matched = [(row, document) for row, document in candidates if documents.first_match([document]) is not None]
        rows, more = matched[page.offset : page.offset + page.limit], len(matched) > page.offset + page.limit
    else:
        found = list(page.session.execute(statement.limit(page.limit + 1).offset(page.offset)).all())
        rows, more = [(row, json.loads(row[4]) if row[4] else {}) for row in found[: page.limit]], len(found) > page.limit
    items = []
    for (instance, series, study, patient, _), document in rows:
        values = {**_study_values(study, patient), **_series_values(series), "SOPInstanceUID": instance.sop_instance_uid,
                  "SOPClassUID": instance.sop_class_uid, "InstanceNumber": instance.instance_number,
                  "AvailableTransferSyntaxUID": instance.transfer_syntax_uid}
        item = {**document, **attributes_json(values, only=fields), **documents.returned(document)}
        if instance.number_of_frames > 1 or "00280008" in item:
            item["00280008"] = {"vr": "IS", "Value": [instance.number_of_frames]}
        items.append(item)
    return items, more
