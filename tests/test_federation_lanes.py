"""Sync lanes: a slow remote holds only its own lane, and polls of one remote are shared, never piled up."""

from __future__ import annotations

import threading
import time
from typing import Any

from federation.lanes import SyncLanes


def test_a_slow_lane_never_delays_another_and_queued_polls_are_shared() -> None:
    release = threading.Event()
    calls: dict[str, int] = {}

    def poll(name: str) -> dict[str, Any]:
        calls[name] = calls.get(name, 0) + 1
        if name == "slow":
            release.wait(10)
        return {"ok": True, "name": name}

    lanes = SyncLanes(poll)
    try:
        slow = lanes.request("slow")
        time.sleep(0.1)  # the slow poll is running now
        fast = lanes.request("fast")
        assert fast.result(timeout=2) == {"ok": True, "name": "fast"} and not slow.done()
        queued = [lanes.request("slow") for _ in range(5)]  # behind the running one: all share one poll
        assert all(q is queued[0] for q in queued) and queued[0] is not slow
        lanes.request_if_idle("slow")  # busy: the automatic sync adds nothing
        release.set()
        assert slow.result(timeout=2)["ok"] and queued[0].result(timeout=2)["ok"]
        assert calls == {"slow": 2, "fast": 1}
    finally:
        release.set()
        lanes.close()
    assert isinstance(lanes.request("fast").exception(timeout=1), RuntimeError)  # closed: refused, not hanging


def test_a_failing_poll_reaches_whoever_waits_for_it() -> None:
    def poll(name: str) -> dict[str, Any]:
        raise LookupError(name)

    lanes = SyncLanes(poll)
    try:
        assert isinstance(lanes.request("gone").exception(timeout=2), LookupError)
        assert lanes.request("gone").exception(timeout=2) is not None  # the lane still works afterwards
    finally:
        lanes.close()
