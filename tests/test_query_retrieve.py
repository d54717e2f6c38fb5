"""Query/Retrieve SCP on the DICOM port against DCMTK's findscu, movescu and getscu."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.factories import SeriesFiles, write_series
from tests.support.vireo import VireoProcess, free_port

pytestmark = pytest.mark.timeout(180)


class Archive:
    def __init__(self, vireo: VireoProcess, move_port: int, series: list[SeriesFiles]) -> None:
        self.vireo, self.move_port, self.series = vireo, move_port, series


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    move_port = free_port()
    vireo = VireoProcess(tmp_path_factory.mktemp("qr") / "data", VIREO_DICOM_DESTINATIONS=f"MOVESCU=127.0.0.1:{move_port}").start()
    out = tmp_path_factory.mktemp("qr-data")
    series = [
        write_series(out, modality="CT", slices=5, rows=32, columns=32, patient_id="QR1", patient_name="Alpha^Anna", seed=31,
                     study_date="20240201", series_number=1),
        write_series(out, modality="CT", slices=3, rows=32, columns=32, patient_id="QR1", patient_name="Alpha^Anna", seed=31,
                     study_date="20240201", series_number=2, series_description="Lung"),
        write_series(out, modality="MR", slices=4, rows=32, columns=32, patient_id="QR2", patient_name="Beta^Bob", seed=32,
                     study_date="20221115"),
    ]
    for s in series:
        subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--call", "QRTEST", *map(str, s.paths)], check=True, capture_output=True, timeout=60)
    vireo.wait_for_instances(12)
    yield Archive(vireo, move_port, series)
    vireo.stop()


def findscu(archive: Archive, out: Path, model: str, *keys: str) -> list:
    out.mkdir(parents=True, exist_ok=True)
    args = ["findscu", model, "-aec", "VIREO", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    run = subprocess.run([*args, "127.0.0.1", str(archive.vireo.dicom_port)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_c_find_study_root_and_patient_root(archive: Archive, tmp_path: Path) -> None:
    ct, lung, mr = archive.series
    studies = findscu(archive, tmp_path / "a", "-S", "QueryRetrieveLevel=STUDY", "PatientID=QR*", "StudyInstanceUID", "PatientName",
                      "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyDate")
    by_uid = {ds.StudyInstanceUID: ds for ds in studies}
    assert set(by_uid) == {ct.study_uid, mr.study_uid}
    assert str(by_uid[ct.study_uid].PatientName) == "Alpha^Anna"
    assert by_uid[ct.study_uid].NumberOfStudyRelatedInstances == 8
    assert by_uid[mr.study_uid].ModalitiesInStudy == "MR"
    # only the requested keys come back (plus the level and where to retrieve from)
    assert "AccessionNumber" not in by_uid[ct.study_uid] and by_uid[ct.study_uid].RetrieveAETitle == "VIREO"

    ranged = findscu(archive, tmp_path / "b", "-S", "QueryRetrieveLevel=STUDY", "StudyDate=20230101-", "StudyInstanceUID")
    assert [ds.StudyInstanceUID for ds in ranged] == [ct.study_uid]
    series = findscu(archive, tmp_path / "c", "-S", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={ct.study_uid}", "SeriesInstanceUID",
                     "SeriesDescription", "Modality=CT", "NumberOfSeriesRelatedInstances")
    assert sorted((ds.SeriesInstanceUID, ds.NumberOfSeriesRelatedInstances) for ds in series) == sorted([(ct.series_uid, 5), (lung.series_uid, 3)])
    images = findscu(archive, tmp_path / "d", "-S", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={ct.study_uid}",
                     f"SeriesInstanceUID={lung.series_uid}", "SOPInstanceUID", "InstanceNumber")
    assert sorted(ds.SOPInstanceUID for ds in images) == sorted(lung.sop_uids)
    patients = findscu(archive, tmp_path / "e", "-P", "QueryRetrieveLevel=PATIENT", "PatientName=Beta*", "PatientID",
                       "NumberOfPatientRelatedStudies")
    assert [(ds.PatientID, ds.NumberOfPatientRelatedStudies) for ds in patients] == [("QR2", 1)]
    under_patient = findscu(archive, tmp_path / "f", "-P", "QueryRetrieveLevel=STUDY", "PatientID=QR1", "StudyInstanceUID")
    assert [ds.StudyInstanceUID for ds in under_patient] == [ct.study_uid]


def test_c_find_refuses_patient_level_in_study_root(archive: Archive, tmp_path: Path) -> None:
    run = subprocess.run(["findscu", "-v", "-S", "-aec", "VIREO", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID",
                          "127.0.0.1", str(archive.vireo.dicom_port)], capture_output=True, text=True, timeout=60)
    assert "DataSetDoesNotMatchSOPClass" in run.stdout + run.stderr


def test_c_move_to_a_configured_destination(archive: Archive, tmp_path: Path) -> None:
    ct, lung, _ = archive.series
    out = tmp_path / "moved"
    out.mkdir()
    run = subprocess.run(
        ["movescu", "-S", "-aec", "VIREO", "-aet", "MOVESCU", "-aem", "MOVESCU", "--port", str(archive.move_port), "-od", str(out),
         "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={ct.study_uid}", "-k", f"SeriesInstanceUID={lung.series_uid}",
         "127.0.0.1", str(archive.vireo.dicom_port)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    received = sorted(dcmread(p).SOPInstanceUID for p in out.iterdir())
    assert received == sorted(lung.sop_uids)
    # a destination Vireo does not know is refused, never guessed
    unknown = subprocess.run(
        ["movescu", "-v", "-S", "-aec", "VIREO", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct.study_uid}",
         "127.0.0.1", str(archive.vireo.dicom_port)], capture_output=True, text=True, timeout=60)
    assert "MoveDestinationUnknown" in unknown.stdout + unknown.stderr


def test_c_get_a_study(archive: Archive, tmp_path: Path) -> None:
    ct, lung, _ = archive.series
    out = tmp_path / "got"
    out.mkdir()
    run = subprocess.run(
        ["getscu", "-S", "-aec", "VIREO", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct.study_uid}",
         "127.0.0.1", str(archive.vireo.dicom_port)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    got = {dcmread(p).SOPInstanceUID: p for p in out.iterdir()}
    assert sorted(got) == sorted(ct.sop_uids + lung.sop_uids)
    original = dcmread(ct.paths[0])
    assert dcmread(got[original.SOPInstanceUID]).PixelData == original.PixelData


def test_refused_retrieves_get_the_standard_status_and_vireos_reason(archive: Archive) -> None:
    """Refusals come before any sub-operation, as 0xA801 / 0xA900 with an ErrorComment, and the association goes on."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )

    ct, lung, _ = archive.series

    def identifier(level: str, **keys: str) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        return ds

    def final(responses: object) -> Dataset:
        statuses = [status for status, _ in responses]  # type: ignore[attr-defined]
        assert len(statuses) == 1, statuses  # nothing was attempted: the refusal is the only response
        return statuses[0]

    ae = AE(ae_title="REFUSED")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    assoc = ae.associate("127.0.0.1", archive.vireo.dicom_port, ae_title="VIREO")
    assert assoc.is_established
    try:
        unknown = final(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=ct.study_uid), "NOWHERE", StudyRootQueryRetrieveInformationModelMove))
        assert unknown.Status == 0xA801 and "NOWHERE" in unknown.ErrorComment
        no_series = final(assoc.send_c_move(identifier("SERIES", StudyInstanceUID=ct.study_uid), "MOVESCU", StudyRootQueryRetrieveInformationModelMove))
        assert no_series.Status == 0xA900 and "SeriesInstanceUID" in no_series.ErrorComment
        patient_level = final(assoc.send_c_get(identifier("PATIENT", PatientID="QR1"), StudyRootQueryRetrieveInformationModelGet))
        assert patient_level.Status == 0xA900 and "PATIENT" in patient_level.ErrorComment
        bad_level = final(assoc.send_c_get(identifier("FRAME", StudyInstanceUID=ct.study_uid), StudyRootQueryRetrieveInformationModelGet))
        assert bad_level.Status == 0xA900 and bad_level.ErrorComment.startswith("QueryRetrieveLevel")
        assert all(len(s.ErrorComment) <= 64 for s in (unknown, no_series, patient_level, bad_level))
        assert assoc.is_established
    finally:
        assoc.release()
    # DCMTK's movescu names the same status
    run = subprocess.run(["movescu", "-v", "-S", "-aec", "VIREO", "-aem", "MOVESCU", "-k", "QueryRetrieveLevel=SERIES",
                          "-k", f"StudyInstanceUID={lung.study_uid}", "127.0.0.1", str(archive.vireo.dicom_port)],
                         capture_output=True, text=True, timeout=60)
    assert "Final Move Response (Error: DataSetDoesNotMatchSOPClass)" in run.stdout + run.stderr


SYNTAX_FILES = ("JPEG-LL.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm")


def meta_end(path: Path) -> int:
    """Where a Part 10 file's data set begins: after the preamble, 'DICM' and the File Meta group (its group length)."""
    data = path.read_bytes()
    return 144 + int.from_bytes(data[140:144], "little")


@pytest.fixture(scope="module")
def stored_syntaxes(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """pydicom's compressed and big-endian test files, each its own series of one study, stored as they are (series UID → file)."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    out, study = tmp_path_factory.mktemp("qr-syntaxes"), generate_uid()
    files: dict[str, Path] = {}
    for name in SYNTAX_FILES:
        ds = dcmread(get_testdata_file(name))  # the MR_small files share one SOP Instance UID: each gets its own
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "QRTS", study, generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files[ds.SeriesInstanceUID] = out / name
        ds.save_as(out / name)
    run = subprocess.run(["dcmsend", "--decompress-never", "127.0.0.1", str(archive.vireo.dicom_port), "--call", "VIREO", *map(str, files.values())],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    archive.vireo.wait_for_instances(12 + len(files))
    return files


def same_pixels(received: Path, original: Path) -> bool:
    import numpy as np
    got, want = dcmread(received), dcmread(original)
    return got.SOPInstanceUID == want.SOPInstanceUID and bool(np.array_equal(got.pixel_array, want.pixel_array))


def test_c_get_transcodes_for_a_peer_taking_only_uncompressed(archive: Archive, stored_syntaxes: dict[str, Path], tmp_path: Path) -> None:
    for series_uid, original in stored_syntaxes.items():
        out = tmp_path / original.stem
        out.mkdir()
        study = dcmread(original).StudyInstanceUID
        run = subprocess.run(["getscu", "-v", "-S", "-aec", "VIREO", "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                              "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={series_uid}", "127.0.0.1", str(archive.vireo.dicom_port)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        received = list(out.iterdir())
        assert len(received) == 1, (original.name, run.stdout + run.stderr)
        assert dcmread(received[0]).file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
        assert same_pixels(received[0], original), original.name


def test_c_move_transcodes_for_storescp(archive: Archive, stored_syntaxes: dict[str, Path], tmp_path: Path) -> None:
    """storescp accepts only uncompressed syntaxes by default: every instance still arrives, re-encoded."""
    import time

    out = tmp_path / "sink"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "MOVESCU", "-od", str(out), str(archive.move_port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        study = dcmread(next(iter(stored_syntaxes.values()))).StudyInstanceUID
        run = subprocess.run(["movescu", "-v", "-S", "-aec", "VIREO", "-aem", "MOVESCU", "-k", "QueryRetrieveLevel=STUDY",
                              "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(archive.vireo.dicom_port)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
    finally:
        scp.terminate()
        scp.wait(10)
    received = {dcmread(p).SeriesInstanceUID: p for p in out.iterdir()}
    assert set(received) == set(stored_syntaxes), run.stdout + run.stderr
    for series_uid, original in stored_syntaxes.items():
        assert same_pixels(received[series_uid], original), original.name


def test_c_get_accepting_the_stored_syntax_gets_the_file_byte_for_byte(archive: Archive, stored_syntaxes: dict[str, Path]) -> None:
    from pydicom.dataset import Dataset
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

    for series_uid, original in stored_syntaxes.items():
        ds = dcmread(original)
        stored = next(archive.vireo.data_dir.rglob(f"{ds.SOPInstanceUID}.dcm"))  # the file as Vireo holds it (big endian is kept little)
        got: list[bytes] = []

        def keep(event: evt.Event) -> int:
            got.append(event.request.DataSet.getvalue())
            return 0x0000

        ae = AE(ae_title="EXACT")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(ds.SOPClassUID, [dcmread(stored).file_meta.TransferSyntaxUID])  # and nothing else
        assoc = ae.associate("127.0.0.1", archive.vireo.dicom_port, ae_title="VIREO", ext_neg=[build_role(ds.SOPClassUID, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, keep)])
        assert assoc.is_established
        try:
            identifier = Dataset()
            identifier.QueryRetrieveLevel, identifier.StudyInstanceUID, identifier.SeriesInstanceUID = "SERIES", ds.StudyInstanceUID, series_uid
            final = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))[-1][0]
        finally:
            assoc.release()
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1, original.name
        want = stored.read_bytes()[meta_end(stored):]
        assert got == [want], original.name


def test_c_move_to_an_unreachable_destination_says_where(archive: Archive) -> None:
    """Nothing listens on MOVESCU's port between tests: 0xA801 naming the AE and address, not pynetdicom's bare status."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    ae = AE(ae_title="UNREACH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", archive.vireo.dicom_port, ae_title="VIREO")
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", archive.series[0].study_uid
        statuses = [status for status, _ in assoc.send_c_move(identifier, "MOVESCU", StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()
    assert statuses[-1].Status == 0xA801
    assert statuses[-1].ErrorComment == f"could not reach MOVESCU at 127.0.0.1:{archive.move_port}"
