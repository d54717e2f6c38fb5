"""What WADO-RS serves from the PACS files: instances, frames, bulk data and rendered images.

Files are served as stored whenever the client accepts that (`transfer-syntax=*` or the
stored syntax itself), so a retrieve is a file read, streamed in chunks (StoredFile), and a
frame is a seek and a read of that frame alone: a multi-gigabyte instance is never in memory
whole. Otherwise they are re-encoded into an uncompressed little-endian syntax
(ingest.wado_transcode: decompressed, or byte-swapped from big endian), which decodes a file
whole and so is done only up to TRANSCODE_LIMIT; a compressed syntax other than the stored one
is refused (the caller answers 406), never lossy-recompressed behind the client's back. Every
refusal names the transfer syntax and never a server path: these messages go to clients as they are.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, get_frame
from pydicom.pixels import pixel_array
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian
from sqlalchemy import select
from sqlmodel import Session

from core.models import Instance, Series
from core.pacs_store import PacsStore
from ingest.thumbnails import NoImage, ThumbnailError, UndecodablePixels, render_frame
from ingest.wado_transcode import SWAP_UNITS, CannotTranscode, pixel_unit, swapped, syntax_label, transcode_refusal, transcoded

log = logging.getLogger(__name__)

ANY = "*"
# Instances larger than this are sent as stored, never re-encoded (that decodes all their pixel data at once).
TRANSCODE_LIMIT = 256 * 1024**2
# What a streamed instance is read and sent in.
CHUNK_BYTES = 1024**2
PIXEL_DATA = Tag(0x7FE0, 0x0010)
# Float Pixel Data and Double Float Pixel Data (Parametric Maps): native only, served as frames too (PS3.18 8.3.5.1).
FLOAT_PIXEL_DATA = (Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009))
# Media types of compressed frames (PS3.18 Table 8.7.3-4).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg", "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg", "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2", "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx", "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc", "1.2.840.10008.1.2.5": "image/dicom-rle",
}


class NotAcceptable(ValueError):
    """The client accepts no representation we can give it (HTTP 406)."""


class NotFound(LookupError):
    """No such study, series, instance, frame or element (HTTP 404)."""


class CannotRender(ValueError):
    """The instance's pixel data cannot be drawn (no decoder, or it does not decode); the message names the transfer syntax."""


@dataclass(frozen=True)
class StoredInstance:
    sop_instance_uid: str
    series_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: Path
    number_of_frames: int


def stored_instances(session: Session, store: PacsStore, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[StoredInstance]:
    """The files of a study, series or instance, in series and instance order; NotFound when there are none."""
    statement = (
        select(Instance.sop_instance_uid, Instance.series_uid, Instance.sop_class_uid, Instance.transfer_syntax_uid, Instance.path,
               Instance.number_of_frames)
        .join(Series, Series.series_uid == Instance.series_uid)  # type: ignore[arg-type]
        .where(Series.study_uid == study_uid)
        .order_by(Instance.series_uid, Instance.instance_number, Instance.sop_instance_uid)
    )
    if series_uid is not None:
        statement = statement.where(Instance.series_uid == series_uid)
    if sop_uid is not None:
        statement = statement.where(Instance.sop_instance_uid == sop_uid)
    rows = session.execute(statement).all()
    if not rows:
        what = f"instance {sop_uid}" if sop_uid else f"series {series_uid}" if series_uid else f"study {study_uid}"
        raise NotFound(f"no {what} in study {study_uid}" if (sop_uid or series_uid) else f"no {what}")
    return [StoredInstance(sop, series, cls, ts, store.path(path), frames) for sop, series, cls, ts, path, frames in rows]


# --------------------------------------------------------------------------- whole instances


def choose_syntax(stored: str, accepted: list[str]) -> str:
    """The transfer syntax to send an instance stored in `stored` to a client accepting `accepted` (in preference order).

    A syntax the instance cannot be re-encoded in is passed over for the next one accepted
    (`transfer-syntax=*` or the stored one, when listed); NotAcceptable says why when none fits.
    """
    refusals: list[str] = []
    for wanted in accepted:
        if wanted in (ANY, stored):
            return stored
        refusal = transcode_refusal(stored, wanted)
        if refusal is None:
            return wanted
        refusals.append(refusal)
    why = refusals[0] if refusals else f"the instance is stored in {syntax_label(stored)}"
    raise NotAcceptable(f"{why}; ask for transfer-syntax={stored} or transfer-syntax=* to receive it as stored")


def instance_bytes(instance: StoredInstance, syntax: str) -> bytes:
    """The Part 10 file in `syntax`: as stored when it matches, otherwise re-encoded.

    Raises OSError when the file is gone and CannotTranscode when it does not decode.
    """
    content = instance.path.read_bytes()
    if syntax == instance.transfer_syntax_uid:
        return content
    return transcoded(content, instance.transfer_syntax_uid, syntax)


@dataclass(frozen=True)
class StoredFile:
    """A Part 10 file to be sent as it is stored, in chunks: a 2 GB instance is never held in memory whole."""

    path: Path
    size: int


def instance_content(instance: StoredInstance, syntax: str) -> bytes | StoredFile:
    """What to send for the instance in `syntax`: the stored file itself (streamed) when it matches, else re-encoded bytes.

    Re-encoding decodes the whole pixel data, so it is done only for files up to
    TRANSCODE_LIMIT; a larger one raises CannotTranscode, and the caller sends it as stored
    when the client accepts that (the rules of any other file that does not re-encode).
    Raises OSError when the file is gone.
    """
    size = instance.path.stat().st_size
    if syntax == instance.transfer_syntax_uid:
        return StoredFile(instance.path, size)
    if size > TRANSCODE_LIMIT:
        raise CannotTranscode(
            f"the instance stored as {syntax_label(instance.transfer_syntax_uid)} is too large ({size // 1024**2} MB) to be re-encoded here"
        )
    return instance_bytes(instance, syntax)


def file_chunks(stored: StoredFile, handle: BinaryIO | None = None) -> Iterator[bytes]:
    """The stored file's bytes, CHUNK_BYTES at a time (from `handle` when the caller opened it already, to know it exists)."""
    with handle if handle is not None else stored.path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    content: bytes
    media_type: str  # application/octet-stream or the compressed format's image/… type
    transfer_syntax: str


def frame_syntax(stored: str, accepted: list[tuple[str, str]]) -> str:
    """Pick the frames' syntax from (media type, transfer-syntax) pairs the client accepts, best first."""
    compressed = UID(stored).is_compressed
    for media, syntax in accepted:
        if media in ("application/octet-stream", "*/*", "*"):
            if syntax in ("", ExplicitVRLittleEndian) or (syntax == ANY and not compressed):
                return ExplicitVRLittleEndian
            if syntax in (ANY, stored):
                return stored
        elif compressed and media == FRAME_MEDIA_TYPES.get(stored) and syntax in ("", ANY, stored):
            return stored
        elif media.startswith("image/") and syntax == ANY and compressed and FRAME_MEDIA_TYPES.get(stored) == media:
            return stored
    raise NotAcceptable(
        f"frames are stored as {syntax_label(stored)}; they can be sent as application/octet-stream (uncompressed) or in that syntax"
    )


def frames(instance: StoredInstance, numbers: list[int], syntax: str) -> list[Frame]:
    """Frames by 1-based number, in `syntax` (the stored one, or explicit VR little endian: decoded).

    Only the frames asked for are read: viewers fetch a multi-frame instance frame by frame,
    and reading the whole file for each would make a 1,000-frame cine quadratic.
    """
    ds = dcmread(instance.path, defer_size=1024)
    count = int(ds.get("NumberOfFrames") or 1)
    for number in numbers:
        if not 1 <= number <= count:
            raise NotFound(f"instance {instance.sop_instance_uid} has {count} frame(s), not frame {number}")
    pixel_data = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if pixel_data is None:
        return _float_frames(instance, ds, numbers)
    stored = str(ds.file_meta.TransferSyntaxUID)
    seekable = getattr(pixel_data, "value", b"") is None and stored not in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
    if UID(stored).is_compressed:
        if syntax != stored:
            return [Frame(_decoded_frame(instance, stored, n - 1), "application/octet-stream", ExplicitVRLittleEndian) for n in numbers]
        media = FRAME_MEDIA_TYPES.get(stored, "application/octet-stream")
        offsets = _extended_offsets(ds)
        if seekable:
            with instance.path.open("rb") as f:
                encoded = []
                for n in numbers:
                    f.seek(pixel_data.value_tell)
                    encoded.append(get_frame(f, n - 1, number_of_frames=count, extended_offsets=offsets))
        else:
            every = list(generate_frames(ds.PixelData, number_of_frames=count, extended_offsets=offsets))
            encoded = [every[n - 1] for n in numbers]
        return [Frame(content, media, stored) for content in encoded]
    bits = int(ds.BitsAllocated)
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * bits // 8
    if seekable and bits % 8 == 0:
        with instance.path.open("rb") as f:
            parts = []
            for n in numbers:
                f.seek(pixel_data.value_tell + (n - 1) * size)
                parts.append(f.read(size))
        return [Frame(part, "application/octet-stream", ExplicitVRLittleEndian) for part in parts]
    if stored == ExplicitVRBigEndian and getattr(pixel_data, "value", b"") is None and bits % 8 == 0:
        unit = pixel_unit(ds, pixel_data.VR)
        return [Frame(_big_endian_frame(instance.path, pixel_data.value_tell, pixel_data.length, (n - 1) * size, size, unit),
                      "application/octet-stream", ExplicitVRLittleEndian) for n in numbers]
    data = ds.PixelData
    if stored == ExplicitVRBigEndian:
        data = swapped(data, pixel_unit(ds, pixel_data.VR))  # frames are served little endian
    return [Frame(_uncompressed_frame(ds, data, n - 1), "application/octet-stream", ExplicitVRLittleEndian) for n in numbers]


def _big_endian_frame(path: Path, value_tell: int, length: int, start: int, size: int, unit: int) -> bytes:
    """Bytes [start, start+size) of a big-endian Pixel Data value, little endian, read from the file alone.

    The read is widened to whole `unit`-byte words (an odd-sized 8-bit frame in OW starts mid-word),
    swapped, then cut: exactly the slice of the whole value swapped, without reading the whole value.
    """
    first = start - start % unit
    end = min(length, -(-(start + size) // unit) * unit)
    with path.open("rb") as f:
        f.seek(value_tell + first)
        words = f.read(max(0, end - first))
    return swapped(words, unit)[start - first : start - first + size]


def _float_frames(instance: StoredInstance, ds: Dataset, numbers: list[int]) -> list[Frame]:
    """Frames of Float (32-bit) or Double Float (64-bit) Pixel Data, sent little endian; NotFound when there is neither.

    These values are never encapsulated, so frame N is simply the N-th run of rows×columns values.
    """
    tag = next((t for t in FLOAT_PIXEL_DATA if t in ds), None)
    if tag is None:
        raise NotFound(f"instance {instance.sop_instance_uid} has no pixel data")
    element = ds[tag]
    unit = 4 if tag == FLOAT_PIXEL_DATA[0] else 8
    data = bytes(element.value)
    if str(ds.file_meta.TransferSyntaxUID) == ExplicitVRBigEndian:
        data = swapped(data, unit)  # frames are served little endian
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * unit
    return [Frame(data[(n - 1) * size : n * size], "application/octet-stream", ExplicitVRLittleEndian) for n in numbers]


def _decoded_frame(instance: StoredInstance, stored: str, index: int) -> bytes:
    """One compressed frame decoded to native little-endian pixels; CannotTranscode (naming the syntax) when it does not decode."""
    refusal = transcode_refusal(stored, ExplicitVRLittleEndian)
    if refusal:
        raise CannotTranscode(refusal)
    try:
        return _native(pixel_array(instance.path, index=index))
    except Exception as exc:  # decoder plugins raise assorted types
        log.warning("frame %d of instance %s (%s) does not decode: %s", index + 1, instance.sop_instance_uid, stored, exc)
        raise CannotTranscode(f"frame {index + 1} stored as {syntax_label(stored)} could not be decoded") from exc


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths
    return None


def _native(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False)).tobytes()


def _uncompressed_frame(ds: Dataset, data: bytes, index: int) -> bytes:
    bits = int(ds.BitsAllocated)
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    if bits == 1:
        size_bits = pixels
        start, end = index * size_bits, (index + 1) * size_bits
        packed = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[start:end]
        return np.packbits(packed, bitorder="little").tobytes()
    size = pixels * bits // 8
    return bytes(data[index * size : (index + 1) * size])


# --------------------------------------------------------------------------- bulk data


def bulk_value(instance: StoredInstance, tag_path: list[str]) -> tuple[bytes, bool]:
    """The value a BulkDataURI names (`7FE00010`, `00089215/0/00080100`…); True when it is encapsulated pixel data.

    Values of big-endian instances are sent little endian, as the transfer syntax the answer names.
    """
    # Big values other than the one asked for stay in the file (a deflated file is inflated whole by pydicom anyway).
    defer = None if instance.transfer_syntax_uid == DeflatedExplicitVRLittleEndian else "1 MB"
    ds: Dataset = dcmread(instance.path, defer_size=defer)
    owner = ds
    element = None
    try:
        for position, part in enumerate(tag_path):
            if position % 2 == 1:
                ds = element.value[int(part)]  # type: ignore[union-attr]
                continue
            owner, element = ds, ds[int(part, 16)]
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        raise NotFound(f"instance {instance.sop_instance_uid} has no element {'/'.join(tag_path)}") from None
    if element is None or not isinstance(element.value, bytes) or len(tag_path) % 2 == 0:
        raise NotFound(f"element {'/'.join(tag_path)} of instance {instance.sop_instance_uid} is not bulk data")
    value, encapsulated = bytes(element.value), bool(element.is_undefined_length)
    if instance.transfer_syntax_uid == ExplicitVRBigEndian and not encapsulated:
        unit = pixel_unit(owner, element.VR) if element.tag == PIXEL_DATA else SWAP_UNITS.get(element.VR, 1)
        value = swapped(value, unit)
    return value, encapsulated


# --------------------------------------------------------------------------- rendered


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90
    # Thumbnails of objects without pixels (SR, ECG…) may be a labelled card; /rendered must not (it is the image).
    placeholder: bool = False


def rendered(instance: StoredInstance, frame_number: int, options: RenderOptions) -> bytes:
    """A frame as a consumer image (JPEG, PNG or GIF), windowed as asked or as stored."""
    if not 1 <= frame_number <= max(1, instance.number_of_frames):
        raise NotFound(f"instance {instance.sop_instance_uid} has no frame {frame_number}")
    try:
        image = render_frame(instance.path, frame_number - 1, options.window, options.viewport, placeholder=options.placeholder)
    except NoImage as exc:
        raise CannotRender(exc.reason) from exc
    except UndecodablePixels as exc:
        raise CannotRender(exc.reason) from exc
    except ThumbnailError as exc:
        log.warning("instance %s cannot be rendered: %s", instance.sop_instance_uid, exc)
        raise CannotRender(f"the instance stored as {syntax_label(instance.transfer_syntax_uid)} cannot be rendered: {exc.reason}") from exc
    except Exception as exc:  # pixel descriptions Vireo cannot draw end up in numpy or Pillow
        log.warning("instance %s cannot be rendered: %s", instance.sop_instance_uid, exc, exc_info=True)
        raise CannotRender(f"the pixel data stored as {syntax_label(instance.transfer_syntax_uid)} cannot be drawn as an image") from exc
    out = io.BytesIO()
    if options.media_type == "image/png":
        image.save(out, format="PNG", compress_level=3)
    elif options.media_type == "image/gif":
        image.save(out, format="GIF")
    else:
        image.convert("L" if image.mode in ("L", "I", "I;16") else "RGB").save(out, format="JPEG", quality=options.quality)
    return out.getvalue()
