"""The few pieces of the DICOM wire format the C-STORE fast path reads and writes itself (PS3.7, PS3.8).

pynetdicom turns every P-DATA-TF PDU into PDU, item and primitive objects, queues them to
another thread, and grows the data set in a BytesIO: about 2 ms of Python per instance, the
largest cost of receiving. The fast path (ingest.streaming_dul) instead walks a PDU's
presentation data values in the buffer they arrived in, and needs only: the PDV items of a
P-DATA-TF, the command set of a request (Implicit VR Little Endian, group 0000, a handful of
elements), and the C-STORE-RSP it answers with.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101  # CommandDataSetType: no data set follows the command (PS3.7 E.1)
# Message control header bits (PS3.8 E.2).
COMMAND_BIT = 0x01
LAST_BIT = 0x02

_ITEM = struct.Struct(">LBB")  # PDV item length, presentation context ID, message control header
_ELEMENT = struct.Struct("<HHL")  # implicit VR little endian: group, element, value length
_US = struct.Struct("<H")

AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_RESPONDED = 0x0120
PRIORITY = 0x0700
DATA_SET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000
MOVE_ORIGINATOR_AET = 0x1030
MOVE_ORIGINATOR_ID = 0x1031


class WireError(ValueError):
    """Bytes that are not what the standard says they must be (the association is aborted, as pynetdicom would)."""


@dataclass(frozen=True)
class Pdv:
    """One presentation data value: a fragment of a command or data set, and the raw item for handing it on."""

    context_id: int
    is_command: bool
    is_last: bool
    start: int  # where the fragment starts in the PDU body
    end: int
    item_start: int  # where the item (with its 4-byte length) starts


def pdvs(body: memoryview) -> Iterator[Pdv]:
    """The PDV items of a P-DATA-TF PDU body (the bytes after its 6-byte header)."""
    offset, size = 0, len(body)
    while offset < size:
        if size - offset < _ITEM.size:
            raise WireError("P-DATA-TF ends inside a PDV item header")
        length, context_id, control = _ITEM.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > size:
            raise WireError(f"PDV item of length {length} does not fit its PDU")
        yield Pdv(context_id, bool(control & COMMAND_BIT), bool(control & LAST_BIT), offset + 6, offset + 4 + length, offset)
        offset += 4 + length


@dataclass(frozen=True)
class Command:
    """The elements of a DIMSE command set the fast path decides on."""

    command_field: int | None
    message_id: int | None
    sop_class_uid: str
    sop_instance_uid: str
    has_data_set: bool
    priority: int = 0
    move_originator_aet: str = ""


def decode_command(data: bytes | bytearray) -> Command:
    """Read a command set (Implicit VR Little Endian); elements other than those named are skipped."""
    values: dict[int, bytes] = {}
    view = memoryview(data)
    offset, size = 0, len(view)
    while offset + _ELEMENT.size <= size:
        group, element, length = _ELEMENT.unpack_from(view, offset)
        offset += _ELEMENT.size
        if group != 0 or length == 0xFFFFFFFF or offset + length > size:
            raise WireError("command set holds an element that is not group 0000 or does not fit")
        values[element] = bytes(view[offset : offset + length])
        offset += length
    if offset != size:
        raise WireError("command set ends inside an element header")

    def number(tag: int) -> int | None:
        raw = values.get(tag)
        return _US.unpack(raw[:2])[0] if raw is not None and len(raw) >= 2 else None

    def text(tag: int) -> str:
        return values.get(tag, b"").decode("ascii", "replace").strip("\x00 ")

    data_set_type = number(DATA_SET_TYPE)
    return Command(
        command_field=number(COMMAND_FIELD),
        message_id=number(MESSAGE_ID),
        sop_class_uid=text(AFFECTED_SOP_CLASS),
        sop_instance_uid=text(AFFECTED_SOP_INSTANCE),
        has_data_set=data_set_type is not None and data_set_type != NO_DATA_SET,
        priority=number(PRIORITY) or 0,
        move_originator_aet=text(MOVE_ORIGINATOR_AET),
    )


def _element(element: int, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return _ELEMENT.pack(0, element, len(value)) + value


def store_response_pdu(context_id: int, request: Command, status: int, comment: str | None = None) -> bytes:
    """A whole P-DATA-TF PDU carrying the C-STORE-RSP to `request`: one PDV, the command's last fragment."""
    body = b"".join(
        (
            _element(AFFECTED_SOP_CLASS, request.sop_class_uid.encode("ascii"), b"\x00"),
            _element(COMMAND_FIELD, _US.pack(C_STORE_RSP), b""),
            _element(MESSAGE_ID_RESPONDED, _US.pack(request.message_id or 0), b""),
            _element(DATA_SET_TYPE, _US.pack(NO_DATA_SET), b""),
            _element(STATUS, _US.pack(status), b""),
            _element(ERROR_COMMENT, comment.encode("ascii", "replace"), b" ") if comment else b"",
            _element(AFFECTED_SOP_INSTANCE, request.sop_instance_uid.encode("ascii"), b"\x00"),
        )
    )
    command = _element(0x0000, struct.pack("<L", len(body)), b"") + body
    item = _ITEM.pack(len(command) + 2, context_id, COMMAND_BIT | LAST_BIT) + command
    return struct.pack(">BBL", P_DATA_TF, 0, len(item)) + item


def p_data_pdu(items: list[bytes]) -> bytearray:
    """A P-DATA-TF PDU made of PDV items (each with its 4-byte length), as pynetdicom's decoder takes it."""
    body = b"".join(items)
    pdu = bytearray(struct.pack(">BBL", P_DATA_TF, 0, len(body)))
    pdu += body
    return pdu
