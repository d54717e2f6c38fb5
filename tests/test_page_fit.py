"""Every page fits the screen: no sideways scrolling, of the page or of any table, at 1280×800 and 1920×1080.

One Vireo with a few series and finished/failed workflows (so the tables have rows, and the
Workflow List a long name and an expanded workflow), one Chromium context that is resized
between the sizes. Each page at each size also leaves a viewport screenshot in
docs/screenshots/<page>-<w>x<h>.png, kept in the repository for reviewers. Every page is
visited and photographed before the test fails, so one misfit page does not hide another's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
import pytest
from playwright.sync_api import Error as PlaywrightError

from core.timeutil import exact_utc, parse_time, readable_time
from tests.factories import write_series
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess
from tests.support.workflows import create, dags_folder, wait_job
from tests.test_datasets_page import dcmsend, wait_until_live

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
SIZES = [(1280, 800), (1920, 1080)]
LONG_NAME = "a workflow with a rather long name, as people give them, about the follow-up of cohort B"

# What overflows sideways: the page itself, and every table (a q-table scrolls in its __middle part).
OVERFLOW_JS = """() => {
  const bad = [];
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth) bad.push(`page ${root.scrollWidth} > ${root.clientWidth}`);
  for (const el of document.querySelectorAll('table, .q-table, .q-table__middle, .q-table__container')) {
    if (!el.offsetParent) continue;  // hidden
    if (el.scrollWidth > el.clientWidth + 1) {
      const name = el.closest('[data-testid], .nicegui-table, .q-table__container')?.getAttribute('data-testid') || el.className.split(' ')[0] || el.tagName;
      bad.push(`${el.tagName.toLowerCase()}.${name} ${el.scrollWidth} > ${el.clientWidth}`);
    }
  }
  return bad;
}"""


@pytest.fixture(scope="module")
def fit_vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    root = tmp_path_factory.mktemp("page-fit")
    process = VireoProcess(root / "data", VIREO_DAGS_DIR=str(dags_folder(root / "dags")), VIREO_WORKERS="2").start()
    try:
        out = root / "series"
        for n, modality in enumerate(["CT", "CT", "MR", "OT"]):
            written = write_series(out / "cohort", modality="MR" if modality == "OT" else modality, slices=1, rows=16, columns=16,
                                   patient_id=f"FIT{n}", seed=500 + n,
                                   series_description=f"{modality} series {n} with a long description that has to wrap somewhere")
            for path in written.paths if modality == "OT" else []:  # a secondary capture, as the demo's single OT series
                ds = pydicom.dcmread(path)
                ds.Modality = "OT"
                ds.save_as(path)
        dcmsend(process, out / "cohort", "cohort")
        process.wait_for_instances(4)
        with process.client() as api:
            finished = create(api, name=LONG_NAME, dag_id="test-sleep", conf={"seconds": 0.1, "steps": 2})
            failed = create(api, name="", dag_id="test-fail")
            wait_job(api, finished["jobs"][0]["id"], {"finished"}, timeout=60)
            wait_job(api, failed["jobs"][0]["id"], {"failed"}, timeout=60)
        process.expanded_workflow = finished["id"]  # type: ignore[attr-defined]
        yield process
    finally:
        process.stop()


def test_every_page_fits_at_both_sizes(fit_vireo: VireoProcess, chromium_browser: Any, playwright_sync: None) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": SIZES[0][0], "height": SIZES[0][1]}, timezone_id="Europe/Berlin")
    context.set_default_timeout(30_000)
    page = context.new_page()
    misfits: list[str] = []
    url = fit_vireo.url

    def check(name: str) -> None:
        width, height = page.viewport_size["width"], page.viewport_size["height"]
        page.wait_for_timeout(150)  # let layout settle after the last element arrived (plotly, tooltips)
        misfits.extend(f"{name} at {width}×{height}: {problem}" for problem in page.evaluate(OVERFLOW_JS))
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}x{height}.png"))

    def goto(path: str) -> None:
        """Open `path`; a navigation the previous page still had under way (NiceGUI's URL updates) may abort the first try."""
        try:
            page.goto(url + path)
        except PlaywrightError as exc:
            if "ERR_ABORTED" not in str(exc):
                raise
            page.goto(url + path)

    def visit(name: str, path: str, ready: Callable[[], None]) -> None:
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            goto(path)
            ready()
            check(name)

    try:
        visit("login", "/login", lambda: page.get_by_role("button", name="Log in").wait_for())
        # the check sees what it is meant to: a table wider than its box, and a page wider than the window
        page.evaluate("""() => { const box = document.createElement('div'); box.className = 'q-table__middle'; box.style.overflow = 'auto';
                                 box.style.width = '100px'; box.innerHTML = '<table><tr><td style="min-width: 3000px">wide</td></tr></table>';
                                 document.body.appendChild(box); }""")
        assert "div.q-table__middle 3000 > 100" in page.evaluate(OVERFLOW_JS)
        page.evaluate("() => { document.body.style.minWidth = '4000px'; }")
        assert any(p.startswith("page ") for p in page.evaluate(OVERFLOW_JS))
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(url + "/")

        def datasets_ready() -> None:
            wait_until_live(page)
            page.locator("[data-testid=series-card]").nth(3).wait_for()
            page.locator("[data-testid^=chart-]").first.wait_for()

        visit("datasets", "/", datasets_ready)
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            goto("/")
            datasets_ready()
            card = page.locator("[data-testid=series-card]").first
            card.hover()
            card.get_by_test_id("open-detail").click()
            page.get_by_test_id("detail-panel").wait_for()
            check("datasets-detail")

        # a dashboard of a single OT series draws its one bar (it once drew an empty chart), with its count
        goto("/?q=Modality:OT")
        wait_until_live(page)
        chart = page.get_by_test_id("chart-Modality")
        chart.locator(".bars path").first.wait_for()
        assert chart.locator(".bars path").first.bounding_box()["width"] > 20
        assert chart.locator(".bars text, .textpoint text").first.text_content() == "1"

        # a search that matches nothing leaves nothing to act on: the action row's buttons are disabled
        goto("/?q=PatientID:NOBODY")
        page.get_by_test_id("selection-count").filter(has_text="all 0 matching").wait_for()
        for action in ("action-create-dataset", "action-add", "action-remove", "action-workflow", "action-download"):
            assert page.get_by_test_id(action).is_disabled(), action

        expanded = fit_vireo.expanded_workflow  # type: ignore[attr-defined]

        with fit_vireo.client() as api:
            created = parse_time(api.get(f"/api/workflows/{expanded}").json()["created"])
        assert created is not None
        local_created = readable_time(created, ZoneInfo("Europe/Berlin"))  # the browser's zone, not the server's UTC

        def workflows_ready() -> None:  # every workflow listed, the long-named one opened to its jobs
            page.locator("tr[data-workflow]").nth(1).wait_for()
            created_cell = page.locator(f"tr[data-workflow='{expanded}'] td[title$=' UTC']").first
            created_cell.filter(has_text=local_created).wait_for()
            assert created_cell.get_attribute("title") == exact_utc(created)
            page.locator(f"tr[data-workflow='{expanded}'] .expand-workflow").click()
            page.locator(f"tr[data-workflow='{expanded}'] + tr .jobs-of-workflow").wait_for()
            # nothing left to abort in a finished workflow: its Abort is disabled (not "abort done")
            assert page.locator(f"tr[data-workflow='{expanded}'] .workflow-abort").is_disabled()
            assert page.locator(f"tr[data-workflow='{expanded}'] .workflow-restart").is_enabled()

        visit("workflows", "/workflows", workflows_ready)
        # the footer counts what the server counted: a stale pagination echoed by the browser (Quasar
        # sends one when the table mounts) once put "1-0 of 0" under the rows (components/workflow_table.py)
        shown = page.locator("tr[data-workflow]").count()  # two of ours and the incoming series' service workflow
        footer = page.locator(".q-table__bottom .q-table__bottom-item").filter(has_text=" of ")
        footer.filter(has_text=f"1-{shown} of {shown}").wait_for()
        page.evaluate("""() => { const table = document.querySelector('tr[data-workflow]').closest('.q-table__container');
                                 getElement(table.id.slice(1)).$refs.qRef.$emit('update:pagination', {page: 1, rowsPerPage: 20, rowsNumber: 0}); }""")
        page.locator(f"tr[data-workflow='{expanded}'] .expand-workflow").click()  # a round trip after the echo
        page.locator(f"tr[data-workflow='{expanded}'] + tr .jobs-of-workflow").wait_for(state="detached")
        assert footer.inner_text().strip() == f"1-{shown} of {shown}"
        visit("workflow-execution", "/workflows/execute?dag=collect-metadata&dataset=cohort",
              lambda: page.get_by_test_id("input-count").filter(has_text="4 series").wait_for())
        visit("upload", "/upload", lambda: page.locator("#vireo-uploader").wait_for())
        visit("instances", "/instances", lambda: page.get_by_text("Instance Overview").first.wait_for())
        visit("settings", "/settings", lambda: page.get_by_text("Account and tokens").first.wait_for())
    finally:
        context.close()
    assert not misfits, "pages that do not fit:\n" + "\n".join(misfits)
