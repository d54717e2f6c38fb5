"""`/dicomweb`: QIDO-RS, WADO-RS and STOW-RS (PS3.18) as OHIF Viewer v3 and dicomweb-client use them.

Searches are answered from the index (core.dicom_query), metadata from the documents kept
at ingest (core.instance_documents), retrieval from the files (ingest.wado), and stores go
through the same intake as the DICOM receiver (ingest.intake). Authentication is the API's
(app.auth guards the whole prefix); CORS for viewers served elsewhere is set up in
app.server from `VIREO_CORS_ORIGINS`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.datadict import dictionary_VR, keyword_for_tag
from starlette.concurrency import run_in_threadpool

from app.api.multipart import (
    MediaRange, MultipartError, iter_parts, multipart_content_type, multipart_stream, new_boundary, parse_accept, parse_content_type,
)
from app.api.search_params import whole_number
from app.runtime import current_services
from core import dicom_query, instance_documents
from core.datasets import DatasetError, check_name
from core.dicom_json import UnknownAttribute, attributes_json, parse_attribute, tag_hex, with_base
from core.pacs_store import InvalidUID, clean_uid
from ingest import wado
from ingest.intake import Origin, StoreRefused, identify, transfer_syntax_of

log = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"
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
CONTROL_PARAMETERS = frozenset({"limit", "offset", "fuzzymatching", "includefield"})


def _root(request: Request) -> str:
    """This request's DICOMweb root URL (BulkDataURIs and RetrieveURLs are built on it)."""
    base = str(request.base_url).rstrip("/")
    return f"{base}{router.prefix}"


def _uid(value: str, what: str) -> str:
    try:
        return clean_uid(value)
    except InvalidUID:
        raise HTTPException(400, f"{what} {value!r} is not a valid UID") from None


# --------------------------------------------------------------------------- QIDO-RS


def _qido(request: Request, level: str, scope: dict[str, str]) -> Response:
    params = request.query_params
    matches: dict[str, str] = {}
    for name, value in params.multi_items():
        if name.lower() in CONTROL_PARAMETERS:
            continue
        try:
            tag, keyword = parse_attribute(name)
        except UnknownAttribute as exc:
            raise HTTPException(400, f"unknown query parameter: {exc}") from None
        if not keyword:
            raise HTTPException(400, f"cannot match on {name}: private or unknown attributes are not indexed")
        # A repeated attribute lists alternatives, as a comma- or backslash-separated value does.
        matches[keyword] = "\\".join(v for v in (matches.get(keyword, ""), value) if v)
    matches.update(scope)
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
                include.add(parse_attribute(name)[0])
            except UnknownAttribute as exc:
                raise HTTPException(400, f"includefield: {exc}") from None
    limit = whole_number("limit", params.get("limit"), DEFAULT_LIMIT, None)
    offset = whole_number("offset", params.get("offset"), 0, None) or 0
    fuzzy = (params.get("fuzzymatching") or "").lower() == "true"
    fields = {"STUDY": STUDY_FIELDS, "SERIES": SERIES_FIELDS, "IMAGE": INSTANCE_FIELDS}[level]
    if level == "SERIES" and "StudyInstanceUID" not in scope:
        fields = fields + STUDY_FIELDS
    if level == "IMAGE":
        fields = fields + (SERIES_FIELDS if "SeriesInstanceUID" not in scope else ()) + (STUDY_FIELDS if "StudyInstanceUID" not in scope else ())
    wanted = {parse_attribute(k)[0] for k in fields} | include | {parse_attribute(k)[0] for k in matches}
    keep = None if include_all else frozenset(k for k in (keyword_for_tag(t) for t in wanted) if k)
    query = dicom_query.Query(
        level=level, matches=matches, fuzzy=fuzzy, limit=min(limit or 0, dicom_query.MAX_RESULTS), offset=offset, fields=keep
    )
    try:
        with current_services().db.session() as session:
            result = dicom_query.search(session, query)
    except dicom_query.QueryError as exc:
        raise HTTPException(400, str(exc)) from exc
    root = _root(request)
    always = {tag_hex(tag): _empty(tag) for tag in include | {parse_attribute(k)[0] for k in matches}}
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
    return Response(orjson.dumps(items), media_type=DICOM_JSON, headers=headers)


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


# --------------------------------------------------------------------------- WADO-RS metadata


def _metadata(request: Request, study: str, series: str | None = None, instance: str | None = None) -> Response:
    accepted = parse_accept(request.headers.get("accept"))
    if accepted and not any(r.media_type in (DICOM_JSON, "application/json", "*/*", "application/*") for r in accepted):
        raise HTTPException(406, "metadata is served as application/dicom+json")
    services = current_services()
    study_uid = _uid(study, "study")
    with services.db.session() as session:
        documents = instance_documents.documents(
            session, services.store, study_uid, _uid(series, "series") if series else None, _uid(instance, "instance") if instance else None
        )
    if not documents:
        what = f"instance {instance}" if instance else f"series {series}" if series else f"study {study}"
        raise HTTPException(404, f"no {what}" + (f" in study {study}" if series or instance else ""))
    body = with_base("[" + ",".join(documents) + "]", _root(request))
    return Response(body, media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata", summary="WADO-RS: metadata of a study's instances")
def study_metadata(study: str, request: Request) -> Response:
    return _metadata(request, study)


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: metadata of a series' instances")
def series_metadata(study: str, series: str, request: Request) -> Response:
    return _metadata(request, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata", summary="WADO-RS: metadata of an instance")
def instance_metadata(study: str, series: str, instance: str, request: Request) -> Response:
    return _metadata(request, study, series, instance)


# --------------------------------------------------------------------------- WADO-RS instances


def _instances(study: str, series: str | None = None, instance: str | None = None) -> list[wado.StoredInstance]:
    services = current_services()
    try:
        with services.db.session() as session:
            return wado.stored_instances(
                session, services.store, _uid(study, "study"), _uid(series, "series") if series else None, _uid(instance, "instance") if instance else None
            )
    except wado.NotFound as exc:
        raise HTTPException(404, str(exc)) from exc


def _retrieve(request: Request, study: str, series: str | None = None, instance: str | None = None) -> Response:
    accepted = parse_accept(request.headers.get("accept"))
    single = False
    syntaxes: list[str] = []
    for media in accepted or [MediaRange("*/*")]:
        if media.media_type in ("*/*", "multipart/*"):
            syntaxes.append(wado.ANY)
        elif media.media_type == "multipart/related" and media.part_type in ("", "application/dicom"):
            syntaxes.append(media.transfer_syntax or wado.ExplicitVRLittleEndian)
        elif media.media_type == "application/dicom" and instance is not None:
            single = True
            syntaxes.append(media.transfer_syntax or wado.ExplicitVRLittleEndian)
        if syntaxes:
            break
    if not syntaxes:
        raise HTTPException(406, 'instances are served as multipart/related; type="application/dicom"')
    items = _instances(study, series, instance)
    chosen: list[str] = []
    try:
        chosen = [wado.choose_syntax(item.transfer_syntax_uid, syntaxes) for item in items]
    except wado.NotAcceptable as exc:
        raise HTTPException(406, str(exc)) from exc
    if single:
        try:
            content = wado.instance_bytes(items[0], chosen[0])
        except OSError as exc:
            raise HTTPException(404, f"the file of instance {instance} is gone: {exc}") from exc
        return Response(content, media_type=f"application/dicom; transfer-syntax={chosen[0]}")

    def parts() -> Iterator[tuple[str, bytes]]:
        for item, syntax in zip(items, chosen, strict=True):
            try:
                content = wado.instance_bytes(item, syntax)
            except OSError as exc:
                log.warning("instance %s left out of a retrieve: %s", item.sop_instance_uid, exc)
                continue
            yield f"application/dicom; transfer-syntax={syntax}", content

    boundary = new_boundary()
    return StreamingResponse(multipart_stream(boundary, parts()), media_type=multipart_content_type(boundary, "application/dicom"))


@router.get("/studies/{study}", summary="WADO-RS: a study's instances")
def retrieve_study(study: str, request: Request) -> Response:
    return _retrieve(request, study)


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: a series' instances")
def retrieve_series(study: str, series: str, request: Request) -> Response:
    return _retrieve(request, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}", summary="WADO-RS: one instance")
def retrieve_instance(study: str, series: str, instance: str, request: Request) -> Response:
    return _retrieve(request, study, series, instance)


# --------------------------------------------------------------------------- WADO-RS frames and bulk data


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise HTTPException(400, f"frame numbers are comma-separated whole numbers from 1, not {text!r}") from None
    if not numbers or min(numbers) < 1:
        raise HTTPException(400, "frame numbers start at 1")
    return numbers


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}", summary="WADO-RS: frames of an instance")
def retrieve_frames(study: str, series: str, instance: str, frame_list: str, request: Request) -> Response:
    numbers = _frame_numbers(frame_list)
    item = _instances(study, series, instance)[0]
    accepted: list[tuple[str, str]] = []
    for media in parse_accept(request.headers.get("accept")) or [MediaRange("multipart/related", {"type": "application/octet-stream"})]:
        if media.media_type == "multipart/related":
            accepted.append((media.part_type or "application/octet-stream", media.transfer_syntax))
        elif media.media_type in ("*/*", "multipart/*"):
            accepted.append(("*/*", wado.ANY))
        elif media.media_type == "application/octet-stream" or media.media_type.startswith("image/"):
            accepted.append((media.media_type, media.transfer_syntax))
    try:
        syntax = wado.frame_syntax(item.transfer_syntax_uid, accepted)
        frames = wado.frames(item, numbers, syntax)
    except wado.NotAcceptable as exc:
        raise HTTPException(406, str(exc)) from exc
    except wado.NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    boundary = new_boundary()
    parts = [(f"{f.media_type}; transfer-syntax={f.transfer_syntax}", f.content) for f in frames]
    return Response(b"".join(multipart_stream(boundary, parts)), media_type=multipart_content_type(boundary, frames[0].media_type))


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag_path:path}", summary="WADO-RS: a bulk data value")
def retrieve_bulkdata(study: str, series: str, instance: str, tag_path: str, request: Request) -> Response:
    item = _instances(study, series, instance)[0]
    try:
        content, encapsulated = wado.bulk_value(item, [p for p in tag_path.split("/") if p])
    except wado.NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    boundary = new_boundary()
    syntax = item.transfer_syntax_uid if encapsulated else wado.ExplicitVRLittleEndian
    part_type = "application/octet-stream"
    return Response(
        b"".join(multipart_stream(boundary, [(f"{part_type}; transfer-syntax={syntax}", content)])),
        media_type=multipart_content_type(boundary, part_type),
    )


# --------------------------------------------------------------------------- WADO-RS rendered and thumbnails


def _render_options(request: Request, thumbnail: bool) -> wado.RenderOptions:
    accepted = parse_accept(request.headers.get("accept"))
    media_type = "image/png" if thumbnail else "image/jpeg"
    for media in accepted:
        if media.media_type in ("image/jpeg", "image/png", "image/gif"):
            media_type = media.media_type
            break
        if media.media_type in ("*/*", "image/*"):
            break
    else:
        if accepted:
            raise HTTPException(406, "rendered images are served as image/jpeg, image/png or image/gif")
    params = request.query_params
    window = None
    if params.get("window"):
        parts = params["window"].split(",")
        try:
            center, width = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise HTTPException(400, "window is center,width[,function]") from None
        if width <= 0:
            raise HTTPException(400, "the window width must be positive")
        window = (center, width, parts[2].strip() if len(parts) > 2 else "LINEAR")
    viewport = (128, 128) if thumbnail else None
    if params.get("viewport"):
        parts = params["viewport"].split(",")
        try:
            viewport = (int(parts[0]), int(parts[1] if len(parts) > 1 else parts[0]))
        except ValueError:
            raise HTTPException(400, "viewport is columns,rows") from None
        if min(viewport) < 1:
            raise HTTPException(400, "viewport sizes are at least 1")
    quality = whole_number("quality", params.get("quality"), 90, None) or 90
    return wado.RenderOptions(media_type=media_type, window=window, viewport=viewport, quality=max(1, min(quality, 100)))


def _rendered(request: Request, study: str, series: str, instance: str, frame: int, thumbnail: bool = False) -> Response:
    options = _render_options(request, thumbnail)
    item = _instances(study, series, instance)[0]
    try:
        content = wado.rendered(item, frame, options)
    except wado.NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(content, media_type=options.media_type)


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered", summary="WADO-RS: an instance rendered")
def rendered_instance(study: str, series: str, instance: str, request: Request) -> Response:
    return _rendered(request, study, series, instance, 1)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered", summary="WADO-RS: a frame rendered")
def rendered_frame(study: str, series: str, instance: str, frame: str, request: Request) -> Response:
    numbers = _frame_numbers(frame)
    if len(numbers) != 1:
        raise HTTPException(400, "one frame is rendered at a time")
    return _rendered(request, study, series, instance, numbers[0])


def _rendered_parts(request: Request, study: str, series: str | None) -> Response:
    """Every instance of a study or series rendered (its first frame), one part each, as PS3.18 has it for those levels."""
    options = _render_options(request, thumbnail=False)
    items = _instances(study, series)

    def parts() -> Iterator[tuple[str, bytes]]:
        for item in items:
            try:
                yield options.media_type, wado.rendered(item, 1, options)
            except wado.NotFound as exc:
                log.warning("instance %s left out of a rendered retrieve: %s", item.sop_instance_uid, exc)

    boundary = new_boundary()
    return StreamingResponse(multipart_stream(boundary, parts()), media_type=multipart_content_type(boundary, options.media_type))


@router.get("/studies/{study}/series/{series}/rendered", summary="WADO-RS: a series' instances rendered (multipart)")
def rendered_series(study: str, series: str, request: Request) -> Response:
    return _rendered_parts(request, study, series)


@router.get("/studies/{study}/rendered", summary="WADO-RS: a study's instances rendered (multipart)")
def rendered_study(study: str, request: Request) -> Response:
    return _rendered_parts(request, study, None)


@router.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail", summary="WADO-RS: an instance's thumbnail")
def instance_thumbnail(study: str, series: str, instance: str, request: Request) -> Response:
    return _rendered(request, study, series, instance, 1, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/thumbnail", summary="WADO-RS: a frame's thumbnail")
def frame_thumbnail(study: str, series: str, instance: str, frame: str, request: Request) -> Response:
    numbers = _frame_numbers(frame)
    return _rendered(request, study, series, instance, numbers[0], thumbnail=True)


def _series_thumbnail(study: str, series_uid: str) -> Response:
    services = current_services()
    png = services.thumbnails.thumbnail(series_uid)
    if png is None:
        # Not drawn yet (the series is still arriving): draw its middle instance now.
        items = _instances(study, series_uid)
        middle = items[len(items) // 2]
        try:
            png = wado.rendered(middle, 1, wado.RenderOptions(media_type="image/png", viewport=(128, 128)))
        except wado.NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=10"})


@router.get("/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: a series' thumbnail")
def series_thumbnail(study: str, series: str) -> Response:
    items = _instances(study, series)
    return _series_thumbnail(study, items[0].series_uid)


@router.get("/studies/{study}/thumbnail", summary="WADO-RS: a study's thumbnail (its first series')")
def study_thumbnail(study: str) -> Response:
    items = _instances(study)
    return _series_thumbnail(study, items[0].series_uid)


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
            stored.append({
                "ReferencedSOPClassUID": meta.sop_class_uid,
                "ReferencedSOPInstanceUID": meta.sop_instance_uid,
                "RetrieveURL": f"{root}/studies/{meta.study_uid}/series/{meta.series_uid}/instances/{meta.sop_instance_uid}",
            })
    except MultipartError as exc:
        if not stored and not failed:
            raise HTTPException(400, str(exc)) from exc
        failed.append(_failure(None, None, 0xC000, f"the rest of the request could not be read: {exc}"))
    body: dict[str, Any] = {}
    if study_uid or stored:
        body.update(attributes_json({"RetrieveURL": f"{root}/studies/{study_uid}" if study_uid else ""}))
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [attributes_json(s) for s in stored]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else 409 if not stored else 202
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type=DICOM_JSON)


def _failure(sop_class: str | None, sop_instance: str | None, reason: int, comment: str) -> dict[str, Any]:
    item = attributes_json({"ReferencedSOPClassUID": sop_class or "", "ReferencedSOPInstanceUID": sop_instance or "", "FailureReason": reason})
    item["00000902"] = {"vr": "LO", "Value": [comment[:64]]}  # ErrorComment, so a person learns why
    return item


@router.post("/studies", summary="STOW-RS: store instances (optional ?dataset=name)")
async def store_instances(request: Request) -> Response:
    return await _stow(request, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study (optional ?dataset=name)")
async def store_study_instances(study: str, request: Request) -> Response:
    return await _stow(request, study)
