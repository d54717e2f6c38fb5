"""Two small pieces the background services share: a wakeable loop thread, and series that go quiet.

Thumbnails, metadata documents, the incoming-DICOM workflow record and the workflow scheduler
all run the same way: a daemon thread that does one step when something wakes it (or every
half second), logs a failing step and goes on. Three of them also wait for a series to go
quiet (no instance arriving in it for a few seconds) before working on it, because working
while instances still arrive wastes the receiver's CPU and sees an incomplete series. Both
are here once, so a fix to either reaches every service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


class WakeableLoop:
    """A daemon thread that runs `step` whenever `wake()` is called, and at least every `period` seconds.

    A step that raises is logged (with `failure`) and the loop pauses `pause_after_failure`
    seconds before going on, so a broken database does not spin a core.
    """

    def __init__(self, name: str, step: Callable[[], None], failure: str, period: float = 0.5, pause_after_failure: float = 1.0) -> None:
        self.name = name
        self.step = step
        self.failure = failure
        self.period = period
        self.pause_after_failure = pause_after_failure
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """True from `stop()` on: long steps check it between their parts."""
        return self._stopping

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end and wait for the step under way (at most `timeout` seconds)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(timeout=self.period)
            self._wake.clear()
            if self._stopping:
                break
            try:
                self.step()
            except Exception:
                log.exception(self.failure)
                time.sleep(self.pause_after_failure)


class QuietSeries:
    """Series UIDs, each with when an instance last arrived in it, and which of them have gone quiet (thread-safe)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._latest = 0.0  # when an instance last arrived in any series
        self._lock = threading.Lock()

    def touch(self, series_uids: Iterable[str], now: float | None = None) -> None:
        """Instances arrived in these series: each one's quiet period starts again."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for uid in series_uids:
                self._last[uid] = now
            self._latest = now

    def note(self, series_uid: str, now: float | None = None) -> None:
        """Add a series without postponing it if it is already waiting (asking again is not new activity)."""
        with self._lock:
            self._last.setdefault(series_uid, time.monotonic() if now is None else now)

    def take_quiet(self, quiet_seconds: float, now: float, all_quiet_too: bool = False, longest_wait: float | None = None) -> list[str]:
        """Remove and return the series with no instance for `quiet_seconds`.

        With `all_quiet_too`, a series is quiet only while no series at all has had an
        instance for `quiet_seconds` (the cores stay the receiver's while anyone sends);
        `longest_wait` then bounds the wait of a series whatever the others do.
        """
        with self._lock:
            everything_quiet = not all_quiet_too or now - self._latest >= quiet_seconds
            due = [
                uid for uid, last in self._last.items()
                if (everything_quiet and now - last >= quiet_seconds) or (longest_wait is not None and now - last >= longest_wait)
            ]
            for uid in due:
                del self._last[uid]
        return due

    def take_all(self) -> dict[str, float]:
        """Remove and return every series with its last activity, quiet or not."""
        with self._lock:
            taken, self._last = self._last, {}
        return taken

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._last)
