"""Kill Vireo with SIGKILL in the middle of a transfer: every acknowledged instance survives."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.factories import write_series
from tests.support.vireo import VireoProcess


def test_sigkill_mid_transfer_loses_nothing_acknowledged(start_vireo: Callable[..., VireoProcess], tmp_path: Path) -> None:
    vireo = start_vireo()
    series = write_series(tmp_path / "src", modality="CT", slices=300, rows=256, columns=256, patient_id="KILL", seed=600)
    acknowledged: list[str] = []
    enough = threading.Event()

    def send() -> None:
        ae = AE(ae_title="KILLTEST")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", vireo.dicom_port, ae_title="DURABLE")
        try:
            for path, uid in zip(series.paths, series.sop_uids):
                status = assoc.send_c_store(path)
                if status and getattr(status, "Status", None) == 0:
                    acknowledged.append(uid)
                else:
                    return  # the receiver is gone
                if len(acknowledged) == 60:
                    enough.set()
        finally:
            enough.set()
            if assoc.is_established:
                assoc.abort()

    sender = threading.Thread(target=send)
    sender.start()
    assert enough.wait(timeout=120)
    vireo.kill()
    sender.join(timeout=60)
    assert 60 <= len(acknowledged) < 300, "the kill must land in the middle of the transfer"

    vireo.start()
    pacs = vireo.data_dir / "pacs"
    files = {p.stem: p for p in pacs.rglob("*.dcm") if ".incoming" not in p.parts}
    for uid in acknowledged:
        assert uid in files, f"acknowledged instance {uid} is missing"
    for path in files.values():  # no partial file under a final name
        ds = pydicom.dcmread(path)
        assert ds.pixel_array.shape == (256, 256)
    assert not list((pacs / ".incoming").iterdir()), "partial files are cleaned up at start-up"
    page = vireo.series(dataset="DURABLE")
    # the index agrees with the files: every stored file is indexed, nothing indexed lacks a file
    assert page["total"] == 1
    assert page["items"][0]["instances"] == len(files)
