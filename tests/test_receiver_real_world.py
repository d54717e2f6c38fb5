"""The receiver on real-world DICOM: every request answered with a status, the association kept,
every storage SOP class accepted (DICOMDIR excepted). Real senders (dcmsend, pynetdicom), a real Vireo."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_palette_files, get_testdata_file, get_testdata_files
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MediaStorageDirectoryStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from tests.factories import write_series
from tests.support.vireo import VireoProcess

RETIRED_US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6"
PRIVATE_STORAGE = "1.2.826.0.1.3680043.8.498.77077.1.1"  # under pydicom's UID root: a class no dictionary knows


def dcmsend(port: int, called: str, files: list[Path], *options: str) -> str:
    result = subprocess.run(["dcmsend", "-v", *options, "--call", called, "127.0.0.1", str(port), *map(str, files)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def summary(output: str) -> dict[str, int]:
    """dcmsend's status summary: 'Number of associations', 'sent to the peer', 'with status SUCCESS', ..."""
    return {m.group(1).strip(): int(m.group(2)) for m in re.finditer(r"I: +(?:- |\* )?([A-Za-z .]+?) *: (\d+)", output)}


def relabelled(source: Path, out: Path, sop_class: str) -> Path:
    """A copy of a generated instance as another SOP class (its own SOP instance UID, the same series)."""
    ds = pydicom.dcmread(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def test_a_request_for_an_unnegotiated_class_is_answered_and_the_association_goes_on(vireo: VireoProcess, tmp_path: Path) -> None:
    """DCMTK reads the RLE file's UN-encoded SOPClassUID as '31' and names that in its C-STORE: 0x0122, not an A-ABORT."""
    good = write_series(tmp_path / "good", modality="CT", slices=4, rows=32, columns=32, patient_id="RW1", seed=1401)
    misread = Path(get_testdata_file("rtdose_rle_1frame.dcm"))
    out = dcmsend(vireo.dicom_port, "UNNEGOTIATED", [*good.paths[:2], misread, *good.paths[2:]], "-d")
    counts = summary(out)
    assert counts["Number of associations"] == 1 and counts["sent to the peer"] == 5, out[-2000:]
    assert counts["with status SUCCESS"] == 4 and counts["with status REFUSED"] == 1, out[-2000:]
    assert "DIMSE Status                  : 0x0122: Refused: SOP Class not supported" in out
    comment = re.search(r"\(0000,0902\) LO \[([^\]]*)\]", out)
    assert comment and comment.group(1).startswith("SOP class 31 not negotiated"), comment
    page = vireo.series(dataset="UNNEGOTIATED")
    assert page["total"] == 1 and page["items"][0]["instances"] == 4


def test_storage_classes_outside_pynetdicoms_list_are_accepted(vireo: VireoProcess, tmp_path: Path) -> None:
    """Retired and private storage classes are stored; a Color Palette is negotiated and answered (it has no study to file under)."""
    base = write_series(tmp_path / "base", modality="MR", slices=3, rows=32, columns=32, patient_id="RW2", seed=1402)
    retired = relabelled(base.paths[0], tmp_path / "send" / "retired-us.dcm", RETIRED_US_IMAGE_STORAGE)
    private = relabelled(base.paths[1], tmp_path / "send" / "private.dcm", PRIVATE_STORAGE)
    palette = Path(get_palette_files("hotiron.dcm")[0])
    out = dcmsend(vireo.dicom_port, "OUTSIDE", [retired, palette, private])
    counts = summary(out)
    assert counts["Number of associations"] == 1 and counts["with status SUCCESS"] == 2 and counts["with status REFUSED"] == 1, out
    # storescu (which sends no class it does not know) proposes exactly its files' classes with --required
    third = relabelled(base.paths[2], tmp_path / "send" / "retired-us-2.dcm", RETIRED_US_IMAGE_STORAGE)
    sent = subprocess.run(["storescu", "-v", "-R", "-aec", "OUTSIDE", "127.0.0.1", str(vireo.dicom_port), str(third), str(palette)],
                          capture_output=True, text=True, timeout=60)
    answers = re.findall(r"Received Store Response \(([^)]*)\)", sent.stdout + sent.stderr)
    assert answers == ["Success", "Refused: SOPClassNotSupported"], sent.stdout + sent.stderr
    stored = {p.stem for p in (vireo.data_dir / "pacs").rglob("*.dcm")}
    for path in (retired, private, third):
        assert pydicom.dcmread(path).SOPInstanceUID in stored, path.name
    with vireo.client() as http:
        classes = {i["00080016"]["Value"][0] for i in http.get(f"/dicomweb/studies/{base.study_uid}/instances").json()}
    assert {RETIRED_US_IMAGE_STORAGE, PRIVATE_STORAGE} <= classes


def test_dicomdir_is_refused_while_verification_query_and_private_storage_share_the_association(vireo: VireoProcess, tmp_path: Path) -> None:
    private = relabelled(write_series(tmp_path / "p", modality="MR", slices=1, rows=16, columns=16, patient_id="RW3", seed=1403).paths[0],
                         tmp_path / "private.dcm", PRIVATE_STORAGE)
    ae = AE(ae_title="PROPOSER")
    ae.requested_contexts = [build_context(uid, ExplicitVRLittleEndian) for uid in
                             (MediaStorageDirectoryStorage, PRIVATE_STORAGE, CTImageStorage, Verification, StudyRootQueryRetrieveInformationModelFind)]
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes as they are
    assoc = ae.associate("127.0.0.1", vireo.dicom_port, ae_title="MIXEDCONTEXTS")
    try:
        assert assoc.is_established
        assert [str(c.abstract_syntax) for c in assoc.rejected_contexts] == [MediaStorageDirectoryStorage]
        assert assoc.rejected_contexts[0].result == 0x03  # abstract syntax not supported
        assert int(assoc.send_c_echo().Status) == 0
        # A C-FIND on the storage context: no such operation there, answered, not aborted
        identifier = pydicom.Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        refused = list(assoc.send_c_find(identifier, PRIVATE_STORAGE))
        assert [int(status.Status) for status, _ in refused] == [0x0211]
        assert assoc.is_established
        assert int(assoc.send_c_store(private).Status) == 0
        found = [status.Status for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)]
        assert found[-1] == 0 and len(found) >= 2
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before
        if assoc.is_established:
            assoc.release()


def corpus_files() -> list[Path]:
    """Every file the pydicom and pydicom-data packages ship as test data (DICOM or not: a sender sorts them out)."""
    names = {*get_testdata_files(), *get_charset_files(), *get_palette_files()}
    return sorted(Path(n) for n in names if Path(n).is_file())


def test_every_file_of_the_corpus_sent_in_one_association_gets_a_status(vireo: VireoProcess) -> None:
    files = corpus_files()
    assert len(files) > 250  # pydicom-data is installed: its files are part of the corpus
    out = dcmsend(vireo.dicom_port, "CORPUS", files, "--no-halt")
    counts = summary(out)
    answered = sum(counts.get(f"with status {kind}", 0) for kind in ("SUCCESS", "WARNING", "ERROR", "REFUSED"))
    assert counts["Number of associations"] == 1, out[-3000:]
    assert "Abort" not in out, out[-3000:]
    assert answered == counts["sent to the peer"] == out.count("Received C-STORE Response"), out[-3000:]
    # what was not sent, dcmsend itself could not send (a file cut short); the receiver refused nothing unanswered
    assert counts["Number of SOP instances"] - counts["sent to the peer"] == out.lower().count("cannot send sop instance"), out[-3000:]
    assert counts["with status SUCCESS"] >= 200


def _raw_request(assoc, request, context_id: int):  # type: ignore[no-untyped-def]
    """Send a DIMSE request as given (pynetdicom's send_c_* would check or re-encode it) and wait for its answer."""
    import time

    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(request, context_id)
        _, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    return response


def _body(ds: pydicom.Dataset, implicit: bool = False) -> bytes:
    """A data set alone (no file meta), as a C-STORE carries it."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def _store_request(message_id: int, sop_class: str, sop_instance: str, body: bytes):  # type: ignore[no-untyped-def]
    from io import BytesIO

    from pynetdicom.dimse_primitives import C_STORE

    request = C_STORE()
    request.MessageID, request.Priority = message_id, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = sop_class, sop_instance
    request.DataSet = BytesIO(body)
    return request


def test_a_data_set_cut_inside_an_element_header_is_refused_not_stored(vireo: VireoProcess) -> None:
    """(issue 14) The stream ends 6 bytes into the 8-byte header of Pixel Spacing: 0xC000, nothing stored, the association goes on."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.PatientID = generate_uid(), generate_uid(), generate_uid(), "CUTHEADER"
    body = _body(ds)
    cut = body.find(b"\x28\x00\x30\x00DS") + 6
    ae = AE(ae_title="CUTTER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", vireo.dicom_port, ae_title="CUTHEADER")
    try:
        assert assoc.is_established
        context_id = assoc.accepted_contexts[0].context_id
        response = _raw_request(assoc, _store_request(1, CTImageStorage, ds.SOPInstanceUID, body[:cut]), context_id)
        assert response.Status == 0xC000
        assert response.ErrorComment == "truncated: ends inside an element header after (0028,0011)"
        assert assoc.is_established
    finally:
        assoc.release()
    assert ds.SOPInstanceUID not in {p.stem for p in (vireo.data_dir / "pacs").rglob("*.dcm")}


def test_a_store_on_the_verification_context_is_an_unrecognized_operation(vireo: VireoProcess) -> None:
    """(issue 14) C-STORE is no Verification operation: 0x0211, nothing indexed as a 'Verification' instance, the association kept."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.PatientID = Verification, generate_uid(), generate_uid(), "VERIFYSTORE"
    ae = AE(ae_title="WRONGOP")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", vireo.dicom_port, ae_title="WRONGOP")
    try:
        assert assoc.is_established
        context_id = assoc.accepted_contexts[0].context_id
        response = _raw_request(assoc, _store_request(1, Verification, ds.SOPInstanceUID, _body(ds, implicit=True)), context_id)
        assert response.Status == 0x0211 and response.ErrorComment == "unrecognized operation: no C-STORE on Verification"
        assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()
    assert ds.SOPInstanceUID not in {p.stem for p in (vireo.data_dir / "pacs").rglob("*.dcm")}
    with vireo.client() as http:
        assert http.get("/dicomweb/instances", params={"PatientID": "VERIFYSTORE"}).json() in ([], None)


@pytest.mark.parametrize(("changes", "comment"), [
    ({"NumberOfFrames": 3}, "pixel data 8192 bytes, header needs 24576: 3 frames x 1 samples"),
    ({"SamplesPerPixel": 3}, "pixel data 8192 bytes, header needs 24576: 1 frames x 3 samples"),
])
def test_whole_pixel_data_the_header_contradicts_is_stored_with_a_warning(
    vireo: VireoProcess, tmp_path: Path, changes: dict[str, int], comment: str
) -> None:
    """(issue 14) Received whole, only its header disagrees: stored as sent, answered 0xB007 (PS3.4 B.2.3), retrievable."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), "ODDHEADER"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    path = tmp_path / "odd.dcm"
    ds.save_as(path, enforce_file_format=True)
    sent = subprocess.run(["storescu", "-v", "-aec", "ODDHEADER", "127.0.0.1", str(vireo.dicom_port), str(path)],
                          capture_output=True, text=True, timeout=60)
    out = sent.stdout + sent.stderr
    assert "Received Store Response (Warning: DataSetDoesNotMatchSOPClass)" in out or "0xb007" in out.lower(), out
    with vireo.client() as http:
        back = http.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
                        headers={"Accept": "application/dicom"})
    assert back.status_code == 200 and back.content.count(bytes(ds.PixelData)) == 1
    rsp = subprocess.run(["storescu", "-d", "-aec", "ODDHEADER", "127.0.0.1", str(vireo.dicom_port), str(path)],
                         capture_output=True, text=True, timeout=60)
    assert comment in rsp.stdout + rsp.stderr


def test_refusal_comments_keep_their_point_within_64_characters(vireo: VireoProcess) -> None:
    """(issue 14) The ErrorComment an LO holds says what is wrong, not half a UID: the UIDs stay in the server's log."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ae = AE(ae_title="COMMENTS")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", vireo.dicom_port, ae_title="COMMENTS")
    try:
        assert assoc.is_established
        context_id = next(c.context_id for c in assoc.accepted_contexts if c.abstract_syntax == CTImageStorage)
        response = _raw_request(assoc, _store_request(1, CTImageStorage, generate_uid(), _body(ds)), context_id)
        assert response.Status == 0xA900 and response.ErrorComment == "request UID differs from data set SOPInstanceUID"
        response = _raw_request(assoc, _store_request(2, "1.2.840.10008.5.1.4.1.1.4", ds.SOPInstanceUID, _body(ds)), context_id)
        assert response.Status == 0x0122 and response.ErrorComment == "SOP class MRImageStorage not negotiated; context: CTImageStorage"
        identifier = pydicom.Dataset()
        identifier.QueryRetrieveLevel = "FOO"
        identifier.StudyInstanceUID = ""
        answers = [status for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)]
        assert answers[-1].ErrorComment == "QueryRetrieveLevel 'FOO' is not PATIENT/STUDY/SERIES/IMAGE"
    finally:
        assoc.release()
