"""Person names, empty values and sequences, matched as PS3.4 C.2.2.2 says, in QIDO-RS and C-FIND, on SQLite and PostgreSQL.

The names are those of pydicom's character-set test files (real files, ISO 2022 escapes included:
`Äneas^Rüdiger`, `Διονυσιος`, `Yamada^Tarou=山田^太郎=やまだ^たろう`, …) and of two generated studies
(`Öztürk^Ayşe` with a ProcedureCodeSequence and no AccessionNumber, `Smith^John` with both).
Every file goes in by the doors real senders use (dcmsend, the index writer) and every answer comes
back over HTTP (dicomweb-client, httpx) or DICOM (pynetdicom, DCMTK's findscu).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from alembic import command
from alembic.config import Config
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from sqlalchemy import text

from core import dicom_query, person_names
from core.db import MIGRATIONS_DIR, Database
from ingest.indexer import IndexWriter
from ingest.intake import Intake, Origin, transfer_syntax_of
from core.pacs_store import PacsStore
from tests.factories import write_series
from tests.support.vireo import VireoProcess

pytestmark = pytest.mark.timeout(240)

CHARSET_FILES = ("chrGerm.dcm", "chrGreek.dcm", "chrH31.dcm", "chrH32.dcm", "chrI2.dcm", "chrX1.dcm", "chrRuss.dcm")


@dataclass
class Corpus:
    paths: list[Path]
    studies: dict[str, str]  # a short name → StudyInstanceUID
    no_accession: set[str]  # studies whose AccessionNumber is empty or absent (read with pydicom)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99VIREO", meaning
    return item


def _generated(out: Path, name: str, patient_id: str, seed: int, accession: str, codes: list[Dataset], referrer: str) -> Path:
    series = write_series(out, modality="CT", slices=1, rows=16, columns=16, patient_id=patient_id, patient_name=name, seed=seed,
                          accession_number=accession)
    path = series.paths[0]
    ds = dcmread(path)
    if not accession:
        del ds.AccessionNumber  # absent, not just empty: both are empty values
    ds.ProcedureCodeSequence = codes
    ds.ReferringPhysicianName = referrer
    ds.OperatorsName = "Müller^Jörg"
    ds.save_as(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    out = tmp_path_factory.mktemp("names")
    paths = [Path(shutil.copy(get_charset_files(name)[0], out / name)) for name in CHARSET_FILES]
    paths.append(_generated(out / "oz", "Öztürk^Ayşe", "OZ1", 91, "", [_code("P-1", "CT HEAD"), _code("P-2", "CT CHEST")], "ÅSTRÖM^BJÖRN"))
    paths.append(_generated(out / "sm", "Smith^John", "SM1", 92, "ACC-1", [_code("P-3", "MR KNEE")], "Doe^Jane"))
    keys = [p.stem for p in paths[: len(CHARSET_FILES)]] + ["oztürk", "smith"]
    datasets = [dcmread(p, stop_before_pixels=True) for p in paths]
    studies = {key: str(ds.StudyInstanceUID) for key, ds in zip(keys, datasets, strict=True)}
    return Corpus(paths, studies, {str(ds.StudyInstanceUID) for ds in datasets if not ds.get("AccessionNumber")})


# Query → the corpus studies it finds (names as a user types them: other case, no accents, one group of several).
NAME_QUERIES = {
    "Äneas^Rüdiger": {"chrGerm"},
    "ÄNEAS^RÜDIGER": {"chrGerm"},
    "äneas*": {"chrGerm"},
    "Aneas^Rudiger": {"chrGerm"},
    "Διονυσιος": {"chrGreek"},
    "ΔΙΟΝΥΣΙΟΣ": {"chrGreek"},
    "Öztürk*": {"oztürk"},
    "ÖZTÜRK^AYŞE": {"oztürk"},
    "Yamada^Tarou=山田^太郎=やまだ^たろう": {"chrH31"},
    "山田^太郎": {"chrH31", "chrH32"},
    "山田*": {"chrH31", "chrH32"},
    "=山田^太郎": {"chrH31", "chrH32"},
    "Yamada*": {"chrH31"},
    "やまだ^たろう": {"chrH31", "chrH32"},
    "ﾔﾏﾀﾞ*": {"chrH32"},
    "*太郎": {"chrH31", "chrH32"},
    "Ya*郎": set(),  # `*` stays inside one component group
    "홍^길동": {"chrI2"},
    "Wang^XiaoDong=王^小東": {"chrX1"},
    "王*": {"chrX1"},
    "Люкceмбypг": {"chrRuss"},
    "Smith^John\\Öztürk^Ayşe": {"smith", "oztürk"},
    "Smith^John^^": {"smith"},
    "Smith": set(),
}


def _found(corpus: Corpus, uids: list[str]) -> set[str]:
    by_uid = {uid: key for key, uid in corpus.studies.items()}
    return {by_uid[uid] for uid in uids if uid in by_uid}


# --------------------------------------------------------------------------- person_names, the one definition


@pytest.mark.parametrize(("query", "name", "expected"), [
    ("doe^john", "Doe^John", True),
    ("DOE*", "Doe^John", True),
    ("*john", "Doe^John=ドウ^ジョン", True),
    ("ドウ^ジョン", "Doe^John=ドウ^ジョン", True),
    ("d?e^john", "Doe^John", True),
    ("doe?john", "Doe=John", False),  # `?` never stands for a group delimiter
    ("doe*john", "Doe=John", False),
    ("doe^john=ドウ*", "Doe^John=ドウ^ジョン", True),
    ("doe^john=ジョン*", "Doe^John=ドウ^ジョン", False),  # several groups: matched group by group
    ("smith*", "Doe^John\\Smith^Anna", True),  # any value of a multi-valued attribute
    ('""', "Doe^John", False),
])
def test_person_names_match_by_component_group(query: str, name: str, expected: bool) -> None:
    assert person_names.matches(query, name) is expected


def test_folded_names_keep_every_group() -> None:
    names = person_names.folded_names({"PatientName": "Yamada^Tarou=山田^太郎", "ReferringPhysicianName": "^^^^", "StudyID": "7"})
    assert names == {"PatientName": "yamada^tarou=山田^太郎", "PatientName:groups": "=yamada^tarou=山田^太郎="}


# --------------------------------------------------------------------------- the engine, on both backends


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'vireo.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


def _load(db: Database, tmp_path: Path, paths: list[Path]) -> None:
    writer = IndexWriter(db)
    writer.start()
    intake = Intake(PacsStore(tmp_path / "pacs"), writer)
    for path in paths:
        content = path.read_bytes()
        intake.ingest(content, transfer_syntax_of(content), Origin())
    writer.stop()


def _search(db: Database, level: str, sequences: dict | None = None, **matches: str) -> dicom_query.QueryResult:
    with db.session() as session:
        return dicom_query.search(session, dicom_query.Query(level=level, matches=matches, sequences=sequences or {}))


def _studies(db: Database, corpus: Corpus, level: str = "STUDY", sequences: dict | None = None, **matches: str) -> set[str]:
    return _found(corpus, [item["0020000D"]["Value"][0] for item in _search(db, level, sequences, **matches).items])


def test_names_empty_values_and_sequences_on_both_backends(db: Database, tmp_path: Path, corpus: Corpus) -> None:
    _load(db, tmp_path, corpus.paths)
    for query, expected in NAME_QUERIES.items():
        assert _studies(db, corpus, PatientName=query) == expected, query
        assert _studies(db, corpus, "SERIES", PatientName=query) == expected, query
    patients = {item["00100020"]["Value"][0] for item in _search(db, "PATIENT", PatientName="山田*").items}
    assert patients == {"H31EXAMPLE", "H32EXAMPLE"}
    for fuzzy, expected in (("ayse", {"oztürk"}), ("tarou", {"chrH31"}), ("たろう", {"chrH31", "chrH32"}), ("rud an", {"chrGerm"})):
        with db.session() as session:
            found = dicom_query.search(session, dicom_query.Query(level="STUDY", matches={"PatientName": fuzzy}, fuzzy=True))
        assert _found(corpus, [i["0020000D"]["Value"][0] for i in found.items]) == expected, fuzzy
    assert _studies(db, corpus, ReferringPhysicianName="åström*") == {"oztürk"}
    assert _studies(db, corpus, ReferringPhysicianName="ASTROM^BJORN") == {"oztürk"}
    assert _studies(db, corpus, "SERIES", OperatorsName="MÜLLER^JÖRG") == {"oztürk", "smith"}
    # Empty value matching: `""` finds empty or absent values (`^^^^` is an empty name); a zero-length value is universal.
    assert _studies(db, corpus, AccessionNumber='""') == _found(corpus, sorted(corpus.no_accession))
    assert _studies(db, corpus, AccessionNumber="") == set(corpus.studies)
    assert _studies(db, corpus, ReferringPhysicianName='""') == set(corpus.studies) - {"oztürk", "smith"}
    # Sequences: an item matching every item key; the matching items come back.
    found = _search(db, "STUDY", {"ProcedureCodeSequence": {"CodeValue": "P-2"}})
    assert _found(corpus, [i["0020000D"]["Value"][0] for i in found.items]) == {"oztürk"}
    assert [item["00080100"]["Value"] for item in found.items[0]["00081032"]["Value"]] == [["P-2"]]
    assert _studies(db, corpus, "SERIES", {"ProcedureCodeSequence": {"CodeMeaning": "*KNEE"}}) == {"smith"}
    assert _studies(db, corpus, "IMAGE", {"ProcedureCodeSequence": {"CodeValue": "P-1\\P-3"}}) == {"oztürk", "smith"}
    assert _studies(db, corpus, "STUDY", {"ProcedureCodeSequence": {"CodeValue": "P-9"}}) == set()
    everything = _search(db, "STUDY", {"ProcedureCodeSequence": {}}, PatientID="OZ1")
    assert [i["00080100"]["Value"][0] for i in everything.items[0]["00081032"]["Value"]] == ["P-1", "P-2"]


def test_migration_folds_the_names_of_rows_indexed_before(db: Database) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
        connection.execute(text("INSERT INTO patient (id, patient_id, patient_name, attributes, created) "
                                "VALUES (1, 'GR1', 'Διονυσιος', '{}', '2024-01-01')"))
        connection.execute(text("INSERT INTO study (study_uid, patient_pk, study_date, study_description, attributes, created) "
                                "VALUES ('1.2.3', 1, '', '', :a, '2024-01-01')"),
                           {"a": '{"PatientName": "Yamada^Tarou=山田^太郎", "ReferringPhysicianName": "Äneas^Rüdiger"}'})
        command.upgrade(config, "head")
    assert [i["00100020"]["Value"][0] for i in _search(db, "PATIENT", PatientName="ΔΙΟΝΥΣΙΟΣ").items] == ["GR1"]
    assert [i["0020000D"]["Value"][0] for i in _search(db, "STUDY", PatientName="山田*").items] == ["1.2.3"]
    assert [i["0020000D"]["Value"][0] for i in _search(db, "STUDY", ReferringPhysicianName="ÄNEAS*").items] == ["1.2.3"]


# --------------------------------------------------------------------------- QIDO-RS and C-FIND on real servers


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Iterator[VireoProcess]:
    env: dict[str, str] = {}
    database = None
    if request.param == "postgresql":
        database = f"names_{uuid.uuid4().hex[:12]}"
        env["VIREO_DATABASE_URL"] = request.getfixturevalue("postgres_server").create_database(database)
    vireo = VireoProcess(tmp_path_factory.mktemp(f"names-{request.param}") / "data", **env).start()
    try:
        subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), *map(str, corpus.paths)], check=True, capture_output=True, timeout=60)
        vireo.wait_for_instances(len(corpus.paths))
        yield vireo
    finally:
        vireo.stop()
        if database is not None:
            request.getfixturevalue("postgres_server").drop_database(database)


def _dicomweb(vireo: VireoProcess) -> DICOMwebClient:
    session = requests.Session()
    session.auth = vireo.auth
    return DICOMwebClient(url=f"{vireo.url}/dicomweb", session=session)


def _find(vireo: VireoProcess, identifier: Dataset) -> list[Dataset]:
    ae = AE(ae_title="NAMETEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    association = ae.associate("127.0.0.1", vireo.dicom_port, ae_title="VIREO")
    assert association.is_established
    try:
        responses = list(association.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
    finally:
        association.release()
    assert responses[-1][0].Status == 0x0000
    return [found for status, found in responses if status.Status in (0xFF00, 0xFF01)]


def _identifier(**keys: object) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_qido_rs_matches_names_empty_values_and_sequences(archive: VireoProcess, corpus: Corpus) -> None:
    client = _dicomweb(archive)
    for query, expected in NAME_QUERIES.items():
        found = client.search_for_studies(search_filters={"PatientName": query})
        assert _found(corpus, [s["0020000D"]["Value"][0] for s in found]) == expected, query
    series = client.search_for_series(search_filters={"PatientName": "山田*"})
    assert _found(corpus, [s["0020000D"]["Value"][0] for s in series]) == {"chrH31", "chrH32"}
    referred = client.search_for_studies(search_filters={"ReferringPhysicianName": "ÅSTRÖM*"})
    assert _found(corpus, [s["0020000D"]["Value"][0] for s in referred]) == {"oztürk"}
    with archive.client() as http:
        empty = http.get("/dicomweb/studies", params={"AccessionNumber": '""'}).json()
        assert _found(corpus, [s["0020000D"]["Value"][0] for s in empty]) == _found(corpus, sorted(corpus.no_accession))
        universal = http.get("/dicomweb/studies", params={"AccessionNumber": ""}).json()
        assert len(universal) == len(corpus.studies) and all("00080050" in s for s in universal)
        coded = http.get("/dicomweb/studies", params={"ProcedureCodeSequence.CodeValue": "P-2"}).json()
        assert _found(corpus, [s["0020000D"]["Value"][0] for s in coded]) == {"oztürk"}
        assert [i["00080104"]["Value"] for i in coded[0]["00081032"]["Value"]] == [["CT CHEST"]]
        tags = http.get("/dicomweb/studies", params={"00081032.00080104": "MR*", "includefield": "00081032"}).json()
        assert _found(corpus, [s["0020000D"]["Value"][0] for s in tags]) == {"smith"}
        whole = http.get("/dicomweb/studies", params={"PatientID": "OZ1", "includefield": "ProcedureCodeSequence"}).json()
        assert [i["00080100"]["Value"][0] for i in whole[0]["00081032"]["Value"]] == ["P-1", "P-2"]
        wrong = http.get("/dicomweb/studies", params={"PatientName.CodeValue": "x"})
        assert wrong.status_code == 400 and "not a sequence" in wrong.json()["detail"]


def test_qido_rs_honours_accept(archive: VireoProcess) -> None:
    with archive.client() as http:
        for accept, media_type in (("application/dicom+json", "application/dicom+json"), ("application/json", "application/json"),
                                   ("text/html, */*;q=0.1", "application/dicom+json"), (None, "application/dicom+json")):
            response = http.get("/dicomweb/series", params={"limit": "1"}, headers={"Accept": accept} if accept else {})
            assert response.status_code == 200 and response.headers["content-type"] == media_type, accept
        for accept in ('multipart/related; type="application/dicom+xml"', "text/html", "image/png, application/xml"):
            refused = http.get("/dicomweb/studies", headers={"Accept": accept})
            assert refused.status_code == 406 and "application/dicom+json" in refused.json()["detail"], accept


def test_c_find_matches_names_empty_values_and_sequences(archive: VireoProcess, corpus: Corpus, tmp_path: Path) -> None:
    for query in ("ÖZTÜRK^AYŞE", "Öztürk*", "Äneas^Rüdiger", "ΔΙΟΝΥΣΙΟΣ", "山田^太郎", "Yamada*", "Yamada^Tarou=山田^太郎=やまだ^たろう", "*太郎"):
        found = _find(archive, _identifier(PatientName=query))
        assert _found(corpus, [ds.StudyInstanceUID for ds in found]) == NAME_QUERIES[query], query
    yamada = _find(archive, _identifier(PatientName="山田*", PatientID=""))
    assert {str(ds.PatientName) for ds in yamada} == {"Yamada^Tarou=山田^太郎=やまだ^たろう", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"}
    empty = _find(archive, _identifier(AccessionNumber='""'))
    assert _found(corpus, [ds.StudyInstanceUID for ds in empty]) == _found(corpus, sorted(corpus.no_accession))
    # A sequence key with an item key matches on the items and returns the matching ones, with the keys asked for.
    wanted = Dataset()
    wanted.CodeValue = "P-2"
    coded = _find(archive, _identifier(ProcedureCodeSequence=[wanted]))
    assert [ds.StudyInstanceUID for ds in coded] == [corpus.studies["oztürk"]]
    assert [(item.CodeValue, "CodeMeaning" in item) for item in coded[0].ProcedureCodeSequence] == [("P-2", False)]
    # A universal sequence key (zero length) returns every item, whole.
    whole = _find(archive, _identifier(PatientID="OZ1", ProcedureCodeSequence=[]))
    assert [(item.CodeValue, item.CodeMeaning) for item in whole[0].ProcedureCodeSequence] == [("P-1", "CT HEAD"), ("P-2", "CT CHEST")]
    # DCMTK's findscu, with its sequence path syntax
    out = tmp_path / "findscu"
    out.mkdir()
    run = subprocess.run(["findscu", "-S", "-aec", "VIREO", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                          "-k", "ProcedureCodeSequence[0].CodeMeaning=*KNEE", "127.0.0.1", str(archive.dicom_port)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    knees = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert [ds.StudyInstanceUID for ds in knees] == [corpus.studies["smith"]]
    assert [item.CodeMeaning for item in knees[0].ProcedureCodeSequence] == ["MR KNEE"]


def test_series_search_matches_names_by_component_group_too(archive: VireoProcess, corpus: Corpus) -> None:
    """`/api/series?q=` folds and matches names with the same module as QIDO-RS and C-FIND (core.person_names)."""
    for q, expected in {"PatientName:山田*": {"chrH31", "chrH32"}, "PatientName:yamada*": {"chrH31"}, "PatientName:*太郎": {"chrH31", "chrH32"},
                        "PatientName:ÄNEAS*": {"chrGerm"}, "PatientName:ΔΙΟΝΥΣΙΟΣ*": {"chrGreek"}, "山田": {"chrH31", "chrH32"}}.items():
        assert _found(corpus, [item["StudyInstanceUID"] for item in archive.series(q=q)["items"]]) == expected, q
