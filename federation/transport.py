"""One HTTP exchange with a remote, bounded in time and size: a slow or hostile remote costs one lane a deadline, nothing more.

httpx's own timeouts are per read, so a remote sending a byte a second never trips them; the
whole exchange (connect, TLS, request, answer) therefore runs under one overall deadline.
The answer is read as a stream and refused the moment it passes the size limit, so a remote
sending an endless body costs at most that many bytes of memory. Compression is not asked
for (a few kilobytes of gzip can unpack to gigabytes), and refused if sent anyway.

Why an exchange failed below HTTP (refused, timed out, TLS, DNS …) is kept in `Unreachable.detail`
for the server log: shown to an admin, those differences would make a registered remote a
port scanner of the network this instance sits in.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import httpx

CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes


class Unreachable(Exception):
    """No complete answer (refused, timed out, TLS, DNS, a broken connection); `detail` is for the server log only."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AnswerRefused(Exception):
    """An answer that arrived but is not taken: too large, or encoded in a way that was not asked for."""


class AnswerTooLarge(AnswerRefused):
    """An answer over the size limit: reading stopped there."""


def exchange(url: str, body: bytes, headers: dict[str, str], verify: bool | ssl.SSLContext, deadline: float, max_bytes: int) -> Answer:
    """POST `body` to `url`; the whole answer within `deadline` seconds and `max_bytes` bytes, or an exception saying why not."""
    return asyncio.run(_exchange(url, body, headers, verify, deadline, max_bytes))


async def _exchange(url: str, body: bytes, headers: dict[str, str], verify: bool | ssl.SSLContext, deadline: float, max_bytes: int) -> Answer:
    timeout = httpx.Timeout(deadline, connect=min(CONNECT_TIMEOUT, deadline))
    try:
        async with asyncio.timeout(deadline):
            async with httpx.AsyncClient(verify=verify, timeout=timeout, follow_redirects=False) as client:
                request_headers = {**headers, "Accept-Encoding": "identity"}
                async with client.stream("POST", url, content=body, headers=request_headers) as response:
                    return Answer(response.status_code, response.headers, await _bounded_body(response, max_bytes))
    except TimeoutError:
        raise Unreachable(f"no complete answer within {deadline:g} s") from None
    except httpx.HTTPError as exc:
        raise Unreachable(f"{type(exc).__name__}: {exc}") from None
    except (ssl.SSLError, OSError, httpx.InvalidURL, ValueError) as exc:
        raise Unreachable(f"{type(exc).__name__}: {exc}") from None


async def _bounded_body(response: httpx.Response, max_bytes: int) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise AnswerRefused(f"the answer is {encoding}-encoded, which was not asked for")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise AnswerTooLarge(f"the answer announces {int(declared)} bytes, over the limit of {max_bytes} bytes")
    received = bytearray()
    async for chunk in response.aiter_raw():
        if len(received) + len(chunk) > max_bytes:
            raise AnswerTooLarge(f"the answer is larger than the limit of {max_bytes} bytes")
        received += chunk
    return bytes(received)
