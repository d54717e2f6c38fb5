"""Settings from options and VIREO_* variables; the PACS store's atomic, exactly-once writes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.cli import parser
from app.settings import load_settings
from core.pacs_store import InvalidUID, PacsStore, clean_uid
from tests.support.vireo import ROOT


def test_options_override_environment_over_defaults() -> None:
    env = {"VIREO_HTTP_PORT": "9000", "VIREO_DICOM_PORT": "104", "VIREO_DATA_DIR": "/srv/vireo"}
    settings = load_settings(parser().parse_args(["--http-port", "9100"]), env)
    assert settings.http_port == 9100 and settings.dicom_port == 104
    assert settings.data_dir == Path("/srv/vireo")
    assert settings.sqlalchemy_url == "sqlite:////srv/vireo/vireo.db"
    assert load_settings(None, {}).http_port == 8080
    assert load_settings(None, {"VIREO_DATABASE_URL": "postgresql+psycopg://u@h/db"}).sqlalchemy_url.startswith("postgresql")
    assert load_settings(None, {"VIREO_DICOM_ALLOWED_CALLING_AETS": "CT1, MR2,"}).allowed_calling_aets == {"CT1", "MR2"}
    with pytest.raises(SystemExit, match="VIREO_HTTP_PORT"):
        load_settings(None, {"VIREO_HTTP_PORT": "eighty"})


def test_demo_is_a_switch_and_a_variable() -> None:
    assert load_settings(parser().parse_args(["--demo"]), {}).demo is True
    assert load_settings(parser().parse_args([]), {"VIREO_DEMO": "1"}).demo is True
    assert load_settings(parser().parse_args([]), {"VIREO_DEMO": "off"}).demo is False
    assert load_settings(parser().parse_args([]), {}).demo is False
    with pytest.raises(SystemExit, match="VIREO_DEMO"):
        load_settings(parser().parse_args([]), {"VIREO_DEMO": "maybe"})


def test_help_and_version() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0
    for variable in ("VIREO_DATA_DIR", "VIREO_HTTP_PORT", "VIREO_DICOM_PORT", "VIREO_DATABASE_URL", "VIREO_ADMIN_PASSWORD", "reindex"):
        assert variable in out.stdout
    version = subprocess.run([sys.executable, str(ROOT / "main.py"), "--version"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert version.stdout.startswith("vireo ")


def test_store_writes_once_and_atomically(tmp_path: Path) -> None:
    store = PacsStore(tmp_path / "pacs")
    first = store.store("1.2.3", "1.2.3.4", "1.2.3.4.5", b"A" * 1000)
    assert first.created and first.relative_path == "1.2.3/1.2.3.4/1.2.3.4.5.dcm"
    again = store.store("1.2.3", "1.2.3.4", "1.2.3.4.5", b"B" * 10)
    assert not again.created and store.path(first.relative_path).read_bytes() == b"A" * 1000
    assert not list(store.incoming.iterdir())
    results = []

    def race() -> None:
        results.append(store.store("1.2.3", "1.2.3.4", "1.2.3.4.6", b"C" * 5000).created)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert [p.name for p in store.walk()] == ["1.2.3.4.5.dcm", "1.2.3.4.6.dcm"]


@pytest.mark.parametrize("uid", ["", "../../etc", "1.2.abc", "1." * 40, "1..2"])
def test_unsafe_uids_never_name_files(uid: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidUID):
        clean_uid(uid)
    with pytest.raises(InvalidUID):
        PacsStore(tmp_path).store("1.2", uid, "1.2.3", b"x")


def test_uid_padding_is_stripped() -> None:
    assert clean_uid("1.2.840.10008\x00") == "1.2.840.10008"


@pytest.mark.parametrize(("raw", "shown"), [("Doe^Jane", "Doe, Jane"), ("Doe^Jane^Q", "Doe, Jane Q"), ("Doe", "Doe"), ("", ""), ("^Jane", "Jane"), ("Yamada^Tarou=山田^太郎", "Yamada, Tarou (山田 太郎)")])
def test_person_names_are_shown_as_people_write_them(raw: str, shown: str) -> None:
    from components.series_cards import person_name

    assert person_name(raw) == shown
