"""ingest.dicom_reader reads every stream exactly as pydicom's dcmread does, and what a door admits is unchanged.

The whole real-world corpus (pydicom's and pydicom-data's files: implicit, explicit and big
endian, deflate, encapsulated syntaxes, sequences of undefined length, character sets, files
without a preamble, cut and malformed ones) is read both ways; the data sets must be equal
element by element (raw bytes, lengths, offsets, sequences), or both must fail alike.
"""

from __future__ import annotations

import warnings
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement

from ingest import dicom_reader, intake
from ingest.dicom_reader import read_received
from tests.support.corpus import corpus


def _reading(read, content: bytes) -> object:  # type: ignore[no-untyped-def]
    """Everything about a read data set that later code can see, or the failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = read(content)
        except Exception as exc:  # noqa: BLE001 - compared, not hidden: both readers must fail alike
            return ("error", type(exc).__name__, str(exc))
        elements = []
        for tag in ds.keys():
            element = ds.get_item(tag)
            if isinstance(element, RawDataElement):
                elements.append(("raw", tuple(element)))
            else:
                elements.append(("element", element.tag, element.VR, element.value, element.file_tell, element.is_undefined_length))
        return (
            type(ds).__name__,
            ds.preamble,
            [(m.tag, m.VR, m.value) for m in ds.file_meta],
            ds.original_encoding,
            ds.original_character_set,
            ds._character_set,
            elements,
        )


def test_every_corpus_file_reads_as_pydicom_reads_it() -> None:
    fast_reads = 0
    mismatches: list[str] = []
    files = corpus()
    assert len(files) >= 250
    for file in files:
        content = file.read()
        try:
            dicom_reader._read_fast(content)
            fast_reads += 1
        except dicom_reader._Declined:
            pass
        except Exception:  # noqa: BLE001 - the reader must decline, never fail on its own
            mismatches.append(f"{file.name}: the fast reader raised instead of declining")
        ours, theirs = _reading(read_received, content), _reading(lambda c: dcmread(BytesIO(c)), content)
        if ours != theirs:
            mismatches.append(f"{file.name}: differs")
    assert not mismatches, "\n".join(mismatches[:20])
    # Most of the corpus takes the fast way (the rest: big endian, deflate, no preamble, broken files).
    assert fast_reads >= 150, fast_reads


def test_cut_and_odd_streams_read_as_pydicom_reads_them() -> None:
    """Streams cut at every place of a real instance's header, and with garbage appended: read alike, or fail alike."""
    content = next(f for f in corpus() if f.name.endswith("CT_small.dcm")).read()
    dicom_reader._read_fast(content)  # the original takes the fast way
    cuts = list(range(0, 1400, 7)) + [len(content) - n for n in (1, 2, 7, 100)]
    for variant in [content[:cut] for cut in cuts] + [content + b"\x00" * 3, content + b"\xe0\x7f\x10\x00OW"]:
        assert _reading(read_received, variant) == _reading(lambda c: dcmread(BytesIO(c)), variant)


def _admitted(content: bytes) -> object:
    try:
        ds, warning = intake.admit(content)
    except intake.StoreRefused as exc:
        return ("refused", exc.status, exc.comment)
    return warning, sorted(str(tag) for tag in ds.keys())


def test_what_a_door_admits_or_refuses_is_unchanged() -> None:
    """ingest.intake.admit with the fast reader and with pydicom's: the same status, reason and warning for every file."""
    mismatches: list[str] = []
    for file in corpus():
        content = file.read()
        fast = _admitted(content)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(intake, "read_received", lambda c: dcmread(BytesIO(c)))
            slow = _admitted(content)
        if fast != slow:
            mismatches.append(f"{file.name}: fast {fast!r:.200}\n    pydicom {slow!r:.200}")
    assert not mismatches, "\n".join(mismatches[:10])


def test_a_sequence_of_undefined_length_decodes_its_text_in_the_data_sets_character_set() -> None:
    """Items read by pydicom's generator (undefined length) get the character set the reader saw before them."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    item = Dataset()
    item.PatientName = "Müller^Jürgen"
    item.is_undefined_length_sequence_item = True
    ds.OtherPatientIDsSequence = Sequence([item])
    ds["OtherPatientIDsSequence"].is_undefined_length = True
    ds.PatientName = "Ærø^Åse"
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    content = buffer.getvalue()
    read = dicom_reader._read_fast(content)  # no decline: this is the fast way
    assert str(read.OtherPatientIDsSequence[0].PatientName) == "Müller^Jürgen"
    assert str(read.PatientName) == "Ærø^Åse"
    assert _reading(read_received, content) == _reading(lambda c: dcmread(BytesIO(c)), content)
