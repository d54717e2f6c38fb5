"""Vireo against another PACS — a real Orthanc — the steps of `send-dicom`, `query-pacs` and `retrieve-from-pacs`.

Orthanc listens on every interface, so this module runs inside a private network
namespace (only `lo`); Vireo's services run in this process, inside it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import select

from app.services import Services, build_services
from app.settings import Settings
from core import catalog
from core.search.service import Selection
from core.models import Instance
from pydantic import ValidationError

from ingest.pacs_client import (
    DicomNode, PacsError, QueryPacsConfig, RetrieveFromPacsConfig, echo, query_pacs, query_pacs_step, retrieve_from_pacs,
    retrieve_from_pacs_step, send_instances,
)
from tests.factories import SeriesFiles, write_series
from tests.support.netns import private_network
from tests.support.orthanc import OrthancProcess
from tests.support.workflows import ENDED, create, wait_job

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def network() -> Iterator[None]:
    with private_network():
        yield


@pytest.fixture(scope="module")
def services(network: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("vireo-pacs") / "data", dicom_port=0, dicom_ae_title="VIREO",
                        admin_password="test-admin-pw", thumbnail_quiet_seconds=60)
    running = build_services(settings)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def orthanc(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    process = OrthancProcess(tmp_path_factory.mktemp("orthanc"), modalities={"VIREO": ("VIREO", "127.0.0.1", services.receiver.port)}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def node(orthanc: OrthancProcess) -> DicomNode:
    return DicomNode("ORTHANC", "127.0.0.1", orthanc.dicom_port)


@pytest.fixture(scope="module")
def remote_studies(node: DicomNode, orthanc: OrthancProcess, tmp_path_factory: pytest.TempPathFactory) -> list[SeriesFiles]:
    """Two studies put into Orthanc with send_instances (what `send-dicom` runs)."""
    out = tmp_path_factory.mktemp("remote")
    studies = [
        write_series(out, modality="CT", slices=6, rows=32, columns=32, patient_id="EXT1", patient_name="Remote^Rita", seed=41,
                     study_date="20240301"),
        write_series(out, modality="CT", slices=3, rows=32, columns=32, patient_id="EXT1", patient_name="Remote^Rita", seed=41,
                     study_date="20240301", series_number=2, series_description="Thin"),
        write_series(out, modality="MR", slices=4, rows=32, columns=32, patient_id="EXT2", patient_name="Distant^Dan", seed=42,
                     study_date="20210707"),
    ]
    before = orthanc.get("/statistics")["CountInstances"]
    report = send_instances(node, [p for s in studies for p in s.paths])
    assert report.sent == 13 and report.failed == []
    assert orthanc.get("/statistics")["CountInstances"] == before + 13
    return studies


def test_echo_and_unreachable_nodes(node: DicomNode) -> None:
    echo(node)
    with pytest.raises(PacsError, match="NOBODY@127.0.0.1:1"):
        query_pacs(DicomNode("NOBODY", "127.0.0.1", 1))


def test_send_reports_what_the_remote_refused(node: DicomNode, tmp_path: Path) -> None:
    series = write_series(tmp_path, modality="CT", slices=1, rows=16, columns=16, patient_id="LONE9", seed=49, study_date="20190101")
    report = send_instances(node, series.paths)
    assert report.sent == 1 and report.failed == []


def test_query_pacs_studies_and_series(node: DicomNode, remote_studies: list[SeriesFiles]) -> None:
    ct, thin, mr = remote_studies
    studies = query_pacs(node, "STUDY", {"PatientID": "EXT*"})
    assert sorted(s["StudyInstanceUID"] for s in studies) == sorted({ct.study_uid, mr.study_uid})
    by_uid = {s["StudyInstanceUID"]: s for s in studies}
    assert by_uid[mr.study_uid]["PatientName"] == "Distant^Dan"
    as_a_step = query_pacs_step(QueryPacsConfig.model_validate({
        "node": {"ae_title": node.ae_title, "host": node.host, "port": node.port}, "filters": {"PatientID": "EXT2"}}))
    assert [s["StudyInstanceUID"] for s in as_a_step] == [mr.study_uid]
    with pytest.raises(ValidationError):
        QueryPacsConfig.model_validate({"node": {"ae_title": "A" * 17, "host": "h", "port": 104}})
    recent = query_pacs(node, "STUDY", {"StudyDate": "20230101-"})
    assert [s["StudyInstanceUID"] for s in recent] == [ct.study_uid]
    series = query_pacs(node, "SERIES", {"StudyInstanceUID": ct.study_uid})
    assert sorted(s["SeriesInstanceUID"] for s in series) == sorted([ct.series_uid, thin.series_uid])
    assert query_pacs(node, "STUDY", {"PatientID": "NOBODY"}) == []


def test_retrieve_with_c_get_into_a_dataset(services: Services, node: DicomNode, remote_studies: list[SeriesFiles]) -> None:
    ct, thin, _ = remote_studies
    conf = RetrieveFromPacsConfig.model_validate({
        "node": {"ae_title": node.ae_title, "host": node.host, "port": node.port}, "study_uid": ct.study_uid,
        "series_uids": [thin.series_uid], "method": "get", "dataset": "from-get"})
    report = retrieve_from_pacs_step(conf, services.receiver.intake, services.db)
    assert (report.completed, report.failed) == (3, 0)
    assert report.series_uids == [thin.series_uid]
    with services.db.session() as session:
        items = catalog.documents_for(session, services.search.series_uids(Selection(dataset="from-get")))
        assert [(i["SeriesInstanceUID"], i["instances"]) for i in items] == [(thin.series_uid, 3)]
        paths = session.execute(select(Instance.path).where(Instance.series_uid == thin.series_uid)).scalars().all()
    stored = dcmread(services.store.path(paths[0]))
    assert stored.PatientID == "EXT1" and stored.StudyInstanceUID == ct.study_uid


def test_retrieve_with_c_move_into_a_dataset(services: Services, node: DicomNode, remote_studies: list[SeriesFiles]) -> None:
    _, _, mr = remote_studies
    report = retrieve_from_pacs(node, services.receiver.intake, services.db, mr.study_uid, method="move", dataset="from-move")
    assert (report.completed, report.failed) == (4, 0)
    with services.db.session() as session:
        items = catalog.documents_for(session, services.search.series_uids(Selection(dataset="from-move")))
    assert [(i["SeriesInstanceUID"], i["instances"]) for i in items] == [(mr.series_uid, 4)]
    # a destination the remote PACS does not know is a clear error, not silence
    with pytest.raises(PacsError, match="move destination"):
        retrieve_from_pacs(node, services.receiver.intake, services.db, mr.study_uid, method="move", move_destination="STRANGER")


def test_query_and_retrieve_dags_through_the_api(orthanc: OrthancProcess, node: DicomNode, remote_studies: list[SeriesFiles], start_vireo) -> None:  # type: ignore[no-untyped-def]
    """The DAGs `query-pacs` and `retrieve-from-pacs` run as workflows of a real Vireo (inside this namespace too)."""
    ct, thin, mr = remote_studies
    vireo = start_vireo(VIREO_DICOM_AE_TITLE="VIREOPROC")
    httpx.put(f"{orthanc.url}/modalities/vireoproc", json={"AET": "VIREOPROC", "Host": "127.0.0.1", "Port": vireo.dicom_port}).raise_for_status()
    remote = {"ae_title": node.ae_title, "host": node.host, "port": node.port}
    with vireo.client() as api:
        listed = {d["dag_id"]: d for d in api.get("/api/dags").json()}
        assert listed["query-pacs"]["config_schema"]["properties"]["level"]["enum"] == ["PATIENT", "STUDY", "SERIES", "IMAGE"]
        assert api.post("/api/workflows", json={"name": "bad", "dag_id": "query-pacs", "conf": {"node": {**remote, "port": 0}}}).status_code == 400

        def run(dag_id: str, conf: dict) -> dict:
            (job,) = create(api, name=dag_id, dag_id=dag_id, conf=conf)["jobs"]
            job = wait_job(api, job["id"], ENDED, timeout=90)
            assert job["status"] == "finished", (job, api.get(f"/api/jobs/{job['id']}/logs").text)
            return job

        query = run("query-pacs", {"node": remote, "level": "STUDY", "filters": {"PatientID": "EXT1"}, "calling_ae": "VIREOPROC"})
        assert ct.study_uid in api.get(f"/api/jobs/{query['id']}/logs").text
        run("retrieve-from-pacs", {"node": remote, "study_uid": ct.study_uid, "series_uids": [thin.series_uid], "method": "get",
                                   "dataset": "via-get", "calling_ae": "VIREOPROC"})
        run("retrieve-from-pacs", {"node": remote, "study_uid": mr.study_uid, "method": "move", "dataset": "via-move", "calling_ae": "VIREOPROC"})
        got = api.get("/api/series", params={"dataset": "via-get"}).json()["items"]
        moved = api.get("/api/series", params={"dataset": "via-move"}).json()["items"]
    assert [(s["SeriesInstanceUID"], s["instances"]) for s in got] == [(thin.series_uid, 3)]
    assert [(s["SeriesInstanceUID"], s["instances"]) for s in moved] == [(mr.series_uid, 4)]
