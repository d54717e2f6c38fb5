"""The receiver's admission rules (ingest.dicom_admission) on real socket pairs: what the slow-loris test relies on, case by case."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from ingest.dicom_admission import MAX_ASSOCIATE_RQ_LENGTH, Admission, AdmissionLimits, read_associate_rq


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for ours, theirs in made:
        ours.close()
        theirs.close()


def pair(pairs: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    made = socket.socketpair()
    pairs.append(made)
    return made


def shut(sock: socket.socket) -> bool:
    """Whether our end was shut down (reading it gives end of file at once)."""
    sock.settimeout(0.5)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body)) + body


def test_a_whole_request_is_read_and_the_socket_keeps_its_timeout(pairs: list) -> None:
    ours, theirs = pair(pairs)
    ours.settimeout(None)
    request = pdu(0x01, b"x" * 300)
    theirs.sendall(request)
    assert read_associate_rq(ours, 2.0) == request
    assert ours.gettimeout() is None


@pytest.mark.parametrize("first", [pdu(0x04, b"data"), pdu(0x07, b"\0\0\0\0"), struct.pack(">BBL", 0x01, 0, MAX_ASSOCIATE_RQ_LENGTH + 1), b"\x01\x00"])
def test_anything_but_a_sane_request_is_refused(pairs: list, first: bytes) -> None:
    ours, theirs = pair(pairs)
    theirs.sendall(first)
    theirs.shutdown(socket.SHUT_WR)
    assert read_associate_rq(ours, 2.0) is None


def test_a_trickled_request_is_given_up_at_the_deadline(pairs: list) -> None:
    ours, theirs = pair(pairs)
    request = pdu(0x01, b"y" * 100)
    stop = threading.Event()

    def trickle() -> None:
        for byte in request[:-1]:
            if stop.wait(0.05):
                return
            theirs.send(bytes([byte]))

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    started = time.monotonic()
    assert read_associate_rq(ours, 1.0) is None
    assert 0.9 < time.monotonic() - started < 2.0  # each byte arrived in time, the whole did not
    stop.set()
    sender.join()


def test_past_the_cap_the_oldest_waiting_connection_of_that_peer_is_closed(pairs: list) -> None:
    admission = Admission(AdmissionLimits(max_connections_per_peer=3))
    mine = [pair(pairs) for _ in range(3)]
    other = pair(pairs)
    for ours, _ in mine:
        assert admission.admit(ours, "10.0.0.1")
    assert admission.admit(other[0], "10.0.0.2")
    assert admission.associated(mine[0][0])  # the oldest is an association: it stays
    newest = pair(pairs)
    assert admission.admit(newest[0], "10.0.0.1")
    assert [shut(theirs) for _, theirs in mine] == [False, True, False]
    assert not shut(other[1])
    assert admission.open_connections("10.0.0.1") == 3
    assert not admission.associated(mine[1][0])  # an evicted connection's request comes too late


def test_a_peer_whose_connections_are_all_associations_is_refused_until_one_ends(pairs: list) -> None:
    admission = Admission(AdmissionLimits(max_connections_per_peer=2))
    held = [pair(pairs)[0] for _ in range(2)]
    for sock in held:
        assert admission.admit(sock, "10.0.0.1") and admission.associated(sock)
    extra = pair(pairs)[0]
    assert not admission.admit(extra, "10.0.0.1")
    admission.release(held[0])
    admission.release(held[0])  # twice is once
    assert admission.open_connections("10.0.0.1") == 1
    assert admission.admit(extra, "10.0.0.1")


def test_waiting_connections_of_all_peers_are_bounded(pairs: list) -> None:
    admission = Admission(AdmissionLimits(max_connections_per_peer=10, max_waiting=4))
    made = [pair(pairs) for _ in range(5)]
    for i, (ours, _) in enumerate(made):
        assert admission.admit(ours, f"10.0.0.{i}")
    assert [shut(theirs) for _, theirs in made] == [True, False, False, False, False]
    admission.close_waiting()
    assert all(shut(theirs) for _, theirs in made[1:])
    assert all(admission.open_connections(f"10.0.0.{i}") == 0 for i in range(5))
