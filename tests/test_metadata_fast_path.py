"""The index metadata read straight from raw bytes (ingest.metadata `raw_ascii`, `_raw_numbers`) equals pydicom's reading.

The receiver reads ~20 elements per instance; converting them through pydicom cost about a
quarter of a millisecond, so plain values are decoded from their bytes. Every file of the
real-world corpus (pydicom's and pydicom-data's test files: character sets, implicit and big
endian syntaxes, odd VRs, malformed values) must give exactly the metadata pydicom's own
conversion gives, or fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

import pytest
from pydicom import dcmread

from ingest import metadata
from ingest.metadata import MissingAttribute, extract
from tests.support.corpus import corpus


def _extract(content: bytes, *, raw: bool) -> object:
    ds = dcmread(BytesIO(content), force=True)
    try:
        if raw:
            return extract(ds, with_attributes=True)
        with pytest.MonkeyPatch.context() as patch:  # every element through pydicom's conversion, as before
            patch.setattr(metadata, "raw_ascii", lambda *_: None)
            patch.setattr(metadata, "_raw_numbers", lambda *_: None)
            return extract(ds, with_attributes=True)
    except MissingAttribute as exc:
        return ("missing", str(exc))
    except Exception as exc:  # noqa: BLE001 - compared, not hidden: both readings must fail alike
        return ("error", type(exc).__name__)


def _assert_raw_equals_pydicom(reading: Callable[..., object]) -> None:
    """`reading(content, raw=...)` gives the same answer both ways for every parseable corpus file (at least 250 of them)."""
    files = corpus()
    assert len(files) >= 250
    compared = 0
    mismatches: list[str] = []
    for file in files:
        content = file.read()
        try:
            dcmread(BytesIO(content), force=True)
        except Exception:  # noqa: BLE001 - not parseable at all: nothing to compare
            continue
        fast, slow = reading(content, raw=True), reading(content, raw=False)
        compared += 1
        if fast != slow:
            mismatches.append(f"{file.name}: raw {fast!r}\n    pydicom {slow!r}")
    assert compared >= 250
    assert not mismatches, f"{len(mismatches)} of {compared} files differ:\n" + "\n".join(mismatches[:10])


def test_raw_reading_equals_pydicom_on_every_corpus_file() -> None:
    _assert_raw_equals_pydicom(_extract)


def test_values_pydicom_must_decide_are_left_to_it() -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid(), generate_uid(), generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SeriesDescription = "Thorax f\u00fcr Abdomen "  # Latin-1: not ASCII
    ds.Modality = "CT"
    ds.InstanceNumber = "12.0"  # a whole number written as a decimal: pydicom's IS accepts it
    ds.ImagePositionPatient = [1.5, -2, 3]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    meta = extract(dcmread(BytesIO(buffer.getvalue())), with_attributes=False)
    assert meta.series_description == "Thorax f\u00fcr Abdomen"
    assert meta.instance_number == 12
    assert meta.modality == "CT"
    assert meta.slice_position == 3.0


def _pixel_check(content: bytes, *, raw: bool) -> object:
    from ingest import intake

    ds = dcmread(BytesIO(content), force=True)
    with pytest.MonkeyPatch.context() as patch:
        if not raw:  # every Image Pixel attribute through pydicom's conversion, as before
            patch.setattr(intake, "_raw_whole_number", lambda *_: None)
            patch.setattr(intake, "raw_ascii", lambda *_: None)
        try:
            sizing = intake.expected_pixel_bytes(ds) if intake._PIXEL_DATA in ds else None
            return sizing, intake.pixel_mismatch(ds)
        except intake.ImagePixelError as exc:
            return ("refused", str(exc))
        except Exception as exc:  # noqa: BLE001 - compared, not hidden: both readings must fail alike
            return ("error", type(exc).__name__)


def test_pixel_sizing_from_raw_bytes_equals_pydicom_on_every_corpus_file() -> None:
    """The receiver's pixel-data check (ingest.intake `pixel_mismatch`) reads Rows, Columns... from their bytes where it can."""
    _assert_raw_equals_pydicom(_pixel_check)
