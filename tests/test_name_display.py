"""Person names are shown whole: every component group of a PN, in one readable form, wherever a page shows a name."""

from __future__ import annotations

import subprocess
from typing import Any

import pydicom.data
import pytest

from components.series_cards import display
from core.name_display import person_name
from tests.support.browser import ARTIFACTS_DIR
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess

YAMADA = "Yamada^Tarou=山田^太郎=やまだ^たろう"  # chrH31.dcm's PatientName (ISO 2022 IR 87)
YAMADA_SHOWN = "Yamada, Tarou (山田 太郎)"


@pytest.mark.parametrize(("raw", "shown"), [
    (YAMADA, YAMADA_SHOWN),
    ("Yamada^Tarou=山田^太郎", YAMADA_SHOWN),
    ("Yamada^Tarou==やまだ^たろう", "Yamada, Tarou (やまだ たろう)"),  # phonetic only when there is no ideographic group
    ("=山田^太郎", "山田 太郎"),
    ("Hong^Gildong=洪^吉洞=홍^길동", "Hong, Gildong (洪 吉洞)"),
    ("Wang^XiaoDong=王^小東=", "Wang, XiaoDong (王 小東)"),
    ("Doe^Jane^^Dr.^PhD", "Doe, Dr. Jane PhD"),
    ("Äneas^Rüdiger", "Äneas, Rüdiger"),
    ("Doe", "Doe"),
    ("<b>Doe</b>", "<b>Doe</b>"),  # no components and no groups: shown exactly as sent (the page escapes it)
    ("YAMADA=山田=やまだ", "YAMADA (山田)"),  # '=' separates groups in every PN, carets or not
    ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),  # four "groups": no PN, shown as sent
    ("=^=", ""),
])
def test_every_group_of_a_name_is_shown(raw: str, shown: str) -> None:
    assert person_name(raw) == shown


def test_cards_format_every_person_name_field() -> None:
    doc = {"PatientName": YAMADA, "ReferringPhysicianName": "Doe^John", "OperatorsName": ["A^B", "=山田^太郎"], "StudyDescription": "X^Y=Z"}
    assert display(doc, "PatientName") == YAMADA_SHOWN
    assert display(doc, "ReferringPhysicianName") == "Doe, John"
    assert display(doc, "OperatorsName") == "A, B; 山田 太郎"
    assert display(doc, "StudyDescription") == "X^Y=Z"  # not a PN: as stored


def _log_in(page: Any, vireo: VireoProcess, dataset: str) -> None:
    page.goto(f"{vireo.url}/login?next=%2F%3Fdataset%3D{dataset}")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{vireo.url}/?dataset={dataset}")


def test_a_japanese_name_sent_over_dicom_is_shown_whole(vireo: VireoProcess, browser_page: Any) -> None:
    (path,) = pydicom.data.get_charset_files("chrH31.dcm")
    assert str(pydicom.dcmread(path).PatientName) == YAMADA
    subprocess.run(["dcmsend", "-aec", "names", "127.0.0.1", str(vireo.dicom_port), path], check=True, capture_output=True, timeout=60)
    assert vireo.wait_for_instances(1, dataset="names")["items"][0]["PatientName"] == YAMADA

    page = browser_page
    _log_in(page, vireo, "names")
    card = page.get_by_test_id("series-card").first
    card.wait_for()
    assert YAMADA_SHOWN in card.inner_text()
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "names-gallery.png"), full_page=True)

    with vireo.client() as client:  # the structured gallery's patient header shows the same form
        assert client.put("/api/settings/datasets", json={"view": "structured"}).status_code == 200
    try:
        page.reload()
        header = page.get_by_test_id("patient-card").first
        header.wait_for()
        assert YAMADA_SHOWN in header.inner_text()
        page.screenshot(path=str(ARTIFACTS_DIR / "names-structured.png"), full_page=True)
    finally:
        with vireo.client() as client:
            client.delete("/api/settings/datasets")


def test_dashboard_bars_show_names_whole_and_keep_the_raw_value_for_filtering() -> None:
    from components.dashboard import _figure

    figure = _figure("PatientName", {"Yamada^Tarou=山田^太郎": 3, "Doe^Jane": 1})
    bars = figure["data"][0]
    assert sorted(bars["y"]) == ["Doe, Jane", "Yamada, Tarou (山田 太郎)"]
    assert sorted(bars["customdata"]) == ["Doe^Jane", "Yamada^Tarou=山田^太郎"]  # a click filters on the stored value
    # Two values that read alike would share one bar on the category axis: those stay raw.
    assert sorted(_figure("PatientName", {"Doe^Jane": 2, "Doe^Jane^": 1})["data"][0]["y"]) == ["Doe^Jane", "Doe^Jane^"]
    assert _figure("Modality", {"CT": 1})["data"][0]["y"] == ["CT"]
