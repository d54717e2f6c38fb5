"""The C-STORE fast path's own wire and file code, checked against pynetdicom and against the in-memory checks.

ingest.dimse_wire and ingest.streaming_dul write what pynetdicom would have written (the
C-STORE-RSP, the Part 10 file meta), and ingest.file_admission must judge a large instance from
its file exactly as ingest.intake.admit judges the same bytes in memory.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.pdu import P_DATA_TF

from ingest.dimse_wire import Command, decode_command, store_response_pdu
from ingest.file_admission import admit_file
from ingest.intake import StoreRefused, admit
from ingest.streaming_dul import part10_prefix
from tests.factories import write_series

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45"])  # even and odd lengths: padding
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
def test_the_part10_prefix_is_pynetdicoms(sop_uid: str, syntax: str) -> None:
    ours = part10_prefix(Command(1, 7, CT, sop_uid, True), syntax)
    theirs = b"\x00" * 128 + b"DICM" + encode_file_meta(create_file_meta(sop_class_uid=CT, sop_instance_uid=sop_uid, transfer_syntax=syntax))
    assert ours == theirs


@pytest.mark.parametrize("comment", [None, "truncated: element (7FE0,0010) declares", "odd"])
def test_the_store_response_decodes_in_pynetdicom(comment: str | None) -> None:
    request = Command(1, 41, CT, "1.2.3.45", True)
    pdu = P_DATA_TF()
    pdu.decode(store_response_pdu(3, request, 0xB007 if comment else 0x0000, comment))
    (item,) = pdu.presentation_data_value_items
    assert item.context_id == 3
    message = C_STORE_RSP()
    assert message.decode_msg(pdu.to_primitive())
    response = message.message_to_primitive()
    assert response.MessageIDBeingRespondedTo == 41
    assert response.AffectedSOPClassUID == CT
    assert response.AffectedSOPInstanceUID == "1.2.3.45"
    assert response.Status == (0xB007 if comment else 0)
    assert (response.ErrorComment or None) == comment


def test_a_command_set_decodes_as_pynetdicom_encoded_it() -> None:
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE

    primitive = C_STORE()
    primitive.MessageID = 9
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.45"
    primitive.Priority = 2
    primitive.DataSet = BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = decode_command(message.encode_msg(1, 16384).__next__().presentation_data_value_list[0][1][1:])
    assert (command.command_field, command.message_id, command.sop_class_uid, command.sop_instance_uid, command.has_data_set, command.priority) == (
        1, 9, CT, "1.2.3.45", True, 2,
    )


def _judged(content: bytes, path: Path) -> tuple[str, object]:
    """How admit and admit_file judge the same bytes: ('ok', warning) or ('refused', status)."""
    path.write_bytes(content)
    verdicts = []
    for judge in (lambda: admit(content), lambda: admit_file(path)):
        try:
            verdicts.append(("ok", judge()[1] is not None))
        except StoreRefused as refused:
            verdicts.append(("refused", refused.status))
    assert verdicts[0] == verdicts[1], verdicts
    return verdicts[0]


def test_a_file_is_judged_as_its_bytes_are_in_memory(tmp_path: Path) -> None:
    series = write_series(tmp_path / "ct", slices=1, rows=64, columns=64)
    whole = series.paths[0].read_bytes()
    assert _judged(whole, tmp_path / "a.part") == ("ok", False)
    assert _judged(whole[:-100], tmp_path / "b.part") == ("refused", 0xC000)  # pixel data cut short
    assert _judged(whole + b"\xfc\xff\xfc\xff", tmp_path / "c.part") == ("refused", 0xC000)  # a cut element header after it
    padded = whole + b"\xfc\xff\xfc\xff" + b"OB\x00\x00" + (4).to_bytes(4, "little") + b"\x00" * 4
    assert _judged(padded, tmp_path / "d.part") == ("ok", False)  # Data Set Trailing Padding after the pixel data
    ds = dcmread(BytesIO(whole))
    ds.Rows = 128  # the header asks for more pixels than there are: stored with a warning
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert _judged(out.getvalue(), tmp_path / "e.part") == ("ok", True)


def test_encapsulated_pixel_data_is_walked_by_its_items(tmp_path: Path) -> None:
    series = write_series(tmp_path / "ct", slices=1, rows=64, columns=64)
    ds = dcmread(series.paths[0])
    ds.compress(RLELossless, encoding_plugin="pydicom")
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    whole = out.getvalue()
    assert _judged(whole, tmp_path / "a.part") == ("ok", False)
    assert _judged(whole[:-8], tmp_path / "b.part") == ("refused", 0xC000)  # no sequence delimiter
    assert _judged(whole[:-30], tmp_path / "c.part") == ("refused", 0xC000)  # a fragment cut short
