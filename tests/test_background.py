"""The loop thread and quiet-series bookkeeping the background services share (core.background)."""

from __future__ import annotations

import threading
import time

import pytest

from core.background import QuietSeries, WakeableLoop


def test_a_failing_step_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    done = threading.Event()

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        done.set()

    loop = WakeableLoop("test-loop", step, "the test step failed", period=0.05, pause_after_failure=0.05)
    loop.start()
    try:
        loop.wake()
        assert done.wait(5), "the loop stopped after its first failing step"
    finally:
        loop.stop()
    assert "the test step failed" in caplog.text
    assert loop.stopping


def test_stop_waits_for_the_step_under_way() -> None:
    inside = threading.Event()
    ended: list[bool] = []

    def step() -> None:
        inside.set()
        time.sleep(0.3)
        ended.append(True)

    loop = WakeableLoop("test-loop", step, "failed", period=0.01)
    loop.start()
    assert inside.wait(5)
    loop.stop()
    assert ended == [True]


def test_a_series_is_quiet_only_after_its_last_instance_and_asking_does_not_postpone() -> None:
    series = QuietSeries()
    series.touch({"1.1", "1.2"}, now=10.0)
    series.touch({"1.2"}, now=12.0)
    assert series.take_quiet(3.0, now=12.5) == []
    assert series.take_quiet(3.0, now=13.0) == ["1.1"]
    series.note("1.2", now=14.0)  # already waiting since 12.0: not postponed
    assert series.take_quiet(3.0, now=15.0) == ["1.2"]
    assert not series
    series.note("1.3", now=20.0)
    assert series.take_all() == {"1.3": 20.0}
    assert not series
