"""Draws each series' thumbnail once the series has been quiet for a few seconds.

Drawing while instances still arrive would pick the wrong middle slice and waste CPU the
receiver needs, so the service waits for quiet. SEG and RTSTRUCT series are drawn over the
image series they reference, and drawn again when that series arrives after them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from sqlalchemy import select, update

from core.background import QuietSeries, WakeableLoop
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
        self._pending = QuietSeries()
        self._loop = WakeableLoop("vireo-thumbnails", self._render_due, "thumbnails could not be drawn")
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def touch(self, series_uids: set[str]) -> None:
        """Note activity on these series; their thumbnails are drawn after the quiet period."""
        self._pending.touch(series_uids)
        # no wake: the loop looks every half second anyway, and an Event.set per index commit cost the writer thread

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
        self._pending.note(series_uid)  # asking again must not postpone it: only new instances do
        self._loop.wake()
        return None

    def _render_due(self) -> None:
        for uid in self._pending.take_quiet(self.quiet_seconds, time.monotonic()):
            if self._loop.stopping:
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
