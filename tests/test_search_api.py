"""The search, tag and dataset API of a running Vireo, fed by dcmsend: the contract in API.md."""

from __future__ import annotations

import threading

import pytest

from tests.factories import write_series
from tests.support.vireo import VireoProcess
from tests.test_receiver import dcmsend


@pytest.fixture(scope="module")
def loaded(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("search-api")
    lung = write_series(root / "a", modality="CT", slices=3, rows=16, columns=16, patient_id="LUNG1-0042", patient_name="Müller^Jörg",
                        study_description="CT CHEST W/O CONTRAST", series_description="Lung_CT 1mm", study_date="20200315", slice_thickness=1.0, seed=1)
    head = write_series(root / "a", modality="CT", slices=2, rows=16, columns=16, patient_id="HNSCC-0007", patient_name="Doe^John",
                        study_description="HEAD W/O CONTRAST", series_description="Head 5mm", study_date="20211102", slice_thickness=5.0, seed=2)
    brain = write_series(root / "b", modality="MR", slices=2, rows=16, columns=16, patient_id="LUNG1-0043", patient_name="Smith^Anna",
                         study_description="MR BRAIN", series_description="T1_MPRAGE_SAG", study_date="20190101", seed=3)
    dcmsend(vireo.dicom_port, "STUDYA", root / "a")
    dcmsend(vireo.dicom_port, "STUDYB", root / "b")
    vireo.wait_for_instances(7)
    return {"lung": lung.series_uid, "head": head.series_uid, "brain": brain.series_uid}


def _uids(response: dict) -> set[str]:
    return {item["SeriesInstanceUID"] for item in response["items"]}


def test_lucene_queries_filters_and_dataset(vireo: VireoProcess, loaded: dict[str, str]) -> None:
    cases = {
        "lung": {"lung"}, "LUNG1-*": {"lung", "brain"}, "-CHEST": {"brain"}, "NOT chest": {"brain"}, "-HEAD": {"lung"},
        "Modality:CT": {"lung", "head"}, "modality:mr": {"brain"}, '"w/o contrast"': {"lung", "head"}, "*MPRAGE*": {"brain"},
        "StudyDate:[20200101 TO 20201231]": {"lung"}, "StudyDate:[2020-01-01 TO *]": {"lung", "head"}, "SliceThickness:{1 TO 5]": {"head", "brain"}, "SliceThickness:{1 TO 4}": set(),
        "muller": {"lung"}, "PatientName:Doe^John": {"head"}, "(CT OR MR) AND -HEAD": {"lung"}, "CT chest": {"lung", "head"}, "CT lung": {"lung"},
        "Modality:*": {"lung", "head", "brain"}, "*": {"lung", "head", "brain"},
    }
    for q, expected in cases.items():
        assert _uids(vireo.series(q=q)) == {loaded[k] for k in expected}, q
    assert _uids(vireo.series(filter="Modality:CT,MR", q="LUNG1-*")) == {loaded["lung"], loaded["brain"]}
    assert _uids(vireo.series(filter=["Modality:CT,MR", "PatientID:HNSCC-0007"])) == {loaded["head"]}
    assert _uids(vireo.series(dataset="STUDYA", q="-lung")) == {loaded["head"]}
    assert vireo.series(q="", filter="", dataset="")["total"] == 3  # empty parameters mean "not given"


def test_errors_are_4xx_with_reasons(vireo: VireoProcess, loaded: dict[str, str]) -> None:
    with vireo.client() as c:
        bad = c.get("/api/series", params={"q": "Modality:CT AND (lung"})
        assert bad.status_code == 400 and "position" in bad.json()["detail"]
        assert "did you mean Modality" in c.get("/api/series", params={"q": "Modaltiy:CT"}).json()["detail"]
        assert c.get("/api/series", params={"filter": "NoColon"}).status_code == 400
        assert c.get("/api/series", params={"sort": "Nonsense"}).status_code == 400
        assert c.get("/api/series", params={"after": "not-a-cursor"}).status_code == 400
        assert c.get("/api/series", params={"dataset": "no such"}).status_code == 404
        assert c.get("/api/aggregations", params={"field": "SeriesInstanceUID"}).status_code == 400
        assert c.get("/api/aggregations", params={"field": "StudyDate:week"}).status_code == 400
        assert c.get("/api/values/NotAKeyword").status_code == 400
        assert c.post("/api/tags", json={"series": [loaded["lung"]], "add": [""]}).status_code == 400
        assert c.post("/api/tags", json={"series": ["1.2.3.404"], "add": ["x"]}).status_code == 404
        assert c.post("/api/datasets", json={"name": "bad/name", "series": []}).status_code == 400


def test_sorting_and_keyset_paging(vireo: VireoProcess, loaded: dict[str, str]) -> None:
    by_date = vireo.series(sort="StudyDate")["items"]
    assert [i["SeriesInstanceUID"] for i in by_date] == [loaded["brain"], loaded["lung"], loaded["head"]]
    assert [i["SeriesInstanceUID"] for i in vireo.series(sort="-StudyDate")["items"]] == [loaded["head"], loaded["lung"], loaded["brain"]]
    seen, after = [], None
    with vireo.client() as c:
        while True:
            page = c.get("/api/series", params={"sort": "PatientName:desc", "limit": 1, **({"after": after} if after else {})}).json()
            assert page["total"] == 3
            seen.extend(i["PatientName"] for i in page["items"])
            after = page["next"]
            if not after:
                break
    assert seen == ["Smith^Anna", "Müller^Jörg", "Doe^John"]


def test_aggregations_and_values(vireo: VireoProcess, loaded: dict[str, str]) -> None:
    with vireo.client() as c:
        result = c.get("/api/aggregations", params={"field": ["Modality", "datasets", "StudyDate:year"], "q": "LUNG1-* OR HNSCC-*"}).json()
        assert result["series"] == 3 and result["studies"] == 3 and result["patients"] == 3
        assert result["fields"]["Modality"] == {"CT": 2, "MR": 1}
        assert result["fields"]["datasets"] == {"STUDYA": 2, "STUDYB": 1}
        assert result["fields"]["StudyDate:year"] == {"2019": 1, "2020": 1, "2021": 1}
        ct = c.get("/api/aggregations", params={"field": "Modality", "filter": "Modality:CT"}).json()
        assert ct["series"] == 2 and ct["fields"] == {"Modality": {"CT": 2}}
        assert c.get("/api/values/modality", params={"prefix": "c"}).json() == [{"value": "CT", "count": 2}]
        assert c.get("/api/values/PatientName", params={"prefix": "mül"}).json() == [{"value": "Müller^Jörg", "count": 1}]
        assert "Modality" in c.get("/api/fields").json()
        schema = c.get("/api/openapi.json").json()["components"]["schemas"]
        assert {"SeriesPageModel", "AggregationsModel", "ValueCount", "TagChange", "DatasetModel"} <= set(schema)


def test_tags_from_many_clients_at_once(vireo: VireoProcess, loaded: dict[str, str]) -> None:
    uids = list(loaded.values())
    errors: list[str] = []

    def tag(name: str) -> None:
        with vireo.client() as c:
            for uid in uids * 3:
                response = c.post("/api/tags", json={"series": [uid], "add": [name]})
                if response.status_code != 200:
                    errors.append(response.text)

    threads = [threading.Thread(target=tag, args=(f"reader-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for item in vireo.series()["items"]:
        assert {f"reader-{n}" for n in range(4)} <= set(item["tags"])
    with vireo.client() as c:
        answer = c.post("/api/tags", json={"series": [loaded["lung"]], "add": ["tumour"], "remove": ["reader-0"]}).json()
        assert "tumour" in answer[loaded["lung"]] and "reader-0" not in answer[loaded["lung"]]
        assert _uids(c.get("/api/series", params={"q": "tags:tumour"}).json()) == {loaded["lung"]}  # the very next query
        assert {t["tag"]: t["count"] for t in c.get("/api/tags").json()}["reader-1"] == 3
        assert c.put("/api/tags/reader-1", json={"name": "reviewer"}).json()["series"] == 3
        assert c.delete("/api/tags/reader-2").json()["series"] == 3
        assert _uids(c.get("/api/series", params={"q": "tags:reviewer -tags:reader-2"}).json()) == set(uids)


def test_datasets_from_a_query(vireo: VireoProcess, loaded: dict[str, str]) -> None:
    with vireo.client() as c:
        made = c.post("/api/datasets", json={"name": "all CT", "query": {"q": "Modality:CT"}})
        assert made.status_code == 201 and made.json()["series"] == 2
        changed = c.post("/api/datasets/all CT/series", json={"add": [loaded["brain"]], "remove_query": {"q": "HEAD"}}).json()
        assert changed["series"] == 2
        assert _uids(c.get("/api/series", params={"dataset": "all CT"}).json()) == {loaded["lung"], loaded["brain"]}
        assert c.put("/api/datasets/all CT", json={"name": "chosen"}).json()["name"] == "chosen"
        assert {d["name"]: d["series"] for d in c.get("/api/datasets").json()}["chosen"] == 2
        assert c.delete("/api/datasets/chosen").status_code == 200
        assert c.get("/api/series", params={"dataset": "chosen"}).status_code == 404
        assert c.get("/api/series").json()["total"] == 3  # the series stay
