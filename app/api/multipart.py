"""HTTP plumbing DICOMweb needs and FastAPI lacks: Accept negotiation and multipart/related.

WADO-RS answers and STOW-RS requests are `multipart/related` (RFC 2387) messages: one
part per instance or frame. Responses are streamed part by part; request bodies are
split as they arrive, so neither side holds a whole study in memory.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header, e.g. `multipart/related; type="application/dicom"; transfer-syntax=*`."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    @property
    def part_type(self) -> str:
        return self.params.get("type", "").lower()

    @property
    def transfer_syntax(self) -> str:
        return self.params.get("transfer-syntax", "")


_SPLIT = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)')
_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def parse_content_type(value: str) -> MediaRange:
    media, _, rest = value.partition(";")
    params = {k.lower(): v.strip().strip('"') for k, v in _PARAM.findall(";" + rest)}
    quality = 1.0
    try:
        quality = float(params.pop("q", "1"))
    except ValueError:
        quality = 0.0
    return MediaRange(media.strip().lower(), params, quality)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The Accept header's media ranges, best (highest q) first; [] when absent or empty."""
    if not header or not header.strip():
        return []
    ranges = [parse_content_type(item) for item in _SPLIT.split(header) if item.strip()]
    ranges = [r for r in ranges if r.quality > 0]
    return sorted(ranges, key=lambda r: -r.quality)


def new_boundary() -> str:
    return "vireo-" + secrets.token_hex(12)


def multipart_content_type(boundary: str, part_type: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def multipart_stream(boundary: str, parts: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """The body of a multipart/related message from (content type, content) pairs, one part at a time."""
    for content_type, content in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        yield content
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


class MultipartError(ValueError):
    """A request body that is not the multipart/related message its Content-Type announces."""


@dataclass
class Part:
    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


async def iter_parts(body: AsyncIterator[bytes], boundary: str, max_part: int) -> AsyncIterator[Part]:
    """Split a multipart body into parts as it streams in; parts larger than `max_part` bytes raise MultipartError."""
    delimiter = b"\r\n--" + boundary.encode()
    buffer = bytearray(b"\r\n")  # the first boundary line has no CRLF before it: add one so every delimiter looks alike
    scan = 0  # where the next search for a delimiter starts (earlier bytes hold none)
    started = finished = False
    async for chunk in body:
        buffer += chunk
        while not finished:
            at = buffer.find(delimiter, scan)
            if at < 0:
                scan = max(0, len(buffer) - len(delimiter))
                if len(buffer) > max_part + 65536:
                    raise MultipartError(f"a part is larger than {max_part} bytes")
                break
            after = at + len(delimiter)
            if len(buffer) < after + 2:
                scan = at
                break  # need to see whether it is the closing delimiter
            line_end = buffer.find(b"\r\n", after)
            closing = buffer[after : after + 2] == b"--"
            if not closing and line_end < 0:
                scan = at
                break
            if started:
                yield _part(bytes(buffer[:at]))
            started = True
            if closing:
                finished = True
                break
            del buffer[:line_end]  # keep the CRLF: it opens the part's header block
            scan = 0
        if finished:
            break
    if not started:
        raise MultipartError(f"no part delimited by boundary {boundary!r} in the body")
    if not finished:
        raise MultipartError("the body ends before the closing boundary")


def _part(raw: bytes) -> Part:
    raw = raw[2:] if raw.startswith(b"\r\n") else raw
    if raw.startswith(b"\r\n"):
        return Part({}, raw[2:])  # a part without headers
    head, separator, content = raw.partition(b"\r\n\r\n")
    if not separator:
        raise MultipartError("a part has no blank line between its headers and its content")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return Part(headers, content)
