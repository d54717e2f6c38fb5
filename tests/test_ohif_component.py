"""`components.ohif_viewer` and the viewer choice through NiceGUI's simulated user (no browser)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nicegui import ui
from nicegui.testing import User

from app import viewers
from app.ohif import location
from components import ohif_viewer as ohif
from tests.support.vireo import ADMIN_PASSWORD, free_port

STUDY, SERIES, SEG = "1.2.826.1", "1.2.826.1.5", "1.2.826.1.9"


@pytest.fixture(autouse=True)
def vireo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("VIREO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIREO_DICOM_PORT", str(free_port()))
    monkeypatch.setenv("VIREO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    yield


def _panel_page() -> None:
    """A page holding only the panel, as the Datasets page's Viewer tab holds it (registered per test)."""

    @ui.page("/test-ohif-panel")
    def panel() -> None:
        with ui.element("div").style("width: 700px; height: 600px"):
            ohif.ohif_viewer(STUDY, SERIES, seg_series_uids=[SEG])


async def _log_in(user: User) -> None:
    _panel_page()
    await user.open("/")
    await user.should_see(marker="login-button")
    user.find(marker="username").type("admin")
    user.find(marker="password").type(ADMIN_PASSWORD)
    user.find(marker="login-button").click()
    await user.should_see(marker="user-menu", retries=50)


async def test_the_panel_draws_ohif_with_a_full_screen_link_and_the_choice_is_kept(user: User) -> None:
    assert ohif.ohif_available(), location.INSTALL_HINT
    await _log_in(user)
    await user.open("/test-ohif-panel")
    expected = f"/ohif/viewer?StudyInstanceUIDs={STUDY}&SeriesInstanceUIDs={SERIES},{SEG}&hangingProtocolId=%40ohif%2Fseg"
    frames = [e for e in user.client.elements.values() if e.tag == "iframe"]
    assert [f.props["src"] for f in frames] == [expected]
    await user.should_see("Open full screen")
    assert ohif.ohif_viewer_url(STUDY, SERIES) == f"/ohif/viewer?StudyInstanceUIDs={STUDY}&SeriesInstanceUIDs={SERIES}"
    assert ohif.ohif_viewer_url(STUDY, segmentation=True) == f"/ohif/segmentation?StudyInstanceUIDs={STUDY}"

    assert viewers.preferred_viewer("admin") == "quick"
    viewers.set_preferred_viewer("admin", "ohif")
    assert viewers.preferred_viewer("admin") == "ohif"
    with pytest.raises(ValueError):
        viewers.set_preferred_viewer("admin", "osirix")


async def test_without_ohif_the_panel_says_how_to_add_it(user: User, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(location.ENV_DIR, str(tmp_path / "no-ohif"))
    assert not ohif.ohif_available() and ohif.ohif_viewer_url(STUDY, SERIES) is None
    assert viewers.ohif_study_url("", STUDY) is None
    assert viewers.ohif_study_url("https://ohif.example.org", STUDY) == f"https://ohif.example.org/viewer?StudyInstanceUIDs={STUDY}"
    await _log_in(user)
    await user.open("/test-ohif-panel")
    await user.should_see("OHIF Viewer is not installed")
    await user.should_see("vireo ohif install")
    assert not [e for e in user.client.elements.values() if e.tag == "iframe"]
