"""Every page at window sizes the suite does not use, with long data: does anything scroll sideways?

    .venv/bin/python bench/page_fit_sizes.py            # prints each misfit, exits 1 if there is one
    .venv/bin/python bench/page_fit_sizes.py --shots DIR # also a screenshot per page and size

tests/test_page_fit.py guards 1280×800 and 1920×1080 (and 1366×768) on every run; a reviewer may
pick any other size, so this check walks 1024×768 … 2560×1440, with the detail panel open and
dragged wide, over data chosen to break layouts: a 64-character SeriesDescription without a space,
a long dataset name, 20 tags on one series and a workflow with a 200-character name. It takes a
minute or two, too long for the suite, hence a script. The overflow test is the suite's own
(OVERFLOW_JS), so both agree on what "does not fit" means.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright

from tests.factories import write_series
from tests.support.browser import CHROMIUM_ARGS, chromium_executable
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess
from tests.support.workflows import create, dags_folder, wait_job
from tests.test_datasets_page import dcmsend
from tests.test_page_fit import OVERFLOW_JS

SIZES = [(1024, 768), (1366, 768), (1440, 900), (1600, 1000), (2560, 1440)]
LONG_DESCRIPTION = "T1_MPRAGE_SAG_ISO_1MM_POSTCONTRAST_FATSAT_MOCO_NORM_DIS3D_ND_RP2"  # 64 characters, no space
LONG_DATASET = "follow-up-cohort-B-with-a-very-long-dataset-name-nobody-shortened"
LONG_WORKFLOW = ("workflow-" + "abcdefghij" * 20)[:200]
TAGS = [f"tag-number-{n:02d}" for n in range(20)]
# What a hidden action looks like: a button of the action row or of a workflow row outside the window.
HIDDEN_ACTIONS_JS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('[data-testid^=action-], .workflow-abort, .workflow-restart, .workflow-delete, [data-testid=close-detail]')) {
    if (!el.offsetParent) continue;
    const r = el.getBoundingClientRect();
    if (r.right > window.innerWidth + 1 || r.left < -1) out.push(`${el.getAttribute('data-testid') || el.className.split(' ')[0]} at x=${Math.round(r.left)}..${Math.round(r.right)}`);
  }
  return out;
}"""


def seed(process: VireoProcess, work: Path) -> str:
    """Series with long texts and many tags, a long-named dataset, a long-named finished workflow; returns its id."""
    for n in range(3):
        write_series(work / "series", modality="MR", slices=1, rows=16, columns=16, patient_id=f"LONG{n}", seed=700 + n,
                     series_description=LONG_DESCRIPTION if n == 0 else f"series {n}")
    dcmsend(process, work / "series", "longdata")
    listing = process.wait_for_instances(3)
    uids = [s["SeriesInstanceUID"] for s in listing["items"]]
    with process.client() as api:
        api.post("/api/tags", json={"series": uids[:1], "add": TAGS}).raise_for_status()
        api.post("/api/datasets", json={"name": LONG_DATASET, "series": uids}).raise_for_status()
        workflow = create(api, name=LONG_WORKFLOW, dag_id="test-sleep", conf={"seconds": 0.1, "steps": 2})
        wait_job(api, workflow["jobs"][0]["id"], {"finished"}, timeout=60)
    return str(workflow["id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=Path, help="write a screenshot per page and size into this folder")
    args = parser.parse_args()
    misfits: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        process = VireoProcess(work / "data", VIREO_DAGS_DIR=str(dags_folder(work / "dags")), VIREO_WORKERS="2").start()
        pw = sync_playwright().start()
        try:
            workflow_id = seed(process, work)
            browser = pw.chromium.launch(executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.set_default_timeout(30_000)
            page.goto(process.url + "/login")
            page.get_by_label("User name").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(process.url + "/")

            def check(name: str) -> None:
                size = page.viewport_size
                page.wait_for_timeout(200)
                where = f"{name} at {size['width']}×{size['height']}"
                misfits.extend(f"{where}: {p}" for p in page.evaluate(OVERFLOW_JS))
                misfits.extend(f"{where}: hidden {p}" for p in page.evaluate(HIDDEN_ACTIONS_JS))
                if args.shots:
                    args.shots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.shots / f"{name}-{size['width']}x{size['height']}.png"))

            def datasets(path: str = "/") -> None:
                page.goto(process.url + path)
                page.wait_for_function("(document.querySelector('[data-testid=count-series]') || {}).innerText?.match(/^[0-9]/)")
                page.locator("[data-testid=series-card]").nth(2).wait_for()

            for width, height in SIZES:
                page.set_viewport_size({"width": width, "height": height})
                datasets(f"/?dataset={LONG_DATASET}")
                check("datasets")
                card = page.locator("[data-testid=series-card]").filter(has_text=LONG_DESCRIPTION[:20]).first
                card.hover()
                card.get_by_test_id("open-detail").click()
                page.get_by_test_id("detail-panel").wait_for()
                check("datasets-detail")
                handle = page.get_by_test_id("panel-handle")
                if handle.count():
                    box = handle.bounding_box()
                    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 180)
                    page.mouse.down()
                    page.mouse.move(width * 0.25, box["y"] + 180, steps=8)
                    page.mouse.up()
                    check("datasets-detail-wide")
                    page.mouse.move(width * 0.25 + 2, box["y"] + 180)  # back to a usual width for the next size
                    page.mouse.down()
                    page.mouse.move(width - 560, box["y"] + 180, steps=8)
                    page.mouse.up()
                page.goto(process.url + f"/workflows?workflow={workflow_id}")  # opened to its jobs by the URL
                page.locator(f"tr[data-workflow='{workflow_id}']").wait_for()
                page.locator(f"tr[data-workflow='{workflow_id}'] + tr .jobs-of-workflow").wait_for()
                check("workflows")
                page.goto(process.url + f"/workflows/execute?dag=collect-metadata&dataset={LONG_DATASET}")
                page.get_by_test_id("input-count").filter(has_text="3 series").wait_for()
                check("workflow-execution")
                for name, path, text in (("upload", "/upload", None), ("instances", "/instances", "Instance Overview"),
                                         ("settings", "/settings", "Account and tokens")):
                    page.goto(process.url + path)
                    if text:
                        page.get_by_text(text).first.wait_for()
                    else:
                        page.locator("#vireo-uploader").wait_for()
                    check(name)
                datasets()
                page.get_by_role("button", name="admin").click()
                page.get_by_test_id("menu-settings").click()
                page.get_by_test_id("settings-dialog").wait_for()
                check("settings-dialog")
            browser.close()
        finally:
            pw.stop()
            process.stop()
    for line in misfits:
        print(line)
    print(f"{len(misfits)} misfit(s) over {len(SIZES)} sizes")
    return 1 if misfits else 0


if __name__ == "__main__":
    sys.exit(main())
