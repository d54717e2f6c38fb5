"""The receiver's pure parts: dataset names from AE titles, completeness checks, transfer syntax preference."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless

from ingest.receiver import StoreRefused, accepted_transfer_syntaxes, dataset_name, parse_dataset
from tests.factories import write_series


@pytest.mark.parametrize(("called", "name"), [("my-dataset", "my-dataset"), ("  LUNG1 ", "LUNG1"), ("a/b", "a_b"), ("..", None), (".x", "x"), ("", None), ("   ", None)])
def test_dataset_names_from_called_ae_titles(called: str, name: str | None) -> None:
    assert dataset_name(called) == name


def test_explicit_vr_first_then_compressed_then_implicit() -> None:
    order = accepted_transfer_syntaxes()
    assert order[0] == ExplicitVRLittleEndian
    assert order.index(JPEGLSLossless) < order.index(ImplicitVRLittleEndian)
    assert order.index(RLELossless) < order.index(ImplicitVRLittleEndian)
    assert len(order) == len(set(order))


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.999])
def test_truncated_streams_are_refused(tmp_path: Path, keep: float) -> None:
    path = write_series(tmp_path, modality="CT", slices=1, rows=64, columns=64, seed=9).paths[0]
    content = path.read_bytes()
    parse_dataset(content)  # whole: fine
    with pytest.raises(StoreRefused) as refused:
        parse_dataset(content[: int(len(content) * keep)])
    assert refused.value.status == 0xC000


def test_not_dicom_is_refused() -> None:
    with pytest.raises(StoreRefused):
        parse_dataset(b"\0" * 128 + b"DICM" + BytesIO(b"garbage").getvalue())


@pytest.mark.parametrize(("name", "cut"), [("emri_small_jpeg_2k_lossless_too_short.dcm", 0), ("JPEG2000.dcm", 20), ("SC_rgb_jpeg_dcmtk.dcm", 20)])
def test_encapsulated_pixel_data_cut_before_its_delimiter_is_named(name: str, cut: int) -> None:
    """pydicom reads no element at all from such a stream: the reason is still the pixel data, not "not DICOM"."""
    from pydicom.data import get_testdata_file

    from ingest.intake import error_comment

    content = Path(get_testdata_file(name)).read_bytes()  # the pydicom-data file is cut already
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: End of file reached before delimiter (FFFE,E0DD) found
        with pytest.raises(StoreRefused) as refused:
            parse_dataset(content[: len(content) - cut])
    assert refused.value.status == 0xC000
    assert refused.value.comment == "truncated: encapsulated pixel data ends before its delimiter"
    assert error_comment(refused.value.comment) == refused.value.comment  # whole in the 64 characters of an ErrorComment


def test_the_reactor_leaves_a_reply_to_the_send_waiting_for_it() -> None:
    """pynetdicom's reactor, just past its pause, took and dropped the reply a send_c_*() waited for (ingest.dicom_transport)."""
    import ingest.dicom_transport  # noqa: F401  (installs the fix)
    from pynetdicom import AE
    from pynetdicom.association import Association
    from pynetdicom.dimse_primitives import C_ECHO

    assoc = Association(AE(), "requestor")
    reply = C_ECHO()
    reply.MessageIDBeingRespondedTo = 1
    assoc.dimse.msg_queue.put((1, reply))
    assoc._reactor_checkpoint.clear()  # what a send_*() does before sending
    assert assoc.dimse.get_msg(block=False) == (None, None)  # the reactor's look
    assert assoc.dimse.get_msg(block=True) == (1, reply)  # the send's
    assoc._reactor_checkpoint.set()
    assoc.dimse.msg_queue.put((1, reply))
    assert assoc.dimse.get_msg(block=False) == (1, reply)  # no send waits: the reactor serves what comes, as before


@pytest.mark.parametrize(
    ("target", "safe"),
    [("/", "/"), ("/settings?x=1", "/settings?x=1"), ("//evil.example", "/"), ("/\\evil.example", "/"),
     ("https://evil.example/", "/"), ("", "/"), ("\\\\evil", "/"), ("/a\x01b", "/")],
)
def test_login_redirects_stay_on_this_site(target: str, safe: str) -> None:
    from pages.login import safe_next

    assert safe_next(target) == safe


def _reencoded(name: str, **changes: object) -> bytes:
    """A pydicom test file, changed and written back as Part 10 bytes."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    ds = dcmread(get_testdata_file(name))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("photometric", ["YBR_FULL_422", "YBR_PARTIAL_422"])
def test_subsampled_colour_is_sized_by_its_subsampling(photometric: str) -> None:
    """4:2:2 holds two bytes per 8-bit pixel, not three: whole files pass quietly, half the pixel data is told."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from ingest.intake import admit

    whole = dcmread(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    needed = whole.Rows * whole.Columns * 2
    assert len(whole.PixelData) == needed
    assert admit(_reencoded("SC_ybr_full_422_uncompressed.dcm", PhotometricInterpretation=photometric))[1] is None
    _, warning = admit(_reencoded("SC_ybr_full_422_uncompressed.dcm", PhotometricInterpretation=photometric, PixelData=whole.PixelData[: needed // 2]))
    assert warning == f"pixel data {needed // 2} bytes, header needs {needed}: 1 frames x 3 samples"


@pytest.mark.parametrize("into_header", [1, 2, 4, 6, 7])
def test_a_stream_cut_inside_an_element_header_is_refused(into_header: int) -> None:  # (issue 14, defect 2)
    """pydicom stops without a word at a partial header: the bytes left over after the last element give the cut away."""
    whole = _reencoded("CT_small.dcm")
    parse_dataset(whole)
    cut = whole.find(b"\x28\x00\x30\x00DS") + into_header  # inside the 8-byte header of Pixel Spacing
    with pytest.raises(StoreRefused) as refused:
        parse_dataset(whole[:cut])
    assert refused.value.status == 0xC000
    assert refused.value.comment == "truncated: ends inside an element header after (0028,0011)"


def test_a_value_cut_in_the_character_set_is_refused() -> None:
    """Specific Character Set is parsed as it is read, so its declared length is read back from its header."""
    whole = _reencoded("CT_small.dcm")
    cut = whole.find(b"\x08\x00\x05\x00CS") + 8 + 3
    with pytest.raises(StoreRefused) as refused:
        parse_dataset(whole[:cut])
    assert refused.value.status == 0xC000 and refused.value.comment.startswith("truncated: element (0008,0005) declares")


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "reportsi.dcm", "emri_small_big_endian.dcm", "SC_rgb_rle.dcm"])
def test_whole_streams_leave_nothing_unread(name: str) -> None:
    """Whole files, undefined-length sequences and encapsulated pixel data included, pass the tail check."""
    from pydicom.data import get_testdata_file

    assert parse_dataset(Path(get_testdata_file(name)).read_bytes()) is not None


@pytest.mark.parametrize(("changes", "warning"), [
    ({"NumberOfFrames": 3}, "pixel data 8192 bytes, header needs 24576: 3 frames x 1 samples"),
    ({"SamplesPerPixel": 3}, "pixel data 8192 bytes, header needs 24576: 1 frames x 3 samples"),
])
def test_whole_pixel_data_the_header_contradicts_is_kept_with_a_warning(changes: dict[str, object], warning: str) -> None:
    from ingest.intake import admit

    ds, said = admit(_reencoded("MR_small.dcm", **changes))
    assert said == warning and len(ds.PixelData) == 8192


def test_pixel_data_shorter_than_its_own_length_is_still_truncated() -> None:
    whole = _reencoded("MR_small.dcm")
    with pytest.raises(StoreRefused) as refused:
        parse_dataset(whole[:-300])  # its trailing padding (138 bytes) and 162 of pixel data
    assert refused.value.status == 0xC000 and refused.value.comment == "truncated: element (7FE0,0010) declares 8192 bytes but has 8030"


def test_an_invalid_pixel_attribute_is_named() -> None:
    """badVR.dcm's fault is NumberOfFrames '1A' (its Rows and Columns are fine)."""
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings(), pytest.raises(StoreRefused) as refused:
        warnings.simplefilter("ignore")  # pydicom warns of the invalid IS as it reads it
        parse_dataset(Path(get_testdata_file("badVR.dcm")).read_bytes())
    assert refused.value.status == 0xA900
    assert refused.value.comment == "invalid NumberOfFrames: '1A' is not a whole number"
    with pytest.raises(StoreRefused) as missing:
        parse_dataset(_reencoded("CT_small.dcm", Columns=None))
    assert missing.value.status == 0xA900 and missing.value.comment.startswith("missing Columns")


def test_error_comments_fit_an_lo_and_never_hold_a_path() -> None:
    from ingest.intake import error_comment

    reason = "cannot parse the data set: [Errno 2] No such file: '/srv/vireo/data/pacs/1.2/3.4/5.6.dcm' in C:\\data\\x.dcm \u00e9 " + "x" * 80
    comment = error_comment(reason)
    assert comment.startswith("cannot parse the data set: [Errno 2] No such file: ")
    assert len(comment) <= 64 and comment.isascii() and "\\" not in comment
    assert "/srv" not in comment and "pacs" not in comment
    assert StoreRefused(0xC000, reason).comment.count("(file)") == 2  # every door's reason, not only the DIMSE one


@pytest.mark.parametrize(
    ("uid", "storage"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", True),  # CT Image Storage
        ("1.2.840.10008.5.1.4.39.1", True),  # Color Palette Storage (a non-patient object)
        ("1.2.840.10008.5.1.4.1.1.6", True),  # Ultrasound Image Storage (Retired)
        ("1.2.840.10008.5.1.1.29", True),  # Hardcopy Grayscale Image Storage (Retired)
        ("1.2.826.0.1.3680043.8.498.1.2.3", True),  # private
        ("1.2.840.10008.5.1.4.1.1.999", True),  # public, newer than the dictionaries
        ("1.2.840.10008.1.3.10", False),  # DICOMDIR
        ("1.2.840.10008.1.1", False),  # Verification
        ("1.2.840.10008.5.1.4.1.2.2.1", False),  # Study Root Q/R FIND
        ("1.2.840.10008.5.1.4.31", False),  # Modality Worklist FIND
        ("1.2.840.10008.1.20.1", False),  # Storage Commitment Push Model
        ("1.2.840.10008.1.20.2", False),  # Storage Commitment Pull Model (Retired)
        ("1.2.840.10008.1.2.1", False),  # a transfer syntax proposed as abstract syntax
        ("1.2.abc", False),
    ],
)
def test_storage_like_abstract_syntaxes(uid: str, storage: bool) -> None:
    from ingest.receiver_services import is_storage_like

    assert is_storage_like(uid) is storage


def test_storage_offer_adds_each_new_storage_class_once_with_both_roles() -> None:
    from pynetdicom import build_context

    from ingest.receiver_services import storage_like_contexts

    proposed = [build_context(uid) for uid in ("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.8.498.9", "1.2.826.0.1.3680043.8.498.9",
                                                "1.2.840.10008.1.3.10", "1.2.840.10008.5.1.4.1.1.6")]
    added = storage_like_contexts(proposed, {"1.2.840.10008.5.1.4.1.1.2"}, accepted_transfer_syntaxes())
    assert [str(c.abstract_syntax) for c in added] == ["1.2.826.0.1.3680043.8.498.9", "1.2.840.10008.5.1.4.1.1.6"]
    assert all(c.scu_role and c.scp_role and c.transfer_syntax[0] == ExplicitVRLittleEndian for c in added)


def test_a_store_naming_another_class_than_its_context_is_unnegotiated() -> None:
    from ingest.receiver import unnegotiated_class

    assert unnegotiated_class("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2") is None
    assert unnegotiated_class("31", "1.2.840.10008.5.1.4.1.1.481.2") == "SOP class 31 not negotiated; context: RTDoseStorage"
