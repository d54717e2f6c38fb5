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
