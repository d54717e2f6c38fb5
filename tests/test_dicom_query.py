"""The QIDO/C-FIND matching engine on both backends (SQLite and a real PostgreSQL), and instance documents made on demand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from core import dicom_query, instance_documents
from core.db import Database
from core.models import InstanceDocument
from core.pacs_store import PacsStore
from ingest.indexer import IndexWriter
from ingest.intake import Intake, Origin, transfer_syntax_of
from tests.factories import SeriesFiles, write_series


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'vireo.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[SeriesFiles]:
    out = tmp_path_factory.mktemp("query")
    return [
        write_series(out, modality="CT", slices=2, rows=16, columns=16, patient_id="Q1", patient_name="Doe^John", seed=71,
                     study_date="20240110", series_description="Axial 5mm", accession_number="A100"),
        write_series(out, modality="MR", slices=2, rows=16, columns=16, patient_id="Q2", patient_name="Smith^Anna^Maria", seed=72,
                     study_date="20230501", series_description="[T2] AX_50%"),
        write_series(out, modality="CT", slices=1, rows=16, columns=16, patient_id="Q3", patient_name="O'Neil^Pat", seed=73,
                     study_date="20221231"),
    ]


def _load(db: Database, tmp_path: Path, series: list[SeriesFiles]) -> PacsStore:
    store = PacsStore(tmp_path / "pacs")
    writer = IndexWriter(db)
    writer.start()
    intake = Intake(store, writer)
    for s in series:
        for path in s.paths:
            content = path.read_bytes()
            intake.ingest(content, transfer_syntax_of(content), Origin())
    writer.stop()
    return store


def _uids(db: Database, level: str, tag: str, **matches: str) -> list[str]:
    with db.session() as session:
        result = dicom_query.search(session, dicom_query.Query(level=level, matches=matches, fuzzy=matches.pop("fuzzy", "") == "1"))
    return sorted(item[tag]["Value"][0] for item in result.items)


def test_matching_rules_on_both_backends(db: Database, tmp_path: Path, series: list[SeriesFiles]) -> None:
    _load(db, tmp_path, series)
    ct, mr, other = series
    study = "0020000D"
    assert _uids(db, "STUDY", study, PatientName="doe^john") == [ct.study_uid]  # names: case-insensitive
    assert _uids(db, "STUDY", study, PatientName="SMITH*") == [mr.study_uid]
    assert _uids(db, "STUDY", study, PatientName="o'n*") == [other.study_uid]
    assert _uids(db, "STUDY", study, PatientName="*ann?^*") == [mr.study_uid]
    assert _uids(db, "STUDY", study, PatientName="maria", fuzzy="1") == [mr.study_uid]
    assert _uids(db, "STUDY", study, PatientName="maria") == []
    assert _uids(db, "STUDY", study, AccessionNumber="A100") == [ct.study_uid]
    assert _uids(db, "STUDY", study, StudyDate="20230101-20231231") == [mr.study_uid]
    assert _uids(db, "STUDY", study, StudyDate="-20230101") == [other.study_uid]
    assert _uids(db, "STUDY", study, ModalitiesInStudy="MR\\XA") == [mr.study_uid]
    assert _uids(db, "STUDY", study, PatientID="Q*") == sorted([ct.study_uid, mr.study_uid, other.study_uid])
    assert _uids(db, "STUDY", study, StudyInstanceUID=f"{ct.study_uid}\\{other.study_uid}") == sorted([ct.study_uid, other.study_uid])
    serie = "0020000E"
    # Wildcards stay case-sensitive and treat %, _ and [ as ordinary characters
    assert _uids(db, "SERIES", serie, SeriesDescription="axial*") == []
    assert _uids(db, "SERIES", serie, SeriesDescription="Axial*") == sorted([ct.series_uid, other.series_uid])  # CT default: "Axial 5mm"
    assert _uids(db, "SERIES", serie, SeriesDescription="[T2]*50%") == [mr.series_uid]
    assert _uids(db, "SERIES", serie, SeriesDescription="*_5*") == [mr.series_uid]
    assert _uids(db, "SERIES", serie, Modality="CT", PatientID="Q3") == [other.series_uid]
    assert _uids(db, "SERIES", serie, SeriesNumber="1", Modality="MR") == [mr.series_uid]
    # Study- and patient-level keys on a series search (matched through the series' studies), alone and with series keys
    assert _uids(db, "SERIES", serie, PatientName="smith*") == [mr.series_uid]
    assert _uids(db, "SERIES", serie, PatientName="doe*", Modality="MR") == []
    assert _uids(db, "SERIES", serie, StudyDate="20230101-", Modality="CT") == [ct.series_uid]
    assert _uids(db, "SERIES", serie, ModalitiesInStudy="MR") == [mr.series_uid]
    assert _uids(db, "IMAGE", "00080018", SeriesInstanceUID=ct.series_uid) == sorted(ct.sop_uids)
    assert _uids(db, "IMAGE", "00080018", SeriesInstanceUID=ct.series_uid, InstanceNumber="2") == [ct.sop_uids[1]]
    assert _uids(db, "IMAGE", "00080018", Rows="16", SeriesInstanceUID=mr.series_uid) == sorted(mr.sop_uids)
    assert _uids(db, "PATIENT", "00100020", PatientName="*a*") == ["Q2", "Q3"]
    with db.session() as session:
        paged = dicom_query.search(session, dicom_query.Query(level="SERIES", limit=2, offset=0))
        rest = dicom_query.search(session, dicom_query.Query(level="SERIES", limit=2, offset=2))
        assert len(paged.items) == 2 and paged.more and len(rest.items) == 1 and not rest.more
        ignored = dicom_query.search(session, dicom_query.Query(level="STUDY", matches={"SOPInstanceUID": "1.2"}))
        assert ignored.ignored == ["SOPInstanceUID"] and len(ignored.items) == 3
        with pytest.raises(dicom_query.QueryError):
            dicom_query.search(session, dicom_query.Query(level="SERIES", matches={"SeriesNumber": "one"}))


def test_documents_are_made_when_missing(db: Database, tmp_path: Path, series: list[SeriesFiles]) -> None:
    store = _load(db, tmp_path, series[:1])
    ct = series[0]
    with db.session() as session:
        session.execute(delete(InstanceDocument))  # as after `reindex`, or for instances indexed before documents were kept
    with db.session() as session:
        documents = instance_documents.documents(session, store, ct.study_uid, ct.series_uid)
    assert [json.loads(d)["00080018"]["Value"][0] for d in documents] == ct.sop_uids
    assert "BulkDataURI" in json.loads(documents[0])["7FE00010"]
    with db.session() as session:
        kept = session.execute(select(func.count()).select_from(InstanceDocument)).scalar_one()
    assert kept == 2  # kept for the next request
