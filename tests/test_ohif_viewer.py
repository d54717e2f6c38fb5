"""Vireo's own OHIF under /ohif: behind the login, served right, and drawing real images in Chromium.

One Vireo with a phantom CT (32 slices) and a SEG over it, sent with DCMTK. The browser is the
system Chromium with WebGL through SwiftShader (the shared fixture turns the GPU off, and
OHIF's cornerstone3D needs WebGL). Images are checked by reading the viewport canvas back
(pixel statistics), never by comparing screenshots. OHIF must be installed (the test command
does it): without it these tests fail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app import viewers
from app.ohif import location
from tests.support.browser import ARTIFACTS_DIR, CHROMIUM_ARGS, chromium_executable
from tests.support.ohif_data import CtWithSeg, send, write_ct_with_seg
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess

WEBGL_ARGS = [a for a in CHROMIUM_ARGS if a != "--disable-gpu"] + ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
LOAD_TIMEOUT_MS = 90_000  # a loaded 2-core machine; the wait ends as soon as the image is there

# Mean brightness, share of lit pixels, share of strongly coloured pixels (a SEG overlay) and a digest of the canvas.
CANVAS_STATS = """() => {
  const c = document.querySelector('canvas.cornerstone-canvas');
  if (!c || !c.width) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let sum = 0, lit = 0, coloured = 0, digest = 0;
  for (let i = 0; i < d.length; i += 4) {
    const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
    sum += v; if (v > 20) lit++;
    if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) coloured++;
    digest = (digest * 31 + d[i] + 7 * d[i + 1]) % 1000000007;
  }
  const n = d.length / 4;
  return {mean: sum / n, lit: lit / n, coloured: coloured / n, digest, width: c.width, height: c.height};
}"""


@pytest.fixture(scope="module")
def study(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> CtWithSeg:
    assert location.installed() is not None, location.INSTALL_HINT
    data = write_ct_with_seg(tmp_path_factory.mktemp("ohif-ct"), slices=32, size=128)
    send(data.files, vireo.dicom_port)
    page = vireo.wait_for_instances(len(data.files), timeout=60)
    assert sum(item["instances"] for item in page["items"]) >= len(data.files)
    return data


def test_a_logged_out_browser_is_sent_to_the_login(vireo: VireoProcess) -> None:
    with httpx.Client(base_url=vireo.url, follow_redirects=False) as anonymous:
        for path, target in (("/ohif/", "%2Fohif%2F"), ("/ohif/viewer?StudyInstanceUIDs=1.2.3", "%2Fohif%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"),
                             ("/ohif/app-config.js", "%2Fohif%2Fapp-config.js")):
            answer = anonymous.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == f"/login?next={target}"
        # DICOMweb clients still get the Basic challenge; OHIF's marked requests a plain 401 (no browser password dialog).
        assert anonymous.get("/dicomweb/studies").headers["www-authenticate"] == 'Basic realm="Vireo"'
        marked = anonymous.get("/dicomweb/studies", headers={"X-Requested-With": "XMLHttpRequest"})
        assert marked.status_code == 401 and "www-authenticate" not in marked.headers


def test_ohif_files_are_served_with_spa_fallback_cache_and_gzip(vireo: VireoProcess) -> None:
    dist = location.installed()
    assert dist is not None, location.INSTALL_HINT
    bundle = next(dist.glob("app.bundle.*.js")).name
    with vireo.client() as client:
        assert client.get("/ohif", follow_redirects=False).headers["location"] == "/ohif/"
        page = client.get("/ohif/viewer", params={"StudyInstanceUIDs": "1.2.3"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<head><script src="/ohif/vireo-session.js"></script>' in page.text and 'window.PUBLIC_URL="/ohif/"' in page.text
        assert page.headers["cache-control"] == "no-cache"
        js = client.get(f"/ohif/{bundle}", headers={"Accept-Encoding": "gzip"})
        assert js.status_code == 200 and js.headers["content-encoding"] == "gzip"
        assert js.headers["cache-control"] == "private, max-age=31536000, immutable"
        assert js.headers["content-type"].startswith("text/javascript")
        assert int(js.headers["content-length"]) < (dist / bundle).stat().st_size / 3
        assert '__webpack_require__.p = "/ohif/"' in js.text  # httpx decodes the gzip
        config = client.get("/ohif/app-config.js")
        assert config.headers["cache-control"] == "no-cache"
        for expected in ('"routerBasename": "/ohif"', '"showStudyList": false', '"qidoRoot": "/dicomweb"', '"maxNumberOfWebWorkers": 2', "ohif.tours"):
            assert expected in config.text
        missing = client.get("/ohif/9999.bundle.0123456789abcdef.js")
        assert missing.status_code == 404 and "reinstall" in missing.text
        offline = client.get("/ohif/offline/huggingface/schmuell/sam.onnx")
        assert offline.status_code == 404 and "internet" in offline.text
        assert client.get("/ohif/..%2F..%2Fpyproject.toml").status_code == 404  # nothing outside the dist
        assert client.get(f"/ohif/{location.MARKER}").status_code == 404  # never the install's own files


def test_open_in_ohif_points_at_vireos_own_ohif() -> None:
    assert viewers.ohif_study_url("https://ohif.example.org", "1.2.3") == "/ohif/viewer?StudyInstanceUIDs=1.2.3"
    assert viewers.own_ohif_url("1.2", "1.2.5", seg_series_uids=["1.2.9"]) == (
        "/ohif/viewer?StudyInstanceUIDs=1.2&SeriesInstanceUIDs=1.2.5,1.2.9&hangingProtocolId=%40ohif%2Fseg")
    assert viewers.own_ohif_url("1.2", segmentation=True) == "/ohif/segmentation?StudyInstanceUIDs=1.2"


@pytest.fixture
def webgl_page(chromium_browser: Any, playwright_sync: None) -> Iterator[Any]:
    """A page in a Chromium of its own with WebGL through SwiftShader; records every request's host."""
    browser = chromium_browser.browser_type.launch(executable_path=chromium_executable(), headless=True, args=WEBGL_ARGS)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.hosts = set()  # type: ignore[attr-defined]
    context.on("request", lambda request: page.hosts.add(urlsplit(request.url).hostname))  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()
        browser.close()


def _log_in(page: Any, vireo: VireoProcess, target: str) -> None:
    page.goto(f"{vireo.url}/login?next={target.replace('/', '%2F')}")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{vireo.url}{target}")


def _wait_for_image(frame: Any, condition: str = "s.lit > 0.05 && s.mean > 5") -> dict[str, float]:
    # the stats that met the condition, not a second look: OHIF may swap its canvas in between
    handle = frame.wait_for_function(f"() => {{ const s = ({CANVAS_STATS})(); return s && ({condition}) ? s : null; }}", timeout=LOAD_TIMEOUT_MS, polling=250)
    return handle.json_value()


def _shot(page: Any, name: str) -> None:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / f"ohif_{name}.png"))


@pytest.mark.slow
def test_ohif_draws_ct_scrolls_overlays_seg_and_notices_an_expired_login(vireo: VireoProcess, study: CtWithSeg, webgl_page: Any) -> None:
    page = webgl_page
    _log_in(page, vireo, "/settings")

    # Full screen (its own tab): the CT series, drawn.
    page.goto(vireo.url + viewers.own_ohif_url(study.study_uid, study.ct_uid))
    first = _wait_for_image(page)
    assert first["coloured"] < 0.0005, first  # grey CT, no overlay
    page.get_by_text(re.compile(r"1/32")).first.wait_for(timeout=LOAD_TIMEOUT_MS)
    _shot(page, "full_screen_ct")

    # Scrolling changes the image.
    page.mouse.move(640, 420)
    for _ in range(8):
        page.mouse.wheel(0, 120)
    page.wait_for_function(f"() => {{ const s = ({CANVAS_STATS})(); return s && s.digest !== {first['digest']} && s.lit > 0.05; }}",
                           timeout=LOAD_TIMEOUT_MS, polling=250)
    assert not page.get_by_text(re.compile(r"\(1/32\)")).is_visible()

    # A SEG over its CT: the segment colours appear on the grey image.
    page.goto(vireo.url + viewers.own_ohif_url(study.study_uid, study.ct_uid, seg_series_uids=[study.seg_uid]))
    overlay = _wait_for_image(page, "s.lit > 0.05 && s.coloured > 0.001")
    assert overlay["coloured"] > 0.001, overlay
    _shot(page, "seg_over_ct")

    # Embedded in a Vireo page (same origin iframe, as the Datasets panel draws it): no OHIF side panels.
    page.goto(f"{vireo.url}/settings")
    page.evaluate("""url => { const box = document.createElement('div'); box.className = 'vireo-ohif'; box.id = 'panel';
        box.style.cssText = 'position:fixed;right:0;top:0;width:560px;height:640px;z-index:5000;background:#fff;display:flex;flex-direction:column';
        const f = document.createElement('iframe'); f.src = url; f.style.cssText = 'flex:1;border:0'; f.setAttribute('data-testid', 'ohif-frame');
        box.appendChild(f); document.body.appendChild(box); }""", viewers.own_ohif_url(study.study_uid, study.ct_uid))
    page.wait_for_function("() => document.querySelector('[data-testid=ohif-frame]').contentWindow.document.querySelector('canvas')", timeout=LOAD_TIMEOUT_MS)
    frame = page.frame_locator("[data-testid=ohif-frame]")
    inner = next(f for f in page.frames if "/ohif/viewer" in f.url)
    embedded = _wait_for_image(inner)
    assert embedded["width"] > 480, embedded  # the viewport has the panel's width: OHIF's own panels are left out
    assert not frame.get_by_text("Studies", exact=True).is_visible()
    _shot(page, "embedded")

    # The login expires while OHIF is open: the panel says so and offers to log in again.
    page.context.clear_cookies()
    inner.evaluate("() => { const r = new XMLHttpRequest(); r.open('GET', '/dicomweb/studies?limit=1'); r.send(); }")
    notice = page.get_by_test_id("ohif-session-expired")
    notice.wait_for(timeout=30_000)
    assert "login has expired" in notice.inner_text()
    assert notice.get_by_role("link", name="Log in again").get_attribute("href") == "/login?next=%2Fsettings"
    frame.get_by_test_id("ohif-login-again").wait_for(timeout=10_000)
    _shot(page, "session_expired")

    assert page.hosts <= {"127.0.0.1"}, f"requests left the machine: {page.hosts}"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_datasets_page_opens_ohif_on_the_series_with_its_seg_and_links_to_it(vireo: VireoProcess, study: CtWithSeg, webgl_page: Any) -> None:
    """As a checker would: Datasets page → CT card → detail panel → OHIF tab, at 1280×800 and 1920×1080."""
    page = webgl_page
    failed: list[str] = []
    page.context.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    _log_in(page, vireo, "/")
    card = page.locator(f"[data-testid=series-card][data-uid='{study.ct_uid}']")
    card.wait_for(timeout=LOAD_TIMEOUT_MS)
    # "Open in OHIF" on the cards: the CT on its own, the SEG over the CT it annotates (a new tab each).
    assert card.get_by_test_id("open-ohif-card").get_attribute("href") == viewers.own_ohif_url(study.study_uid, study.ct_uid)
    seg_card = page.locator(f"[data-testid=series-card][data-uid='{study.seg_uid}']")
    assert seg_card.get_by_test_id("open-ohif-card").get_attribute("href") == viewers.own_ohif_url(
        study.study_uid, study.ct_uid, seg_series_uids=[study.seg_uid])
    assert card.get_by_test_id("open-ohif-card").get_attribute("target") == "_blank"

    card.hover()
    card.get_by_test_id("open-detail").click()
    page.get_by_test_id("viewer-tab-ohif").click()
    page.wait_for_function("() => { const f = document.querySelector('[data-testid=ohif-frame]'); return f && f.contentWindow.document.querySelector('canvas'); }",
                           timeout=LOAD_TIMEOUT_MS)
    inner = next(f for f in page.frames if "/ohif/viewer" in f.url)
    assert "hangingProtocolId=%40ohif%2Fseg" in inner.url  # the CT has a SEG: drawn over it
    overlay = _wait_for_image(inner, "s.lit > 0.05 && s.coloured > 0.001")
    assert overlay["coloured"] > 0.001 and overlay["width"] >= 600, overlay
    full = page.get_by_test_id("ohif-full-screen")
    assert full.get_attribute("target") == "_blank" and full.get_attribute("href") == inner.url.removeprefix(vireo.url)
    for width, height in ((1280, 800), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_function("() => document.documentElement.scrollWidth <= window.innerWidth", timeout=10_000)
        # OHIF's toolbar fits the panel: its buttons lie inside the frame, none on top of another.
        _shot(page, f"datasets_panel_{width}x{height}")
        boxes = inner.evaluate("""() => { const all = Array.from(document.querySelectorAll('[data-cy*="toolbar"] button, [data-tool], #Layout button'));
            return all.filter(b => !all.some(o => o !== b && o.contains(b)))  // the outermost of nested ones
              .map(b => b.getBoundingClientRect()).filter(r => r.width > 0).map(r => [r.left, r.top, r.right, r.bottom]); }""")
        assert len(boxes) >= 5, boxes  # the toolbar is there
        frame_width = inner.evaluate("() => window.innerWidth")
        assert all(right <= frame_width + 1 for _l, _t, right, _b in boxes), (width, boxes)
        overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                    if min(a[2], b[2]) - max(a[0], b[0]) > 2 and min(a[3], b[3]) - max(a[1], b[1]) > 2]
        assert not overlaps, (width, overlaps)
    assert page.hosts <= {"127.0.0.1"}, f"requests left the machine: {page.hosts}"  # type: ignore[attr-defined]
    assert not failed, failed


def test_card_links_fall_back_to_the_configured_ohif_and_encode_untrusted_uids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(location, "installed", lambda root=None: None)
    monkeypatch.setattr(viewers, "_own_checked", (float("-inf"), True))  # the next check sees "not installed"
    hostile = '1.2"><script>x</script>&a=b'
    url = viewers.series_ohif_url("1.2", hostile, external_url="https://ohif.example.org/")
    assert url == "https://ohif.example.org/viewer?StudyInstanceUIDs=1.2&SeriesInstanceUIDs=1.2%22%3E%3Cscript%3Ex%3C%2Fscript%3E%26a%3Db"
    assert viewers.series_ohif_url("1.2", "1.2.9", modality="SEG", referenced_series_uid="1.2.5", external_url="https://o.example") == (
        "https://o.example/viewer?StudyInstanceUIDs=1.2&SeriesInstanceUIDs=1.2.5,1.2.9")
    assert viewers.series_ohif_url("1.2", "1.2.5", external_url="") is None  # neither OHIF: the link is hidden
