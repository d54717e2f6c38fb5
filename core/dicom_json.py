"""DICOM JSON (PS3.18 Annex F): what DICOMweb answers in, built from datasets and from index values.

Two sources feed it. An instance's full metadata is converted once, at ingest, into a
compact JSON text whose bulk data (pixel data, large binary values) is replaced by
BulkDataURIs; the URIs start with `BULK_BASE`, replaced by the request's DICOMweb root when
served, because the host a client reaches us by is only known then. Query results (QIDO,
C-FIND) come from the index as keyword → value and are converted with the VR the data
dictionary gives each keyword.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

BULK_BASE = "{{dicomweb}}"
# Binary values longer than this are left out of metadata and served by their BulkDataURI.
BULK_THRESHOLD = 1024
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


class UnknownAttribute(ValueError):
    """A keyword or tag that names no attribute of the DICOM data dictionary."""


def tag_hex(tag: int) -> str:
    return f"{tag:08X}"


def parse_attribute(name: str) -> tuple[int, str]:
    """A keyword (`PatientID`) or tag (`00100020`, `0010,0020`) → (tag, keyword)."""
    text = name.strip()
    compact = text.replace(",", "").replace("(", "").replace(")", "")
    if len(compact) == 8 and all(c in "0123456789abcdefABCDEF" for c in compact):
        tag = int(compact, 16)
        return tag, keyword_for_tag(tag) or ""
    tag = tag_for_keyword(text)
    if tag is None:
        raise UnknownAttribute(f"{name!r} is neither a DICOM keyword nor a tag")
    return int(tag), text


@lru_cache(maxsize=None)
def vr_of(keyword: str) -> str:
    try:
        vr = dictionary_VR(keyword)
    except KeyError:
        return "UN"
    # Ambiguous dictionary VRs ("US or SS", "OB or OW"): the first is right for index values.
    return vr.split(" ")[0]


@lru_cache(maxsize=None)
def _tag_of(keyword: str) -> int | None:
    tag = tag_for_keyword(keyword)
    return None if tag is None else int(tag)


# --------------------------------------------------------------------------- index values


def _person_name(value: Any) -> dict[str, str]:
    groups = str(value).split("=")
    names = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False))
    return {k: v for k, v in names.items() if v}


def _number(value: Any, vr: str) -> int | float | None:
    try:
        number = float(value) if vr in ("DS", "FL", "FD") else int(value)
    except (TypeError, ValueError):
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    if isinstance(number, float) and number.is_integer() and vr == "DS":
        return int(number)
    return number


def element_json(keyword: str, value: Any, vr: str | None = None) -> dict[str, Any]:
    """One attribute as DICOM JSON from an index value (str, number or list of them)."""
    vr = vr or vr_of(keyword)
    if isinstance(value, str) and vr not in _SPECIAL_VRS:
        return {"vr": vr, "Value": [value]} if value else {"vr": vr}  # the common case, kept fast
    values = value if isinstance(value, (list, tuple)) else [value]
    values = [v for v in values if v is not None and v != ""]
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(v) for v in values]}
    if vr in ("IS", "DS") or vr in NUMBER_VRS:
        numbers = [_number(v, vr) for v in values]
        return {"vr": vr, "Value": numbers}
    if vr == "SQ" or vr in BINARY_VRS:
        return {"vr": vr}
    return {"vr": vr, "Value": [str(v) for v in values]}


_SPECIAL_VRS = frozenset({"PN", "IS", "DS", "SQ"} | NUMBER_VRS | BINARY_VRS)


@lru_cache(maxsize=None)
def key_of(keyword: str) -> tuple[str, str] | None:
    """(tag as 8 hex digits, VR) of a keyword; hex tags sort as the numbers do."""
    tag = _tag_of(keyword)
    return None if tag is None else (tag_hex(tag), vr_of(keyword))


def attributes_json(values: dict[str, Any], include_empty: Iterable[str] = (), only: frozenset[str] | None = None) -> dict[str, Any]:
    """keyword → value as a DICOM JSON object (keys are tags, in tag order).

    `include_empty` are present even without a value; `only`, when given, limits the
    object to those keywords (converting the rest would be wasted work).
    """
    out: dict[str, dict[str, Any]] = {}
    for keyword, value in values.items():
        if only is not None and keyword not in only:
            continue
        key = key_of(keyword)
        if key is not None:
            out[key[0]] = element_json(keyword, value, key[1])
    for keyword in include_empty:
        key = key_of(keyword)
        if key is not None and key[0] not in out:
            out[key[0]] = {"vr": key[1]}
    return {tag: out[tag] for tag in sorted(out)}


# --------------------------------------------------------------------------- datasets


def instance_document(ds: Dataset, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The instance's metadata as compact DICOM JSON text, bulk data as BulkDataURIs."""
    base = f"{BULK_BASE}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata"
    return json.dumps(dataset_json(ds, base), separators=(",", ":"), ensure_ascii=False)


def dataset_json(ds: Dataset, bulk_base: str, codec: str | None = None) -> dict[str, Any]:
    """A dataset as DICOM JSON. Plain values are decoded straight from the raw bytes (several times faster
    than pydicom's element conversion, which matters at ingest); anything unusual goes through pydicom."""
    if codec is None or 0x00080005 in ds:
        codec = _codec(ds)
    big_endian = ds.original_encoding[1] is False  # retired Explicit VR Big Endian: inline binary is sent little endian
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        if tag.group == 0x0002 or tag.element == 0x0000:
            continue  # file meta and group lengths are not part of DICOM JSON
        key = tag_hex(tag)
        raw = ds.get_item(tag, keep_deferred=True)
        if raw is not None and not isinstance(raw, DataElement) and raw.VR is not None:
            if _is_bulk(int(tag), raw.VR, raw.length):
                out[key] = {"vr": raw.VR, "BulkDataURI": f"{bulk_base}/{key}"}  # deferred or unread bulk data stays unread
                continue
            fast = _raw_json(raw, codec)
            if fast is not None:
                out[key] = fast
                continue
        try:
            element = ds[tag]
        except Exception:  # an undecodable value: leave it out rather than fail the instance
            continue
        out[key] = _element(element, f"{bulk_base}/{key}", codec, big_endian)
    return out


_CODECS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
_TEXT_VRS = frozenset({"LO", "SH", "PN", "UC"})
_SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
_STRUCT = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}


def _codec(ds: Dataset) -> str | None:
    """The Python codec of the dataset's SpecificCharacterSet, or None when only pydicom can decode it."""
    raw = ds.get_item(0x00080005)
    if raw is None:
        return "ascii"
    value = raw.value if isinstance(raw, DataElement) else raw.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, (list, MultiValue)):
        value = "\\".join(value)
    return _CODECS.get(str(value or "").strip())


def _raw_json(raw: Any, codec: str | None) -> dict[str, Any] | None:
    """DICOM JSON of an unconverted element with plain values, or None to leave it to pydicom."""
    vr = raw.VR
    value = raw.value
    if value is None or raw.length == 0xFFFFFFFF or not isinstance(value, bytes):
        return None
    if not value:
        return {"vr": vr}
    if vr in _STRUCT:
        fmt = _STRUCT[vr]
        size = struct.calcsize("<" + fmt)
        if len(value) % size:
            return None
        numbers = struct.unpack(("<" if raw.is_little_endian else ">") + fmt * (len(value) // size), value)
        if vr in ("FL", "FD"):
            numbers = tuple(n if math.isfinite(n) else None for n in numbers)
        return {"vr": vr, "Value": list(numbers)}
    if vr in _ASCII_VRS or vr in ("IS", "DS"):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return None
        parts = [p.strip(" \x00") for p in text.split("\\")]
        if vr in ("IS", "DS"):
            numbers = []
            for part in parts:
                if not part:
                    numbers.append(None)
                    continue
                number = _number(part, vr)
                if number is None:
                    return None  # malformed: let pydicom say what it makes of it
                numbers.append(number)
            return {"vr": vr, "Value": numbers}
        return {"vr": vr, "Value": [p or None for p in parts]} if any(parts) else {"vr": vr}
    if codec is None or (vr not in _TEXT_VRS and vr not in _SINGLE_TEXT_VRS):
        return None
    try:
        text = value.decode(codec)
    except UnicodeDecodeError:
        return None
    if vr in _SINGLE_TEXT_VRS:
        text = text.rstrip(" \x00")
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}
    parts = [p.strip(" \x00") for p in text.split("\\")]
    if vr == "PN":
        names = [_person_name(p) if p else None for p in parts]
        return {"vr": vr, "Value": names} if any(names) else {"vr": vr}
    return {"vr": vr, "Value": [p or None for p in parts]} if any(parts) else {"vr": vr}


def _is_bulk(tag: int, vr: str, length: int) -> bool:
    return (vr in BINARY_VRS or tag in PIXEL_TAGS) and length > 0 and (tag in PIXEL_TAGS or length > BULK_THRESHOLD)


def _element(element: DataElement, uri: str, codec: str | None = None, big_endian: bool = False) -> dict[str, Any]:
    vr = element.VR
    value = element.value
    if vr == "SQ":
        items = [dataset_json(item, f"{uri}/{i}", codec) for i, item in enumerate(value or [])]
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if vr in BINARY_VRS or int(element.tag) in PIXEL_TAGS:
        if value is None or value == b"":
            return {"vr": vr}
        if int(element.tag) in PIXEL_TAGS or element.is_undefined_length or len(value) > BULK_THRESHOLD:
            return {"vr": vr, "BulkDataURI": uri}
        binary = _little_endian(bytes(value), vr) if big_endian else bytes(value)
        return {"vr": vr, "InlineBinary": base64.b64encode(binary).decode()}
    if value is None or value == "":
        return {"vr": vr}
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    if vr == "PN":
        names = [_person_name(v) if str(v) else None for v in values]
        return {"vr": vr, "Value": names} if any(names) else {"vr": vr}
    if vr == "AT":
        return {"vr": vr, "Value": [tag_hex(int(Tag(v))) for v in values]}
    if vr in ("IS", "DS") or vr in NUMBER_VRS:
        numbers = [None if v is None or v == "" else _number(v, vr if vr != "IS" else "IS") for v in values]
        return {"vr": vr, "Value": numbers}
    texts = [_text(v) for v in values]
    return {"vr": vr, "Value": texts} if any(t is not None for t in texts) else {"vr": vr}


# Bytes per word of the binary VRs whose byte order follows the transfer syntax (PS3.5 7.3); OB and UN are byte streams.
_WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _little_endian(value: bytes, vr: str) -> bytes:
    """A big-endian binary value with each word's bytes reversed (a trailing partial word kept as it is)."""
    size = _WORD_SIZES.get(vr, 1)
    whole = len(value) - len(value) % size
    if size == 1 or not whole:
        return value
    return np.frombuffer(value, dtype=np.uint8, count=whole).reshape(-1, size)[:, ::-1].tobytes() + value[whole:]


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, PersonName | BaseTag):
        value = str(value)
    text = str(value).rstrip("\x00 ") if not isinstance(value, str) else value.rstrip("\x00")
    return text if text != "" else None


def with_base(document: str, dicomweb_root: str) -> str:
    """A stored document with its BulkDataURIs made absolute for this request."""
    return document.replace(BULK_BASE, dicomweb_root)
