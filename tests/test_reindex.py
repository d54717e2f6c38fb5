"""The index is rebuilt from the PACS files: on demand (`reindex`) and after a crash (recovery)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom

from app.services import RUNNING_MARKER, build_services
from app.settings import Settings
from core import catalog
from tests.factories import write_seg, write_series
from tests.support.vireo import ROOT, VireoProcess


def test_reindex_rebuilds_the_index_and_reports_unreadable_files(tmp_path: Path, start_vireo: Callable[..., VireoProcess]) -> None:
    vireo = start_vireo()
    ct = write_series(tmp_path / "in", modality="CT", slices=10, rows=32, columns=32, patient_id="RX", seed=700)
    seg = write_seg(tmp_path / "in", ct)
    subprocess.run(["storescu", "-aec", "REIDX", "127.0.0.1", str(vireo.dicom_port), *map(str, ct.paths)], check=True, timeout=60)
    subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--call", "REIDX", str(seg)], check=True, timeout=60)
    before = vireo.series()
    vireo.stop()

    # lose the database and damage one CT file
    (vireo.data_dir / "vireo.db").unlink()
    for suffix in ("-wal", "-shm"):
        (vireo.data_dir / f"vireo.db{suffix}").unlink(missing_ok=True)
    files = sorted((vireo.data_dir / "pacs").rglob("*.dcm"))
    broken = sorted((vireo.data_dir / "pacs" / ct.study_uid / ct.series_uid).glob("*.dcm"))[0]
    broken.write_bytes(b"not dicom any more")
    env = {"VIREO_DATA_DIR": str(vireo.data_dir), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "reindex"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr  # something could not be read
    assert f"reindexed {len(files) - 1} of {len(files)} files" in result.stdout
    assert str(broken) in result.stdout

    vireo.start()
    after = vireo.series()
    assert after["total"] == before["total"] == 2
    counts = {i["SeriesInstanceUID"]: i["instances"] for i in after["items"]}
    assert sum(counts.values()) == 10  # 11 files, one unreadable
    seg_doc = next(i for i in after["items"] if i["Modality"] == "SEG")
    assert seg_doc["referenced_series"] == ct.series_uid
    vireo.stop()

    broken.unlink()
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "reindex"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recovery_indexes_files_stored_but_not_yet_indexed(tmp_path: Path) -> None:
    """A crash between linking a file and committing its row leaves a stored, unindexed file; start-up finds it."""
    settings = Settings(data_dir=tmp_path / "data", dicom_port=0, admin_password="recovery-pw")
    services = build_services(settings)
    services.start()
    series = write_series(tmp_path / "in", modality="MR", slices=4, rows=16, columns=16, patient_id="REC", seed=701)
    services.stop()
    for path in series.paths:  # as the receiver does, up to the crash
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        services.store.store(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, path.read_bytes())
    (services.store.incoming / "leftover.part").write_bytes(b"half a file")
    (settings.data_dir / RUNNING_MARKER).touch()  # the crashed run never removed its marker

    restarted = build_services(settings)
    restarted.start()
    try:
        with restarted.db.session() as session:
            assert catalog.get_series(session, series.series_uid)["instances"] == 4
        assert not list(restarted.store.incoming.iterdir())
    finally:
        restarted.stop()
