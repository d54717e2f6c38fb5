"""The Datasets page's logic through NiceGUI's simulated `user` (fast), and its pure helpers."""

from __future__ import annotations

import asyncio

from collections.abc import Iterator
from pathlib import Path

import pytest
from nicegui.testing import User

from app import gallery_settings
from app.gallery_settings import GallerySettings
from components.gallery import field_label
from components.search_row import filter_text
from components.series_cards import card, person_name
from core.search.query import parse_filter
from tests.support.vireo import ADMIN_PASSWORD, free_port


@pytest.fixture(autouse=True)
def vireo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("VIREO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIREO_DICOM_PORT", str(free_port()))
    monkeypatch.setenv("VIREO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    yield


async def log_in(user: User) -> None:
    await user.open("/")
    await user.should_see(marker="login-button")
    user.find(marker="username").type("admin")
    user.find(marker="password").type(ADMIN_PASSWORD)
    user.find(marker="login-button").click()
    await user.should_see(marker="gallery", retries=50)


def test_defaults_are_kaapanas() -> None:
    settings = GallerySettings()
    assert settings.view == "gallery" and settings.card_text and settings.items_per_row == 0 and settings.sort == "-arrived"
    assert settings.names("series_card") == ["SeriesDescription", "PatientName", "PatientSex", "StudyDescription", "StudyDate"]
    assert settings.names("dashboard") == ["Modality", "tags", "Manufacturer"]
    assert settings.names("patient_view") == ["PatientName", "PatientBirthDate", "PatientSex", "Modality"]
    assert settings.names("study_view") == ["StudyDate", "Modality"]
    assert settings.names("truncate") == ["SeriesDescription"]


def test_filter_chips_quote_what_needs_quoting() -> None:
    for values in (["CT"], ["a,b", "c"], ['say "hi"'], ["back\\slash"]):
        text = filter_text("SeriesDescription", values)
        assert parse_filter(text).field == "SeriesDescription"
        assert len(parse_filter(text).values) == len(values)
    assert filter_text("Modality", ["CT", "MR"]) == "Modality:CT,MR"


def test_names_and_cards() -> None:
    assert person_name("Doe^Jane") == "Doe, Jane"
    assert person_name("<img src=x onerror=alert(1)>") == "<img src=x onerror=alert(1)>"
    assert field_label("PatientName") == "Patient Name" and field_label("SOPInstanceUID") == "SOP Instance UID"
    doc = {"SeriesInstanceUID": "1.2.3", "StudyInstanceUID": "1.2", "PatientID": "P", "PatientName": "A^B", "StudyDate": "20240102",
           "Modality": "CT", "tags": ["x"], "is_complete": False, "thumbnail_version": "2026-01-01T00:00:00Z"}
    made = card(doc, GallerySettings())
    assert made["fields"]["StudyDate"] == "2024-01-02" and made["fields"]["PatientName"] == "A, B"
    assert made["complete"] is False and made["tags"] == ["x"] and made["thumb"].startswith("/api/series/1.2.3/thumbnail?v=")


async def test_bad_query_shows_inline_error_and_settings_persist(user: User) -> None:
    await log_in(user)
    user.find(marker="search-input").type("Modality:(CT").trigger("keydown.enter")
    await user.should_see("this parenthesis is never closed", retries=50)
    user.find(marker="search-input").clear().type("Modality:CT").trigger("keydown.enter")
    await user.should_not_see("this parenthesis is never closed", retries=50)

    user.find(marker="menu-settings").click()  # the Datasets page's Settings dialog
    await user.should_see(marker="settings-dialog", retries=50)
    user.find(marker="setting-Manufacturer-dashboard").click()  # off
    user.find(marker="setting-StudyDate-dashboard").click()  # on: a date histogram
    user.find(marker="save-gallery-settings").click()
    await user.should_see("Datasets settings saved")
    stored = gallery_settings.load("admin")
    assert stored.names("dashboard") == ["StudyDate", "Modality", "tags"] or set(stored.names("dashboard")) == {"StudyDate", "Modality", "tags"}
    assert gallery_settings.load("someone-else").names("dashboard") == ["Modality", "tags", "Manufacturer"]

    first_dialog = set(user.find(marker="settings-dialog").elements)
    user.find(marker="menu-settings").click()
    for _ in range(100):  # a fresh dialog replaces the saved one
        try:
            if first_dialog.isdisjoint(user.find(marker="settings-dialog").elements):
                break
        except AssertionError:  # none yet
            pass
        await asyncio.sleep(0.05)
    user.find(marker="reset-gallery-settings").click()
    await user.should_see("The defaults are filled in")
    user.find(marker="save-gallery-settings").click()
    for _ in range(100):  # the first save's notice may still be showing: wait for the store itself
        if gallery_settings.load("admin") == GallerySettings():
            break
        await asyncio.sleep(0.05)
    assert gallery_settings.load("admin") == GallerySettings()
