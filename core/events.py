"""A small in-process event bus: producers (ingest threads, the engine) tell, pages listen.

Handlers run in the publisher's thread, so a UI handler must not touch the page there: it
notes the change (the series page sets a flag its `ui.timer` picks up). A failing handler
is logged and never breaks the publisher.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]

SERIES_CHANGED = "series.changed"
THUMBNAIL_READY = "series.thumbnail"
SERIES_DELETED = "series.deleted"  # payload: series_uids (None: any series may be gone, e.g. after a reindex)
TAGS_CHANGED = "series.tags"  # payload: series_uids whose tags changed (None: any series, e.g. a tag renamed)


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]:
        """Register `handler` for `topic`; returns the function that unsubscribes it."""
        with self._lock:
            self._handlers[topic].append(handler)

        def unsubscribe() -> None:
            with self._lock:
                if handler in self._handlers[topic]:
                    self._handlers[topic].remove(handler)

        return unsubscribe

    def publish(self, topic: str, **payload: Any) -> None:
        with self._lock:
            handlers = list(self._handlers[topic])
        for handler in handlers:
            try:
                handler(topic, payload)
            except Exception:  # a listener's bug must not stop ingest
                log.exception("event handler for %s failed", topic)

JOB_CHANGED = "workflows.job"  # payload: job_id, workflow_id, status, progress_done, progress_total
WORKFLOW_CHANGED = "workflows.workflow"  # payload: workflow_id (created, deleted, or a job of it changed)
