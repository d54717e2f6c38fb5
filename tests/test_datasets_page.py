"""The Datasets page in real headless Chromium against a real Vireo with DICOM sent by dcmsend.

One Vireo for the module; each test opens its own browser context (a fresh login), and saves a
screenshot under tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.factories import write_seg, write_series
from tests.support.browser import ARTIFACTS_DIR
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess

XSS_NAME = "<img src=x onerror=alert(1)>"


def dcmsend(vireo: VireoProcess, directory: Path, called: str) -> None:
    result = subprocess.run(
        ["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--scan-directories", "--recurse", "--scan-pattern", "*.dcm", "--call", called, str(directory)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    """This module's Vireo knows an OHIF viewer, so the detail view offers "Open in OHIF"."""
    # Without Vireo's own OHIF (an empty VIREO_OHIF_DIR), which would take the link over (app/viewers.py).
    process = VireoProcess(tmp_path_factory.mktemp("vireo") / "data", VIREO_OHIF_URL="https://ohif.example/",
                           VIREO_OHIF_DIR=str(tmp_path_factory.mktemp("no-ohif"))).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def corpus(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CT with a two-segment SEG over it, a second CT, and an MR whose patient name is an XSS attempt."""
    out = tmp_path_factory.mktemp("datasets-page")
    ct = write_series(out / "ct", modality="CT", slices=20, rows=96, columns=96, patient_id="PAT1", seed=1, series_number=1)
    seg_path = write_seg(out / "ct", ct, labels={1: "liver", 2: "spleen"}, frames=5)
    lung = write_series(out / "lung", modality="CT", slices=6, patient_id="PAT1", seed=1, series_number=2, series_description="Lung 1mm")
    mr = write_series(out / "mr", modality="MR", slices=6, patient_id="PAT2", patient_name=XSS_NAME, seed=2, study_date="20230405")
    dcmsend(vireo, out, "demo")
    page = vireo.wait_for_instances(20 + 1 + 6 + 6)
    assert page["total"] == 4
    seg_uid = str(dcmread(seg_path, stop_before_pixels=True).SeriesInstanceUID)
    _wait_for_thumbnails(vireo, 4)
    return {"ct": ct, "lung": lung, "mr": mr, "seg": seg_uid, "out": out}


def _wait_for_thumbnails(vireo: VireoProcess, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for item in vireo.series()["items"] if item["thumbnail_version"]) >= count:
            return
        time.sleep(0.2)
    raise AssertionError("thumbnails were not drawn")


def log_in(page: Any, vireo: VireoProcess, username: str = "admin", password: str = ADMIN_PASSWORD, target: str = "/") -> None:
    page.goto(f"{vireo.url}/login?next={target.replace('/', '%2F').replace('?', '%3F').replace('=', '%3D').replace('&', '%26')}")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{vireo.url}{target}")
    if target.startswith("/?") or target == "/":
        wait_until_live(page)


def wait_until_live(page: Any) -> None:
    """The first cards come with the page; the dashboard only once the websocket is up (and clicks reach the server)."""
    page.wait_for_function("(document.querySelector('[data-testid=count-series]') || {}).innerText?.match(/^[0-9]/)")


def cards(page: Any) -> Any:
    return page.locator("[data-testid=series-card]")


def shot(page: Any, name: str) -> None:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / f"datasets-{name}.png"), full_page=True)


def test_search_error_dashboard_filter_and_back_button(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    page = browser_page
    log_in(page, vireo)
    cards(page).nth(3).wait_for()
    assert cards(page).count() == 4

    search = page.get_by_label("Search (Lucene syntax)")
    search.fill("Modality:(CT")
    search.press("Enter")
    error = page.get_by_test_id("search-error")
    error.wait_for()
    assert "never closed" in error.inner_text()
    assert cards(page).count() == 0

    search.fill('SeriesDescription:"lung 1mm"')
    search.press("Enter")
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 1")
    assert not error.is_visible()
    assert "q=SeriesDescription" in page.url
    search.fill("")
    search.press("Enter")
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 4")
    page.wait_for_function("document.querySelector('[data-testid=count-series]').innerText === '4'")

    # The Modality chart has one bar per value (bars drawn bottom-up, sorted by count): click the MR bar.
    chart = page.get_by_test_id("chart-Modality")
    chart.locator(".bars .point path").first.wait_for()
    labels = chart.locator(".yaxislayer-above .ytick text").all_text_contents()
    bar = chart.locator(".bars .point path").nth(labels.index("MR"))
    box = bar.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 1")
    assert page.get_by_test_id("filter-chip").inner_text().startswith("Modality: MR")
    assert "filter=Modality%3AMR" in page.evaluate("location.href")
    # the count is its own element, updated a moment after the cards: wait for it as for the cards above
    page.wait_for_function("document.querySelector('[data-testid=count-series]').innerText === '1'")
    assert page.get_by_test_id("count-series").inner_text() == "1"
    shot(page, "dashboard-filter")

    page.go_back()
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 4")
    assert page.get_by_test_id("filter-chip").count() == 0

    # the state in the URL is shareable: a fresh page load shows the same search
    page.goto(f"{vireo.url}/?filter=Modality:MR")
    wait_until_live(page)
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 1")


def stored_tags(vireo: VireoProcess, uid: str, expected: list[str], timeout: float = 10) -> list[str]:
    """The series' tags on the server once they are `expected` (the card shows a toggle before the server has stored it), or as they are at the deadline."""
    deadline = time.monotonic() + timeout
    with vireo.client() as client:
        while True:
            tags = client.get(f"/api/series/{uid}").json()["tags"]
            if tags == expected or time.monotonic() > deadline:
                return tags  # type: ignore[no-any-return]
            time.sleep(0.05)


def test_keyboard_tagging_toggles_tags(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    page = browser_page
    log_in(page, vireo)
    cards(page).nth(3).wait_for()
    tag_input = page.get_by_label("Add a tag")
    for number, tag in enumerate(("reviewed", "artefact"), start=1):
        tag_input.fill(tag)
        tag_input.press("Enter")
        page.locator("[data-testid=tag-row] [data-active]").filter(has_text=tag).wait_for()  # the chip (its key number shown with it)
    # typing digits in a field must not toggle tags
    search = page.get_by_label("Search (Lucene syntax)")
    search.fill("1")
    assert page.locator("[data-active=true]").count() == 1  # "artefact", activated when added
    search.fill("")
    page.locator("h1, .text-2xl").first.click()  # leave the field

    page.keyboard.press("2")  # artefact off
    page.wait_for_function("document.querySelectorAll('[data-active=true]').length === 0")
    page.keyboard.press("1")  # reviewed on
    page.locator("[data-active=true]").filter(has_text="reviewed").wait_for()

    first = cards(page).nth(0)
    uid = first.get_attribute("data-uid")
    first.click()
    first.locator("[data-testid=card-tag]").filter(has_text="reviewed").wait_for()  # shown at once, before the server answers
    assert stored_tags(vireo, uid, ["reviewed"]) == ["reviewed"]
    page.get_by_test_id("chart-tags").wait_for()  # the dashboard shows the new tag at once
    shot(page, "tagging")

    first.click()  # has it: removed
    page.wait_for_function(f"document.querySelector('[data-uid=\"{uid}\"]').querySelectorAll('[data-testid=card-tag]').length === 0")
    assert stored_tags(vireo, uid, []) == []

    page.keyboard.press("1")  # off again: clicks select instead of tagging
    page.wait_for_function("document.querySelectorAll('[data-active=true]').length === 0")
    first.click()
    assert first.get_attribute("data-selected") == "true"
    assert first.locator("[data-testid=card-tag]").count() == 0


def test_shift_click_multiselect_and_create_dataset(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    page = browser_page
    log_in(page, vireo)
    cards(page).nth(3).wait_for()
    assert "all 4 matching" in page.get_by_test_id("selection-count").inner_text()
    cards(page).nth(0).click()
    cards(page).nth(2).click(modifiers=["Shift"])
    page.get_by_test_id("selection-count").filter(has_text="3 selected").wait_for()
    chosen = [cards(page).nth(i).get_attribute("data-uid") for i in range(3)]
    # the dashboard follows the selection
    page.wait_for_function("document.querySelector('[data-testid=count-series]').innerText === '3'")
    assert page.get_by_test_id("dashboard-scope").inner_text() == "of the selected series"
    assert [cards(page).nth(i).get_attribute("data-selected") for i in range(4)] == ["true", "true", "true", "false"]
    cards(page).nth(1).click(modifiers=["Control"])  # ctrl-click takes one out again
    page.get_by_test_id("selection-count").filter(has_text="2 selected").wait_for()
    cards(page).nth(1).click(modifiers=["Control"])
    page.get_by_test_id("selection-count").filter(has_text="3 selected").wait_for()

    page.get_by_test_id("action-create-dataset").click()
    page.get_by_test_id("dialog-count").filter(has_text="3 series").wait_for()
    page.get_by_label("Name").fill("picked-three")
    page.get_by_test_id("confirm-create-dataset").click()
    page.get_by_text("Dataset picked-three created with 3 series").wait_for()
    with vireo.client() as client:
        members = {i["SeriesInstanceUID"] for i in client.get("/api/series", params={"dataset": "picked-three"}).json()["items"]}
    assert members == set(chosen)

    page.get_by_test_id("select-all").click()
    page.get_by_test_id("selection-count").filter(has_text="All 4 matching").wait_for()
    shot(page, "multiselect")

    # choosing the dataset shows its series; the URL remembers it
    page.goto(f"{vireo.url}/?dataset=picked-three")
    wait_until_live(page)
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 3")


def test_detail_view_scrolls_slices_and_shows_seg_overlay(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    page = browser_page
    ct_uid = corpus["ct"].series_uid
    log_in(page, vireo)
    card = page.locator(f"[data-uid='{ct_uid}']")
    card.wait_for()
    card.dblclick()
    viewer_image = page.get_by_test_id("viewer-image")
    viewer_image.wait_for()
    page.wait_for_function("document.querySelector('[data-testid=viewer-image]').complete && document.querySelector('[data-testid=viewer-image]').naturalWidth === 96")
    start = int(viewer_image.get_attribute("data-index"))
    assert page.get_by_test_id("viewer-status").inner_text().startswith(f"{start + 1} / 20")
    ohif = page.get_by_test_id("open-ohif")
    ohif.wait_for()
    assert ohif.get_attribute("href") == f"https://ohif.example/viewer?StudyInstanceUIDs={corpus['ct'].study_uid}"

    # wheel, then arrow keys, each showing the next slice within 150 ms of asking for it
    box = page.get_by_test_id("viewer-image").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    timings = []
    for step in range(3):
        began = time.perf_counter()
        page.mouse.wheel(0, 120)
        page.wait_for_function(f"(() => {{ const i = document.querySelector('[data-testid=viewer-image]'); return i.dataset.index === '{start + step + 1}' && i.complete && i.naturalWidth > 0; }})()", polling="raf")
        timings.append(time.perf_counter() - began)
    assert min(timings) < 0.15, timings
    page.get_by_test_id("viewer").focus()
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"document.querySelector('[data-testid=viewer-image]').dataset.index === '{start + 2}'")

    # the SEG lies over the middle five slices: go to the middle, where both segments are drawn
    page.get_by_test_id("viewer-slider").fill("10")
    overlay = page.get_by_test_id("viewer-overlay")
    overlay.wait_for()
    page.get_by_text("liver").wait_for()
    page.get_by_text("spleen").wait_for()
    src = overlay.get_attribute("src")
    assert "segments=1,2" in src
    with vireo.client() as client:
        png = client.get(src)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    colours = _opaque_colours(png.content)
    assert len(colours) >= 2, colours  # two segments, two colours
    page.get_by_test_id("segment-2").uncheck()
    page.wait_for_function("document.querySelector('[data-testid=viewer-overlay]').src.endsWith('segments=1')")
    with vireo.client() as client:
        assert len(_opaque_colours(client.get(page.get_by_test_id("viewer-overlay").get_attribute("src")).content)) == 1

    # window presets re-render the slice with another window
    before = viewer_image.get_attribute("src")
    page.get_by_test_id("preset-CT lung").click()
    assert viewer_image.get_attribute("src") != before and "center=-600.0" in viewer_image.get_attribute("src")

    # dragging changes the window (wider to the right); ctrl+wheel zooms
    lung = viewer_image.get_attribute("src")
    box = page.get_by_test_id("viewer-image").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 100, steps=5)
    page.mouse.up()
    assert viewer_image.get_attribute("src") != lung and "width=1500.0" not in viewer_image.get_attribute("src")
    page.keyboard.down("Control")
    page.mouse.wheel(0, -120)
    page.keyboard.up("Control")
    page.get_by_test_id("viewer-status").filter(has_text="110%").wait_for()

    # the searchable table of every attribute, sequences flattened
    page.get_by_label("Search attributes").fill("ImageOrientation")
    page.get_by_test_id("attribute-table").get_by_text("ImageOrientationPatient").first.wait_for()
    shot(page, "detail-view")

    # opening the SEG itself shows its reference image with the SEG over it
    page.get_by_test_id("close-detail").click()
    page.locator(f"[data-uid='{corpus['seg']}'] [data-testid=open-detail]").click()
    page.wait_for_function(f"document.querySelector('[data-testid=viewer-image]').src.includes('{ct_uid}')")


def _opaque_colours(png: bytes) -> set[tuple[int, int, int]]:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    opaque = pixels[pixels[..., 3] > 0][:, :3]
    return {tuple(int(v) for v in colour) for colour in np.unique(opaque, axis=0)}


def test_settings_follow_the_user_and_not_another(vireo: VireoProcess, corpus: dict[str, Any], chromium_browser: Any, playwright_sync: None) -> None:
    with vireo.client() as client:
        client.post("/api/users", json={"username": "bob", "password": "bob-password-1"})
    first = chromium_browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = first.new_page()
        log_in(page, vireo)
        page.get_by_role("button", name="admin").click()
        page.get_by_test_id("menu-settings").click()  # the Datasets page's Settings dialog
        page.get_by_test_id("setting-view").get_by_text("Structured gallery").click()
        page.get_by_test_id("setting-PatientID-patient_view").click()
        page.get_by_test_id("save-gallery-settings").click()
        page.get_by_text("Datasets settings saved").wait_for()
    finally:
        first.close()

    second = chromium_browser.new_context(viewport={"width": 1400, "height": 900})  # another browser: no shared storage
    try:
        page = second.new_page()
        log_in(page, vireo)
        page.get_by_test_id("patient-card").nth(1).wait_for()
        assert page.get_by_test_id("patient-card").count() == 2
        assert page.get_by_test_id("study-card").count() == 2
        assert "PAT1" in page.get_by_test_id("patient-card").nth(0).inner_text() or "PAT1" in page.get_by_test_id("patient-card").nth(1).inner_text()
        shot(page, "structured")
    finally:
        second.close()

    other = chromium_browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = other.new_page()
        log_in(page, vireo, "bob", "bob-password-1")
        cards(page).nth(3).wait_for()
        assert page.get_by_test_id("patient-card").count() == 0  # bob still has the default gallery
        page.get_by_role("button", name="bob").click()
        page.get_by_test_id("menu-settings").click()
        assert page.get_by_test_id("setting-view").get_by_role("button", name="Gallery", exact=True).get_attribute("aria-pressed") == "true"
    finally:
        other.close()
    with vireo.client() as client:
        assert client.get("/api/settings/datasets").json()["view"] == "structured"
        assert client.delete("/api/settings/datasets").json()["view"] == "gallery"


def test_live_arrival_is_announced(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    log_in(page, vireo)
    cards(page).nth(3).wait_for()
    total = vireo.series()["total"]
    write_series(tmp_path / "new", modality="CT", slices=3, patient_id="LIVE", seed=7)
    dcmsend(vireo, tmp_path / "new", "demo")
    banner = page.get_by_test_id("live-banner")
    banner.filter(has_text="1 new series").wait_for(timeout=15000)
    shot(page, "live")
    banner.click()
    page.wait_for_function(f"document.querySelectorAll('[data-testid=series-card]').length === {total + 1}")
    assert not banner.is_visible()


def test_untrusted_metadata_shows_as_text(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    with vireo.client() as client:  # the tag row and dashboard show tags: make one an attack too
        client.post("/api/tags", json={"series": [corpus["mr"].series_uid], "add": ["<b onmouseover=alert(2)>x</b>"]})
    log_in(page, vireo)
    page.get_by_text(XSS_NAME).first.wait_for()
    page.get_by_test_id("chart-tags").wait_for()
    page.locator(f"[data-uid='{corpus['mr'].series_uid}'] [data-testid=open-detail]").click()
    page.get_by_test_id("attribute-table").get_by_text(XSS_NAME).first.wait_for()
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("b[onmouseover]").count() == 0
    page.get_by_text("<b onmouseover=alert(2)>x</b>").first.hover()
    page.wait_for_timeout(300)
    assert dialogs == []
    shot(page, "untrusted")


def test_viewer_api_slices_overlays_attributes_and_download(vireo: VireoProcess, corpus: dict[str, Any]) -> None:
    import io
    import zipfile

    ct, seg = corpus["ct"], corpus["seg"]
    with vireo.client() as client:
        plan = client.get(f"/api/series/{ct.series_uid}/viewer").json()
        assert plan["slices"] == 20 and plan["image_series_uid"] == ct.series_uid
        assert {"CT lung", "CT bone", "CT soft tissue", "CT brain", "Auto"} <= set(plan["presets"])
        (layer,) = plan["overlays"]
        assert layer["series_uid"] == seg and [s["label"] for s in layer["segments"]] == ["liver", "spleen"]
        assert len(layer["slices"]) == 5  # the SEG covers the five middle slices
        assert client.get(f"/api/series/{seg}/viewer").json()["image_series_uid"] == ct.series_uid

        timings = []
        for index in range(20):  # every slice answers well within 150 ms
            began = time.perf_counter()
            response = client.get(f"/api/series/{ct.series_uid}/slices/{index}", params={"center": 40, "width": 400})
            timings.append(time.perf_counter() - began)
            assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
        assert sorted(timings)[len(timings) // 2] < 0.15, timings
        assert client.get(f"/api/series/{ct.series_uid}/slices/20").status_code == 404
        assert client.get(f"/api/series/{ct.series_uid}/slices/0", params={"width": -1}).status_code == 422
        assert client.get(f"/api/series/{ct.series_uid}/overlay/{seg}/{layer['slices'][2]}", params={"segments": "x"}).status_code == 400
        assert client.get("/api/series/1.2.3.4/viewer").status_code == 404

        rows = client.get(f"/api/series/{ct.series_uid}/attributes").json()
        names = {r["name"] for r in rows}
        assert {"PatientName", "SOPInstanceUID", "ImageOrientationPatient"} <= names
        assert any(re.match(r"\w+\[1\]\.\w+", n) for n in names)  # sequence items flattened
        assert "PixelData" not in names

        archive = client.get("/api/download", params={"series": [corpus["lung"].series_uid, corpus["mr"].series_uid]})
        assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
            assert len(zipped.namelist()) == 12 and zipped.testzip() is None
        by_query = client.get("/api/download", params={"q": "Modality:MR"})
        with zipfile.ZipFile(io.BytesIO(by_query.content)) as zipped:
            assert len(zipped.namelist()) == 6
        assert client.get("/api/download", params={"q": "Modality:(MR"}).status_code == 400

        assert client.put("/api/settings/datasets", json={"view": "sideways"}).status_code == 400
        assert client.put("/api/settings/datasets", json={"items_per_row": 99}).status_code == 400


def test_manage_datasets_rename_and_delete_keep_series(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    with vireo.client() as client:
        client.post("/api/datasets", json={"name": "to-rename", "series": [corpus["mr"].series_uid]})
    page = browser_page
    log_in(page, vireo, target="/?dataset=to-rename")
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 1")
    page.get_by_test_id("manage-datasets").click()
    table = page.get_by_test_id("dataset-table")
    row = table.locator("tr", has_text="to-rename")
    row.locator("button").first.click()
    page.get_by_test_id("rename-input").fill("renamed")
    page.get_by_test_id("confirm-rename").click()
    table.locator("tr", has_text="renamed").wait_for()
    assert "dataset=renamed" in page.evaluate("location.href")
    table.locator("tr", has_text="renamed").locator("button").nth(1).click()
    page.get_by_text("stay in the PACS").last.wait_for()
    page.get_by_test_id("confirm-delete-dataset").click()
    table.locator("tr", has_text="renamed").wait_for(state="detached")
    with vireo.client() as client:
        assert "renamed" not in {d["name"] for d in client.get("/api/datasets").json()}
        assert client.get(f"/api/series/{corpus['mr'].series_uid}").status_code == 200


def test_gallery_scrolls_through_every_result(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any, tmp_path: Path) -> None:
    """More series than one page: scrolling loads the rest (runs last: it adds 60 series)."""
    for number in range(60):
        write_series(tmp_path / "many", modality="MR" if number % 2 else "CT", slices=1, rows=16, columns=16, patient_id=f"MANY{number:02d}", seed=100 + number)
    dcmsend(vireo, tmp_path / "many", "many")
    vireo.wait_for_instances(60, dataset="many")
    page = browser_page
    log_in(page, vireo, target="/?dataset=many")
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 50")
    page.mouse.wheel(0, 20000)
    page.wait_for_function("document.querySelectorAll('[data-testid=series-card]').length === 60")
    page.get_by_test_id("select-all").click()
    page.get_by_test_id("selection-count").filter(has_text="All 60 matching").wait_for()
    with page.expect_download() as download:
        page.get_by_test_id("action-download").click()
    assert download.value.suggested_filename == "many.zip"
    page.get_by_test_id("action-workflow").click()
    page.wait_for_url("**/workflows/execute?dataset=many")


def test_page_loads_do_not_grow_the_shared_head(vireo: VireoProcess, corpus: dict[str, Any]) -> None:
    """Each page load used to append the gallery's CSS to NiceGUI's process-wide head: pages and memory grew with every load."""
    with vireo.client() as client:
        pages = [client.get("/", headers={"accept": "text/html"}).text for _ in range(3)]
    for html in pages:
        assert html.count("vireo-css:gallery") == 1 and html.count("vireo-css:slice-viewer") == 1
    assert abs(len(pages[2]) - len(pages[0])) < 500  # the same page, give or take its client id
