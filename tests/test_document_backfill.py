"""WADO-RS metadata documents of what receiver workers stored: made in the main process once the series is quiet.

A real Vireo with its receiver workers, real dcmsend, documents compared with what
core.dicom_json makes from the stored file itself, and what a DICOMweb client reads before
and after they were made.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from core.db import Database
from core.dicom_json import BULK_THRESHOLD, instance_document
from core.pacs_store import PacsStore
from ingest.document_backfill import DocumentBackfill
from ingest.indexer import IndexWriter
from ingest.intake import Intake, Origin
from tests.factories import write_series
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess


def stored_documents(vireo: VireoProcess) -> dict[str, str]:
    with sqlite3.connect(vireo.data_dir / "vireo.db") as db:
        return dict(db.execute("select sop_instance_uid, document from instance_document").fetchall())


def expected_document(store_root: Path, sop_uid: str, db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        (path, series, study) = db.execute(
            "select instance.path, instance.series_uid, series.study_uid from instance join series on series.series_uid = instance.series_uid"
            " where sop_instance_uid = ?", (sop_uid,)).fetchone()
    return instance_document(dcmread(store_root / path, defer_size=BULK_THRESHOLD), study, series, sop_uid)


def test_documents_of_what_workers_stored_are_made_once_the_series_is_quiet(start_vireo: Callable[..., VireoProcess], tmp_path: Path) -> None:
    vireo = start_vireo(VIREO_DICOM_WORKERS="2")
    series = write_series(tmp_path / "ct", slices=24, rows=64, columns=64, patient_id="DOCS", seed=4242)
    sent = subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), *map(str, series.paths)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TCP_NODELAY": "1"})
    assert sent.returncode == 0, sent.stderr[-500:]
    assert "[receiver worker" in vireo.log_path.read_text(errors="replace"), "a worker served the association"
    client = DICOMwebClient(f"{vireo.url}/dicomweb")
    client._session.auth = ("admin", ADMIN_PASSWORD)

    # At once, before the pause the documents wait for: a query that reads them has them made first.
    assert len(stored_documents(vireo)) < len(series.sop_uids), "made later, not on the association's way"
    instances = client.search_for_instances(series.study_uid, series.series_uid, fields=["00200032"])
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(series.sop_uids)
    positions = {i["00080018"]["Value"][0]: i["00200032"]["Value"] for i in instances}  # only the documents hold it
    for path in series.paths:
        ds = dcmread(path)
        assert positions[ds.SOPInstanceUID] == [float(v) for v in ds.ImagePositionPatient]

    deadline = time.monotonic() + 15
    while len(documents := stored_documents(vireo)) < len(series.sop_uids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(documents) == sorted(series.sop_uids)
    for sop in series.sop_uids:
        assert documents[sop] == expected_document(vireo.data_dir / "pacs", sop, vireo.data_dir / "vireo.db")

    metadata = client.retrieve_series_metadata(series.study_uid, series.series_uid)
    assert sorted(m["00080018"]["Value"][0] for m in metadata) == sorted(series.sop_uids)
    assert all(m["0020000E"]["Value"] == [series.series_uid] for m in metadata)


def test_a_backfill_makes_each_missing_document_once_and_skips_an_unreadable_file(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'vireo.db'}")
    db.migrate()
    store = PacsStore(tmp_path / "pacs")
    indexer = IndexWriter(db)
    indexer.start()
    try:
        series = write_series(tmp_path / "src", slices=5, rows=32, columns=32, patient_id="BACK", seed=99)
        intake = Intake(store, indexer)
        for path in series.paths:
            intake.ingest(path.read_bytes(), "1.2.840.10008.1.2.1", Origin(dataset="x", calling_aet="T", called_aet="V", peer_address="127.0.0.1"))
        with db.engine.begin() as conn:
            conn.exec_driver_sql("delete from instance_document")  # as a worker indexes them
            (broken,) = conn.exec_driver_sql("select path from instance where sop_instance_uid = ?", (series.sop_uids[0],)).fetchone()
        (store.root / broken).write_bytes(b"not DICOM any more")
        backfill = DocumentBackfill(db, store, quiet_seconds=0.1)
        assert backfill.fill(series.series_uid) == 4
        assert backfill.fill(series.series_uid) == 0  # nothing left to make; the broken one is tried again, not made
        with db.engine.connect() as conn:
            kept = dict(conn.exec_driver_sql("select sop_instance_uid, document from instance_document").fetchall())
        assert sorted(kept) == sorted(series.sop_uids[1:])
        assert json.loads(kept[series.sop_uids[1]])["00080018"]["Value"] == [series.sop_uids[1]]
    finally:
        indexer.stop()
        db.dispose()


def test_documents_wait_for_a_pause_in_all_ingest_or_at_most_the_longest_wait(tmp_path: Path) -> None:
    backfill = DocumentBackfill(Database(f"sqlite:///{tmp_path / 'unused.db'}"), PacsStore(tmp_path / "pacs"), quiet_seconds=1.0, longest_wait=30.0)
    start = 1000.0  # whole and half seconds from here are exact in binary: `30.0 - 30.0` never comes out as 29.999...
    backfill.touch({"1.2.1"}, now=start)
    assert backfill.due(start + 0.5) == []
    backfill.touch({"1.2.2"}, now=start + 0.8)  # another series still receiving
    assert backfill.due(start + 1.5) == []  # 1.2.1 is quiet, but the receiver is not
    assert backfill.due(start + 1.9) == ["1.2.1", "1.2.2"]
    now = start + 2.0
    backfill.touch({"1.2.3"}, now=now)
    for second in range(1, 30):  # a receiver that never pauses, busy with another series
        backfill.touch({"1.2.4"}, now=now + second - 0.5)
        assert backfill.due(now + second) == []
    backfill.touch({"1.2.4"}, now=now + 29.5)
    assert backfill.due(now + 30.0) == ["1.2.3"]
