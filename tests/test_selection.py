"""The Selection value type: one selection (picked series, or dataset + query + filters) in URLs, JSON and searches.

Resolving is checked against a real search over a real (SQLite) database with generated series.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode

import pytest
from starlette.datastructures import QueryParams

from bench.search_corpus import SyntheticSeries, generate, load
from core.db import Database
from core.search.service import SeriesSearch, UnknownDataset
from core.selection import Selection, SelectionError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SeriesSearch, list[SyntheticSeries]]]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('selection') / 'vireo.db'}")
    db.migrate()
    items = list(generate(80, seed=5))
    load(db, items)
    yield SeriesSearch(db), items
    db.dispose()


SELECTIONS = [
    Selection(),
    Selection.of(q="Modality:CT"),
    Selection.of("Modality:CT AND lung", ["Manufacturer:SIEMENS,GE MEDICAL SYSTEMS", "tags:reviewed"], "LUNG1"),
    Selection.of(dataset="brain mr & co"),
    Selection.of_series(["1.2.3", "1.2.4", "1.2.5"]),
]


@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: s.describe())
def test_url_and_json_forms_read_back_to_the_same_selection(selection: Selection) -> None:
    query = urlencode(selection.to_params())
    assert Selection.from_params(QueryParams(query)) == selection  # as a page reads its request
    assert Selection.from_params(parse_qs(query)) == selection  # as the Datasets page reads a popstate
    assert Selection.from_json(selection.to_json()) == selection


def test_several_picked_series_survive_the_url_in_both_spellings() -> None:
    """The bug this type ends: `series=a&series=b` was read as one comma-separated string, so one series."""
    picked = Selection.of_series(["1.2.3", "1.2.4", "1.2.3"])  # the same card twice counts once
    assert picked.series == ("1.2.3", "1.2.4")
    assert urlencode(picked.to_params()) == "series=1.2.3&series=1.2.4"
    assert Selection.from_params(QueryParams("series=1.2.3,1.2.4")) == picked  # older links
    assert Selection.from_params(QueryParams("dag=x&series=1.2.3&series=1.2.4")).series == ("1.2.3", "1.2.4")


def test_a_search_keeps_its_query_and_filters_on_the_way() -> None:
    read = Selection.from_params(QueryParams("dataset=brain-mr&q=Modality%3ACT&filter=tags%3Aa%2Cb&filter=&filter=PatientSex%3AF"))
    assert read == Selection(q="Modality:CT", filters=("tags:a,b", "PatientSex:F"), dataset="brain-mr")
    assert read.searches and not read.explicit and not read.whole_dataset
    assert Selection.from_json({"dataset": "brain-mr", "q": "Modality:CT", "filters": "tags:a,b"}).filters == ("tags:a,b",)
    assert Selection.of(dataset="brain-mr").whole_dataset
    assert Selection.from_params(QueryParams("q=&dataset=&filter=")) == Selection()  # a client filling a template


def test_series_and_a_search_together_are_refused() -> None:
    with pytest.raises(SelectionError):
        Selection(q="Modality:CT", series=("1.2.3",))
    with pytest.raises(SelectionError):
        Selection.from_json({"dataset": "x", "series": ["1.2.3"]})


def test_descriptions_say_what_was_asked_and_what_it_came_to() -> None:
    assert Selection.of("Modality:CT", dataset="brain-mr").describe(5) == "query Modality:CT in brain-mr → 5 series"
    assert Selection.of(filters=["Modality:CT,MR"]).describe() == "filter Modality:CT,MR"
    assert Selection.of(dataset="brain-mr").describe(1200) == "brain-mr → 1,200 series"
    assert Selection.of_series(["1", "2", "3"]).describe() == "3 series"
    assert Selection.of(q="*").describe(64) == "all 64 series" and Selection().describe() == "all series"


def test_a_search_resolves_to_every_matching_series(corpus: tuple[SeriesSearch, list[SyntheticSeries]]) -> None:
    search, items = corpus
    cts = {i.series_uid for i in items if i.modality == "CT"}
    assert 0 < len(cts) < len(items)
    selection = Selection.of("Modality:CT")
    assert set(selection.resolve(search)) == cts and selection.count(search) == len(cts)
    collection = items[0].datasets[0]
    in_dataset = {i.series_uid for i in items if i.modality == "CT" and collection in i.datasets}
    assert in_dataset and set(Selection.of("Modality:CT", dataset=collection).resolve(search)) == in_dataset
    with pytest.raises(UnknownDataset):
        Selection.of("Modality:CT", dataset="no such dataset").resolve(search)


def test_picked_series_are_never_taken_for_everything(corpus: tuple[SeriesSearch, list[SyntheticSeries]]) -> None:
    """Explicit series given to the search itself (a page, a count) mean those series, of them the ones that exist."""
    search, items = corpus
    picked = [items[3].series_uid, items[40].series_uid, items[7].series_uid]
    selection = Selection.of_series(picked)
    assert selection.resolve(search) == picked  # as picked, in order
    assert set(search.series_uids(selection)) == set(picked)
    assert search.count(selection) == 3
    assert search.count(Selection.of_series([*picked, "9.9.9.9"])) == 3
    assert search.page(selection, limit=10).total == 3
