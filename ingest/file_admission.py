"""Checking a large received instance from its file, reading only its header and the element headers after it.

A whole-slide image or a long cine can be gigabytes: held in memory (several times over, as
pydicom reads it) it could take the server down. Such an instance is written to its part
file as it arrives (ingest.streaming_dul), and checked here the way `ingest.intake.admit`
checks a stream in memory: the header parses, the pixel data is whole (a native value as
long as its length says, an encapsulated one ending in its delimiter), nothing is cut after
it, and the Image Pixel attributes agree with the pixel data's length (else a warning). Only
the header, the pixel data's element header and the item headers of encapsulated fragments
are read.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from ingest.error_text import plain_reason
from ingest.intake import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS, ImagePixelError, StoreRefused, admit, expected_pixel_bytes

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_SEQUENCE_END = 0xFFFEE0DD
# Pixel Data and its float variants: what pydicom's stop_before_pixels stops at.
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def admit_file(path: Path) -> tuple[Dataset, str | None]:
    """A stored part checked whole, reading its header only; as `admit`: StoreRefused, or the data set and a warning."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        try:
            ds = dcmread(file, stop_before_pixels=True)
        except Exception as exc:
            raise StoreRefused(CANNOT_UNDERSTAND, f"cannot parse the data set: {plain_reason(exc)}") from exc
        if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            file.seek(0)
            return admit(file.read())  # a deflated stream has no offsets to seek by: checked in memory
        if len(ds) == 0:
            raise StoreRefused(CANNOT_UNDERSTAND, "no data elements: truncated or not DICOM")
        implicit, little = ds.original_encoding
        order = "<" if little else ">"
        start = file.tell()
        if start >= size:
            return ds, None  # no pixel data: the header was all there is, and pydicom read it whole
        tag, vr, length, value_at = _element_header(file, bool(implicit), order)
        if tag not in _PIXEL_TAGS:
            raise StoreRefused(CANNOT_UNDERSTAND, "truncated: ends inside an element header")
        if length == _UNDEFINED:
            end = _end_of_fragments(file, value_at, size, order)
            warning = None
        else:
            end = value_at + length
            if end > size:
                raise StoreRefused(CANNOT_UNDERSTAND, f"truncated: element (7FE0,0010) declares {length} bytes but has {size - value_at}")
            warning = _pixel_mismatch(ds, length)
        _check_tail(file, end, size, bool(implicit), order)
    return ds, warning


def _pixel_mismatch(ds: Dataset, length: int) -> str | None:
    """What the Image Pixel attributes say that native pixel data of `length` bytes contradicts, or None."""
    try:
        expected = expected_pixel_bytes(ds)
    except ImagePixelError as exc:
        raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from exc
    if length >= expected:
        return None
    return f"pixel data {length} bytes, header needs {expected}: {ds.get('NumberOfFrames', 1)} frames"


def _element_header(file: BinaryIO, implicit: bool, order: str) -> tuple[int, str, int, int]:
    """Tag, VR ('' when implicit), value length and value offset of the element at the file's position."""
    head = file.read(8)
    if len(head) < 8:
        raise StoreRefused(CANNOT_UNDERSTAND, "truncated: ends inside an element header")
    group, element = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        return tag, "", struct.unpack(order + "L", head[4:])[0], file.tell()
    vr = head[4:6].decode("ascii", "replace")
    if vr in EXPLICIT_VR_LENGTH_32:
        more = file.read(4)
        if len(more) < 4:
            raise StoreRefused(CANNOT_UNDERSTAND, "truncated: ends inside an element header")
        return tag, vr, struct.unpack(order + "L", more)[0], file.tell()
    return tag, vr, struct.unpack(order + "H", head[6:])[0], file.tell()


def _end_of_fragments(file: BinaryIO, at: int, size: int, order: str) -> int:
    """Where encapsulated pixel data ends (after its delimiter), walking the item headers only."""
    position = at
    while True:
        if position + 8 > size:
            raise StoreRefused(CANNOT_UNDERSTAND, "truncated: encapsulated pixel data ends before its delimiter")
        file.seek(position)
        group, element, length = struct.unpack(order + "HHL", file.read(8))
        tag = group << 16 | element
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM or length == _UNDEFINED:
            raise StoreRefused(CANNOT_UNDERSTAND, f"encapsulated pixel data holds ({group:04X},{element:04X}) where an item must be")
        position += length
        if position > size:
            raise StoreRefused(CANNOT_UNDERSTAND, "truncated: encapsulated pixel data ends before its delimiter")


def _check_tail(file: BinaryIO, position: int, size: int, implicit: bool, order: str) -> None:
    """The elements after the pixel data (padding, signatures) fill the file exactly, or the stream was cut."""
    while position < size:
        file.seek(position)
        tag, _vr, length, value_at = _element_header(file, implicit, order)
        if length == _UNDEFINED:
            raise StoreRefused(CANNOT_UNDERSTAND, "a sequence after the pixel data is not supported in a large instance")
        position = value_at + length
    if position > size:
        raise StoreRefused(CANNOT_UNDERSTAND, "truncated: the last element is cut short")
