"""The receiver's control channel on a real Unix socket pair: framing, long messages, passed sockets."""

from __future__ import annotations

import os
import socket
import threading

from ingest.worker_channel import _RECEIVE_SIZE, Channel, ChannelClosed


def test_messages_longer_than_one_read_arrive_whole_and_in_order() -> None:
    left, right = socket.socketpair()
    sender, receiver = Channel(left), Channel(right)
    messages = [("index", n, "x" * size) for n, size in enumerate((10, 3 * _RECEIVE_SIZE + 7, 0, _RECEIVE_SIZE, 5))]
    writer = threading.Thread(target=lambda: [sender.send(m) for m in messages])
    writer.start()
    received = [receiver.receive() for _ in messages]
    writer.join()
    assert received == [(m, None) for m in messages]
    sender.close()
    try:
        receiver.receive()
    except ChannelClosed:
        pass
    else:
        raise AssertionError("a closed channel must say so")
    receiver.close()


def test_a_passed_socket_comes_with_its_own_message() -> None:
    left, right = socket.socketpair()
    sender, receiver = Channel(left), Channel(right)
    a, b = socket.socketpair()
    sender.send(("index", 1, "before"))
    sender.send(("assoc", 7, "y" * (2 * _RECEIVE_SIZE)), fd=a.fileno())
    sender.send(("released", 7))
    assert receiver.receive() == (("index", 1, "before"), None)
    message, fd = receiver.receive()
    assert message[:2] == ("assoc", 7) and fd is not None
    os.write(fd, b"through the passed socket")
    assert b.recv(100) == b"through the passed socket"
    os.close(fd)
    assert receiver.receive() == (("released", 7), None)
    for closable in (a, b, sender, receiver):
        closable.close()
