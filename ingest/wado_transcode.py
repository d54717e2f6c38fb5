"""Re-encoding a stored instance into an uncompressed little-endian transfer syntax for WADO-RS.

PS3.18 makes explicit VR little endian the default of an instance retrieve, so every file
stored big-endian, deflated or compressed must be re-encoded when the client does not accept
the stored syntax. pydicom does the work: its decoders decompress, and it re-encodes every
value it has decoded (US, SS, FL, AT, …) in the new byte order. What it leaves to the caller
is the byte order of binary values it keeps as bytes (OW, OF, OD, OL, OV and native Pixel
Data), which is swapped here.

Whether a re-encoding is possible is decided up front (`transcode_refusal`), so an answer
falls back to another syntax (app/api/wado_rs.py says which), or is refused with 406, before
its first byte rather than cut off in the middle.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ingest.error_text import plain_reason

log = logging.getLogger(__name__)

LITTLE_ENDIAN_TARGETS = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
PIXEL_DATA = 0x7FE00010
# Bytes per value of the binary VRs pydicom keeps as raw bytes (PS3.5 6.2): their byte order is ours to fix.
SWAP_UNITS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class CannotTranscode(ValueError):
    """A stored instance cannot be re-encoded in the syntax asked for; the message names the stored syntax."""


def syntax_label(uid: str) -> str:
    """'JPEG Extended (Process 2 and 4) (1.2.840.10008.1.2.4.51)': how answers name a transfer syntax."""
    name = UID(uid).name if uid else ""
    if not uid:
        return "an unrecorded transfer syntax"
    return f"{name} ({uid})" if name and name != uid else f"the unknown transfer syntax {uid}"


def transcode_refusal(stored: str, target: str) -> str | None:
    """Why an instance stored in `stored` cannot be sent in `target`, or None when it can (as far as can be told unread).

    Re-encoding between uncompressed syntaxes always works; decompressing needs one of
    pydicom's decoders for the stored syntax, with its plugin installed.
    """
    if target not in LITTLE_ENDIAN_TARGETS:
        return f"Vireo does not compress; it sends {syntax_label(stored)} as stored or re-encoded uncompressed"
    uid = UID(stored)
    if not uid.is_transfer_syntax:
        return f"the instance is stored in {syntax_label(stored)}, which Vireo cannot re-encode"
    if not uid.is_compressed:
        return None
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"the instance is stored in {syntax_label(stored)}, for which no decoder exists here"
    if not decoder.is_available:
        return f"the instance is stored in {syntax_label(stored)}, and no decoder for it is installed"
    return None


def transcoded(content: bytes, stored: str, target: str) -> bytes:
    """The Part 10 file `content` re-encoded in `target` (explicit or implicit VR little endian).

    Raises CannotTranscode (naming the stored syntax, never a path) when decoding fails.
    """
    refusal = transcode_refusal(stored, target)
    if refusal:
        raise CannotTranscode(refusal)
    try:
        ds = dcmread(io.BytesIO(content))
        for _element in ds.iterall():
            pass  # decodes every raw element now: a file whose header lies about its VR encoding is then written truthfully
        if UID(stored).is_compressed and "PixelData" in ds:
            # The instance keeps its UID: a retrieve serves the same instance, only encoded differently.
            ds.decompress(generate_instance_uid=False)
        elif ds.original_encoding[1] is False:
            _swap_binary_values(ds)
        ds.file_meta.TransferSyntaxUID = UID(target)
        out = io.BytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
    except Exception as exc:  # decoders and the parser raise assorted types for data they cannot handle
        log.warning("cannot re-encode an instance stored in %s as %s: %s", stored, target, exc)
        raise CannotTranscode(f"the instance stored in {syntax_label(stored)} could not be re-encoded: {plain_reason(exc)}") from exc
    return out.getvalue()


def _swap_binary_values(ds: Dataset) -> None:
    """Big → little endian for the values pydicom keeps as bytes, in `ds` and every nested item.

    Pixel Data's unit is its Bits Allocated (OW words hold 16-, 32- or 64-bit values; 8-bit
    and 1-bit OW data is swapped as 16-bit words, as PS3.5 8.1.1 has it; OB is a byte
    stream and stays as it is). Encapsulated (undefined length) values are byte streams too.
    """
    for element in ds:  # iterating decodes raw elements, in the dataset's own (big-endian) encoding
        if element.VR == "SQ":
            for item in element.value or ():
                _swap_binary_values(item)
            continue
        if not isinstance(element.value, bytes) or element.is_undefined_length:
            continue
        unit = pixel_unit(ds, element.VR) if element.tag == PIXEL_DATA else SWAP_UNITS.get(element.VR, 0)
        if unit > 1:
            element.value = swapped(element.value, unit)


def pixel_unit(ds: Dataset, vr: str) -> int:
    """Bytes per word whose order a big-endian native Pixel Data value reverses (1: a byte stream, nothing to swap)."""
    if vr != "OW":
        return 1
    bits = int(ds.get("BitsAllocated") or 16)
    return bits // 8 if bits in (32, 64) else 2


def swapped(value: bytes, unit: int) -> bytes:
    """`value` with the byte order of each `unit`-byte word reversed (a trailing partial word is kept as it is)."""
    whole = len(value) - len(value) % unit
    words = np.frombuffer(value, dtype=np.uint8, count=whole).reshape(-1, unit)[:, ::-1]
    return words.tobytes() + value[whole:]
