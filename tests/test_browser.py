"""The login page and app shell in a real headless Chromium, against a real Vireo with real data."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.factories import SeriesFiles
from tests.support.browser import ARTIFACTS_DIR
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess


def _send(vireo: VireoProcess, series: list[SeriesFiles], called: str) -> None:
    files = [str(p) for s in series for p in s.paths]
    subprocess.run(["storescu", "-aec", called, "127.0.0.1", str(vireo.dicom_port), *files], check=True, capture_output=True, timeout=120)


def test_login_shell_series_and_logout(vireo: VireoProcess, small_study: list[SeriesFiles], browser_page) -> None:  # type: ignore[no-untyped-def]
    _send(vireo, small_study[:3], "browser-demo")
    page = browser_page
    page.goto(f"{vireo.url}/settings")
    page.wait_for_url("**/login?next=%2Fsettings")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Wrong user name or password.").wait_for()

    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.wait_for_url(f"{vireo.url}/settings")
    page.get_by_text("API tokens").wait_for()

    page.get_by_role("link", name="Datasets").first.click()
    page.wait_for_url(f"{vireo.url}/")
    page.get_by_text("all 3 matching series").wait_for()
    page.get_by_text("Axial 5mm").first.wait_for()
    # thumbnails load through the session cookie, like any browser user
    page.wait_for_function("Array.from(document.querySelectorAll('img')).filter(i => i.complete && i.naturalWidth > 0).length >= 3", timeout=20000)
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "datasets-page.png"), full_page=True)

    page.get_by_role("button", name="admin").click()
    page.get_by_text("Logout").click()
    page.wait_for_url("**/login*")  # /login, or /login?next=… when the ended-session sweep got there first
    page.goto(f"{vireo.url}/")
    page.wait_for_url("**/login?next=%2F")


def test_dataset_choice_lives_in_the_url(vireo: VireoProcess, small_study: list[SeriesFiles], browser_page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _send(vireo, small_study[3:], "second-set")
    page = browser_page
    page.goto(f"{vireo.url}/login?next=%2F%3Fdataset%3Dsecond-set")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{vireo.url}/?dataset=second-set")
    page.get_by_text("all 2 matching series").wait_for()
