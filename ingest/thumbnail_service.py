"""Draws each series' thumbnail once the series has been quiet for a few seconds.

Drawing while instances still arrive would pick the wrong middle slice and waste CPU the
receiver needs, so the service waits for quiet. SEG and RTSTRUCT series are drawn over the
image series they reference, and drawn again when that series arrives after them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from sqlalchemy import select, update

from core.db import Database
from core.events import THUMBNAIL_READY, EventBus
from core.models import Instance, Series
from core.pacs_store import PacsStore, clean_uid
from core.timeutil import utcnow
from ingest.thumbnails import ThumbnailError, placeholder_thumbnail, render_series_thumbnail

log = logging.getLogger(__name__)


class ThumbnailService:
    def __init__(self, db: Database, store: PacsStore, directory: Path, bus: EventBus, quiet_seconds: float = 3.0) -> None:
        self.db = db
        self.store = store
        self.directory = directory
        self.bus = bus
        self.quiet_seconds = quiet_seconds
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="vireo-thumbnails", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def touch(self, series_uids: set[str]) -> None:
        """Note activity on these series; their thumbnails are drawn after the quiet period."""
        now = time.monotonic()
        with self._lock:
            for uid in series_uids:
                self._pending[uid] = now
        self._wake.set()

    def path(self, series_uid: str) -> Path:
        return self.directory / f"{clean_uid(series_uid)}.png"

    def thumbnail(self, series_uid: str) -> bytes | None:
        """The series' thumbnail, or None while it is not drawn yet (it is then scheduled).

        Web requests never draw: a page asking for a hundred new thumbnails must not tie up
        the server's threads, and a series still arriving is drawn once it is quiet.
        """
        path = self.path(series_uid)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        with self.db.engine.connect() as conn:
            if conn.execute(select(Series.series_uid).where(Series.series_uid == series_uid)).first() is None:
                raise LookupError(f"no series {series_uid}")
        with self._lock:  # asking again must not postpone it: only new instances do
            self._pending.setdefault(series_uid, time.monotonic())
        self._wake.set()
        return None

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                due = [uid for uid, last in self._pending.items() if now - last >= self.quiet_seconds]
                for uid in due:
                    del self._pending[uid]
            for uid in due:
                if self._stopping:
                    return
                try:
                    self.render(uid)
                    for annotation in self._annotations_of(uid):
                        self.render(annotation)
                except Exception:
                    log.exception("thumbnail of series %s failed", uid)

    def render(self, series_uid: str) -> None:
        """Draw and store the thumbnail of one series (a labelled placeholder when its pixels cannot be read)."""
        with self.db.engine.connect() as conn:
            row = conn.execute(select(Series.modality, Series.referenced_series_uid).where(Series.series_uid == series_uid)).first()
            if row is None:
                raise LookupError(f"no series {series_uid}")
            paths = self._sorted_paths(conn, series_uid)
            reference = self._sorted_paths(conn, row.referenced_series_uid) if row.referenced_series_uid else []
        try:
            png = render_series_thumbnail(paths, reference)
        except ThumbnailError as exc:
            log.warning("thumbnail of %s: %s", series_uid, exc)
            png = placeholder_thumbnail(f"{row.modality or 'DICOM'} · no preview")
        target = self.path(series_uid)
        part = target.with_suffix(".png.part")
        part.write_bytes(png)
        os.replace(part, target)
        with self.db.engine.begin() as conn:
            conn.execute(update(Series).where(Series.series_uid == series_uid).values(thumbnail_at=utcnow()))  # type: ignore[arg-type]
        self.bus.publish(THUMBNAIL_READY, series_uid=series_uid)

    def _sorted_paths(self, conn: object, series_uid: str) -> list[Path]:
        query = (
            select(Instance.path)
            .where(Instance.series_uid == series_uid)
            .order_by(Instance.slice_position, Instance.instance_number, Instance.sop_instance_uid)  # type: ignore[arg-type]
        )
        return [self.store.path(p) for p in conn.execute(query).scalars()]  # type: ignore[attr-defined]

    def _annotations_of(self, series_uid: str) -> list[str]:
        with self.db.engine.connect() as conn:
            return list(conn.execute(select(Series.series_uid).where(Series.referenced_series_uid == series_uid)).scalars())
