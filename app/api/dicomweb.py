"""`/dicomweb`: QIDO-RS, WADO-RS and STOW-RS (PS3.18) as OHIF Viewer v3 and dicomweb-client use them.

Searches are answered from the index (core.dicom_query); WADO-RS (metadata from the documents
kept at ingest, retrieval from the files) lives in app.api.wado_rs, under the same prefix; stores go
through the same intake as the DICOM receiver (ingest.intake). Authentication is the API's
(app.auth guards the whole prefix); CORS for viewers served elsewhere is set up in
app.server from `VIREO_CORS_ORIGINS`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydicom.datadict import dictionary_VR, keyword_for_tag
from starlette.concurrency import run_in_threadpool

from app.api.dicomweb_common import DICOM_JSON, checked_uid, dicomweb_root
from app.api.multipart import (
    MediaRange, MultipartError, iter_parts, parse_accept, parse_content_type,
)
from app.api.search_params import whole_number
from app.runtime import current_services
from core import dicom_query
from core.datasets import DatasetError, check_name
from core.dicom_json import UnknownAttribute, attributes_json, parse_attribute, tag_hex, vr_of
from ingest.intake import DATASET_MISMATCH_WARNING, Origin, StoreRefused, error_comment, identify, transfer_syntax_of

log = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

MAX_STOW_PART = 2 * 1024**3
DEFAULT_LIMIT = 1000

STUDY_FIELDS = (
    "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy", "ReferringPhysicianName",
    "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)
SERIES_FIELDS = (
    "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "SeriesDate", "SeriesTime", "BodyPartExamined",
    "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "InstanceAvailability", "RetrieveURL", "StudyInstanceUID",
)
INSTANCE_FIELDS = (
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber", "Rows", "Columns",
    "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID",
)
# emptyvaluematching / multiplevaluematching (PS3.18 8.3.4.5-6) are accepted and change nothing: Vireo always
# matches `""` as an empty value (PS3.4 C.2.2.2.7), and lists where DICOM allows them (UIDs, codes, names).
CONTROL_PARAMETERS = frozenset({"limit", "offset", "fuzzymatching", "includefield", "emptyvaluematching", "multiplevaluematching"})


_root = dicomweb_root
_uid = checked_uid


# --------------------------------------------------------------------------- QIDO-RS


QIDO_MEDIA_TYPES = (DICOM_JSON, "application/json")


def _qido_media_type(request: Request) -> str:
    """The media type to answer in: DICOM JSON (PS3.18 F.2), as `application/json` when only that is accepted.
    The XML form (`multipart/related; type="application/dicom+xml"`, optional for origin servers) is not produced."""
    accepted = parse_accept(request.headers.get("accept"))
    for media in accepted or [MediaRange(DICOM_JSON)]:
        if media.media_type in QIDO_MEDIA_TYPES:
            return media.media_type
        if media.media_type in ("*/*", "application/*"):
            return DICOM_JSON
    raise HTTPException(406, "search results are served as application/dicom+json or application/json; "
                             "multipart/related (DICOM XML) is not offered")


def _keyword(name: str, what: str) -> str:
    try:
        keyword = parse_attribute(name)[1]
    except UnknownAttribute as exc:
        raise HTTPException(400, f"{what}: {exc}") from None
    if not keyword:
        raise HTTPException(400, f"cannot match on {name}: private or unknown attributes are not indexed")
    return keyword


def _sequence_path(name: str) -> list[str]:
    """`ProcedureCodeSequence.CodeValue` (keywords or tags) → keywords; every step but the last must be a sequence."""
    keywords = [_keyword(part, "unknown query parameter") for part in name.split(".")]
    for keyword in keywords[:-1]:
        if vr_of(keyword) != "SQ":
            raise HTTPException(400, f"{name}: {keyword} is not a sequence, so nothing can be matched inside it")
    return keywords


def _with_item_key(sequences: dict[str, Any], path: list[str], value: str | None) -> None:
    """Add `path` (sequence, …, item keyword) to the sequence keys; value None only asks for the sequence back."""
    keys = sequences.setdefault(path[0], {})
    for keyword in path[1:-1]:
        keys = keys.setdefault(keyword, {})
    if len(path) > 1 and value is not None:
        keys[path[-1]] = "\\".join(v for v in (keys.get(path[-1], ""), value) if v)


def _match_keys(params: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """Matching values by keyword, and sequence keys from dotted attribute paths (PS3.18 8.3.4.1)."""
    matches: dict[str, str] = {}
    sequences: dict[str, Any] = {}
    for name, value in params.multi_items():
        if name.lower() in CONTROL_PARAMETERS:
            continue
        if "." in name:
            path = _sequence_path(name)
            if value and vr_of(path[-1]) == "SQ":
                raise HTTPException(400, f"{name}: {path[-1]} is a sequence; match on an attribute inside it")
            _with_item_key(sequences, path, value)
            continue
        keyword = _keyword(name, "unknown query parameter")
        if vr_of(keyword) == "SQ":
            sequences.setdefault(keyword, {})  # a whole sequence: universal, its items returned
            continue
        # A repeated attribute lists alternatives, as a comma- or backslash-separated value does.
        matches[keyword] = "\\".join(v for v in (matches.get(keyword, ""), value) if v)
    return matches, sequences


def _included(params: Any, sequences: dict[str, Any]) -> tuple[set[int], bool]:
    """The tags includefield asks for (sequences among them are returned whole), and whether it asks for all."""
    include: set[int] = set()
    include_all = False
    for raw in params.getlist("includefield"):
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name.lower() == "all":
                include_all = True
                continue
            try:
                tag, keyword = parse_attribute(name.split(".")[0])
            except UnknownAttribute as exc:
                raise HTTPException(400, f"includefield: {exc}") from None
            if "." in name or (keyword and vr_of(keyword) == "SQ"):
                _with_item_key(sequences, _sequence_path(name)[:1], None)
            include.add(tag)
    return include, include_all


def _qido(request: Request, level: str, scope: dict[str, str]) -> Response:
    media_type = _qido_media_type(request)
    params = request.query_params
    matches, sequences = _match_keys(params)
    matches.update(scope)
    include, include_all = _included(params, sequences)
    limit = whole_number("limit", params.get("limit"), DEFAULT_LIMIT, None)
    offset = whole_number("offset", params.get("offset"), 0, None) or 0
    fuzzy = (params.get("fuzzymatching") or "").lower() == "true"
    fields = {"STUDY": STUDY_FIELDS, "SERIES": SERIES_FIELDS, "IMAGE": INSTANCE_FIELDS}[level]
    if level == "SERIES" and "StudyInstanceUID" not in scope:
        fields = fields + STUDY_FIELDS
    if level == "IMAGE":
        fields = fields + (SERIES_FIELDS if "SeriesInstanceUID" not in scope else ()) + (STUDY_FIELDS if "StudyInstanceUID" not in scope else ())
    matched = {parse_attribute(k)[0] for k in (*matches, *sequences)}
    wanted = {parse_attribute(k)[0] for k in fields} | include | matched
    keep = None if include_all else frozenset(k for k in (keyword_for_tag(t) for t in wanted) if k)
    query = dicom_query.Query(
        level=level, matches=matches, sequences=sequences, fuzzy=fuzzy, limit=min(limit or 0, dicom_query.MAX_RESULTS), offset=offset,
        fields=keep,
    )
    try:
        with current_services().db.session() as session:
            result = dicom_query.search(session, query)
    except dicom_query.QueryError as exc:
        raise HTTPException(400, str(exc)) from exc
    root = _root(request)
    always = {tag_hex(tag): _empty(tag) for tag in include | matched}
    wanted_hex = None if include_all else frozenset({*(tag_hex(tag) for tag in wanted), *always})
    items = [_qido_item(item, level, root, wanted_hex, always) for item in result.items]
    headers = {}
    warnings = []
    if result.more:
        warnings.append('299 Vireo "There are additional results that can be requested"')
    if result.ignored:
        warnings.append(f'299 Vireo "The following attributes were not matched at this level: {", ".join(result.ignored)}"')
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    return Response(orjson.dumps(items), media_type=media_type, headers=headers)


def _qido_item(item: dict[str, Any], level: str, root: str, wanted: frozenset[str] | None, always: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One QIDO result: the item with its retrieve URL and availability, only `wanted` tags (hex) unless all were asked for,
    and the `always` ones (matching keys) present even when empty."""
    study = (item.get("0020000D", {}).get("Value") or [""])[0]
    url = f"{root}/studies/{study}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{(item.get('0020000E', {}).get('Value') or [''])[0]}"
    if level == "IMAGE":
        url += f"/instances/{(item.get('00080018', {}).get('Value') or [''])[0]}"
    merged = {**always, **item, "00080056": {"vr": "CS", "Value": ["ONLINE"]}, "00081190": {"vr": "UR", "Value": [url]}}
    if wanted is not None:
        merged = {key: value for key, value in merged.items() if key in wanted}
    return {key: merged[key] for key in sorted(merged)}


def _empty(tag: int) -> dict[str, Any]:
    try:
        return {"vr": dictionary_VR(tag).split(" ")[0]}
    except KeyError:
        return {"vr": "UN"}


@router.get("/studies", summary="QIDO-RS: search for studies")
def search_studies(request: Request) -> Response:
    return _qido(request, "STUDY", {})


@router.get("/series", summary="QIDO-RS: search for series")
def search_series(request: Request) -> Response:
    return _qido(request, "SERIES", {})


@router.get("/instances", summary="QIDO-RS: search for instances")
def search_instances(request: Request) -> Response:
    return _qido(request, "IMAGE", {})


@router.get("/studies/{study}/series", summary="QIDO-RS: search for series of a study")
def search_study_series(study: str, request: Request) -> Response:
    return _qido(request, "SERIES", {"StudyInstanceUID": _uid(study, "study")})


@router.get("/studies/{study}/instances", summary="QIDO-RS: search for instances of a study")
def search_study_instances(study: str, request: Request) -> Response:
    return _qido(request, "IMAGE", {"StudyInstanceUID": _uid(study, "study")})


@router.get("/studies/{study}/series/{series}/instances", summary="QIDO-RS: search for instances of a series")
def search_series_instances(study: str, series: str, request: Request) -> Response:
    return _qido(request, "IMAGE", {"StudyInstanceUID": _uid(study, "study"), "SeriesInstanceUID": _uid(series, "series")})


# --------------------------------------------------------------------------- STOW-RS


async def _stow(request: Request, study: str | None) -> Response:
    content_type = parse_content_type(request.headers.get("content-type", ""))
    if content_type.media_type != "multipart/related":
        raise HTTPException(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    if content_type.part_type not in ("", "application/dicom"):
        raise HTTPException(415, f"only application/dicom parts can be stored, not {content_type.part_type}")
    boundary = content_type.params.get("boundary")
    if not boundary:
        raise HTTPException(400, "the Content-Type has no boundary")
    dataset = request.query_params.get("dataset") or None
    if dataset is not None:
        try:
            check_name(dataset)
        except DatasetError as exc:
            raise HTTPException(400, str(exc)) from exc
    study_uid = _uid(study, "study") if study else None
    intake = current_services().receiver.intake
    origin = Origin(dataset=dataset, calling_aet="STOW-RS", peer_address=request.client.host if request.client else "")
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    root = _root(request)
    try:
        async for part in iter_parts(request.stream(), boundary, MAX_STOW_PART):
            part_type = parse_content_type(part.content_type).media_type if part.content_type else "application/dicom"
            if part_type != "application/dicom":
                failed.append(_failure(None, None, 0xC000, f"part of type {part_type} is not application/dicom"))
                continue
            try:
                item = await run_in_threadpool(intake.ingest, part.content, transfer_syntax_of(part.content), origin, study_uid=study_uid)
            except StoreRefused as refused:
                failed.append(_failure(*identify(part.content), refused.status, refused.comment))
                continue
            meta = item.meta
            stored.append(_stored(meta.sop_class_uid, meta.sop_instance_uid,
                                  f"{root}/studies/{meta.study_uid}/series/{meta.series_uid}/instances/{meta.sop_instance_uid}", item.warning))
    except MultipartError as exc:
        if not stored and not failed:
            raise HTTPException(400, str(exc)) from exc
        failed.append(_failure(None, None, 0xC000, f"the rest of the request could not be read: {exc}"))
    body: dict[str, Any] = {}
    if study_uid or stored:
        body.update(attributes_json({"RetrieveURL": f"{root}/studies/{study_uid}" if study_uid else ""}))
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    warned = any("00081196" in s for s in stored)
    # PS3.18 10.5.3: 202 when some instances were stored but failures or warnings exist.
    status = 409 if not stored and failed else 202 if failed or warned else 200
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type=DICOM_JSON)


def _stored(sop_class: str, sop_instance: str, url: str, warning: str | None) -> dict[str, Any]:
    """A ReferencedSOPSequence item; a warning (stored anyway) is its WarningReason with the reason as an ErrorComment."""
    item = attributes_json({"ReferencedSOPClassUID": sop_class, "ReferencedSOPInstanceUID": sop_instance, "RetrieveURL": url})
    if warning:
        item.update(attributes_json({"WarningReason": DATASET_MISMATCH_WARNING}))
        item["00000902"] = {"vr": "LO", "Value": [error_comment(warning)]}
    return dict(sorted(item.items()))


def _failure(sop_class: str | None, sop_instance: str | None, reason: int, comment: str) -> dict[str, Any]:
    item = attributes_json({"ReferencedSOPClassUID": sop_class or "", "ReferencedSOPInstanceUID": sop_instance or "", "FailureReason": reason})
    item["00000902"] = {"vr": "LO", "Value": [error_comment(comment)]}  # ErrorComment, so a person learns why
    return item


@router.post("/studies", summary="STOW-RS: store instances (optional ?dataset=name)")
async def store_instances(request: Request) -> Response:
    return await _stow(request, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study (optional ?dataset=name)")
async def store_study_instances(study: str, request: Request) -> Response:
    return await _stow(request, study)
