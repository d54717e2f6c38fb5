"""Bad data in the same association as good data: refused with a failure status, nothing else lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, StoragePresentationContexts, _config
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from tests.factories import not_dicom, truncate, without_sop_instance_uid, write_series
from tests.support.vireo import VireoProcess


@pytest.fixture(autouse=True)
def send_files_untouched() -> object:
    """Make pynetdicom send a file's bytes as they are (no decode/re-encode), so the damage reaches the receiver."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = before


def _associate(port: int, called: str) -> object:
    ae = AE(ae_title="BADSENDER")
    ae.requested_contexts = StoragePresentationContexts[:120]
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    return assoc


def test_bad_instances_are_refused_and_good_ones_kept(vireo: VireoProcess, tmp_path: Path) -> None:
    good = write_series(tmp_path / "good", modality="CT", slices=6, rows=64, columns=64, patient_id="BAD1", seed=500)
    spare = write_series(tmp_path / "spare", modality="CT", slices=3, rows=64, columns=64, patient_id="BAD1", seed=501)
    truncated = truncate(spare.paths[0], tmp_path / "bad" / "truncated.dcm", keep_fraction=0.6)
    no_uid = without_sop_instance_uid(spare.paths[1], tmp_path / "bad" / "no-uid.dcm")
    assoc = _associate(vireo.dicom_port, "BADMIX")
    statuses: dict[str, int] = {}
    try:
        for label, path in [("good0", good.paths[0]), ("truncated", truncated), ("good1", good.paths[1]),
                            ("no-uid", no_uid), ("good2", good.paths[2])]:
            status = assoc.send_c_store(path)
            statuses[label] = int(status.Status)
        # A dataset whose SOP class differs from the one in the request
        wrong_class = pydicom.dcmread(good.paths[3])
        wrong_class.SOPClassUID = MRImageStorage  # the file meta still says CT, so the request does too
        wrong_path = tmp_path / "bad" / "wrong-class.dcm"
        wrong_class.save_as(wrong_path)
        statuses["wrong-class"] = int(assoc.send_c_store(wrong_path).Status)
        for n in (3, 4, 5):
            statuses[f"good{n}"] = int(assoc.send_c_store(good.paths[n]).Status)
    finally:
        assoc.release()
    assert statuses["truncated"] == 0xC000, statuses  # cannot understand
    assert statuses["no-uid"] == 0xA900, statuses  # data set does not match SOP class (a Type 1 UID missing)
    assert statuses["wrong-class"] == 0xA900, statuses
    assert all(statuses[f"good{n}"] == 0 for n in range(6)), statuses
    page = vireo.series(dataset="BADMIX")
    assert page["total"] == 1 and page["items"][0]["instances"] == 6
    assert page["items"][0]["SeriesInstanceUID"] == good.series_uid
    stored = list((vireo.data_dir / "pacs").rglob("*.dcm"))
    stored_uids = {p.stem for p in stored}
    assert set(good.sop_uids) <= stored_uids
    assert spare.sop_uids[0] not in stored_uids  # the truncated one
    for path in stored:
        assert pydicom.dcmread(path).pixel_array.size > 0  # every stored file is whole
    assert CTImageStorage  # the good series is CT


def test_not_dicom_in_a_dcmsend_run(vireo: VireoProcess, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    good = write_series(folder, modality="MR", slices=5, rows=32, columns=32, patient_id="BAD2", seed=502)
    not_dicom(folder / "renamed.dcm", kind="text")
    not_dicom(folder / "noise.dcm", kind="random")
    result = subprocess.run(
        ["dcmsend", "-v", "127.0.0.1", str(vireo.dicom_port), "--scan-directories", "--no-halt", "--call", "MIXEDDIR",
         "--scan-pattern", "*.dcm", "--recurse", str(folder)],
        capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    # dcmsend itself skips what it cannot read as DICOM; everything it sent is stored
    assert "with status SUCCESS  : 5" in output, output
    page = vireo.series(dataset="MIXEDDIR")
    assert page["total"] == 1 and page["items"][0]["instances"] == 5
    assert page["items"][0]["SeriesInstanceUID"] == good.series_uid


def test_garbage_bytes_over_the_wire_are_refused(vireo: VireoProcess, tmp_path: Path) -> None:
    """A non-DICOM payload inside a C-STORE (a broken sender) gets 'cannot understand'."""
    good = write_series(tmp_path / "g", modality="CT", slices=2, rows=32, columns=32, patient_id="BAD3", seed=503)
    fake = tmp_path / "fake.dcm"
    # Valid file meta in front of garbage
    ds = pydicom.dcmread(good.paths[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(fake, enforce_file_format=True)
    raw = fake.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")
    fake.write_bytes(raw[:meta_end] + b"this is not a DICOM data set at all" * 3)
    assoc = _associate(vireo.dicom_port, "GARBAGE")
    try:
        bad = int(assoc.send_c_store(fake).Status)
        ok = int(assoc.send_c_store(good.paths[1]).Status)
    finally:
        assoc.release()
    assert bad == 0xC000 and ok == 0
    assert vireo.series(dataset="GARBAGE")["items"][0]["instances"] == 1


def test_a_pdu_header_announcing_gigabytes_allocates_nothing(vireo: VireoProcess) -> None:
    """The PDU length comes from the peer: a lie about it must not make Vireo allocate it."""
    import socket
    import time

    def rss_mb() -> float:
        status = Path(f"/proc/{vireo.process.pid}/status").read_text()  # type: ignore[union-attr]
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024

    before = rss_mb()
    peers = []
    for _ in range(4):
        peer = socket.create_connection(("127.0.0.1", vireo.dicom_port))
        peer.sendall(b"\x01\x00\xff\xff\xff\xf0" + b"\x00" * 64)  # A-ASSOCIATE-RQ claiming 4 GiB
        peers.append(peer)
    time.sleep(1.5)
    assert rss_mb() - before < 200
    for peer in peers:
        peer.close()
    assert vireo.series()["total"] >= 0  # still serving
