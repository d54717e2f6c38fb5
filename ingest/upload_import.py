"""Importing from the upload area into the PACS, through the receiver's own door (`Intake`).

Import jobs run in a job process: they start an `IndexWriter` of their own and hand every
instance to `Intake.receive` and the writer, exactly as the DICOM receiver does, so
de-duplication, dataset assignment, the search index and thumbnails behave the same
whichever way data came in. Each import leaves an `import-report.json` in the job's output
(series created, files skipped and why), which the Data Upload page shows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.uploads import UploadArea, UploadError
from ingest.intake import Intake, Origin, StoreRefused, transfer_syntax_of

REPORT_NAME = "import-report.json"
BATCH = 200
HASH_BUFFER = 4 * 1024 * 1024


@dataclass
class ImportReport:
    upload: str
    dataset: str | None
    series: dict[str, int] = field(default_factory=dict)  # series UID -> instances imported
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"file": name, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {
            "upload": self.upload,
            "dataset": self.dataset,
            "series": sorted(self.series),
            "instances": sum(self.series.values()),
            "instances_per_series": self.series,
            "skipped": self.skipped,
            "notes": self.notes,
        }


def upload_source(data_dir: Path, upload: str) -> Path:
    """The uploaded file or folder a conf names; ValueError with a clear message if there is none."""
    area = UploadArea(data_dir / "uploads")
    try:
        path = area.file(upload)
    except UploadError as exc:
        raise ValueError(str(exc)) from exc
    if not path.exists():
        raise ValueError(f"there is no upload {upload!r} in the upload area")
    return path


def upload_fingerprint(source: Path) -> str:
    """The SHA-256 of an upload's content (a file, or a folder's files with their relative paths).

    What converted objects derive their UIDs from: the same upload imported again, or an
    import restarted after a crash, makes the same instances instead of new copies.
    """
    digest = hashlib.sha256()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
    for path in files:
        if path != source:
            digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(HASH_BUFFER):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


class PacsImporter:
    """Stores and indexes Part 10 instances the way the receiver does, a batch of commits at a time."""

    def __init__(self, db: Any, store: Any, origin: Origin) -> None:
        from ingest.indexer import IndexWriter

        self.writer = IndexWriter(db)
        self.intake = Intake(store, self.writer)
        self.origin = origin
        self._pending: list[tuple[str, str, Future[None]]] = []

    def __enter__(self) -> PacsImporter:
        self.writer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.stop()

    def add(self, name: str, content: bytes, report: ImportReport) -> bool:
        """Store one instance and queue it for indexing; a refused one is recorded as skipped."""
        try:
            item = self.intake.receive(content, transfer_syntax_of(content), self.origin)
        except StoreRefused as exc:
            report.skip(name, exc.comment)
            return False
        self._pending.append((name, item.meta.series_uid, self.writer.submit(item)))
        if len(self._pending) >= BATCH:
            self.flush(report)
        return True

    def flush(self, report: ImportReport) -> None:
        """Wait until everything queued is indexed."""
        failed = []
        for name, series_uid, future in self._pending:
            try:
                future.result(timeout=300)
                report.series[series_uid] = report.series.get(series_uid, 0) + 1
            except Exception as exc:
                failed.append(f"{name}: {exc}")
        self._pending.clear()
        if failed:
            raise RuntimeError(f"{len(failed)} instances were stored but could not be indexed (reindex repairs this), e.g. {failed[0]}")


def write_report(ctx: Any, report: ImportReport) -> None:
    out = ctx.output_file(REPORT_NAME)
    part = out.with_name(out.name + ".part")
    part.write_text(json.dumps(report.as_dict(), indent=1))
    os.replace(part, out)


def draw_thumbnails(ctx: Any, series_uids: Iterable[str]) -> None:
    from core.events import EventBus
    from ingest.thumbnail_service import ThumbnailService

    uids = sorted(series_uids)
    painter = ThumbnailService(ctx.db, ctx.store, ctx.data_dir / "thumbnails", EventBus())
    for uid in uids:
        try:
            painter.render(uid)
        except Exception as exc:  # a thumbnail is no reason to fail an import
            ctx.log.warning("no thumbnail for %s: %s", uid, exc)
    ctx.series_changed(uids, thumbnails=True)


def delete_upload(ctx: Any, upload: str) -> None:
    UploadArea(ctx.data_dir / "uploads").delete(upload)
    ctx.log.info("deleted the upload %s", upload)
