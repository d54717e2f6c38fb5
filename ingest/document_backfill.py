"""Makes the WADO-RS metadata documents of instances a receiver worker stored, once their series is quiet.

A receiver worker process (ingest.receiver_workers) answers each C-STORE as soon as the
instance is durable. Making the instance's DICOM JSON there cost about 1 ms of the worker's
one interpreter lock per instance, right when the association's thread needed it to read the
sender's next instance: it cut one association's rate by a fifth. So workers index without a
document, and this service, in the main process, makes them once ingest pauses: a series is
filled in when no instance has arrived anywhere for `quiet_seconds` (the cores are the
receiver's while senders send: four associations on two cores use both), or at the latest
`longest_wait` seconds after its last instance, so a receiver that never pauses still gets
them. They are read from the files, in batches, each batch one transaction. A viewer asking
sooner gets them made on its request (core.instance_documents); either way each document is
made once and kept. A query that reads documents (core.dicom_query: instance level,
sequences, attributes no index column holds) first has the pending ones made (`settle`), so
it never answers from documents not made yet.
"""

from __future__ import annotations

import logging
import threading
import time

from core.background import QuietSeries, WakeableLoop
from core.db import Database
from core.instance_documents import make_missing, missing_in_series
from core.pacs_store import PacsStore

log = logging.getLogger(__name__)

BATCH = 200


class DocumentBackfill:
    """Series touched by index commits, and the thread that fills in their missing documents when they go quiet."""

    def __init__(self, db: Database, store: PacsStore, quiet_seconds: float = 1.0, longest_wait: float = 30.0) -> None:
        self.db = db
        self.store = store
        self.quiet_seconds = quiet_seconds
        self.longest_wait = longest_wait
        self._pending = QuietSeries()
        self._filling = threading.Lock()  # one fill at a time: the background thread's or a query's
        self._loop = WakeableLoop("vireo-document-backfill", self._fill_due, "metadata documents could not be made", period=min(0.5, quiet_seconds))

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def touch(self, series_uids: set[str], now: float | None = None) -> None:
        """An index commit changed these series (an IndexWriter listener): fill them in after the quiet period."""
        self._pending.touch(series_uids, now)
        # no wake: the loop looks every half second anyway, and an Event.set per index commit cost the writer thread

    def due(self, now: float) -> list[str]:
        """The series to fill in now (and forget as pending)."""
        return self._pending.take_quiet(self.quiet_seconds, now, all_quiet_too=True, longest_wait=self.longest_wait)

    def _fill_due(self) -> None:
        with self._filling:
            self._fill_all(self.due(time.monotonic()))

    def settle(self) -> None:
        """Make the documents of every pending series now, whatever the pauses (a query is about to read them)."""
        if not self._pending:
            return
        with self._filling:
            self._fill_all(list(self._pending.take_all()))

    def _fill_all(self, series_uids: list[str]) -> None:
        for uid in series_uids:
            if self._loop.stopping:
                return
            try:
                self.fill(uid)
            except Exception:  # the documents are made on first request instead
                log.exception("metadata documents of series %s could not be made", uid)

    def fill(self, series_uid: str) -> int:
        """Make every missing document of one series, a batch per transaction; returns how many were made."""
        tried: set[str] = set()  # an unreadable file is tried once per pass, not for ever
        made = 0
        while not self._loop.stopping:
            with self.db.session() as session:
                study_uid, missing = missing_in_series(session, series_uid, BATCH + len(tried))
                todo = [row for row in missing if row[0] not in tried][:BATCH]
                if study_uid is None or not todo:
                    return made
                tried.update(sop for sop, _, _ in todo)
                made += len(make_missing(session, self.store, study_uid, todo))
        return made
