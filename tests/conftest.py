"""Shared fixtures: real PostgreSQL, real Chromium, real Vireo processes, generated DICOM data."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.factories import SeriesFiles, write_series  # noqa: E402
from tests.support.vireo import VireoProcess  # noqa: E402

pytest_plugins = ["tests.support.postgres", "tests.support.browser"]


@pytest.fixture(scope="module")
def vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    """One running Vireo per test module (fresh data dir)."""
    process = VireoProcess(tmp_path_factory.mktemp("vireo") / "data").start()
    yield process
    process.stop()


@pytest.fixture
def start_vireo(tmp_path: Path) -> Iterator[Callable[..., VireoProcess]]:
    """Start extra Vireo processes (with settings as VIREO_* keywords); all are killed after the test, pass or fail."""
    started: list[VireoProcess] = []

    def start(**env: str) -> VireoProcess:
        process = VireoProcess(tmp_path / f"data{len(started)}", **env)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> list[SeriesFiles]:
    """Five small CT/MR series of two patients (130 instances)."""
    out = tmp_path_factory.mktemp("small-study")
    series = [
        write_series(out, modality="CT", slices=30, rows=64, columns=64, patient_id="PAT1", seed=1, series_number=1),
        write_series(out, modality="CT", slices=30, rows=64, columns=64, patient_id="PAT1", seed=1, series_number=2, series_description="Lung 1mm"),
        write_series(out, modality="MR", slices=20, rows=64, columns=64, patient_id="PAT2", seed=2, series_number=1),
        write_series(out, modality="MR", slices=20, rows=64, columns=64, patient_id="PAT2", seed=2, series_number=2, mr_contrast="T2"),
        write_series(out, modality="CT", slices=30, rows=64, columns=64, patient_id="PAT2", seed=3, series_number=3),
    ]
    return series
