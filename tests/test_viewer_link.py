"""'Open in OHIF' where series are listed, when VIREO_OHIF_URL is set (NiceGUI's simulated user)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nicegui.testing import User

from app.viewers import ohif_study_url
from tests.factories import write_series
from tests.support.vireo import ADMIN_PASSWORD, free_port

DICOM_PORT = free_port()


@pytest.fixture(autouse=True)
def vireo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("VIREO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIREO_DICOM_PORT", str(DICOM_PORT))
    monkeypatch.setenv("VIREO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("VIREO_OHIF_URL", "https://ohif.example/")
    yield


def test_ohif_url_for_a_study() -> None:
    assert ohif_study_url("https://viewer.example/ohif/", "1.2.3") == "https://viewer.example/ohif/viewer?StudyInstanceUIDs=1.2.3"
    assert ohif_study_url("", "1.2.3") is None


async def test_series_list_opens_the_study_in_ohif(user: User, tmp_path: Path) -> None:
    series = write_series(tmp_path / "dicom", modality="CT", slices=2, rows=16, columns=16, patient_id="OHIF1", seed=51)
    await user.open("/")
    user.find(marker="username").type("admin")
    user.find(marker="password").type(ADMIN_PASSWORD)
    user.find(marker="login-button").click()
    await user.should_see(marker="series-table", retries=100)
    await asyncio.to_thread(subprocess.run, ["dcmsend", "127.0.0.1", str(DICOM_PORT), *map(str, series.paths)], check=True, timeout=60)
    links: list[str | None] = []
    for _ in range(100):
        (table,) = user.find(marker="series-table").elements
        links = [row.get("ohif") for row in table.rows]  # type: ignore[attr-defined]
        if links:
            break
        await asyncio.sleep(0.1)
    assert links == [f"https://ohif.example/viewer?StudyInstanceUIDs={series.study_uid}"]
    assert any(column["name"] == "viewer" for column in table.columns)  # type: ignore[attr-defined]
