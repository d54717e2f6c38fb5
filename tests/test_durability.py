"""Kill Vireo with SIGKILL in the middle of four concurrent transfers: every acknowledged instance survives.

Success means durable, not yet indexed (ingest.streaming_dul): after the restart the files and
the index agree, because the start-up recovery indexes what was linked but not committed. The
senders run in the receiver's worker processes (the default), and the same holds on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.factories import SeriesFiles, write_series
from tests.support.vireo import VireoProcess

SENDERS = 4
SLICES = 120
KILL_AFTER = 100  # acknowledged instances, over all senders


@pytest.fixture(scope="module")
def four_series(tmp_path_factory: pytest.TempPathFactory) -> list[SeriesFiles]:
    root = tmp_path_factory.mktemp("durable-src")
    return [
        write_series(root / f"s{n}", modality="CT", slices=SLICES, rows=128, columns=128, patient_id=f"KILL{n}", seed=600 + n, series_number=n + 1)
        for n in range(SENDERS)
    ]


def _send(port: int, series: SeriesFiles, acknowledged: list[str], lock: threading.Lock, enough: threading.Event) -> None:
    ae = AE(ae_title="KILLTEST")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="DURABLE")
    try:
        for path, uid in zip(series.paths, series.sop_uids):
            status = assoc.send_c_store(path) if assoc.is_established else None
            if not status or getattr(status, "Status", None) != 0:
                return  # the receiver is gone
            with lock:
                acknowledged.append(uid)
                if len(acknowledged) >= KILL_AFTER:
                    enough.set()
    finally:
        if assoc.is_established:
            assoc.abort()


@pytest.mark.slow  # two Vireo starts per database and 4 x 120 instances: ~10 s each
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_sigkill_mid_four_transfers_loses_nothing_acknowledged(
    database: str, start_vireo: Callable[..., VireoProcess], four_series: list[SeriesFiles], request: pytest.FixtureRequest
) -> None:
    env = {"VIREO_DATABASE_URL": request.getfixturevalue("postgres_url")} if database == "postgresql" else {}
    vireo = start_vireo(VIREO_DICOM_WORKERS="-1", **env)  # the default: one worker per core
    acknowledged: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()
    senders = [threading.Thread(target=_send, args=(vireo.dicom_port, s, acknowledged, lock, enough)) for s in four_series]
    for sender in senders:
        sender.start()
    assert enough.wait(timeout=120)
    vireo.kill()
    for sender in senders:
        sender.join(timeout=60)
    total = SENDERS * SLICES
    assert KILL_AFTER <= len(acknowledged) < total, "the kill must land in the middle of the transfers"

    vireo.start()
    pacs = vireo.data_dir / "pacs"
    files = {p.stem: p for p in pacs.rglob("*.dcm") if ".incoming" not in p.parts}
    missing = [uid for uid in acknowledged if uid not in files]
    assert not missing, f"{len(missing)} acknowledged instances are missing"
    for path in files.values():  # no partial file under a final name
        assert pydicom.dcmread(path).pixel_array.shape == (128, 128)
    assert not list((pacs / ".incoming").iterdir()), "partial files are cleaned up at start-up"
    # The index equals the files: every stored file is indexed, nothing indexed lacks a file.
    deadline = time.monotonic() + 1.0
    while True:
        page = vireo.series(dataset="DURABLE")
        indexed = sum(item["instances"] for item in page["items"])
        if indexed == len(files) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert indexed == len(files), (indexed, len(files))
    assert page["total"] == len({p.parent for p in files.values()})
