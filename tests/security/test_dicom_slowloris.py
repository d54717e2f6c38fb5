"""Slow-loris on the DICOM port of a real Vireo, from 127.0.0.1 like the senders: dcmsend keeps getting in.

The attacking connections send nothing, or trickle a valid A-ASSOCIATE-RQ one byte at a time,
never its last byte. Before the receiver bounded the time to a complete request, sixteen such
connections held every association slot (30 s each, a trickled one for ever) and dcmsend was
refused. Now:

* a connection without its whole A-ASSOCIATE-RQ is closed at the deadline (5 s);
* one peer address holds at most 32 connections: past that its oldest still-waiting one is closed;
* through fifty connections held and reopened for twenty seconds, every dcmsend succeeds in seconds,
  four at once from the same host too.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pynetdicom import AE, build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from ingest.dicom_admission import DEFAULT_ASSOCIATE_DEADLINE, DEFAULT_MAX_CONNECTIONS_PER_PEER
from tests.factories import SeriesFiles, write_series
from tests.support.vireo import VireoProcess

TRICKLE_INTERVAL = 0.5  # one byte of the A-ASSOCIATE-RQ every half second
TICK = 0.1  # the attacker looks at its connections, and reopens closed ones, this often
MAX_CONNECTS = 5000  # the attack is bounded in count as well as time
SEND_LIMIT = 10.0  # a small series on loopback takes about half a second; room for a loaded CI machine
SLACK = 3.0  # how late after the deadline a close may be seen on a loaded machine


def associate_rq(called: str = "VIREO", calling: str = "LORIS") -> bytes:
    """A complete, valid A-ASSOCIATE-RQ PDU (CT storage), as a real sender opens with."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    context = build_context(CTImageStorage)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.4"
    primitive.user_information = [length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source, 0))
    sock.setblocking(False)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end closed (or reset) the connection; never blocks."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@dataclass
class Slot:
    """One attacking connection: silent, or trickling its A-ASSOCIATE-RQ."""

    trickle: bool
    sock: socket.socket | None = None
    opened: float = 0.0
    sent: int = 0
    next_byte: float = 0.0


@dataclass
class SlowLoris:
    """Holds `count` connections to the port (every second one trickling) until stopped or `seconds` pass.

    With `reopen`, each connection the server closes is opened again on the next tick.
    """

    port: int
    count: int
    seconds: float
    reopen: bool = True
    rq: bytes = field(default_factory=associate_rq)
    lifetimes: list[float] = field(default_factory=list)  # seconds from connect to the server's close
    answered: int = 0  # bytes the server sent back: it must never answer an incomplete request
    connects: int = 0
    still_open: list[float] = field(default_factory=list)  # ages of the connections open at the end
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SlowLoris:
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)
        self._thread.start()
        return self

    def join(self) -> SlowLoris:
        assert self._thread is not None
        self._thread.join(timeout=self.seconds + 10)
        return self

    def stop(self) -> SlowLoris:
        self._stop.set()
        return self.join()

    def _open(self, slot: Slot) -> None:
        if self.connects >= MAX_CONNECTS:
            return
        self.connects += 1
        try:
            slot.sock = connect(self.port)
        except OSError:
            return
        slot.opened = slot.next_byte = time.monotonic()
        slot.sent = 0

    def _closed(self, slot: Slot) -> None:
        assert slot.sock is not None
        self.lifetimes.append(time.monotonic() - slot.opened)
        slot.sock.close()
        slot.sock = None

    def _run(self) -> None:
        slots = [Slot(trickle=i % 2 == 1) for i in range(self.count)]
        for slot in slots:
            self._open(slot)
        end = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < end:
            tick = time.monotonic() + TICK
            for slot in slots:
                if slot.sock is not None and closed_by_peer(slot.sock):
                    with contextlib.suppress(OSError):
                        self.answered += len(slot.sock.recv(4096))
                    self._closed(slot)
                if slot.sock is None:
                    if self.reopen:
                        self._open(slot)
                    continue
                if slot.trickle and time.monotonic() >= slot.next_byte and slot.sent < len(self.rq) - 1:  # never the last byte
                    try:
                        slot.sock.send(self.rq[slot.sent : slot.sent + 1])
                    except OSError:
                        self._closed(slot)
                        continue
                    slot.sent += 1
                    slot.next_byte = time.monotonic() + TRICKLE_INTERVAL
            if not self.reopen and all(slot.sock is None for slot in slots):
                break
            time.sleep(max(0.0, tick - time.monotonic()))
        now = time.monotonic()
        self.still_open = [now - slot.opened for slot in slots if slot.sock is not None]
        for slot in slots:
            if slot.sock is not None:
                slot.sock.close()


def dcmsend(port: int, directory: Path, calling: str) -> tuple[bool, float, str]:
    started = time.monotonic()
    result = subprocess.run(
        ["dcmsend", "127.0.0.1", str(port), "--aetitle", calling, "--call", "LORIS-TEST",
         "--scan-directories", "--scan-pattern", "*.dcm", "--recurse", str(directory)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return result.returncode == 0, time.monotonic() - started, result.stdout + result.stderr


@pytest.fixture(scope="module")
def small_series(tmp_path_factory: pytest.TempPathFactory) -> SeriesFiles:
    return write_series(tmp_path_factory.mktemp("loris-series"), modality="CT", slices=5, rows=32, columns=32, patient_id="LORIS1", seed=17)


def test_connections_without_a_complete_request_are_closed_at_the_deadline(vireo: VireoProcess, small_series: SeriesFiles) -> None:
    """Twenty connections (below the per-peer cap) that never complete their request: each closed at 5 s, none answered."""
    attack = SlowLoris(vireo.dicom_port, 20, seconds=DEFAULT_ASSOCIATE_DEADLINE + SLACK + 2, reopen=False).start()
    time.sleep(1)
    ok, seconds, output = dcmsend(vireo.dicom_port, small_series.paths[0].parent, "WHILE-WAITING")
    attack.join()
    assert ok and seconds < SEND_LIMIT, output
    assert not attack.still_open, f"{len(attack.still_open)} connections still open after {attack.seconds:.0f} s"
    assert len(attack.lifetimes) == 20
    assert min(attack.lifetimes) > DEFAULT_ASSOCIATE_DEADLINE - 0.5, f"closed after {min(attack.lifetimes):.1f} s"
    assert max(attack.lifetimes) < DEFAULT_ASSOCIATE_DEADLINE + SLACK, f"closed only after {max(attack.lifetimes):.1f} s"
    assert attack.answered == 0


def test_a_peer_address_holds_at_most_its_cap_of_connections(vireo: VireoProcess) -> None:
    """40 waiting connections from 127.0.0.1: the 8 oldest are closed; 127.0.0.2's own 10 are untouched."""
    cap = DEFAULT_MAX_CONNECTIONS_PER_PEER
    first: list[socket.socket] = []
    other: list[socket.socket] = []
    try:
        for _ in range(cap + 8):
            first.append(connect(vireo.dicom_port))
            time.sleep(0.01)  # accepted in the order they were opened
        other += [connect(vireo.dicom_port, source="127.0.0.2") for _ in range(10)]
        time.sleep(1.5)
        closed = [i for i, sock in enumerate(first) if closed_by_peer(sock)]
        assert closed == list(range(8)), f"closed: {closed}"
        assert not any(closed_by_peer(sock) for sock in other)
    finally:
        for sock in first + other:
            sock.close()


def test_the_cap_is_a_setting_and_refuses_only_past_open_associations(start_vireo: Callable[..., VireoProcess]) -> None:
    """VIREO_DICOM_MAX_CONNECTIONS_PER_PEER=2: a waiting connection makes room; two associations fill the cap until they end."""
    vireo = start_vireo(VIREO_DICOM_MAX_CONNECTIONS_PER_PEER="2")
    waiting = [connect(vireo.dicom_port) for _ in range(3)]
    time.sleep(1)
    assert [closed_by_peer(sock) for sock in waiting] == [True, False, False]
    for sock in waiting:
        sock.close()
    ae = AE("CAPTEST")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", vireo.dicom_port) for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)
        extra = connect(vireo.dicom_port)
        time.sleep(1)
        assert closed_by_peer(extra), "a third connection was kept while two associations filled the cap"
        extra.close()
    finally:
        for assoc in held:
            assoc.release()
    deadline = time.monotonic() + 5
    while True:  # the ended associations gave their places back
        assoc = ae.associate("127.0.0.1", vireo.dicom_port)
        if assoc.is_established:
            assert assoc.send_c_echo().Status == 0
            assoc.release()
            break
        assert time.monotonic() < deadline, "the address stayed at its cap after its associations ended"
        time.sleep(0.2)


@pytest.mark.slow
def test_dcmsend_keeps_succeeding_through_a_slowloris_of_50_connections(vireo: VireoProcess, small_series: SeriesFiles) -> None:
    directory = small_series.paths[0].parent
    attack = SlowLoris(vireo.dicom_port, 50, seconds=22).start()
    time.sleep(2)  # every connection is open (and, before the fix, every association slot taken)
    sends: list[tuple[bool, float, str]] = []
    rounds = 0
    try:
        end = time.monotonic() + 18
        with ThreadPoolExecutor(4) as pool:
            while time.monotonic() < end:
                parallel = 4 if rounds % 3 == 2 else 1  # four concurrent associations from this host must work too
                sends += list(pool.map(lambda i: dcmsend(vireo.dicom_port, directory, f"SENDER{i}"), range(parallel)))
                rounds += 1
                time.sleep(0.5)
    finally:
        attack.stop()

    failed = [out for ok, _, out in sends if not ok]
    assert not failed, f"{len(failed)} of {len(sends)} dcmsend runs failed under the slow-loris; first:\n{failed[0]}"
    assert rounds >= 6 and len(sends) >= 10
    slowest = max(seconds for _, seconds, _ in sends)
    assert slowest < SEND_LIMIT, f"a dcmsend took {slowest:.1f} s"
    # The attack held its connections all along: the receiver closed them (at the deadline, or evicted past the cap).
    assert len(attack.lifetimes) >= 50, f"only {len(attack.lifetimes)} connections closed by the receiver"
    assert max(attack.lifetimes + attack.still_open) < DEFAULT_ASSOCIATE_DEADLINE + SLACK
    assert attack.answered == 0
    page = vireo.wait_for_instances(len(small_series.paths), dataset="LORIS-TEST")
    assert sum(item["instances"] for item in page["items"]) == len(small_series.paths)
