"""Search against the plain-Python reference, on SQLite and PostgreSQL alike, with generated series."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bench.search_corpus import SyntheticSeries, generate, load, reference_documents
from core import datasets, tags
from core.db import Database
from core.models import SearchValue
from core.search.query import QueryError
from core.search.service import Selection, SeriesSearch, UnknownDataset
from tests.search_reference import reference_hits

COUNT = 700

QUERIES = [
    "lung", "LUNG", "Lung_CT", "LUNG1-*", "lung1-00*", "-CHEST", "NOT chest", "Modality:CT", "modality:ct", "Modality:(CT OR MR)",
    "Modality:CT AND BodyPartExamined:LUNG", "CT lung", "\"W/O CONTRAST\"", "\"w o contrast\"", "StudyDescription:\"Follow-up\"",
    "*MPRAGE*", "t1_mprage*", "*1.0?B70?", "StudyDate:[20200101 TO 20201231]", "StudyDate:{20200101 TO 20201231}",
    "StudyDate:[2015-01-01 TO *]", "SliceThickness:{1 TO 3]", "SliceThickness:[2.5 TO 5]", "KVP:[* TO 100]",
    "PatientName:Müller*", "muller", "PatientName:DOE^JOHN", "PatientName:doe*", "ContrastBolusAgent:*", "-ContrastBolusAgent:*",
    "tags:reviewed", "tags:\"gold standard\"", "tags:gold", "tags:*", "-tags:*", "dataset:LUNG1", "datasets:pilot",
    "ImageType:DERIVED", "ImageType:ORIGINAL AND ImageType:LOCALIZER", "PixelSpacing:0.7", "(CT OR MR) AND -HEAD",
    "lung OR brain", "Laterality:L OR Laterality:R", "instances:[100 TO 200]", "SeriesNumber:3", "HNSCC-*", "*-0042",
    "SOPClassUID:1.2.840.10008.5.1.4.1.1.2", "InstitutionName:universitatsklinikum", "Charité", "charite",
    "Manufacturer:\"GE MEDICAL SYSTEMS\"", "Manufacturer:GE*", "PatientSex:?", "AccessionNumber:ACC0*", "NotAFieldValueAtAll",
    "Modality:SEG -tags:*", "+lung -chest", "lung^2",
]
FILTERS = [
    (["Modality:CT,MR,PT"], None), (["Modality:CT,MR,PT", "Manufacturer:SIEMENS,GE MEDICAL SYSTEMS"], None),
    (["tags:reviewed,train"], None), (["BodyPartExamined:lung"], "LUNG1"), (["PatientName:\"Müller^Anna\",Doe^John"], None),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SeriesSearch, dict[str, dict[str, Any]], list[SyntheticSeries]]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('search') / 'vireo.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database("search_corpus")
    db = Database(url)
    db.migrate()
    items = list(generate(COUNT, seed=11))
    load(db, items[: COUNT // 2])
    search = SeriesSearch(db)
    search.warm()  # the second half arrives after the columns were loaded: they must catch up
    load(db, items[COUNT // 2 :])
    yield search, reference_documents(items), items
    db.dispose()


@pytest.mark.parametrize("q", QUERIES)
def test_query_matches_reference(corpus: Any, q: str) -> None:
    search, docs, _ = corpus
    expected = reference_hits(docs, q)
    assert set(search.series_uids(Selection.of(q))) == expected
    assert search.count(Selection.of(q)) == len(expected)


@pytest.mark.parametrize(("filters", "dataset"), FILTERS)
def test_filters_and_dataset_match_reference(corpus: Any, filters: list[str], dataset: str | None) -> None:
    search, docs, _ = corpus
    expected = reference_hits(docs, "-HEAD", filters, dataset)
    assert expected, "the corpus should exercise this filter"
    assert set(search.series_uids(Selection.of("-HEAD", filters, dataset))) == expected


def test_sample_queries_hit_something(corpus: Any) -> None:
    """Guard against a corpus in which the comparisons are trivially empty."""
    _, docs, _ = corpus
    empty = [q for q in QUERIES if not reference_hits(docs, q) and q not in ("NotAFieldValueAtAll", "PatientName:DOE^JOHN", "-tags:*") and "DOE" not in q]
    assert empty == [], f"queries with no hits in the corpus: {empty}"


def test_aggregations_match_reference(corpus: Any) -> None:
    search, docs, _ = corpus
    expected_hits = reference_hits(docs, "Modality:CT")
    result = search.aggregate(Selection.of("Modality:CT"), ["Modality", "BodyPartExamined", "tags", "datasets", "ImageType", "StudyDate:year", "StudyDate:month"])
    assert result.series == len(expected_hits)
    assert result.studies == len({docs[u]["study"] for u in expected_hits})
    assert result.patients == len({docs[u]["patient"] for u in expected_hits})
    body = Counter(v for u in expected_hits for v in docs[u]["values"]["BodyPartExamined"])
    assert result.fields["BodyPartExamined"] == dict(body)
    assert list(result.fields["BodyPartExamined"].values()) == sorted(body.values(), reverse=True)
    assert result.fields["tags"] == dict(Counter(t for u in expected_hits for t in docs[u]["tags"]))
    assert result.fields["datasets"] == dict(Counter(d for u in expected_hits for d in docs[u]["datasets"]))
    assert result.fields["ImageType"] == dict(Counter(v for u in expected_hits for v in docs[u]["values"]["ImageType"]))
    years = Counter(docs[u]["values"]["StudyDate"][0][:4] for u in expected_hits)
    assert result.fields["StudyDate:year"] == dict(sorted(years.items()))
    months = Counter(f'{docs[u]["values"]["StudyDate"][0][:4]}-{docs[u]["values"]["StudyDate"][0][4:6]}' for u in expected_hits)
    assert result.fields["StudyDate:month"] == dict(sorted(months.items()))
    assert result.fields["Modality"] == {"CT": len(expected_hits)}


def test_autocomplete_by_prefix_with_counts(corpus: Any) -> None:
    search, docs, _ = corpus
    everything = Counter(v for d in docs.values() for v in d["values"]["Manufacturer"])
    got = search.values("manufacturer", "", limit=50)
    assert {g["value"]: g["count"] for g in got} == dict(everything)
    assert [g["count"] for g in got] == sorted(everything.values(), reverse=True)
    siemens = search.values("Manufacturer", "sie")
    assert siemens == [{"value": "SIEMENS", "count": everything["SIEMENS"]}]
    names = search.values("PatientName", "mull")
    assert names and all(n["value"].lower().startswith("müll") for n in names)  # accent-insensitive prefix
    tagged = search.values("tags", "re")
    assert tagged == [{"value": "reviewed", "count": sum("reviewed" in d["tags"] for d in docs.values())}]
    within = search.values("BodyPartExamined", "", selection=Selection.of("Modality:CT"))
    assert sum(v["count"] for v in within) == len(reference_hits(docs, "Modality:CT"))


def test_sorting_and_keyset_paging_walk_everything(corpus: Any) -> None:
    search, docs, _ = corpus
    selection = Selection.of("-HEAD")
    expected = reference_hits(docs, "-HEAD")
    for sort in ("StudyDate", "-StudyDate", "SliceThickness:desc", "PatientName", "tags", "instances", "-arrived"):
        seen: list[str] = []
        after = None
        while True:
            page = search.page(selection, sort=sort, limit=97, after=after)
            assert page.total == len(expected)
            seen.extend(page.series_uids)
            after = page.next_cursor
            if after is None:
                break
        assert len(seen) == len(set(seen)) == len(expected), sort
        assert set(seen) == expected
        by_offset = [u for start in range(0, len(expected), 200) for u in search.page(selection, sort=sort, limit=200, offset=start).series_uids]
        assert by_offset == seen, f"offset and keyset paging disagree for {sort}"
        field = sort.lstrip("-").split(":")[0]
        if field == "StudyDate":
            dates = [docs[u]["values"]["StudyDate"][0] for u in seen]
            assert dates == sorted(dates, reverse=sort.startswith("-"))
        if field == "SliceThickness":
            numbers = [float(docs[u]["values"]["SliceThickness"][0]) for u in seen]
            assert numbers == sorted(numbers, reverse=True)


def test_bad_queries_say_where_and_why(corpus: Any) -> None:
    search, _, _ = corpus
    for q, where in (("Modality:CT AND (lung", None), ("AND lung", 0), ("Modaltiy:CT", 0), ("\"unclosed", 0)):
        with pytest.raises(QueryError) as caught:
            search.count(Selection.of(q))
        if where is not None:
            assert caught.value.position == where
    with pytest.raises(QueryError, match="Modality"):
        search.count(Selection.of("Modaltiy:CT"))
    with pytest.raises(QueryError):
        search.count(Selection.of(None, ["NoColon"]))
    with pytest.raises(QueryError):
        search.page(Selection(), sort="SeriesInstanceUID")
    with pytest.raises(UnknownDataset):
        search.count(Selection.of(None, None, "no such dataset"))


def test_tag_changes_are_visible_to_the_next_query_and_never_lost(corpus: Any) -> None:
    search, docs, items = corpus
    db = search.db
    uids = [i.series_uid for i in items[:60]]
    before = search.count(Selection.of("tags:concurrent-a"))
    assert before == 0

    def tagger(tag: str) -> None:
        for uid in uids:  # one series per call: the worst case for lost updates
            with db.engine.begin() as conn:
                tags.change_tags(conn, [uid], [tag], [])

    threads = [threading.Thread(target=tagger, args=(t,)) for t in ("concurrent-a", "concurrent-b", "concurrent-c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for tag in ("concurrent-a", "concurrent-b", "concurrent-c"):
        assert set(search.series_uids(Selection.of(f"tags:{tag}"))) == set(uids)
    with db.engine.begin() as conn:
        after = tags.tags_of(conn, uids[:1])[uids[0]]
        assert {"concurrent-a", "concurrent-b", "concurrent-c"} <= set(after)
        tags.change_tags(conn, uids[:10], [], ["concurrent-b"])
    assert search.count(Selection.of("tags:concurrent-b")) == 50
    with db.engine.begin() as conn:
        assert tags.rename_tag(conn, "concurrent-c", "renamed-c") == 60
        assert tags.delete_tag(conn, "concurrent-a") == 60
    assert search.count(Selection.of("tags:renamed-c")) == 60
    assert search.count(Selection.of("tags:concurrent-a OR tags:concurrent-c")) == 0
    assert {t["tag"]: t["count"] for t in search.tag_counts()}["renamed-c"] == 60


def test_datasets_from_a_query_and_membership(corpus: Any) -> None:
    search, docs, _ = corpus
    matching = search.series_uids(Selection.of("Modality:MR"))
    assert len(matching) == len(reference_hits(docs, "Modality:MR")) > 100
    with search.db.session() as session:
        datasets.create_dataset(session, "all MR", matching, "tester", checked=True)
    assert search.count(Selection.of(None, None, "all MR")) == len(matching)
    with search.db.session() as session:
        datasets.change_members(session, "all MR", [], matching[:5])
        datasets.rename_dataset(session, "all MR", "MR minus five")
    assert search.count(Selection.of("dataset:\"MR minus five\"")) == len(matching) - 5
    with search.db.session() as session:
        datasets.delete_dataset(session, "MR minus five")
    with pytest.raises(UnknownDataset):
        search.count(Selection.of(None, None, "MR minus five"))
    assert search.count(Selection.of("Modality:MR")) == len(matching)  # the series stay


def test_value_counts_stay_exact_after_reindex(corpus: Any) -> None:
    """Re-indexing a series with the same values changes nothing; the dictionary counts match the documents."""
    search, docs, items = corpus
    from core.search.indexing import index_series

    with search.db.engine.begin() as conn:
        index_series(conn, [i.series_uid for i in items[:50]])
        counts = dict(conn.execute(select(SearchValue.display, func.sum(SearchValue.count)).where(SearchValue.display.in_(["SIEMENS", "Philips"])).group_by(SearchValue.display)).all())  # type: ignore[attr-defined]
    manufacturers = Counter(v for d in docs.values() for v in d["values"]["Manufacturer"])
    assert counts == {"SIEMENS": manufacturers["SIEMENS"], "Philips": manufacturers["Philips"]}
    assert search.count(Selection.of("Manufacturer:SIEMENS")) == manufacturers["SIEMENS"]


def test_deleting_a_series_takes_it_out_of_search_and_datasets(corpus: Any) -> None:
    from core.series_removal import delete_series

    search, docs, items = corpus
    victim = items[-1]
    name = victim.datasets[0]
    before = search.count(Selection.of(None, None, name))
    with search.db.engine.begin() as conn:
        delete_series(conn, [victim.series_uid])
    assert victim.series_uid not in search.series_uids(Selection())
    assert search.count(Selection.of(None, None, name)) == before - 1
    with search.db.session() as session:
        listed = {d["name"]: d["series"] for d in datasets.list_datasets(session)}
    assert listed[name] == before - 1
    assert search.count(Selection.of(f'SeriesInstanceUID:"{victim.series_uid}"')) == 0
    docs.pop(victim.series_uid)
    items.remove(victim)


def test_a_pasted_uid_finds_its_series(corpus: Any) -> None:
    search, docs, items = corpus
    target = items[5]
    for q in (target.series_uid, f'"{target.series_uid}"', f"SeriesInstanceUID:{target.series_uid}", f"StudyInstanceUID:{target.study_uid}",
              f"SeriesInstanceUID:{target.series_uid[:-3]}*", f"*{target.series_uid[-12:]}", f"{target.study_uid} AND Modality:{target.modality}"):
        expected = reference_hits(docs, q)
        assert target.series_uid in expected, q
        assert set(search.series_uids(Selection.of(q))) == expected, q
    assert search.count(Selection.of("1.2.826")) == len(reference_hits(docs, "1.2.826")) == 0  # identifiers are not split into words


def test_columns_stay_exact_through_many_small_changes_and_compaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changes arrive one by one between queries, the deltas get folded in again and again: answers never drift."""
    import core.search.columns as columns_module

    monkeypatch.setattr(columns_module, "COMPACT_AT", 40)
    db = Database(f"sqlite:///{tmp_path / 'vireo.db'}")
    db.migrate()
    items = list(generate(240, seed=5))
    load(db, items[:120])
    search = SeriesSearch(db)
    search.warm()
    docs = reference_documents(items[:120])
    for step, item in enumerate(items[120:]):
        load(db, [item])
        docs.update(reference_documents([item]))
        target = items[step]
        with db.engine.begin() as conn:
            tags.change_tags(conn, [target.series_uid], ["walked"], [])
        docs[target.series_uid]["tags"].append("walked")
        if step % 7 == 0:
            for q in ("tags:walked", "Modality:CT -tags:walked", "lung*", "*"):
                assert set(search.series_uids(Selection.of(q))) == reference_hits(docs, q), (step, q)
            assert search.aggregate(Selection(), ["Modality"]).fields["Modality"] == dict(Counter(v for d in docs.values() for v in d["values"]["Modality"]))
    assert search.columns._delta_size < 40 + 60  # folded in along the way
    db.dispose()
