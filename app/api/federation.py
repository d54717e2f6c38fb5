"""`/api/federation/sync` and `/api/federation/fetch`: the routes other instances call. They authenticate instances, not users.

The auth middleware lets exactly this path through; the request signature (the caller's own
Ed25519 key, checked against the key registered for it, plus an HMAC with this instance's
token), its freshness and nonce are checked in `federation.endpoint` before the body is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from app.federation_actions import federation
from federation.sync import FETCH_PATH, SYNC_PATH

router = APIRouter(tags=["federation"])
MAX_SYNC_BODY = 64 * 1024 * 1024


MAX_FETCH_BODY = 64 * 1024


async def _signed_exchange(request: Request, limit: int, too_large: str, answer: Callable[..., Any]) -> Response:
    """Both instance-signed doors: bound the body, let `answer` verify and reply off the event loop."""
    from starlette.concurrency import run_in_threadpool

    body = await request.body()
    if len(body) > limit:
        return Response(f'{{"detail": "{too_large}"}}', status_code=413, media_type="application/json")
    source = request.client.host if request.client else ""
    reply = await run_in_threadpool(answer, dict(request.headers), body, request.headers.get("content-type", ""), source)
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type, headers=reply.headers)


@router.post(SYNC_PATH)
async def sync(request: Request) -> Response:
    """A runner's poll: signed; its body Fernet-encrypted when this instance requires it."""
    return await _signed_exchange(request, MAX_SYNC_BODY, "sync body too large", federation().answer_sync)


@router.post(FETCH_PATH)
async def fetch(request: Request) -> Response:
    """An owner asks for the full log or a result file of a job this instance runs for it: signed like a sync."""
    return await _signed_exchange(request, MAX_FETCH_BODY, "fetch request too large", federation().answer_fetch)
