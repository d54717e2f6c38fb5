#!/usr/bin/env python3
"""Detail-view benchmark in headless Chromium: how soon the next slice shows (issue 5: within 150 ms).

A 512×512 CT series (int16, as scanners send them) goes to a fresh Vireo with `dcmsend`; the
Datasets page opens its detail view, and the mouse wheel steps through the slices, one step
at a time: the time from the wheel event to the next slice's image decoded in the page
(`data-index` moved on, `complete`, `naturalWidth > 0`). Baseline in the same run: the same
slice PNG fetched straight from the API by the benchmark (what the viewer cannot beat).

    .venv/bin/python bench/viewer.py [--slices 60] [--steps 40]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.factories import write_series  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_executable  # noqa: E402
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess  # noqa: E402

TARGET_MS = 150.0
LIVE_JS = "(document.querySelector('[data-testid=count-series]') || {}).innerText?.match(/^[0-9]/)"
STEP_JS = """async (target) => {
  const start = performance.now();
  const image = document.querySelector('[data-testid=viewer-image]');
  const box = image.getBoundingClientRect();
  image.dispatchEvent(new WheelEvent('wheel', {deltaY: 120, clientX: box.x + box.width / 2, clientY: box.y + box.height / 2, bubbles: true, cancelable: true}));
  return await new Promise((resolve, reject) => {
    const check = () => {
      const i = document.querySelector('[data-testid=viewer-image]');
      if (i.dataset.index === String(target) && i.complete && i.naturalWidth > 0) resolve(performance.now() - start);
      else if (performance.now() - start > 5000) reject(new Error('slice ' + target + ' not shown'));
      else requestAnimationFrame(check);
    };
    check();
  });
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="vireo-viewer-bench-"))
    series = write_series(work / "ct", modality="CT", slices=args.slices, rows=512, columns=512, seed=5)
    vireo = VireoProcess(work / "data").start()
    try:
        subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--call", "VIREO", "--scan-directories", "--recurse", str(work / "ct")],
                       check=True, capture_output=True)
        with vireo.client() as api:
            deadline = time.monotonic() + 60
            while api.get(f"/api/series/{series.series_uid}").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            direct = []
            for index in range(min(args.steps, args.slices)):
                began = time.perf_counter()
                assert api.get(f"/api/series/{series.series_uid}/slices/{index}", params={"center": 40, "width": 400}).status_code == 200
                direct.append((time.perf_counter() - began) * 1000)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(f"{vireo.url}/login")
            page.get_by_label("User name").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{vireo.url}/")
            page.wait_for_function(LIVE_JS, timeout=60_000)
            page.locator(f"[data-uid='{series.series_uid}']").dblclick()
            page.wait_for_function("(() => { const i = document.querySelector('[data-testid=viewer-image]'); return i && i.complete && i.naturalWidth > 0; })()",
                                   timeout=30_000)
            start = int(page.get_by_test_id("viewer-image").get_attribute("data-index"))
            steps = min(args.steps, args.slices - 1 - start)
            shown = [page.evaluate(STEP_JS, start + step + 1) for step in range(steps)]
            browser.close()
    finally:
        vireo.stop()
    print(f"\nDetail view, {args.slices}-slice 512×512 CT, {len(shown)} wheel steps")
    print(f"next slice shown: median {statistics.median(shown):.0f} ms, max {max(shown):.0f} ms "
          f"(target {TARGET_MS:.0f} ms: median {statistics.median(shown) / TARGET_MS:.2f}× of it) {'PASS' if max(shown) <= TARGET_MS else 'FAIL'}")
    print(f"baseline, the slice PNG fetched straight from the API: median {statistics.median(direct):.0f} ms "
          f"(viewer/baseline {statistics.median(shown) / statistics.median(direct):.2f})")


if __name__ == "__main__":
    main()
