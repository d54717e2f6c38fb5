"""`vireo ohif install --from TARBALL` into a fresh folder: integrity, what is left out, the /ohif/ rewrite.

The tarball comes from `npm pack` (the README's route; npm's cache makes it quick after set-up).
Without npm or the package this fails — it does not skip: the test command installs both.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from app.ohif import location
from app.ohif.install import InstallError, install, integrity_of
from core.db import Database
from core import user_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ohif-pack")
    done = subprocess.run(["npm", "pack", f"{location.OHIF_PACKAGE}@{location.OHIF_VERSION}", "--json"],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"npm pack failed: {done.stderr[-500:]}"
    return folder / json.loads(done.stdout)[0]["filename"]


def test_install_from_tarball_into_a_fresh_folder(tarball: Path, tmp_path: Path) -> None:
    assert integrity_of(tarball) == location.OHIF_INTEGRITY
    root = tmp_path / "fresh"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "main.py", "ohif", "install", "--from", str(tarball), "--dir", str(root)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "public path rewritten in 11 files" in done.stdout, done.stdout
    print(f"install: {time.monotonic() - started:.1f} s — {done.stdout.strip()}")
    dist = location.installed(root)
    assert dist == root / location.OHIF_VERSION

    # Left out: the AI runtime (136 MB), source maps, the service worker, the stock config.
    assert not (dist / "ort").exists()
    assert not list(dist.rglob("*.map"))
    assert not (dist / "sw.js").exists() and not (dist / "app-config.js").exists()
    size = sum(p.stat().st_size for p in dist.rglob("*") if p.is_file() and p.suffix != ".gz")
    assert 40e6 < size < 90e6, size

    # Everything loads from /ohif/: index.html, the webpack runtimes of the app and of every worker, CSS, manifest.
    index = (dist / "index.html").read_text()
    assert 'window.PUBLIC_URL="/ohif/"' in index
    assert not re.search(r'(?:src|href|content)="/(?!ohif/)', index), "an absolute path outside /ohif/ is left in index.html"
    for bundle in dist.glob("*.js"):
        assert '__webpack_require__.p = "/";' not in bundle.read_text(), bundle.name
    assert '__webpack_require__.p = "/ohif/";' in next(dist.glob("app.bundle.*.js")).read_text()
    assert "url(/ohif/" in (dist / "app.bundle.css").read_text()
    assert '"/assets/' not in (dist / "manifest.json").read_text()
    marker = json.loads((dist / location.MARKER).read_text())
    assert len(marker["rewritten"]) == 11 and "index.html" in marker["rewritten"]

    # Nothing reaches the internet: the AI model, the interpolation CDN and Workbox point at /ohif/offline/.
    for script in dist.glob("*.js"):
        text = script.read_text()
        for remote in ("https://huggingface.co/", "https://cdn.jsdelivr.net/npm/", "https://storage.googleapis.com/workbox-cdn/"):
            assert remote not in text, f"{remote} in {script.name}"
    assert "importScripts" not in (dist / "init-service-worker.js").read_text()

    # Text files have gzip twins.
    assert (dist / "index.html.gz").exists() or (dist / "index.html").stat().st_size < 1024
    assert next(dist.glob("app.bundle.*.js.gz")).stat().st_size < next(dist.glob("app.bundle.*.js")).stat().st_size / 3

    # Once installed, set-up's call returns at once.
    started = time.monotonic()
    again = subprocess.run([sys.executable, "-m", "app.ohif", "install", "--dir", str(root)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "is installed in" in again.stdout
    assert time.monotonic() - started < 3


def test_a_tarball_that_is_not_the_pinned_ohif_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "ohif-app-3.13.2.tgz"
    with tarfile.open(fake, "w:gz") as archive:
        page = b"<html><head></head></html>"
        info = tarfile.TarInfo("package/dist/index.html")
        info.size = len(page)
        archive.addfile(info, io.BytesIO(page))
    with pytest.raises(InstallError, match="is not @ohif/app@3.13.2"):
        install(fake, tmp_path / "root")
    assert location.installed(tmp_path / "root") is None
    assert not (tmp_path / "root" / location.OHIF_VERSION).exists()
    done = subprocess.run([sys.executable, "main.py", "ohif", "install", "--from", str(fake), "--dir", str(tmp_path / "root")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "its sha512 is" in done.stderr and "Traceback" not in done.stderr


def test_vireo_serves_an_installed_ohif_from_the_checkout() -> None:
    """The test command installs OHIF (scripts/setup.sh); the viewer tests rely on it."""
    assert location.installed() is not None, location.INSTALL_HINT


def test_the_viewer_choice_is_a_per_user_setting(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'vireo.db'}")
    database.migrate()
    with database.session() as session:
        assert user_settings.read_viewer_choice(session, "ann") == "quick"
        user_settings.write_viewer_choice(session, "ann", "ohif")
    with database.session() as session:
        assert user_settings.read_viewer_choice(session, "ann") == "ohif"
        assert user_settings.read_viewer_choice(session, "bob") == "quick"
        with pytest.raises(ValueError, match="'quick' or 'ohif'"):
            user_settings.write_viewer_choice(session, "ann", "osirix")
    database.dispose()


def test_without_ohif_its_pages_say_how_to_add_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from app.ohif import serve

    monkeypatch.setenv(location.ENV_DIR, str(tmp_path / "nothing-here"))
    app = FastAPI()
    app.include_router(serve.router)
    with TestClient(app) as client:
        page = client.get("/ohif/viewer?StudyInstanceUIDs=1.2.3")
    assert page.status_code == 404 and "OHIF Viewer is not installed" in page.text and "vireo ohif install" in page.text
    assert str(tmp_path) not in page.text  # no server path shown
