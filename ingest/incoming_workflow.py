"""Processing of incoming DICOM, shown as service workflow `service-process-incoming-dcm`.

The receiver and index writer do the work (index, then thumbnails once a series is quiet);
this recorder only *shows* it: one job per batch of series that arrived together, with an
`index` step that runs while instances arrive and a `thumbnails` step that runs until every
series of the batch has its thumbnail. The index writer hands it series UIDs in O(1) (a
dictionary update); every database write happens in the recorder's own thread, so the
C-STORE path never waits for the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from core.background import QuietSeries, WakeableLoop
from core.events import THUMBNAIL_READY, EventBus
from core.timeutil import isoformat, utcnow
from core.workflows.engine import WorkflowEngine
from core.workflows.states import JobState

log = logging.getLogger(__name__)

DAG_ID = "service-process-incoming-dcm"
STEPS = ["index", "thumbnails"]


@dataclass
class _Batch:
    job_id: int
    series: list[str]
    last_activity: float
    steps: list[dict[str, Any]]
    drawing_since: float | None = None
    drawn: set[str] = field(default_factory=set)
    reported: int = 0  # thumbnails drawn as last written to the job


class IncomingRecorder:
    def __init__(self, engine: WorkflowEngine, bus: EventBus, quiet_seconds: float = 3.0, thumbnail_timeout: float = 300.0) -> None:
        self.engine = engine
        self.bus = bus
        self.quiet_seconds = quiet_seconds
        self.thumbnail_timeout = thumbnail_timeout
        self._touched = QuietSeries()
        self._drawn: set[str] = set()
        self._lock = threading.Lock()  # guards _drawn
        self._loop = WakeableLoop("vireo-incoming-recorder", self._step, "recording incoming DICOM as a service workflow failed")
        self._batches: list[_Batch] = []
        self._unsubscribe: Any = None

    def touch(self, series_uids: set[str]) -> None:
        """Index-writer listener: note the series (called in the writer thread, so it only notes)."""
        self._touched.touch(series_uids)
        # no wake: the loop looks every half second anyway, and an Event.set per index commit cost the writer thread

    def _thumbnail_drawn(self, _topic: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self._drawn.add(str(payload.get("series_uid")))
        self._loop.wake()

    def start(self) -> None:
        self._unsubscribe = self.bus.subscribe(THUMBNAIL_READY, self._thumbnail_drawn)
        self._loop.start()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._loop.stop()

    def _step(self) -> None:
        touched = self._touched.take_all()
        with self._lock:
            drawn, self._drawn = self._drawn, set()
        now = time.monotonic()
        receiving = next((b for b in self._batches if b.drawing_since is None), None)
        new: list[str] = []
        for uid, when in touched.items():
            if receiving is not None and uid in receiving.series:
                receiving.last_activity = max(receiving.last_activity, when)
            else:
                new.append(uid)
        if new:
            if receiving is None:
                job_id = self.engine.record_service_job(DAG_ID, sorted(new), STEPS)
                receiving = _Batch(job_id, sorted(new), max(touched[u] for u in new), self._initial_steps())
                self._batches.append(receiving)
            else:
                receiving.series.extend(sorted(new))
                receiving.last_activity = max(receiving.last_activity, *(touched[u] for u in new))
                self.engine.update_service_job(receiving.job_id, series=list(receiving.series), progress_total=len(receiving.series))
        for batch in self._batches:
            batch.drawn |= drawn & set(batch.series)
        for batch in list(self._batches):
            if batch.drawing_since is None and now - batch.last_activity >= self.quiet_seconds:
                batch.drawing_since = now
                stamp = isoformat(utcnow())
                batch.steps[0].update(state="finished", ended=stamp)
                batch.steps[1].update(state="running", started=stamp)
                if not self.engine.update_service_job(batch.job_id, steps=batch.steps, progress_done=len(batch.drawn), progress_total=len(batch.series)):
                    self._batches.remove(batch)  # aborted or deleted meanwhile
                    continue
            if batch.drawing_since is not None:
                self._advance_drawing(batch, now)

    def _advance_drawing(self, batch: _Batch, now: float) -> None:
        if len(batch.drawn) >= len(batch.series):
            batch.steps[1].update(state="finished", ended=isoformat(utcnow()))
            self.engine.update_service_job(batch.job_id, progress_done=len(batch.series), progress_total=len(batch.series))
            self.engine.end_service_job(batch.job_id, JobState.FINISHED, steps=batch.steps)
            self._batches.remove(batch)
        elif now - batch.drawing_since >= self.thumbnail_timeout:  # type: ignore[operator]
            missing = len(batch.series) - len(batch.drawn)
            self.engine.end_service_job(batch.job_id, JobState.FAILED, f"{missing} thumbnails were not drawn within {self.thumbnail_timeout:g} s", batch.steps)
            self._batches.remove(batch)
        elif len(batch.drawn) != batch.reported:
            batch.reported = len(batch.drawn)
            if not self.engine.update_service_job(batch.job_id, progress_done=len(batch.drawn), progress_total=len(batch.series)):
                self._batches.remove(batch)

    @staticmethod
    def _initial_steps() -> list[dict[str, Any]]:
        return [{"name": "index", "state": "running", "started": isoformat(utcnow())}, {"name": "thumbnails", "state": "waiting"}]
