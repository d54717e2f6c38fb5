"""Packaging: the wheel carries the static assets and migrations, and its `vireo` command runs Vireo.

The wheel is built from a copy of the source (building writes build/ and *.egg-info beside it).
It is installed with --no-deps into a fresh venv that sees the project's already installed
dependencies through a .pth file, so the test checks our packaging, not PyPI, in seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx

from tests.support.vireo import ROOT, free_port

PACKAGES = ["app", "core", "ingest", "federation", "pages", "components"]
ASSET_SUFFIXES = (".js", ".css", ".mako", ".ini")


def _source_copy(target: Path) -> Path:
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "main.py"):
        shutil.copy2(ROOT / name, target / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def _expected_files(source: Path) -> set[str]:
    """Every static asset and migration in the source tree, as wheel paths."""
    wanted = set()
    for package in PACKAGES:
        for path in (source / package).rglob("*"):
            relative = path.relative_to(source).as_posix()
            if path.suffix in ASSET_SUFFIXES or (relative.startswith("core/migrations/") and path.suffix == ".py"):
                wanted.add(relative)
    return wanted


def test_wheel_has_assets_and_migrations_and_its_vireo_command_serves(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)], check=True, timeout=300, capture_output=True)
    wheel = next(dist.glob("vireo-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _expected_files(source)
    assert {"components/gallery.js", "pages/upload.js", "core/migrations/script.py.mako", "core/migrations/env.py"} <= expected
    assert any(n.startswith("core/migrations/versions/0001_") for n in expected)
    assert expected - names == set(), f"missing from the wheel: {sorted(expected - names)}"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "vireo = app.cli:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # the dependencies, not Vireo itself
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300, capture_output=True)

    elsewhere = tmp_path / "elsewhere"  # not the source tree: imports must come from the installed wheel
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_CURRENT_TEST", "NICEGUI_USER_SIMULATION")}
    version = subprocess.run([str(venv / "bin" / "vireo"), "--version"], cwd=elsewhere, env=env, check=True, capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "vireo 0.1.0"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import app, pages; print(app.__file__); print(pages.__file__)"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    assert (site / "pages" / "upload.js").is_file() and (site / "core" / "migrations" / "versions").is_dir()

    # `vireo` is `python main.py`: it migrates a new data dir and serves (health answers, the login page renders).
    http_port, dicom_port = free_port(), free_port()
    log = (tmp_path / "vireo.log").open("wb")
    process = subprocess.Popen([str(venv / "bin" / "vireo"), "--http-port", str(http_port), "--dicom-port", str(dicom_port), "--data-dir", str(tmp_path / "data")],
                               cwd=elsewhere, env={**env, "VIREO_ADMIN_PASSWORD": "pkg-test"}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "vireo.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the installed vireo did not answer within 60 s"
            time.sleep(0.3)
        assert "Log in" in httpx.get(f"http://127.0.0.1:{http_port}/login", timeout=10).text
        assert httpx.get(f"http://127.0.0.1:{http_port}/api/series", auth=("admin", "pkg-test"), timeout=10).json()["total"] == 0
    finally:
        process.terminate()
        process.wait(timeout=30)
