"""One lane per remote: a poll of one remote never waits for another's, and polls of one remote never pile up.

Each lane is one daemon thread that runs the polls of its remote one after the other. Asking
a lane for a poll gives the next poll that starts from now: while one is queued, every caller
shares it (a job-status push, the automatic sync and "Sync now" in the same second make one
poll). A remote that takes its whole deadline to answer holds its own lane, and only that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

Poll = Callable[[str], dict[str, Any]]


class _Lane:
    def __init__(self, name: str, poll: Poll) -> None:
        self.name = name
        self._poll = poll
        self._changed = threading.Condition()
        self._queued: Future[dict[str, Any]] | None = None
        self._running = False
        self._closed = False
        threading.Thread(target=self._work, name=f"federation-lane-{name}", daemon=True).start()

    def request(self) -> Future[dict[str, Any]]:
        with self._changed:
            if self._closed:
                refused: Future[dict[str, Any]] = Future()
                refused.set_exception(RuntimeError("federation is stopping"))
                return refused
            if self._queued is None:
                self._queued = Future()
                self._changed.notify()
            return self._queued

    @property
    def busy(self) -> bool:
        with self._changed:
            return self._running or self._queued is not None

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _work(self) -> None:
        while True:
            with self._changed:
                while self._queued is None and not self._closed:
                    self._changed.wait()
                if self._closed:
                    if self._queued is not None:
                        self._queued.cancel()
                    return
                future, self._queued = self._queued, None
                self._running = True
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(self._poll(self.name))
                    except BaseException as exc:  # handed to whoever waits for this poll
                        future.set_exception(exc)
            finally:
                with self._changed:
                    self._running = False


class SyncLanes:
    """The lanes of every remote, created on first use."""

    def __init__(self, poll: Poll) -> None:
        self._poll = poll
        self._lanes: dict[str, _Lane] = {}
        self._guard = threading.Lock()
        self._closed = False

    def _lane(self, name: str) -> _Lane:
        with self._guard:
            lane = self._lanes.get(name)
            if lane is None:
                lane = _Lane(name, self._poll)
                if self._closed:
                    lane.close()
                else:
                    self._lanes[name] = lane
            return lane

    def request(self, name: str) -> Future[dict[str, Any]]:
        """The next poll of `name` that starts from now (shared with anyone else asking before it starts)."""
        return self._lane(name).request()

    def request_if_idle(self, name: str) -> None:
        """A poll of `name` unless one is running or queued already (the automatic sync: never pile up)."""
        lane = self._lane(name)
        if not lane.busy:
            lane.request()

    def retain(self, names: Iterable[str]) -> None:
        """Close the lanes of remotes that are no longer registered."""
        keep = set(names)
        with self._guard:
            for name in [n for n in self._lanes if n not in keep]:
                self._lanes.pop(name).close()

    def close(self) -> None:
        with self._guard:
            self._closed = True
            for lane in self._lanes.values():
                lane.close()
            self._lanes.clear()
