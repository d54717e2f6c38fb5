"""Tags as in Kaapana, the card keyboard and the structured headers, in real Chromium at 1280×800.

One Vireo for the module with six small series (an MR with a SEG over it for one patient, four
CTs for another); tags are set and checked through /api, as an outside client sees them.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from pydicom import dcmread

from components.tag_colours import tag_colour
from tests.factories import write_seg, write_series
from tests.support.browser import ARTIFACTS_DIR
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess

SIZE = {"width": 1280, "height": 800}
LIVE_S = 5_000  # ms a second tab may take to show a change made in the first


@pytest.fixture(scope="module")
def vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    process = VireoProcess(tmp_path_factory.mktemp("vireo") / "data").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def corpus(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("tags-ui")
    mr = write_series(out / "mr", modality="MR", slices=4, rows=32, columns=32, patient_id="PAT1", seed=1, series_number=1)
    seg = write_seg(out / "mr", mr, labels={1: "lesion"}, frames=2)
    cts = [write_series(out / f"ct{n}", modality="CT", slices=2, rows=32, columns=32, patient_id="PAT2", patient_name="Roe^Rick",
                        seed=10 + n, series_number=n + 1) for n in range(4)]
    result = subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--scan-directories", "--recurse", "--scan-pattern", "*.dcm",
                             "--call", "tags", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert vireo.wait_for_instances(4 + 1 + 8)["total"] == 6
    seg_uid = str(dcmread(seg, stop_before_pixels=True).SeriesInstanceUID)
    ct_uids = [ct.series_uid for ct in cts]
    with vireo.client() as client:
        assert client.post("/api/tags", json={"series": [mr.series_uid, *ct_uids], "add": ["reviewed"]}).status_code == 200
        assert client.post("/api/tags", json={"series": [mr.series_uid], "add": ["artefact", "needs-review"]}).status_code == 200
    return {"mr": mr.series_uid, "seg": seg_uid, "cts": ct_uids}


def api_tags(vireo: VireoProcess, uid: str) -> list[str]:
    with vireo.client() as client:
        return client.get(f"/api/series/{uid}").json()["tags"]  # type: ignore[no-any-return]


def eventually_api_tags(vireo: VireoProcess, uid: str, expected: list[str], timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        tags = api_tags(vireo, uid)
        if tags == expected or time.monotonic() > deadline:
            return tags
        time.sleep(0.05)


def first_options(page: Any, count: int) -> list[str]:
    """The first `count` option texts of the open tag menu, once that many are drawn with their text
    (the menu's items can exist for a moment before their labels are rendered)."""
    texts = page.wait_for_function(
        """n => { const t = [...document.querySelectorAll('.q-menu .q-item')].map(i => i.innerText.trim());
                  return t.length >= n && t.slice(0, n).every(x => x) ? t.slice(0, n) : null; }""", arg=count)
    return texts.json_value()  # type: ignore[no-any-return]


def open_datasets(context: Any, vireo: VireoProcess) -> Any:
    page = context.new_page()
    page.goto(f"{vireo.url}/login?next=%2F")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{vireo.url}/")
    # the dashboard fills once the websocket is up: from then on clicks reach the server
    page.wait_for_function("(document.querySelector('[data-testid=count-series]') || {}).innerText?.match(/^[0-9]/)", timeout=60_000)
    page.locator("[data-testid=series-card]").nth(5).wait_for()
    return page


def card(page: Any, uid: str) -> Any:
    return page.locator(f"[data-testid=series-card][data-uid='{uid}']")


def chip_colours(page: Any) -> dict[str, list[str]]:
    """Each tag shown on a card → the background colours of its chips."""
    return page.evaluate("""() => {
        const out = {};
        for (const chip of document.querySelectorAll('[data-testid=card-tag]')) {
            (out[chip.dataset.tag] = out[chip.dataset.tag] || []).push(getComputedStyle(chip).backgroundColor);
        }
        return out;
    }""")


def rgb(hex_colour: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


@pytest.fixture
def context(chromium_browser: Any, playwright_sync: None) -> Iterator[Any]:
    ctx = chromium_browser.new_context(viewport=SIZE)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.mark.slow
def test_chips_colours_dropdown_and_chip_x(vireo: VireoProcess, corpus: dict[str, Any], context: Any) -> None:
    page = open_datasets(context, vireo)
    mr = card(page, corpus["mr"])
    mr.locator("[data-testid=card-tag][data-tag=artefact]").wait_for()

    # stable, distinct colours: the same tag has one colour on every card, different tags differ
    colours = chip_colours(page)
    assert len(colours["reviewed"]) == 5 and len(set(colours["reviewed"])) == 1
    assert colours["reviewed"][0] == rgb(tag_colour("reviewed").background)
    shown = {tag: values[0] for tag, values in colours.items()}
    assert len(set(shown.values())) == len(shown) == 3, shown
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "tags-cards-with-chips.png"))

    # typing offers existing tags; picking one puts it into the row, active, in the cards' colour
    field = page.get_by_label("Add a tag")
    field.click()
    field.press_sequentially("arte")
    option = page.locator(".q-menu .q-item").filter(has_text="artefact")
    option.wait_for()
    expect(page.locator(".q-menu .q-item").filter(has_text="reviewed")).to_have_count(0, timeout=15_000)  # filtered as you type (the full list may show first)
    option.click()
    expect(field).to_have_value("")  # emptied for the next tag
    bar_chip = page.locator("[data-active=true]").filter(has_text="artefact")
    bar_chip.wait_for()
    assert bar_chip.evaluate("c => getComputedStyle(c).backgroundColor") == shown["artefact"]
    # the list starts with the user's recent tags: artefact, although reviewed is on more series
    field.click()
    assert first_options(page, 3) == ["artefact", "reviewed", "needs-review"]
    page.keyboard.press("Escape")

    # the X on a card's chip removes that tag from that one series: no select, no tag toggle (artefact is active)
    mr.locator("[data-testid=card-tag][data-tag=reviewed] [data-testid=card-tag-remove]").click()
    page.wait_for_function(f"!document.querySelector(\"[data-uid='{corpus['mr']}'] [data-tag=reviewed]\")")
    assert eventually_api_tags(vireo, corpus["mr"], ["artefact", "needs-review"]) == ["artefact", "needs-review"]
    assert mr.get_attribute("data-selected") == "false"
    assert all(api_tags(vireo, uid) == ["reviewed"] for uid in corpus["cts"])

    # colours survive a reload
    page.reload()
    page.locator(f"[data-uid='{corpus['mr']}'] [data-tag=artefact]").wait_for()
    assert {tag: values[0] for tag, values in chip_colours(page).items()} == shown

    # recent tags outlive the visit: needs-review picked last leads the list on the next visit,
    # ahead of the row's first tag (artefact) and of the most used one (reviewed)
    field = page.get_by_label("Add a tag")
    field.click()
    field.press_sequentially("needs")
    page.locator(".q-menu .q-item").filter(has_text="needs-review").click()
    page.locator("[data-active=true]").filter(has_text="needs-review").wait_for()
    with vireo.client() as client:  # stored with the account (recent tags first, then the row: pages/datasets.py)
        deadline = time.monotonic() + 15
        while "needs-review" not in client.get("/api/settings/datasets").json()["tag_bar"] and time.monotonic() < deadline:
            time.sleep(0.1)
    page.reload()
    page.get_by_test_id("tag-row").get_by_text("needs-review").wait_for()
    field.click()
    assert first_options(page, 3) == ["needs-review", "artefact", "reviewed"]
    page.keyboard.press("Escape")


@pytest.mark.slow
def test_second_tab_sees_tag_changes_live(vireo: VireoProcess, corpus: dict[str, Any], chromium_browser: Any, context: Any) -> None:
    first = open_datasets(context, vireo)
    other = chromium_browser.new_context(viewport=SIZE)  # another browser: nothing shared but the server
    try:
        second = open_datasets(other, vireo)
        target = corpus["cts"][0]
        field = first.get_by_label("Add a tag")
        field.fill("live-tag")
        field.press("Enter")
        first.locator("[data-active=true]").filter(has_text="live-tag").wait_for()
        card(first, target).click()  # tag mode: the click tags the card
        eventually_api_tags(vireo, target, ["live-tag", "reviewed"])
        second.locator(f"[data-uid='{target}'] [data-tag=live-tag]").wait_for(timeout=LIVE_S)
        # a removal in the first tab through a chip's X, and a change through the REST API, arrive as well
        card(first, target).locator("[data-tag=reviewed] [data-testid=card-tag-remove]").click()
        second.wait_for_function(f"!document.querySelector(\"[data-uid='{target}'] [data-tag=reviewed]\")", timeout=LIVE_S)
        with vireo.client() as client:
            client.post("/api/tags", json={"series": [corpus["seg"]], "add": ["from-api"]}).raise_for_status()
        second.locator(f"[data-uid='{corpus['seg']}'] [data-tag=from-api]").wait_for(timeout=LIVE_S)
        with vireo.client() as client:  # a rename touches any series: every loaded card is looked at again
            assert client.put("/api/tags/from-api", json={"name": "renamed"}).json() == {"tag": "renamed", "series": 1}
        second.locator(f"[data-uid='{corpus['seg']}'] [data-tag=renamed]").wait_for(timeout=LIVE_S)
        assert second.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
    finally:
        other.close()


def focused_uid(page: Any) -> str | None:
    return page.evaluate("document.activeElement && document.activeElement.dataset.uid || null")  # type: ignore[no-any-return]


@pytest.mark.slow
def test_card_keyboard(vireo: VireoProcess, corpus: dict[str, Any], context: Any) -> None:
    page = open_datasets(context, vireo)
    cards = page.locator("[data-testid=series-card]")
    uids = cards.evaluate_all("cs => cs.map(c => c.dataset.uid)")
    assert cards.nth(0).get_attribute("tabindex") == "0" and cards.nth(1).get_attribute("tabindex") == "-1"  # one tab stop
    assert cards.nth(0).get_attribute("role") == "option" and "series" in (cards.nth(0).get_attribute("aria-label") or "")

    cards.nth(0).focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"document.activeElement.dataset.uid === '{uids[1]}'")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # a visible focus ring
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"document.activeElement.dataset.uid === '{uids[0]}'")

    # down: the card below, by the layout (six cards make two rows at this width)
    boxes = cards.evaluate_all("cs => cs.map(c => { const r = c.getBoundingClientRect(); return [r.left, r.top]; })")
    below = next(i for i, (left, top) in enumerate(boxes) if top > boxes[0][1] + 5 and abs(left - boxes[0][0]) < 5)
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"document.activeElement.dataset.uid === '{uids[below]}'")
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"document.activeElement.dataset.uid === '{uids[0]}'")

    # Space selects and deselects the focused card, and the page counts it
    page.keyboard.press(" ")
    page.wait_for_function(f"document.querySelector(\"[data-uid='{uids[0]}']\").dataset.selected === 'true'")
    page.get_by_test_id("selection-count").filter(has_text="1").wait_for()
    page.keyboard.press("ArrowRight")
    page.keyboard.press(" ")
    page.wait_for_function(f"document.querySelector(\"[data-uid='{uids[1]}']\").dataset.selected === 'true'")
    assert cards.nth(0).get_attribute("data-selected") == "true"  # Space adds, as a Ctrl-click
    page.keyboard.press(" ")
    page.wait_for_function(f"document.querySelector(\"[data-uid='{uids[1]}']\").dataset.selected === 'false'")

    # Space in the search field types a space and selects nothing
    search = page.get_by_label("Search (Lucene syntax)")
    search.click()
    search.press_sequentially("ab")
    search.press("ArrowLeft")
    search.press(" ")
    assert search.input_value() == "a b"
    assert cards.nth(1).get_attribute("data-selected") == "false"
    search.fill("")

    # Enter opens the detail view, as the eye button does
    cards.nth(1).focus()
    page.keyboard.press("Enter")
    page.get_by_test_id("close-detail").wait_for()


def test_structured_headers_show_every_value(vireo: VireoProcess, corpus: dict[str, Any], context: Any) -> None:
    with vireo.client() as client:
        settings = client.get("/api/settings/datasets").json()
        client.put("/api/settings/datasets", json={**settings, "view": "structured"}).raise_for_status()
    try:
        page = open_datasets(context, vireo)
        studies = page.get_by_test_id("study-card")
        mr_study = studies.filter(has=page.locator(f"[data-uid='{corpus['mr']}']"))
        head = mr_study.locator(".vireo-study-head").inner_text()
        modality = next(f for f in mr_study.locator(".vireo-study-head .vireo-group-field").all_inner_texts() if f.startswith("Modality"))
        assert sorted(modality.removeprefix("Modality").strip().split(", ")) == ["MR", "SEG"], head
        patient = page.get_by_test_id("patient-card").filter(has=page.locator(f"[data-uid='{corpus['mr']}']"))
        patient_modality = next(f for f in patient.locator(".vireo-group-head").first.locator(".vireo-group-field").all_inner_texts() if f.startswith("Modality"))
        assert sorted(patient_modality.removeprefix("Modality").strip().split(", ")) == ["MR", "SEG"]
        ct_head = page.get_by_test_id("patient-card").filter(has=page.locator(f"[data-uid='{corpus['cts'][0]}']")).locator(".vireo-group-head").first
        assert "Modality CT" in ct_head.inner_text().replace("\n", " ") and "CT, CT" not in ct_head.inner_text()  # a set: each value once
        page.screenshot(path=str(ARTIFACTS_DIR / "tags-structured-headers.png"))
    finally:
        with vireo.client() as client:
            client.delete("/api/settings/datasets")
