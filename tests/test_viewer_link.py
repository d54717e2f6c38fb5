"""'Open in OHIF': the study URL a viewer is given (the detail view's link is tested in test_datasets_page.py)."""

from __future__ import annotations

from app.viewers import ohif_study_url


def test_ohif_url_for_a_study(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VIREO_OHIF_DIR", str(tmp_path))  # Vireo's own OHIF, when installed, takes the link over
    assert ohif_study_url("https://viewer.example/ohif/", "1.2.3") == "https://viewer.example/ohif/viewer?StudyInstanceUIDs=1.2.3"
    assert ohif_study_url("", "1.2.3") is None
