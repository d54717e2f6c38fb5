"""The Datasets page's detail panel (a resizable split beside the gallery), its Settings dialog and keys, in real Chromium.

One Vireo for the module with a CT, a SEG over it (highdicom: functional groups four sequences
deep, plus a long comment and a 300-character token added here) and an MR; one browser context
per test, the viewport set per check. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from pydicom import dcmread

from tests.factories import write_seg, write_series
from tests.support.browser import ARTIFACTS_DIR
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess
from tests.test_datasets_page import dcmsend

SIZES = [(1280, 800), (1920, 1080)]
LONG_COMMENT = " ".join(["segmentation produced by a synthetic threshold for testing the folding of long values"] * 6)
LONG_TOKEN = "X" * 300


@pytest.fixture(scope="module")
def vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    # OHIF left out (an empty VIREO_OHIF_DIR): its tab then says how to install it; tests/test_ohif_viewer.py draws the real one
    process = VireoProcess(tmp_path_factory.mktemp("vireo") / "data", VIREO_OHIF_DIR=str(tmp_path_factory.mktemp("no-ohif"))).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def corpus(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("detail-panel")
    ct = write_series(out / "ct", modality="CT", slices=12, rows=64, columns=64, patient_id="PAT1", seed=1, series_number=1, series_description="Abdomen")
    seg_path = write_seg(out / "ct", ct, labels={1: "liver", 2: "spleen"}, frames=5)
    seg = dcmread(seg_path)
    seg.ImageComments = LONG_COMMENT  # LT: long words-and-spaces text
    seg.SegmentSequence[0].SegmentDescription = LONG_TOKEN[:64]  # LO inside a sequence
    seg.DerivationDescription = LONG_TOKEN  # ST: one token with no space to break at
    seg.save_as(seg_path)
    mr = write_series(out / "mr", modality="MR", slices=4, rows=64, columns=64, patient_id="PAT2", seed=2, series_description="Brain")
    dcmsend(vireo, out, "panel")
    vireo.wait_for_instances(12 + 1 + 4)
    deadline = time.monotonic() + 30
    while sum(1 for item in vireo.series()["items"] if item["thumbnail_version"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    return {"ct": ct.series_uid, "seg": str(seg.SeriesInstanceUID), "mr": mr.series_uid}


def _log_in(page: Any, vireo: VireoProcess) -> None:
    page.goto(f"{vireo.url}/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{vireo.url}/")
    _wait_live(page)


def _wait_live(page: Any) -> None:
    page.wait_for_function("(document.querySelector('[data-testid=count-series]') || {}).innerText?.match(/^[0-9]/)", timeout=30000)
    page.locator("[data-testid=series-card]").nth(2).wait_for()


def _shot(page: Any, name: str) -> None:
    page.wait_for_function("!document.querySelector('[class*=q-transition--]')")  # dialogs fully faded in
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / f"{name}.png"))


def _no_sideways_scroll(page: Any) -> None:
    widths = page.evaluate("""({scroll: document.scrollingElement.scrollWidth, client: document.scrollingElement.clientWidth,
      wide: [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > document.scrollingElement.clientWidth + 1)
              .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + (e.dataset.testid || ''))})""")
    assert widths["scroll"] <= widths["client"], widths


def _open(page: Any, uid: str, modality: str) -> None:
    page.locator(f"[data-uid='{uid}'] [data-testid=open-detail]").click()
    page.get_by_test_id("detail-title").filter(has_text=modality).wait_for(timeout=30000)
    page.locator("[data-testid=attribute-table] tbody tr").first.wait_for()


OVERFLOWING_CELLS = """() => {
  const table = document.querySelector('[data-testid=attribute-table]');
  const bad = [];
  for (const cell of table.querySelectorAll('td, th')) {
    for (const box of [cell, ...cell.querySelectorAll('div, span')]) {
      if (box.scrollWidth > box.clientWidth + 1) bad.push(cell.innerText.slice(0, 60));
    }
    const right = cell.getBoundingClientRect().right, inner = [...cell.querySelectorAll('div, span')].map(e => e.getBoundingClientRect().right);
    if (inner.some(r => r > right + 1)) bad.push('sticks out: ' + cell.innerText.slice(0, 60));
  }
  const middle = table.querySelector('.q-table__middle');
  if (middle.scrollWidth > middle.clientWidth) bad.push('table scrolls sideways');
  return bad;
}"""


def _widths(page: Any) -> dict[str, float]:
    return page.evaluate("""() => {
      const w = s => document.querySelector(s).getBoundingClientRect();
      const g = w('[data-testid=gallery]'), p = w('[data-testid=detail-panel]');
      return {gallery: g.width, galleryRight: g.right, panel: p.width, panelLeft: p.left, panelRight: p.right, view: document.documentElement.clientWidth};
    }""")


@pytest.mark.slow  # two sizes, the CT and the SEG each opened: ~7 s idle, more under load
def test_panel_shares_the_screen_and_its_table_fits(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    page = browser_page
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        _log_in(page, vireo) if width == SIZES[0][0] else (page.goto(f"{vireo.url}/"), _wait_live(page))
        dashboard = page.get_by_test_id("dashboard")
        dashboard.wait_for()
        _open(page, corpus["ct"], "CT")
        page.get_by_test_id("viewer-image").wait_for()
        # beside the gallery, not over it: the gallery keeps its cards, both fit, nothing scrolls sideways
        sizes = _widths(page)
        assert sizes["galleryRight"] <= sizes["panelLeft"] and sizes["panelRight"] <= sizes["view"] + 1, sizes
        assert sizes["gallery"] >= 200, sizes
        assert page.locator("[data-testid=series-card]").first.is_visible()
        dashboard.wait_for(state="hidden")  # the panel takes the dashboard's column
        _no_sideways_scroll(page)
        # the action row stays visible and usable
        assert page.get_by_test_id("select-all").is_visible()
        # the SEG lists the series it annotates; its table: deep sequences, folded values, no cell overflowing
        _open(page, corpus["seg"], "CT")  # a SEG is shown over its CT
        page.get_by_test_id("related-series").get_by_text("Abdomen").wait_for()
        page.wait_for_function(f"(document.querySelector('[data-testid=viewer-image]') || {{}}).src?.includes('{corpus['ct']}')")
        assert page.evaluate("document.querySelector('.vireo-viewport').getBoundingClientRect().height") > 300  # not squeezed by the panel
        page.get_by_label("Search attributes").fill("FunctionalGroupsSequence")
        page.get_by_test_id("attribute-table").get_by_text("CodeMeaning").first.wait_for()
        assert page.evaluate("Math.max(...[...document.querySelectorAll('[data-testid=attribute-table] .vireo-attr-parent')].map(e => (e.innerText.match(/\\] ›/g) || []).length))") >= 3
        assert page.evaluate(OVERFLOWING_CELLS) == []
        _shot(page, f"detail-panel-seg-sequences-{width}x{height}")
        page.get_by_label("Search attributes").fill("Description")
        page.get_by_test_id("attribute-table").get_by_text("DerivationDescription").wait_for()
        assert page.evaluate(OVERFLOWING_CELLS) == []
        page.get_by_label("Search attributes").fill("ImageComments")
        page.wait_for_function("document.querySelectorAll('[data-testid=attribute-table] tbody tr').length === 1")
        folded = page.locator("[data-testid=attribute-table] tbody tr").filter(has_text="ImageComments").get_by_test_id("folded-value")
        folded.wait_for()
        short = folded.bounding_box()["height"]
        folded.click()  # unfolds
        page.wait_for_function("document.querySelector('[data-testid=attribute-table] [data-testid=folded-value]').classList.contains('vireo-open')")
        assert folded.bounding_box()["height"] > short
        assert page.evaluate(OVERFLOWING_CELLS) == []
        _no_sideways_scroll(page)
        _shot(page, f"detail-panel-{width}x{height}")
        # Esc closes the panel (focus outside a text field); the dashboard comes back
        page.get_by_test_id("detail-title").click()
        page.keyboard.press("Escape")
        page.get_by_test_id("detail-panel").wait_for(state="hidden")
        dashboard.wait_for()
        page.wait_for_function("document.scrollingElement.scrollWidth <= document.scrollingElement.clientWidth")  # charts fit again


# The handle's grab point: the centre of the part of it inside the viewport, once its box has held
# still for two polls and the element hit there is the handle itself. On CI the drag once did nothing
# at all ((560, 560)): a fixed "handle top + 180 px" point, measured while the row above was still
# settling, can land beside the handle (its box starts lower once the page settles) or under the
# sticky header when the page is scrolled; the pointerdown then never reaches the handle's listener.
GRAB_POINT = """() => {
  const handle = document.querySelector('[data-testid=panel-handle]');
  if (!handle || handle.offsetParent === null) return null;
  const box = handle.getBoundingClientRect();
  const top = Math.max(box.top, 0), bottom = Math.min(box.bottom, window.innerHeight);
  const point = {x: box.left + box.width / 2, y: (top + bottom) / 2, width: box.width};
  const seen = JSON.stringify([box.left, box.top, box.width, box.height]);
  const still = window.__vireoHandleBox === seen;
  window.__vireoHandleBox = seen;
  const hit = document.elementFromPoint(point.x, point.y);
  return still && bottom - top > 20 && hit && hit.closest('[data-testid=panel-handle]') ? point : null;
}"""


DRAGGING = "document.querySelector('[data-testid=panel-handle]').classList.contains('vireo-dragging')"
RECORD_PRESSES = """() => { if (window.__vireoPresses) return; window.__vireoPresses = [];
  document.addEventListener('pointerdown', e => window.__vireoPresses.push(
    (e.target.closest('[data-testid]') || {dataset: {testid: e.target.tagName}}).dataset.testid + ' at ' + e.clientX + ',' + e.clientY), true); }"""
# What a drag did, for the failure message of a drag that did not move the panel: each pointer event
# after the press (its target), each class change of the handle and each inline-width change of the panel.
RECORD_DRAG = """() => { window.__vireoDrag = []; const log = t => window.__vireoDrag.length < 60 && window.__vireoDrag.push(
    Math.round(performance.now()) + ' ' + t);
  if (window.__vireoDragWatched) return; window.__vireoDragWatched = true;
  for (const type of ['pointermove', 'pointerup', 'pointercancel', 'lostpointercapture'])
    document.addEventListener(type, e => window.__vireoDrag && log(type + ' on ' + ((e.target.closest && e.target.closest('[data-testid]')) ||
      {dataset: {testid: e.target.tagName || '?'}}).dataset.testid + ' x=' + e.clientX), true);
  const panel = document.querySelector('[data-testid=detail-panel]'), handle = document.querySelector('[data-testid=panel-handle]');
  new MutationObserver(() => log('panel style ' + panel.style.width)).observe(panel, {attributes: true, attributeFilter: ['style']});
  new MutationObserver(() => log('handle class ' + handle.className)).observe(handle, {attributes: true, attributeFilter: ['class']});
  new MutationObserver(() => log('handle ' + (document.contains(handle) ? 'still in the page' : 'replaced'))).observe(
    handle.parentElement, {childList: true}); }"""


def _drag_handle(page: Any, to_x: float) -> dict[str, float]:
    """Drag the split handle from its grab point to `to_x` and wait until the drag has ended; gives the grab point.

    A press the handle did not take (no `vireo-dragging` within 5 s: under load the page can still be
    wiring it up) is released and pressed again, at most three times; what each press hit is kept
    for the failure message, so a drag that never starts says where the presses landed.
    """
    page.get_by_test_id("panel-handle").wait_for()
    page.evaluate(RECORD_PRESSES)
    page.evaluate(RECORD_DRAG)
    for attempt in range(3):
        page.evaluate("window.__vireoHandleBox = null")
        point = page.wait_for_function(GRAB_POINT, polling=100, timeout=30000).json_value()
        page.mouse.move(point["x"], point["y"])
        page.mouse.down()
        try:
            page.wait_for_function(DRAGGING, timeout=5000)
            break
        except PlaywrightTimeoutError:
            page.mouse.up()
    else:
        raise AssertionError(f"the handle never took a press at {point}: presses hit {page.evaluate('window.__vireoPresses')}")
    page.mouse.move(to_x, point["y"], steps=6)
    page.mouse.up()
    page.wait_for_function(f"!({DRAGGING})", timeout=15000)
    if attempt:  # shown in pytest's warnings summary: a press that had to be repeated is worth knowing about
        warnings.warn(f"the handle took press {attempt + 1} only; the presses hit {page.evaluate('window.__vireoPresses')}", stacklevel=2)
    return point


def _stored_panel_width(vireo: VireoProcess, expected: float) -> float:
    """The width the server remembers for admin, once it is `expected` (±1 px) or 15 s have passed."""
    with vireo.client() as client:
        deadline = time.monotonic() + 15
        stored = client.get("/api/settings/datasets").json()["panel_width"]
        while abs(stored - expected) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            stored = client.get("/api/settings/datasets").json()["panel_width"]
        return stored


def _wait_wider(page: Any, than: float) -> None:
    """Wait until the panel is more than 100 px wider than `than`; if it never is, say what the drag did."""
    try:
        page.wait_for_function(f"document.querySelector('[data-testid=detail-panel]').getBoundingClientRect().width > {than} + 100", timeout=15000)
    except PlaywrightTimeoutError:
        width = page.evaluate("document.querySelector('[data-testid=detail-panel]').getBoundingClientRect().width")
        raise AssertionError(f"the panel is {width} px wide after the drag, not more than {than} + 100; "
                             f"the drag: {page.evaluate('window.__vireoDrag')}") from None


@pytest.mark.slow  # a reload and two drags: ~10 s under load
def test_dragged_width_is_remembered_for_the_user(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 800})
    _log_in(page, vireo)
    _open(page, corpus["mr"], "MR")
    before = _widths(page)["panel"]
    grab = _drag_handle(page, to_x=page.get_by_test_id("panel-handle").bounding_box()["x"] - 150)
    _wait_wider(page, before)
    dragged = _widths(page)["panel"]
    assert abs(dragged - (before + 150 + grab["width"] / 2)) < 20, (before, dragged)
    _no_sideways_scroll(page)
    assert abs(_stored_panel_width(vireo, dragged) - dragged) <= 1
    # dragged (almost) all the way: the gallery keeps a column
    _drag_handle(page, to_x=0)
    _wait_wider(page, dragged)
    assert _widths(page)["gallery"] >= 200
    _no_sideways_scroll(page)
    widest = _widths(page)["panel"]
    assert abs(_stored_panel_width(vireo, widest) - widest) <= 1
    page.reload()
    _wait_live(page)
    _open(page, corpus["mr"], "MR")
    page.wait_for_function(f"Math.abs(document.querySelector('[data-testid=detail-panel]').getBoundingClientRect().width - {widest}) <= 2", timeout=15000)
    assert abs(_widths(page)["panel"] - widest) <= 2


@pytest.mark.slow  # the dialog three times, two pages: ~11 s
def test_hotkeys_type_in_text_fields_and_settings_dialog_applies_in_place(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    page = browser_page
    with vireo.client() as client:
        assert client.put("/api/settings/datasets", json={**client.get("/api/settings/datasets").json(), "tag_bar": ["reviewed"]}).status_code == 200
    page.set_viewport_size({"width": 1280, "height": 800})
    _log_in(page, vireo)
    chip = page.get_by_test_id("tag-row").get_by_text("reviewed")
    chip.wait_for()
    active = "document.querySelector('[data-testid=tag-row] [data-active=true]') !== null"
    # "1" in the search field is text, not the first tag
    search = page.get_by_label("Search (Lucene syntax)")
    search.click()
    page.keyboard.press("1")
    assert search.input_value() == "1"
    page.wait_for_timeout(500)  # a wrongly handled key would reach the server within this
    assert page.evaluate(active) is False
    search.fill("")
    # outside a text field "1" toggles the first tag (and again off)
    page.get_by_test_id("selection-count").click()
    page.keyboard.press("1")
    page.wait_for_function(active)
    page.keyboard.press("1")
    page.wait_for_function(f"!({active})")

    # Settings (user menu) is a dialog here; Save redraws the gallery without reloading the page
    page.evaluate("window.__notReloaded = true")
    card = page.locator(f"[data-uid='{corpus['ct']}']")
    assert "Abdomen" in card.inner_text()
    page.get_by_role("button", name="admin").click()
    page.get_by_test_id("menu-settings").click()
    dialog = page.get_by_test_id("settings-dialog")
    dialog.wait_for()
    _no_sideways_scroll(page)
    _shot(page, "settings-dialog-1280x800")
    page.get_by_test_id("setting-card-text").click()  # thumbnails only
    page.get_by_test_id("setting-viewer").get_by_text("OHIF").click()
    page.get_by_test_id("save-gallery-settings").click()
    dialog.wait_for(state="hidden")
    page.wait_for_function(f"!document.querySelector(\"[data-uid='{corpus['ct']}']\").innerText.includes('Abdomen')")
    assert page.evaluate("window.__notReloaded") is True
    with vireo.client() as client:
        stored = client.get("/api/settings/datasets").json()
        assert stored["card_text"] is False and stored["tag_bar"] == ["reviewed"]
    # the viewer chosen opens first in the panel (OHIF is not installed here: the tab says how to add it)
    _open(page, corpus["mr"], "MR")
    page.get_by_test_id("ohif-missing").wait_for()
    assert page.get_by_test_id("viewer-tab-ohif").get_attribute("aria-selected") == "true"
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.get_by_role("button", name="admin").click()
    page.get_by_test_id("menu-settings").click()
    dialog.wait_for()
    _no_sideways_scroll(page)
    _shot(page, "settings-dialog-1920x1080")
    page.get_by_test_id("reset-gallery-settings").click()
    page.get_by_test_id("save-gallery-settings").click()
    dialog.wait_for(state="hidden")
    page.wait_for_function(f"document.querySelector(\"[data-uid='{corpus['ct']}']\").innerText.includes('Abdomen')")
    # from another page "Settings" goes to the Datasets page with the dialog open
    page.goto(f"{vireo.url}/settings")
    page.get_by_text("API tokens").wait_for()
    page.get_by_test_id("datasets-settings-note").wait_for()  # the gallery settings moved into the dialog
    assert page.get_by_test_id("setting-view").count() == 0
    for size in SIZES:  # the account page (password, sessions, tokens, users) fits at both sizes
        page.set_viewport_size({"width": size[0], "height": size[1]})
        page.wait_for_function("document.scrollingElement.scrollWidth <= document.scrollingElement.clientWidth")
        _shot(page, f"account-page-{size[0]}x{size[1]}")
    page.get_by_role("button", name="admin").click()
    page.get_by_test_id("menu-settings").click()
    dialog.wait_for()
    assert page.url.rstrip("/") == vireo.url.rstrip("/")


CARD_COLUMNS = """() => {
  const boxes = [...document.querySelectorAll('[data-testid=series-card]')].map(c => c.getBoundingClientRect());
  return {columns: new Set(boxes.map(b => Math.round(b.left))).size, narrowest: Math.min(...boxes.map(b => b.width))};
}"""


def test_fixed_items_per_row_drops_columns_beside_the_panel(vireo: VireoProcess, corpus: dict[str, Any], browser_page: Any) -> None:
    """"3 per row" is a most: beside a wide panel the cards keep a readable width and fewer columns show."""
    page = browser_page
    with vireo.client() as client:
        stored = client.get("/api/settings/datasets").json()
        assert client.put("/api/settings/datasets", json={**stored, "items_per_row": 3, "panel_width": 900}).status_code == 200
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        _log_in(page, vireo)
        page.wait_for_function(f"({CARD_COLUMNS})().columns === 3")  # without the panel: the three asked for
        _open(page, corpus["mr"], "MR")
        page.wait_for_function(f"({CARD_COLUMNS})().columns < 3")
        layout = page.evaluate(CARD_COLUMNS)
        assert layout["narrowest"] >= 190, layout  # the gallery.js CARD_MIN_WIDTH
        _no_sideways_scroll(page)
    finally:
        with vireo.client() as client:
            client.put("/api/settings/datasets", json=stored).raise_for_status()
