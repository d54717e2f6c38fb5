"""The Datasets page's action row acts on exactly what its label says, in real Chromium against a real Vireo.

Cards are selected in each way a person does it (click, shift-click, ctrl-click, "Select all
matching", a search with nothing selected, nothing at all); each time "Run workflow" opens
Workflow Execution, which must say how many series the workflow will get, and the started
workflow's jobs must get exactly the selected cards — or exactly what `/api/series` returns for
the same dataset + query + filters. The Workflow List shows what it was started on. A search
without selection also makes a dataset and a download, which must hold the same series.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from core.selection import Selection
from tests.factories import write_series
from tests.support.browser import ARTIFACTS_DIR
from tests.support.vireo import VireoProcess
from tests.test_datasets_page import cards, dcmsend, log_in, wait_until_live

pytestmark = pytest.mark.slow

COHORT = "cohort"


@pytest.fixture(scope="module")
def vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    process = VireoProcess(tmp_path_factory.mktemp("vireo") / "data").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def corpus(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Ten series in `cohort` (six CT, four MR; axial and coronal) and two CT elsewhere: every search below is a strict subset."""
    out = tmp_path_factory.mktemp("selection")
    cohort = [
        write_series(out / COHORT, modality="CT" if n < 6 else "MR", slices=1, rows=16, columns=16, patient_id=f"C{n:02d}", seed=200 + n,
                     series_description="axial" if n % 2 else "coronal")
        for n in range(10)
    ]
    other = [write_series(out / "other", modality="CT", slices=1, rows=16, columns=16, patient_id=f"O{n}", seed=300 + n) for n in range(2)]
    dcmsend(vireo, out / COHORT, COHORT)
    dcmsend(vireo, out / "other", "other")
    assert vireo.wait_for_instances(12)["total"] == 12
    return {COHORT: [s.series_uid for s in cohort], "other": [s.series_uid for s in other]}


def matching(vireo: VireoProcess, selection: Selection) -> set[str]:
    """What the REST API says the same dataset + query + filters match."""
    params: dict[str, Any] = {"limit": 1000}
    if selection.dataset:
        params["dataset"] = selection.dataset
    if selection.q:
        params["q"] = selection.q
    if selection.filters:
        params["filter"] = list(selection.filters)
    found = vireo.series(**params)
    assert found["total"] == len(found["items"])
    return {i["SeriesInstanceUID"] for i in found["items"]}


def selected_cards(page: Any) -> set[str]:
    return set(page.eval_on_selector_all("[data-testid=series-card][data-selected=true]", "cards => cards.map(c => c.dataset.uid)"))


def row_says(page: Any, text: str) -> None:
    page.get_by_test_id("selection-count").filter(has_text=text).wait_for()


def run_workflow(page: Any, vireo: VireoProcess, expected: set[str], shot: str) -> dict[str, Any]:
    """Run workflow from the action row, check the count Workflow Execution gives, start collect-metadata; the workflow."""
    page.get_by_test_id("action-workflow").click()
    page.wait_for_url("**/workflows/execute**")
    page.get_by_test_id("dag-select").click()
    page.get_by_role("option", name="collect-metadata", exact=True).click()
    page.locator(".q-menu").wait_for(state="detached")  # the option list has faded out (for the screenshot)
    count = page.get_by_test_id("input-count")
    count.wait_for()
    assert count.inner_text() == f"This workflow will get {len(expected):,} series"
    page.screenshot(path=str(ARTIFACTS_DIR / f"selection-{shot}-execute.png"), full_page=True)
    page.get_by_test_id("submit-workflow").click()
    page.wait_for_url("**/workflows?workflow=*")
    workflow_id = parse_qs(urlparse(page.url).query)["workflow"][0]
    with vireo.client() as client:
        workflow = client.get(f"/api/workflows/{workflow_id}").json()
    job_series = [uid for job in workflow["jobs"] for uid in job["series"]]
    assert sorted(job_series) == sorted(expected)  # each selected series once, and no other
    assert sorted(workflow["series"]) == sorted(expected)
    described = Selection.from_json(workflow["selection"]).describe(len(expected))
    cell = page.locator(f"tr[data-workflow='{workflow_id}'] .workflow-input")
    cell.wait_for()
    assert cell.inner_text() == described
    page.screenshot(path=str(ARTIFACTS_DIR / f"selection-{shot}-list.png"), full_page=True)
    return workflow


def open_datasets(page: Any, vireo: VireoProcess, target: str, cards_shown: int) -> None:
    page.goto(f"{vireo.url}{target}")
    wait_until_live(page)
    page.wait_for_function(f"document.querySelectorAll('[data-testid=series-card]').length === {cards_shown}")


def test_run_workflow_gets_exactly_the_picked_cards(vireo: VireoProcess, corpus: dict[str, list[str]], browser_page: Any) -> None:
    page = browser_page
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    log_in(page, vireo, target=f"/?dataset={COHORT}")
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 10")

    # one click
    cards(page).nth(2).click()
    row_says(page, "1 selected")
    picked = selected_cards(page)
    assert len(picked) == 1
    workflow = run_workflow(page, vireo, picked, "click")
    assert workflow["selection"] == {"series": list(picked)} and workflow["dataset"] is None

    # a click and a shift-click: a range of four
    open_datasets(page, vireo, f"/?dataset={COHORT}", 10)
    cards(page).nth(1).click()
    cards(page).nth(4).click(modifiers=["Shift"])
    row_says(page, "4 selected")
    picked = selected_cards(page)
    assert picked == {cards(page).nth(i).get_attribute("data-uid") for i in range(1, 5)}
    run_workflow(page, vireo, picked, "shift")

    # ctrl-clicks: three cards apart (the job used to get one of them)
    open_datasets(page, vireo, f"/?dataset={COHORT}", 10)
    cards(page).nth(0).click()
    cards(page).nth(5).click(modifiers=["Control"])
    cards(page).nth(8).click(modifiers=["Control"])
    cards(page).nth(3).click(modifiers=["Control"])
    cards(page).nth(3).click(modifiers=["Control"])  # and one taken out again
    row_says(page, "3 selected")
    picked = selected_cards(page)
    assert len(picked) == 3
    run_workflow(page, vireo, picked, "ctrl")


def test_run_workflow_on_a_search_gets_every_matching_series(vireo: VireoProcess, corpus: dict[str, list[str]], browser_page: Any) -> None:
    page = browser_page
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    log_in(page, vireo, target=f"/?dataset={COHORT}")
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 10")

    # a search typed in, then "Select all matching"
    search = page.get_by_label("Search (Lucene syntax)")
    search.fill("Modality:CT")
    search.press("Enter")
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 6")
    cards(page).nth(0).click()  # a pick first, then all matching replaces it
    page.get_by_test_id("select-all").click()
    row_says(page, "All 6 matching series selected")
    ct_in_cohort = Selection.of("Modality:CT", dataset=COHORT)
    expected = matching(vireo, ct_in_cohort)
    assert len(expected) == 6 and expected < set(corpus[COHORT]) | set(corpus["other"])
    workflow = run_workflow(page, vireo, expected, "select-all")
    assert workflow["selection"] == ct_in_cohort.to_json() and workflow["dataset"] == COHORT
    page.get_by_text("query Modality:CT in cohort → 6 series").wait_for()

    # a shared link with a query and a filter, nothing selected
    narrow = Selection.of("Modality:CT", ["SeriesDescription:axial"], COHORT)
    open_datasets(page, vireo, "/?dataset=cohort&q=Modality%3ACT&filter=SeriesDescription%3Aaxial", 3)
    row_says(page, "No selection: actions apply to all 3 matching series")
    expected = matching(vireo, narrow)
    assert len(expected) == 3
    run_workflow(page, vireo, expected, "search")

    # nothing chosen at all: every series in the PACS, as the row says
    open_datasets(page, vireo, "/", 12)
    row_says(page, "No selection: actions apply to all 12 matching series")
    run_workflow(page, vireo, matching(vireo, Selection()), "everything")


def test_dataset_and_download_actions_on_a_search_hold_the_matching_series(vireo: VireoProcess, corpus: dict[str, list[str]], browser_page: Any) -> None:
    page = browser_page
    log_in(page, vireo, target="/?q=Modality:MR%20OR%20SeriesDescription:axial")
    expected = matching(vireo, Selection.of("Modality:MR OR SeriesDescription:axial"))
    assert 0 < len(expected) < 12
    page.wait_for_function(f"document.querySelectorAll('[data-testid=series-card]').length === {len(expected)}")
    row_says(page, f"No selection: actions apply to all {len(expected)} matching series")

    page.get_by_test_id("action-create-dataset").click()
    page.get_by_test_id("dialog-count").filter(has_text=f"{len(expected)} series (everything matching the search)").wait_for()
    page.get_by_label("Name").fill("mr-or-axial")
    page.get_by_test_id("confirm-create-dataset").click()
    page.get_by_text(f"Dataset mr-or-axial created with {len(expected)} series").wait_for()
    assert matching(vireo, Selection.of(dataset="mr-or-axial")) == expected

    # removing picked cards from it takes out those, and only those
    cards(page).nth(0).click()
    cards(page).nth(1).click(modifiers=["Control"])
    row_says(page, "2 selected")
    picked = selected_cards(page)
    page.get_by_test_id("action-remove").click()
    page.get_by_test_id("membership-dataset").click()
    page.get_by_role("option", name="mr-or-axial", exact=True).click()
    page.get_by_test_id("confirm-membership").click()
    page.get_by_text(f"Dataset mr-or-axial now holds {len(expected) - 2} series").wait_for()
    assert matching(vireo, Selection.of(dataset="mr-or-axial")) == expected - picked

    # the download of the search (nothing selected) holds every matching series, not the loaded cards
    page.get_by_test_id("clear-selection").click()
    row_says(page, "No selection")
    with page.expect_download() as download:
        page.get_by_test_id("action-download").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    assert {re.split(r"/", name)[1] for name in archive.namelist()} == expected


def test_the_api_takes_a_selection_whole_and_refuses_what_it_cannot_do(vireo: VireoProcess, corpus: dict[str, list[str]]) -> None:
    search = Selection.of("Modality:MR", dataset=COHORT)
    expected = matching(vireo, search)
    assert len(expected) == 4
    with vireo.client() as client:
        def start(**body: Any) -> Any:
            return client.post("/api/workflows", json={"dag_id": "collect-metadata", **body})

        created = start(selection={"dataset": COHORT, "q": "Modality:MR"})
        assert created.status_code == 201, created.text
        workflow = created.json()
        assert set(workflow["series"]) == expected == set(workflow["jobs"][0]["series"])
        assert workflow["selection"] == search.to_json() and workflow["dataset"] == COHORT
        listed = client.get("/api/workflows", params={"q": workflow["id"]}).json()
        assert listed[0]["selection"] == search.to_json() and set(listed[0]["series"]) == expected
        # the older fields are the same as a selection of a whole dataset or of picked series
        whole = start(dataset="other").json()
        assert whole["selection"] == {"dataset": "other"} and set(whole["series"]) == set(corpus["other"])
        picked = start(series=corpus["other"][:1]).json()
        assert picked["selection"] == {"series": corpus["other"][:1]} and picked["dataset"] is None

        for body, message in [
            ({"selection": {"q": "Modality:MR"}, "dataset": COHORT}, "not both"),
            ({"selection": {"q": "Modality:MR", "series": corpus["other"]}}, "not both"),
            ({"selection": {"q": "Modality:(MR"}}, "never closed"),
            ({"selection": {"q": "Modality:PT", "dataset": COHORT}}, "no series match query Modality:PT in cohort"),
            ({"selection": {"q": "Modality:MR", "dataset": "no-such-set"}}, "no dataset"),
            ({"selection": {}}, "needs input"),
            ({"selection": {"q": "Modality:MR", "dataset": COHORT}, "runners": ["site-b"]}, "make a dataset of the matching series first"),
        ]:
            refused = start(**body)
            assert refused.status_code == 400 and message in refused.json()["detail"], (body, refused.text)
