"""`/dicomweb` WADO-RS (PS3.18 10.4): metadata, instances, frames, bulk data, rendered images and thumbnails.

Split from app.api.dicomweb (QIDO-RS and STOW-RS stay there) along the read-the-files seam:
every route here answers from ingest.wado or the metadata documents kept at ingest. Both
routers share the `/dicomweb` prefix (app.server includes them side by side), so the URLs
are those of PS3.18.

What a client is told when it cannot have what it asked for (every reason names the
transfer syntax, never a server path):
- instances, series, studies: a syntax asked for that an instance cannot be re-encoded in
  (Vireo does not compress) falls back to the default, explicit VR little endian, and the
  part's Content-Type says so (HTTP lets a server disregard Accept and send its default,
  RFC 9110 12.5.1; explicit VR little endian is PS3.18's default transfer syntax). 406 stays
  only when not even the default can be made (a file no installed decoder reads, asked for
  without `transfer-syntax=*` or its stored syntax: a Part 10 file in a syntax the client
  never named is not what it can parse), and when Accept names no DICOM media type at all;
  206 with a `Warning: 299` when only some instances can be sent (PS3.18 6.5.3.2).
- frames: never 406 for a syntax. What cannot be sent as asked comes decoded as
  application/octet-stream (explicit VR little endian, PS3.18's default for pixel data), or,
  when it does not decode here, as stored in its compressed media type (image/jpeg,
  image/jls, …); each part's Content-Type names the transfer syntax it carries. A viewer
  asking for one syntax for every image (OHIF's requestTransferSyntaxUID) then still gets
  pixels it can decode instead of a black viewport. 422 when a frame cannot be read at all.
- rendered and thumbnails: 422 when the pixel data cannot be decoded or drawn; /rendered also 422 for an
  instance with no image at all (SR, ECG waveform), where a thumbnail is a labelled card.
- 404 only for what does not exist (no such instance, frame or element).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.uid import UID

from app.api.dicomweb_common import DICOM_JSON, PREFIX, checked_uid, dicomweb_root
from app.api.multipart import MediaRange, multipart_content_type, multipart_stream, new_boundary, parse_accept
from app.api.search_params import whole_number
from app.runtime import current_services
from core import instance_documents
from core.dicom_json import with_base
from ingest import wado

log = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, tags=["dicomweb"])

# Parts of a retrieve made before its response starts, so its status can still say what is left out.
PREPARED_BYTES = 64 * 1024**2
# Rendered/thumbnail of pixel data that does not decode: the request is understood, the stored content cannot be
# processed into an image (422, as the quick viewer's /api answers too); 404 stays for what does not exist.
CANNOT_RENDER = 422

_root = dicomweb_root
_uid = checked_uid


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


def _instance_syntaxes(request: Request, one_instance: bool) -> tuple[bool, list[str]]:
    """(a bare application/dicom answer?, the transfer syntaxes acceptable, best first) from the Accept header.

    Every acceptable entry counts, so `transfer-syntax=1.2.840.10008.1.2.1, …; transfer-syntax=*`
    falls back to the stored syntax when an instance cannot be re-encoded.
    """
    single: bool | None = None
    syntaxes: list[str] = []
    for media in parse_accept(request.headers.get("accept")) or [MediaRange("*/*")]:
        if media.media_type in ("*/*", "multipart/*"):
            bare, syntax = False, wado.ANY
        elif media.media_type == "multipart/related" and media.part_type in ("", "application/dicom"):
            bare, syntax = False, media.transfer_syntax or wado.ExplicitVRLittleEndian
        elif media.media_type == "application/dicom" and one_instance:
            bare, syntax = True, media.transfer_syntax or wado.ExplicitVRLittleEndian
        else:
            continue
        single = bare if single is None else single
        if bare == single:
            syntaxes.append(syntax)
    if not syntaxes:
        raise HTTPException(406, 'instances are served as multipart/related; type="application/dicom"')
    return bool(single), syntaxes


def _instance_syntax(stored: str, syntaxes: list[str]) -> str:
    """The first acceptable syntax an instance can be sent in, else the default (explicit VR little endian) if it can be made.

    NotAcceptable only when neither can: see the module docstring for why that stays a 406.
    """
    try:
        return wado.choose_syntax(stored, syntaxes)
    except wado.NotAcceptable:
        if wado.transcode_refusal(stored, wado.ExplicitVRLittleEndian) is None:
            return wado.ExplicitVRLittleEndian
        raise


PartContent = bytes | wado.StoredFile


def _part(item: wado.StoredInstance, syntax: str, syntaxes: list[str], left_out: list[str]) -> tuple[str, PartContent] | None:
    """One instance's part: re-encoded bytes, or the stored file to stream; None (the reason added to `left_out`) when it cannot be sent.

    An instance that does not decode (or is too large to re-encode) is sent as stored when the client also accepts that.
    """
    try:
        try:
            content = wado.instance_content(item, syntax)
        except wado.CannotTranscode as exc:
            stored = item.transfer_syntax_uid
            if wado.ANY not in syntaxes and stored not in syntaxes:
                left_out.append(f"{exc}; ask for transfer-syntax={stored} or transfer-syntax=* to receive it as stored")
                return None
            syntax, content = stored, wado.instance_content(item, stored)
    except OSError as exc:
        log.warning("instance %s left out of a retrieve: %s", item.sop_instance_uid, exc)
        left_out.append(f"the file of instance {item.sop_instance_uid} is missing from the store")
        return None
    return f"application/dicom; transfer-syntax={syntax}", content


def _size(content: PartContent) -> int:
    return content.size if isinstance(content, wado.StoredFile) else len(content)


def _single(content_type: str, content: PartContent) -> Response:
    """A bare application/dicom answer; a stored file is streamed, opened first so a vanished file is still a 404."""
    if not isinstance(content, wado.StoredFile):
        return Response(content, media_type=content_type)
    try:
        handle = content.path.open("rb")
    except OSError as exc:
        log.warning("instance file vanished before it was sent: %s", exc)
        raise HTTPException(404, "the file of the instance is missing from the store") from None
    return StreamingResponse(wado.file_chunks(content, handle), media_type=content_type, headers={"Content-Length": str(content.size)})


def _streamed_parts(parts: Iterator[tuple[str, PartContent]]) -> Iterator[tuple[str, Iterator[bytes]]]:
    """Parts with their content as chunks; a stored file that cannot be opened any more is left out (logged), never cut off."""
    for content_type, content in parts:
        if not isinstance(content, wado.StoredFile):
            yield content_type, iter((content,))
            continue
        try:
            handle = content.path.open("rb")
        except OSError as exc:
            log.warning("instance file vanished during a retrieve: %s", exc)
            continue
        yield content_type, wado.file_chunks(content, handle)


def _multipart_chunks(boundary: str, parts: Iterator[tuple[str, PartContent]]) -> Iterator[bytes]:
    """multipart/related body as app.api.multipart.multipart_stream writes it, each part's content sent in chunks."""
    for content_type, chunks in _streamed_parts(parts):
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        yield from chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _retrieve(request: Request, study: str, series: str | None = None, instance: str | None = None) -> Response:
    """Instances as asked: each in the first acceptable syntax it can be sent in.

    The status is decided before the first byte: 406 when no instance can be sent, 206 with a
    Warning when some cannot (PS3.18 6.5.3.2 / 10.4.3). Re-encoded parts are made whole before
    they are sent, the first PREPARED_BYTES of them before the response starts; one that fails
    later (a decoder giving up on damaged data) is left out and logged, never cut off mid-part.
    Files sent as stored are streamed from disk in chunks, so a 2 GB instance is never in memory.
    """
    single, syntaxes = _instance_syntaxes(request, instance is not None)
    items = _instances(study, series, instance)
    left_out: list[str] = []
    plan: list[tuple[wado.StoredInstance, str]] = []
    for item in items:
        try:
            plan.append((item, _instance_syntax(item.transfer_syntax_uid, syntaxes)))
        except wado.NotAcceptable as exc:
            left_out.append(str(exc))
    pending = iter(plan)
    ready: list[tuple[str, PartContent]] = []
    prepared = 0
    for item, syntax in pending:
        part = _part(item, syntax, syntaxes, left_out)
        if part is not None:
            ready.append(part)
            prepared += _size(part[1])
            if prepared >= PREPARED_BYTES:
                break
    if not ready:
        missing = all(reason.startswith("the file of instance") for reason in left_out)
        raise HTTPException(404 if missing else 406, _left_out_summary(left_out, len(items)))
    if single:
        return _single(*ready[0])
    headers = {"Warning": f'299 Vireo "{_left_out_summary(left_out, len(items))}"'} if left_out else {}

    def parts() -> Iterator[tuple[str, PartContent]]:
        yield from ready
        ready.clear()
        for item, syntax in pending:
            part = _part(item, syntax, syntaxes, [])
            if part is not None:
                yield part

    boundary = new_boundary()
    return StreamingResponse(
        _multipart_chunks(boundary, parts()), status_code=206 if left_out else 200, headers=headers,
        media_type=multipart_content_type(boundary, "application/dicom"),
    )


def _left_out_summary(left_out: list[str], total: int) -> str:
    """One line for a 406 body or a Warning header: how many instances cannot be sent, and the first reason."""
    first = left_out[0].replace('"', "'").encode("ascii", "replace").decode()  # a header value: plain ASCII
    return first if total == 1 else f"{len(left_out)} of {total} instances cannot be sent as asked; the first: {first}"


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


def _default_frame_syntax(stored: str) -> str:
    """Frames' fallback when nothing acceptable fits: decoded (explicit VR little endian) if a decoder is here, else as stored."""
    if not UID(stored).is_compressed or wado.transcode_refusal(stored, wado.ExplicitVRLittleEndian) is None:
        return wado.ExplicitVRLittleEndian
    return stored


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
    stored = item.transfer_syntax_uid
    try:
        try:
            syntax = wado.frame_syntax(stored, accepted)
        except wado.NotAcceptable:
            syntax = _default_frame_syntax(stored)
        try:
            frames = wado.frames(item, numbers, syntax)
        except wado.CannotTranscode:
            if syntax == stored:
                raise
            frames = wado.frames(item, numbers, stored)  # does not decode here: as stored, in its own media type
    except wado.CannotTranscode as exc:  # not even as stored (a damaged file): nothing to send
        raise HTTPException(422, str(exc)) from exc
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
    return StreamingResponse(  # streamed: a whole Pixel Data value is not copied once more into one body
        multipart_stream(boundary, [(f"{part_type}; transfer-syntax={syntax}", content)]),
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
    # A thumbnail may stand for an object without pixels as a labelled card; /rendered is refused (422) instead.
    return wado.RenderOptions(
        media_type=media_type, window=window, viewport=viewport, quality=max(1, min(quality, 100)), placeholder=thumbnail
    )


def _rendered(request: Request, study: str, series: str, instance: str, frame: int, thumbnail: bool = False) -> Response:
    options = _render_options(request, thumbnail)
    item = _instances(study, series, instance)[0]
    try:
        content = wado.rendered(item, frame, options)
    except wado.NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except wado.CannotRender as exc:
        raise HTTPException(CANNOT_RENDER, str(exc)) from exc
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
    items = iter(_instances(study, series))
    reasons: list[str] = []
    first = next((image for image in (_rendered_or_none(item, options, reasons) for item in items) if image is not None), None)
    if first is None:
        raise HTTPException(CANNOT_RENDER, reasons[0] if reasons else "nothing here can be rendered")

    def parts() -> Iterator[tuple[str, bytes]]:
        yield options.media_type, first
        for item in items:
            image = _rendered_or_none(item, options, [])
            if image is not None:
                yield options.media_type, image

    boundary = new_boundary()
    return StreamingResponse(multipart_stream(boundary, parts()), media_type=multipart_content_type(boundary, options.media_type))


def _rendered_or_none(item: wado.StoredInstance, options: wado.RenderOptions, reasons: list[str]) -> bytes | None:
    """An instance's first frame rendered, or None (logged, the reason added to `reasons`): a multipart answer leaves it out."""
    try:
        return wado.rendered(item, 1, options)
    except (wado.NotFound, wado.CannotRender) as exc:
        log.warning("instance %s left out of a rendered retrieve: %s", item.sop_instance_uid, exc)
        reasons.append(str(exc))
        return None


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
            png = wado.rendered(middle, 1, wado.RenderOptions(media_type="image/png", viewport=(128, 128), placeholder=True))
        except wado.NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except wado.CannotRender as exc:
            raise HTTPException(CANNOT_RENDER, str(exc)) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=10"})


@router.get("/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: a series' thumbnail")
def series_thumbnail(study: str, series: str) -> Response:
    items = _instances(study, series)
    return _series_thumbnail(study, items[0].series_uid)


@router.get("/studies/{study}/thumbnail", summary="WADO-RS: a study's thumbnail (its first series')")
def study_thumbnail(study: str) -> Response:
    items = _instances(study)
    return _series_thumbnail(study, items[0].series_uid)


