"""`/api/uploads`: the upload area import DAGs read from — chunked, resumable uploads, list, download, delete.

A client uploads a file in one request (multipart field `file`, optional `path`), or in
chunks: each request carries `offset` (where the chunk starts) and `total` (the file's
size). `PUT /api/uploads/{path}?offset=&total=` takes a chunk as the raw request body
(no multipart to parse; the Data Upload page uses it). `GET /api/uploads/{path}?resume=true` says how many bytes arrived, so a client whose
connection dropped continues from there; a chunk at a wrong offset gets 409 with the
offset to resume from.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from app.runtime import current_services
from core.uploads import OffsetMismatch, UploadArea, UploadConflict, UploadError

router = APIRouter(prefix="/api/uploads", tags=["uploads"])
WRITE_BUFFER = 4 * 1024 * 1024


def upload_area() -> UploadArea:
    return UploadArea(current_services().settings.data_dir / "uploads")


@router.post("", status_code=201, response_model=None)
def upload(
    file: UploadFile = File(..., description="the file, or one chunk of it"),
    path: str | None = Form(None, description="where in the upload area (default: the file's name)"),
    offset: int = Form(0, ge=0, description="byte offset of this chunk in the file"),
    total: int | None = Form(None, ge=0, description="the whole file's size, for chunked uploads"),
) -> Any:
    """Store a file or one chunk of it; `complete` says whether the file is whole."""
    target = path or file.filename or ""
    try:
        result = upload_area().write_chunk(target, file.file, offset, total)
    except OffsetMismatch as exc:
        return JSONResponse({"detail": str(exc), "offset": exc.offset}, status_code=409)
    except UploadConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except UploadError as exc:
        raise HTTPException(400, str(exc)) from exc
    return result.describe()


@router.put("/{path:path}", status_code=201, response_model=None)
async def upload_raw(
    path: str,
    request: Request,
    offset: int = Query(0, ge=0, description="byte offset of this chunk in the file"),
    total: int | None = Query(None, ge=0, description="the whole file's size, for chunked uploads"),
) -> Any:
    """Store a file or one chunk of it sent as the raw request body (what the Data Upload page uses: no multipart to parse)."""
    area = upload_area()
    try:
        async with _async_writer(area, path, offset, total) as write:
            await _receive_into(request, write)
        result = await run_in_threadpool(area.finish_chunk, path, total)
    except OffsetMismatch as exc:
        return JSONResponse({"detail": str(exc), "offset": exc.offset}, status_code=409)
    except UploadConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except UploadError as exc:
        raise HTTPException(400, str(exc)) from exc
    return result.describe()


async def _receive_into(request: Request, write: Callable[[bytes | bytearray], Awaitable[Any]]) -> None:
    """The request body to `write`, in WRITE_BUFFER pieces; the disk writes one piece while the next one arrives."""
    writing: asyncio.Future[Any] | None = None
    buffer = bytearray()
    try:
        async for piece in request.stream():
            buffer += piece
            if len(buffer) >= WRITE_BUFFER:
                if writing is not None:
                    await writing
                writing, buffer = asyncio.ensure_future(write(buffer)), bytearray()
        if writing is not None:
            await writing
            writing = None
        if buffer:
            await write(buffer)
    finally:
        if writing is not None and not writing.done():
            await asyncio.wait([writing])  # never leave a write running into the file as it is closed


@asynccontextmanager
async def _async_writer(area: UploadArea, path: str, offset: int, total: int | None) -> AsyncIterator[Callable[[bytes | bytearray], Awaitable[Any]]]:
    """The chunk writer of the upload area, with writes off the event loop."""
    context = area.chunk_writer(path, offset, total)
    handle = await run_in_threadpool(context.__enter__)
    try:
        yield lambda data: run_in_threadpool(handle.write, data)
    except BaseException as exc:
        if not await run_in_threadpool(context.__exit__, type(exc), exc, exc.__traceback__):
            raise
    else:
        await run_in_threadpool(context.__exit__, None, None, None)


@router.get("")
def list_uploads() -> list[dict[str, Any]]:
    """Complete uploads: `path`, `name`, `size`, `modified` (unfinished uploads idle for 24 h are dropped here)."""
    area = upload_area()
    area.purge_partials()
    return [f.describe() for f in area.list()]


@router.get("/{path:path}", response_model=None)
def get_upload(path: str, resume: bool = Query(False, description="report the bytes received so far instead of the file")) -> Any:
    area = upload_area()
    try:
        target = area.file(path)
        received = area.received(path)
    except UploadError as exc:
        raise HTTPException(400, str(exc)) from exc
    if resume:
        complete = target.is_file() and received == 0
        return {"path": path, "offset": target.stat().st_size if complete else received, "complete": complete}
    if not target.is_file():
        raise HTTPException(404, f"no upload {path}")
    return FileResponse(target, filename=target.name, content_disposition_type="attachment")


@router.delete("/{path:path}")
def delete_upload(path: str) -> dict[str, Any]:
    try:
        found = upload_area().delete(path)
    except UploadError as exc:
        raise HTTPException(400, str(exc)) from exc
    if not found:
        raise HTTPException(404, f"no upload {path}")
    return {"deleted": path}
