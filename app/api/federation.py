"""`/api/federation/sync` and `/api/federation/fetch`: the routes other instances call. They authenticate instances, not users.

The auth middleware lets exactly this path through; the request signature (the caller's own
Ed25519 key, checked against the key registered for it, plus an HMAC with this instance's
token), its freshness and nonce are checked in `federation.endpoint` before the body is opened.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.federation_actions import federation
from federation.sync import FETCH_PATH, SYNC_PATH

router = APIRouter(tags=["federation"])
MAX_SYNC_BODY = 64 * 1024 * 1024


@router.post(SYNC_PATH)
async def sync(request: Request) -> Response:
    """A runner's poll: signed; its body Fernet-encrypted when this instance requires it."""
    from starlette.concurrency import run_in_threadpool

    body = await request.body()
    if len(body) > MAX_SYNC_BODY:
        return Response('{"detail": "sync body too large"}', status_code=413, media_type="application/json")
    source = request.client.host if request.client else ""
    reply = await run_in_threadpool(federation().answer_sync, dict(request.headers), body, request.headers.get("content-type", ""), source)
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type, headers=reply.headers)


MAX_FETCH_BODY = 64 * 1024


@router.post(FETCH_PATH)
async def fetch(request: Request) -> Response:
    """An owner asks for the full log or a result file of a job this instance runs for it: signed like a sync."""
    from starlette.concurrency import run_in_threadpool

    body = await request.body()
    if len(body) > MAX_FETCH_BODY:
        return Response('{"detail": "fetch request too large"}', status_code=413, media_type="application/json")
    source = request.client.host if request.client else ""
    reply = await run_in_threadpool(federation().answer_fetch, dict(request.headers), body, request.headers.get("content-type", ""), source)
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type, headers=reply.headers)
