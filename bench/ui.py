"""Datasets page benchmark in headless Chromium against a real Vireo holding N indexed series.

    .venv/bin/python bench/ui.py                        # 100,000 series, 1,000 page loads
    .venv/bin/python bench/ui.py --series 5000 --loads 50   # a quick look

Targets (issue 5), each printed with its ratio to the target:
- page ready — the first 50 cards with their thumbnails painted — within 1.5 s of navigation;
- a tag toggle reflected on the card within 200 ms of the click;
- server RSS after 1,000 page loads and closes within 50 MB of its value after the first 10.

The series go straight into the database (bench/search_corpus.py, as bench/search.py does);
thumbnails are drawn for the first pages (the newest 200 series).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import update  # noqa: E402

from bench.search_corpus import generate, load  # noqa: E402
from core.db import Database  # noqa: E402
from core.models import Series  # noqa: E402
from core.search.service import Selection, SeriesSearch  # noqa: E402
from core.timeutil import utcnow  # noqa: E402
from ingest.thumbnails import placeholder_thumbnail  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_executable  # noqa: E402
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess  # noqa: E402

BATCH = 5_000
CARDS = 50
READY_TARGET_S = 1.5
TAG_TARGET_MS = 200.0
RSS_TARGET_MB = 50.0

READY_JS = f"""() => {{
  const imgs = Array.from(document.querySelectorAll('[data-testid=series-card] img')).slice(0, {CARDS});
  return imgs.length === {CARDS} && imgs.every(i => i.complete && i.naturalWidth > 0);
}}"""

LIVE_JS = "(document.querySelector('[data-testid=count-series]') || {}).innerText?.match(/^[0-9]/)"

BREAKDOWN_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const thumbs = performance.getEntriesByType('resource').filter(r => r.name.includes('/thumbnail'));
  const first = Math.min(...thumbs.map(r => r.startTime)), last = Math.max(...thumbs.map(r => r.responseEnd));
  return `response ${nav.responseStart.toFixed(0)} ms, DOMContentLoaded ${nav.domContentLoadedEventEnd.toFixed(0)} ms, `
    + `thumbnails requested from ${first.toFixed(0)} ms, all loaded ${last.toFixed(0)} ms, ready ${performance.now().toFixed(0)} ms`;
}"""

TOGGLE_JS = """async (uid) => {
  const card = document.querySelector(`[data-uid="${uid}"]`);
  const before = card.querySelectorAll('[data-testid=card-tag]').length;
  const start = performance.now();
  card.click();
  return await new Promise((resolve, reject) => {
    const check = () => {
      if (card.querySelectorAll('[data-testid=card-tag]').length !== before) resolve(performance.now() - start);
      else if (performance.now() - start > 5000) reject(new Error('tag not shown'));
      else requestAnimationFrame(check);
    };
    check();
  });
}"""


def build(data_dir: Path, size: int, thumbnails: int) -> float:
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{data_dir / 'vireo.db'}")
    db.migrate()
    start = time.perf_counter()
    batch = []
    for item in generate(size, seed=42):
        batch.append(item)
        if len(batch) == BATCH:
            load(db, batch)
            batch = []
    if batch:
        load(db, batch)
    seconds = time.perf_counter() - start
    search = SeriesSearch(db)
    first = search.page(Selection(), sort="-arrived", limit=thumbnails).series_uids
    folder = data_dir / "thumbnails"
    folder.mkdir(exist_ok=True)
    for number, uid in enumerate(first):
        (folder / f"{uid}.png").write_bytes(placeholder_thumbnail(f"series {number + 1}"))
    with db.engine.begin() as conn:
        conn.execute(update(Series).where(Series.series_uid.in_(first)).values(thumbnail_at=utcnow()))  # type: ignore[attr-defined]
    db.dispose()
    return seconds


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=1_000)
    parser.add_argument("--ready-runs", type=int, default=10)
    parser.add_argument("--toggles", type=int, default=20)
    parser.add_argument("--data", type=Path, help="keep the corpus in this folder and reuse it on the next run (default: a temporary folder)")
    parser.add_argument("--breakdown", action="store_true", help="print where each page-ready run spent its time")
    args = parser.parse_args()
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    workdir = args.data or Path(tempfile.mkdtemp(prefix="vireo-ui-bench-"))
    vireo = None
    try:
        if (workdir / "data" / "vireo.db").exists():
            print(f"reusing the corpus in {workdir}", flush=True)
        else:
            seconds = build(workdir / "data", args.series, thumbnails=4 * CARDS)
            print(f"indexed {args.series:,} series in {seconds:.1f} s; thumbnails for the newest {4 * CARDS}", flush=True)
        vireo = VireoProcess(workdir / "data").start(timeout=300)
        pid = vireo.process.pid  # type: ignore[union-attr]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(f"{vireo.url}/login")
            page.get_by_label("User name").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{vireo.url}/")
            try:
                page.wait_for_function(READY_JS, timeout=60_000)
            except PlaywrightError:
                page.screenshot(path=str(workdir / "not-ready.png"))
                print(page.evaluate("document.querySelectorAll('[data-testid=series-card] img').length"), "cards;",
                      page.evaluate("Array.from(document.querySelectorAll('[data-testid=series-card] img')).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src).slice(0, 3)"))
                raise
            page.close()

            # 1. page ready: navigation start → 50 cards with their thumbnails painted
            ready = []
            for _ in range(args.ready_runs):
                page = context.new_page()
                page.goto(f"{vireo.url}/", wait_until="commit")
                page.wait_for_function(READY_JS, polling="raf", timeout=60_000)
                ready.append(page.evaluate("performance.now()") / 1000)
                if args.breakdown:
                    print("  " + page.evaluate(BREAKDOWN_JS), flush=True)
                page.close()

            # 2. tag toggle: click → tag chip on the card
            page = context.new_page()
            page.goto(f"{vireo.url}/")
            page.wait_for_function(READY_JS, timeout=60_000)
            page.wait_for_function(LIVE_JS, timeout=60_000)  # clicks reach the server once the websocket is up
            page.get_by_label("Add a tag").fill("bench-toggle")
            page.get_by_label("Add a tag").press("Enter")
            page.locator("[data-active=true]").wait_for()
            uids = page.locator("[data-testid=series-card]").evaluate_all("cards => cards.slice(0, 10).map(c => c.dataset.uid)")
            toggles: list[float] = []
            reloads = 0
            for number in range(args.toggles):
                try:
                    toggles.append(page.evaluate(TOGGLE_JS, uids[number % len(uids)]))
                except PlaywrightError as exc:  # the page reloaded itself (lost its websocket): count it, go on
                    print(f"  toggle {number + 1}: {exc.message.splitlines()[0]}", flush=True)
                    reloads += 1
                    page.wait_for_function(READY_JS, timeout=60_000)
                    page.locator("[data-active=true]").wait_for()
            page.close()

            # 3. memory: RSS after 10 page loads and closes, then after all of them
            rss_after_10 = 0.0
            began = time.perf_counter()
            for number in range(1, args.loads + 1):
                page = context.new_page()
                page.goto(f"{vireo.url}/")
                page.wait_for_selector("[data-testid=series-card]")
                page.close()
                if number == 10:
                    time.sleep(5)
                    rss_after_10 = rss_mb(pid)
                if number % 100 == 0:
                    print(f"  {number} page loads, {time.perf_counter() - began:.0f} s, RSS {rss_mb(pid):.0f} MB", flush=True)
            time.sleep(15)  # disconnected clients are pruned after NiceGUI's reconnect timeout
            rss_after_all = rss_mb(pid)
            browser.close()

        ready_median, ready_max = statistics.median(ready), max(ready)
        toggle_median, toggle_max = statistics.median(toggles), max(toggles)
        growth = rss_after_all - rss_after_10
        print()
        print(f"Datasets page, {args.series:,} series indexed")
        print(f"page ready (first {CARDS} cards with thumbnails): median {ready_median:.2f} s, max {ready_max:.2f} s over {len(ready)} loads "
              f"(target {READY_TARGET_S} s: {ready_median / READY_TARGET_S:.2f}× of it) {'PASS' if ready_max <= READY_TARGET_S else 'FAIL'}")
        print(f"tag toggle on the card: median {toggle_median:.0f} ms, max {toggle_max:.0f} ms over {len(toggles)} clicks "
              f"(target {TAG_TARGET_MS:.0f} ms: {toggle_median / TAG_TARGET_MS:.2f}× of it) {'PASS' if toggle_max <= TAG_TARGET_MS else 'FAIL'}"
              + (f"; the page reloaded itself {reloads}×" if reloads else ""))
        print(f"server RSS: {rss_after_10:.0f} MB after 10 page loads, {rss_after_all:.0f} MB after {args.loads:,}: "
              f"{growth:+.0f} MB (target ≤ {RSS_TARGET_MB:.0f} MB: {max(growth, 0) / RSS_TARGET_MB:.2f}× of it) {'PASS' if growth <= RSS_TARGET_MB else 'FAIL'}")
    finally:
        if vireo is not None:
            vireo.stop()
        if args.data is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
