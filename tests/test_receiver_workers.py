"""Receiver worker processes: storage associations served on every core, nothing lost when one dies.

Real DCMTK senders against a real Vireo process with its default workers (one per core).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.factories import SeriesFiles, write_series
from tests.support.vireo import VireoProcess

DEFAULT_WORKERS = max(2, os.cpu_count() or 1)  # the default, one per core (and at least two, to see them share)
_WORKER = re.compile(r"\[receiver worker (\d+)\]: Accepting Association")


def worker_pids(vireo: VireoProcess) -> set[int]:
    """The live receiver worker processes of a Vireo process (its children running ingest.receiver_worker)."""
    assert vireo.process is not None
    out = subprocess.run(["pgrep", "-P", str(vireo.process.pid), "-f", "ingest.receiver_worker"], capture_output=True, text=True)
    return {int(pid) for pid in out.stdout.split()}


def dcmsend(port: int, called: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dcmsend", "-v", "127.0.0.1", str(port), "--scan-directories", "--call", called, "--scan-pattern", "*.dcm", "--recurse", str(directory)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TCP_NODELAY": "1"},
    )


@pytest.fixture(scope="module")
def four_series(tmp_path_factory: pytest.TempPathFactory) -> list[SeriesFiles]:
    root = tmp_path_factory.mktemp("workers-src")
    return [write_series(root / f"s{n}", slices=40, rows=64, columns=64, patient_id=f"W{n}", seed=700 + n, series_number=n + 1) for n in range(4)]


def test_four_associations_are_served_by_every_worker_and_searchable_when_released(
    start_vireo: Callable[..., VireoProcess], four_series: list[SeriesFiles]
) -> None:
    vireo = start_vireo(VIREO_DICOM_WORKERS=str(DEFAULT_WORKERS))
    results: list[subprocess.CompletedProcess[str]] = []
    senders = [threading.Thread(target=lambda s=s: results.append(dcmsend(vireo.dicom_port, "WORKERS", s.paths[0].parent))) for s in four_series]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=300)
    assert all(r.returncode == 0 and "with status SUCCESS  : 40" in r.stdout + r.stderr for r in results), [r.stdout[-400:] for r in results]
    # No waiting: a sender's release is answered only once what it sent is indexed.
    page = vireo.series(dataset="WORKERS")
    assert sum(item["instances"] for item in page["items"]) == 160
    assert page["total"] == 4
    pids = worker_pids(vireo)
    assert len(pids) == DEFAULT_WORKERS
    served = {int(pid) for pid in _WORKER.findall(vireo.log_path.read_text(errors="replace"))}
    assert served == pids, "every worker served some of the four associations"


@pytest.mark.slow  # a worker restart and a resend: ~8 s
def test_a_killed_worker_loses_nothing_acknowledged_and_is_replaced(start_vireo: Callable[..., VireoProcess], tmp_path: Path) -> None:
    vireo = start_vireo(VIREO_DICOM_WORKERS=str(DEFAULT_WORKERS))
    series = write_series(tmp_path / "big", slices=300, rows=128, columns=128, patient_id="WKILL", seed=710)
    acknowledged: list[str] = []
    enough = threading.Event()

    def send() -> None:
        ae = AE(ae_title="WKILLTEST")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", vireo.dicom_port, ae_title="WKILL")
        try:
            for path, uid in zip(series.paths, series.sop_uids):
                status = assoc.send_c_store(path) if assoc.is_established else None
                if not status or getattr(status, "Status", None) != 0:
                    return  # its worker is gone
                acknowledged.append(uid)
                if len(acknowledged) == 50:
                    enough.set()
        finally:
            enough.set()
            if assoc.is_established:
                assoc.abort()

    sender = threading.Thread(target=send)
    sender.start()
    assert enough.wait(timeout=60)
    before = worker_pids(vireo)
    busy = max(before, key=_cpu_seconds)
    os.kill(busy, signal.SIGKILL)
    sender.join(timeout=60)
    assert 50 <= len(acknowledged) < 300
    stored = {p.stem for p in (vireo.data_dir / "pacs").rglob("*.dcm") if ".incoming" not in p.parts}
    assert set(acknowledged) <= stored
    # What the dead worker stored but never handed over is indexed without a resend.
    deadline = time.monotonic() + 10
    while (indexed := vireo.series(dataset="WKILL")["items"][0]["instances"]) < len(stored) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert indexed == len(stored)

    deadline = time.monotonic() + 30
    while len(worker_pids(vireo) - {busy}) < len(before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(worker_pids(vireo) - {busy}) == len(before), "the killed worker is started again"
    again = dcmsend(vireo.dicom_port, "WKILL", series.paths[0].parent)
    assert "with status SUCCESS  : 300" in again.stdout + again.stderr
    page = vireo.series(dataset="WKILL")
    assert page["items"][0]["instances"] == 300  # each instance once, the acknowledged ones indexed too


@pytest.mark.slow  # a restart after the shutdown grace, then a stop: ~10 s
def test_a_worker_signalled_with_its_process_group_is_no_failure(start_vireo: Callable[..., VireoProcess], tmp_path: Path) -> None:
    """SIGTERM to the whole group (systemd, the bench, Ctrl-C) ends the workers first: no "exited ... starting it again"."""
    vireo = start_vireo(VIREO_DICOM_WORKERS="2")
    series = write_series(tmp_path / "s", slices=4, rows=32, columns=32, patient_id="WTERM", seed=711)
    assert "with status SUCCESS  : 4" in (lambda r: r.stdout + r.stderr)(dcmsend(vireo.dicom_port, "WTERM", series.paths[0].parent))
    workers = worker_pids(vireo)
    assert len(workers) == 2
    # One worker alone signalled: a failure after all (the receiver is not stopping), said and repaired.
    alone = min(workers)
    os.kill(alone, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while len(worker_pids(vireo) - {alone}) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(worker_pids(vireo) - {alone}) == 2, "the signalled worker is started again"
    assert "exited (status -15)" in vireo.log_path.read_text(errors="replace")
    # The whole group signalled, workers first as the kernel may deliver it: the receiver stops, and says nothing of failures.
    before = vireo.log_path.read_text(errors="replace")
    assert vireo.process is not None
    for pid in [*worker_pids(vireo), vireo.process.pid]:
        os.kill(pid, signal.SIGTERM)
    vireo.process.wait(timeout=30)
    after = vireo.log_path.read_text(errors="replace")[len(before):]
    assert "starting it again" not in after, after


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_association_limit_counts_every_worker(start_vireo: Callable[..., VireoProcess]) -> None:
    vireo = start_vireo(VIREO_DICOM_MAX_ASSOCIATIONS="2")
    ae = AE(ae_title="LIMIT")
    ae.add_requested_context(CTImageStorage)
    held = [ae.associate("127.0.0.1", vireo.dicom_port) for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)
        third = ae.associate("127.0.0.1", vireo.dicom_port)
        assert third.is_rejected, "past the limit over all workers, an association is rejected"
    finally:
        for assoc in held:
            assoc.release()
    # A released association's place is free again once its worker has told the receiver (a moment later).
    deadline = time.monotonic() + 5
    while not (again := ae.associate("127.0.0.1", vireo.dicom_port)).is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert again.is_established
    again.release()


def test_an_idle_association_costs_no_cpu_and_an_echo_is_answered_at_once(start_vireo: Callable[..., VireoProcess]) -> None:
    """The association reactor waits for work (ingest.dicom_transport._ReactorClock) instead of polling every millisecond.

    pynetdicom's reactor turned 1000 times a second per association, each turn taking the
    worker's GIL from the threads receiving; waiting on its queues, an idle association costs
    next to nothing, and a request still wakes it at once.
    """
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    vireo = start_vireo()
    ae = AE(ae_title="IDLER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", vireo.dicom_port, ae_title="VIREO")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0  # the association is now a worker's
        before = {pid: _cpu_seconds(pid) for pid in worker_pids(vireo)}
        time.sleep(3.0)
        idle_cpu = sum(_cpu_seconds(pid) - cpu for pid, cpu in before.items())
        # Polling every millisecond cost ~130 ms of CPU in 3 s here; waiting 10-20 ms (its timers and the socket wait turn every 50 ms).
        assert idle_cpu <= 0.06, f"an idle association used {idle_cpu * 1000:.0f} ms of CPU in 3 s"
        latencies = []
        for _ in range(30):
            start = time.perf_counter()
            assert assoc.send_c_echo().Status == 0
            latencies.append(time.perf_counter() - start)
        latencies.sort()
        # A reactor nobody woke would answer within its 50 ms idle wait: a median of ~25 ms.
        assert latencies[len(latencies) // 2] < 0.01, f"C-ECHO median {latencies[len(latencies) // 2] * 1000:.1f} ms"
    finally:
        assoc.release()
