#!/usr/bin/env python3
"""OHIF in Vireo, in headless Chromium (WebGL through SwiftShader): time to first image (issue 16: ≤ 3 s).

A phantom CT (300 slices, 512×512 by default) and a SEG over it go to a fresh Vireo with
`dcmsend`. The browser logs in once, then opens Vireo's own OHIF (`/ohif/viewer?…`) on the
CT series, and on the CT with the SEG over it, five times each (a new tab each time, the
browser's cache warm as in daily use; the very first, cold opening is printed apart). Time to
first image: from navigation start until the viewport canvas holds the image (lit pixels;
for the SEG, its colours too), polled every animation frame. Then every DICOMweb request OHIF
made in the last SEG run, grouped by kind, with its latency (request start to response end).

    .venv/bin/python bench/ohif.py [--slices 300] [--size 512] [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app import viewers  # noqa: E402
from app.ohif import location  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_executable  # noqa: E402
from tests.support.ohif_data import send, write_ct_with_seg  # noqa: E402
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess  # noqa: E402

TARGET_S = 3.0
WEBGL_ARGS = [a for a in CHROMIUM_ARGS if a != "--disable-gpu"] + ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
SHOWN_JS = """(needColour) => {
  const c = document.querySelector('canvas.cornerstone-canvas');
  if (!c || !c.width) return false;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0, coloured = 0;
  for (let i = 0; i < d.length; i += 16) {
    if (d[i] + d[i + 1] + d[i + 2] > 60) lit++;
    if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) coloured++;
  }
  const n = d.length / 16;
  return lit / n > 0.05 && (!needColour || coloured / n > 0.0005);
}"""
KINDS = [
    ("QIDO studies", re.compile(r"/dicomweb/studies\?")),
    ("QIDO series", re.compile(r"/dicomweb/studies/[^/]+/series\?")),
    ("series metadata", re.compile(r"/series/[^/]+/metadata")),
    ("frames", re.compile(r"/frames/")),
    ("instance / bulk data", re.compile(r"/instances/[^/]+(/bulkdata|$|\?)|/bulkdata")),
]


def kind_of(url: str) -> str:
    for name, pattern in KINDS:
        if pattern.search(url):
            return name
    return "other"


OHIF_TIMERS = re.compile(r"^(scriptToView|studyToFirstImage|displaySetsToFirstImage): ([0-9.]+) ms")
timers: dict[str, list[float]] = defaultdict(list)  # OHIF's own console.time figures: where the time goes


def open_viewer(context: Any, url: str, seg: bool, log: list[tuple[str, float]] | None = None) -> float:
    page = context.new_page()

    def console(message: Any) -> None:
        found = OHIF_TIMERS.match(message.text)
        if found:
            timers[found[1]].append(float(found[2]) / 1000)
    page.on("console", console)
    if log is not None:
        def finished(request: Any) -> None:
            if "/dicomweb/" in request.url:
                timing = request.timing
                log.append((request.url, timing["responseEnd"] if timing["responseEnd"] > 0 else float("nan")))
        page.on("requestfinished", finished)
    started = time.monotonic()
    page.goto(url)
    page.wait_for_function(SHOWN_JS, arg=seg, polling="raf", timeout=120_000)
    elapsed = time.monotonic() - started
    page.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if location.installed() is None:
        raise SystemExit(location.INSTALL_HINT)
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="vireo-ohif-bench-"))
    print(f"writing a {args.slices}-slice {args.size}×{args.size} CT and its SEG …", flush=True)
    data = write_ct_with_seg(work / "dicom", slices=args.slices, size=args.size, key="bench")
    vireo = VireoProcess(work / "data").start(timeout=120)
    try:
        send(data.files, vireo.dicom_port)
        vireo.wait_for_instances(len(data.files), timeout=300)
        ct_url = vireo.url + viewers.own_ohif_url(data.study_uid, data.ct_uid)
        seg_url = vireo.url + viewers.own_ohif_url(data.study_uid, data.ct_uid, seg_series_uids=[data.seg_uid])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_executable(), headless=True, args=WEBGL_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(f"{vireo.url}/login?next=%2Fsettings")
            page.get_by_label("User name").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{vireo.url}/settings")
            cold = open_viewer(context, ct_url, seg=False)
            results: dict[str, list[float]] = {}
            log: list[tuple[str, float]] = []
            for name, url, seg in (("CT", ct_url, False), ("SEG over CT", seg_url, True)):
                results[name] = []
                for run in range(args.runs):
                    last = name == "SEG over CT" and run == args.runs - 1
                    results[name].append(open_viewer(context, url, seg, log if last else None))
            browser.close()
    finally:
        vireo.stop()

    print(f"\nOHIF {location.OHIF_VERSION} in Vireo — time to first image, {args.slices}-slice CT {args.size}×{args.size}, "
          f"median of {args.runs} (target ≤ {TARGET_S:.0f} s)")
    print(f"  first opening, cold browser cache: {cold:.2f} s")
    for name, times in results.items():
        median = statistics.median(times)
        verdict = "PASS" if median <= TARGET_S else "FAIL"
        print(f"  {name:<12} median {median:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)})  {verdict}")
    if timers:
        print("  OHIF's own timers (median, s): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in sorted(timers.items())))
    groups: dict[str, list[float]] = defaultdict(list)
    for url, latency in log:
        groups[kind_of(url)].append(latency)
    print(f"\nDICOMweb requests OHIF made opening the SEG over the CT (last run): {len(log)}")
    print(f"  {'kind':<22} {'count':>5} {'median ms':>10} {'max ms':>8}")
    for name, latencies in sorted(groups.items(), key=lambda item: -len(item[1])):
        finite = [v for v in latencies if v == v]
        print(f"  {name:<22} {len(latencies):>5} {statistics.median(finite) if finite else float('nan'):>10.1f} {max(finite, default=float('nan')):>8.1f}")
    for url, latency in log[:8]:
        print(f"    {latency:7.1f} ms  {url.replace(vireo.url, '')[:150]}")


if __name__ == "__main__":
    main()
