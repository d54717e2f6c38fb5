"""A received Part 10 stream read as pydicom's `dcmread` reads it, in a third of the time for the usual case.

Every instance a door admits (ingest.intake `admit`) is parsed whole: ~0.35 ms for a 512² CT
through pydicom, most of it in its element generator (a file read, a VR decode and several
checks per element), the largest single cost of a received instance. For a stream in the usual
shape (preamble, DICM, file meta, then a little-endian data set of defined-length elements) this
module walks the top-level elements in the bytes themselves and makes the very RawDataElements
pydicom would make (same tag, VR, length, value and offset); an element of undefined length (a
sequence, encapsulated pixel data) is read by pydicom's own generator from where it starts.
Anything unusual (no preamble, big endian, deflate, a command group, a VR pydicom would guess
at, a cut element) declines, and pydicom reads the stream as before: the result is always what
`dcmread(BytesIO(content))` gives (tests/test_dicom_reader.py compares every corpus file).
"""

from __future__ import annotations

import struct
from io import BytesIO

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import ENCODED_VR, data_element_generator, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

# pydicom reads these VRs from their two bytes; any other pair it warns about and guesses: declined.
try:  # pydicom's own file meta reader (private): without it every stream is read by dcmread, and tests/test_dicom_reader.py says so
    from pydicom.filereader import _read_file_meta_info
except ImportError:  # pragma: no cover - another pydicom 3.x
    _read_file_meta_info = None  # type: ignore[assignment]

_KNOWN_VRS = {vr: vr.decode(default_encoding) for vr in ENCODED_VR if len(vr) == 2}
_LONG_VRS = frozenset(vr for vr in _KNOWN_VRS.values() if vr in EXPLICIT_VR_LENGTH_32)
_EXPLICIT = struct.Struct("<HH2sH")
_IMPLICIT = struct.Struct("<HHL")
_LONG_LENGTH = struct.Struct("<L")
_UNDEFINED = 0xFFFFFFFF
_CHARSET = 0x00080005


class _Declined(Exception):
    """The stream is not in the shape this reader handles: pydicom reads it."""


def read_received(content: bytes) -> FileDataset:
    """`dcmread(BytesIO(content))`, with the same result and the same errors; faster for the usual stream."""
    try:
        return _read_fast(content)
    except _Declined:
        return dcmread(BytesIO(content))


def _read_fast(content: bytes) -> FileDataset:
    if content[128:132] != b"DICM" or _read_file_meta_info is None:
        raise _Declined
    fp = BytesIO(content)
    try:
        preamble = read_preamble(fp, False)
        file_meta = _read_file_meta_info(fp)
    except Exception as exc:  # pydicom tells the reason
        raise _Declined from exc
    start = fp.tell()
    syntax = file_meta.get("TransferSyntaxUID")
    if syntax == ImplicitVRLittleEndian:
        implicit = True
    elif syntax == ExplicitVRLittleEndian or _encapsulated(syntax):
        implicit = False  # encapsulated syntaxes are explicit VR little endian (PS3.5 A.4)
    else:
        raise _Declined
    if len(content) - start < 8 or content[start : start + 2] == b"\x00\x00":  # empty, or a command group: pydicom's way
        raise _Declined
    looks_explicit = 0x40 < content[start + 4] < 0x5B and 0x40 < content[start + 5] < 0x5B
    if looks_explicit == implicit:  # pydicom would warn and read it the other way
        raise _Declined
    elements, encoding = _top_level(content, start, implicit)
    dataset = Dataset(elements, parent_encoding=default_encoding)
    dataset.set_original_encoding(implicit, True, encoding)
    ds = FileDataset(fp, dataset, preamble, file_meta, implicit, True)
    ds.set_original_encoding(implicit, True, dataset._character_set)
    return ds


def _encapsulated(syntax: object) -> bool:
    """Whether a file's Transfer Syntax UID is a known compressed one pydicom reads as explicit VR little endian."""
    if not isinstance(syntax, UID) or syntax.is_private:  # private ones (PrivateTransferSyntaxes too): pydicom's way
        return False
    try:
        return syntax.is_transfer_syntax and syntax.is_compressed and syntax.is_little_endian and not syntax.is_deflated
    except ValueError:  # a UID but no transfer syntax pydicom knows
        return False


def _top_level(content: bytes, offset: int, implicit: bool) -> tuple[dict[BaseTag, object], object]:
    """The top-level elements from `offset` to the end, as pydicom's generator yields them, and the data set's encoding."""
    elements: dict[BaseTag, object] = {}
    encoding: object = default_encoding
    end = len(content)
    while offset < end:
        if end - offset < 8:
            raise _Declined  # a cut header: pydicom ends the data set there, quietly
        if implicit:
            group, number, length = _IMPLICIT.unpack_from(content, offset)
            vr = None
            value_at = offset + 8
        else:
            group, number, raw_vr, length = _EXPLICIT.unpack_from(content, offset)
            vr = _KNOWN_VRS.get(raw_vr)
            if vr is None:
                raise _Declined
            if vr in _LONG_VRS:
                if end - offset < 12:
                    raise _Declined
                length = _LONG_LENGTH.unpack_from(content, offset + 8)[0]
                value_at = offset + 12
            else:
                value_at = offset + 8
        if group == 0xFFFE or group == 0x0002 or group == 0x0000:
            raise _Declined  # item tags, or a group pydicom reads apart from the data set
        key = group << 16 | number  # compared as a plain int: BaseTag's == is Python code
        if length == _UNDEFINED:
            offset = _undefined_length(content, offset, implicit, encoding, elements)
            continue
        value_end = value_at + length
        if value_end > end:
            raise _Declined  # cut short: pydicom keeps what there is, and ingest.intake judges it
        value = content[value_at:value_end] if length else empty_value_for_VR(vr, raw=True)
        tag = BaseTag(key)
        element = RawDataElement(tag, vr, length, value, value_at, implicit, True)
        if key == _CHARSET:
            encoding = convert_encodings(convert_raw_data_element(element).value)
        elements[tag] = element
        offset = value_end
    return elements, encoding


def _undefined_length(content: bytes, offset: int, implicit: bool, encoding: object, elements: dict[BaseTag, object]) -> int:
    """Read the element of undefined length at `offset` with pydicom's generator; returns where the next element starts."""
    fp = BytesIO(content)
    fp.seek(offset)
    generator = data_element_generator(fp, implicit, True, None, None, encoding)  # type: ignore[arg-type]
    try:
        element = next(generator)
    except Exception as exc:  # a cut sequence or fragment: pydicom's full read decides what that means
        raise _Declined from exc
    elements[element.tag] = element
    return fp.tell()
