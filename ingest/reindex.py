"""Rebuilding the index from the PACS files: after a crash (only what changed) or on demand (everything).

The files are the truth; the database is their index. `reindex` re-reads every file, adds
what is missing, drops rows whose files are gone, and lists files it could not read.
Datasets and tags live only in the database and survive a reindex of the series they hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import delete, exists, select

from core.models import Instance, Series
from core.pacs_store import PacsStore, StoredFile
from core.search.indexing import forget_series
from core.timeutil import utcnow
from ingest.indexer import IncomingInstance, IndexWriter, refresh_series_counts
from ingest.metadata import extract

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class ReindexReport:
    files: int = 0
    indexed: int = 0
    removed_rows: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def read_instance(store: PacsStore, path: Path, *, with_attributes: bool = True) -> IncomingInstance:
    """An index record for a file already in the store."""
    ds = dcmread(path, stop_before_pixels=True)
    meta = extract(ds, with_attributes=with_attributes)
    relative = path.relative_to(store.root).as_posix()
    expected = store.relative_path(meta.study_uid, meta.series_uid, meta.sop_instance_uid)
    if relative != expected:
        raise ValueError(f"file is stored under {relative} but its UIDs place it at {expected}")
    return IncomingInstance(
        meta=meta,
        stored=StoredFile(relative, path.stat().st_size, created=False),
        transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "")),
    )


def index_files(store: PacsStore, writer: IndexWriter, paths: Iterable[Path], report: ReindexReport) -> None:
    batch: list[IncomingInstance] = []
    for path in paths:
        report.files += 1
        try:
            batch.append(read_instance(store, path))
        except Exception as exc:
            report.unreadable.append((str(path), str(exc) or type(exc).__name__))
            continue
        if len(batch) >= BATCH:
            _write(store, writer, batch, report)
            batch = []
    _write(store, writer, batch, report)


def _write(store: PacsStore, writer: IndexWriter, batch: list[IncomingInstance], report: ReindexReport) -> None:
    """Index a batch; if it fails, file by file, so one bad file is reported and the others indexed."""
    try:
        writer.write(batch)
        report.indexed += len(batch)
    except Exception:
        for item in batch:
            try:
                writer.write([item])
                report.indexed += 1
            except Exception as exc:
                report.unreadable.append((str(store.path(item.stored.relative_path)), f"could not be indexed: {exc}"))


def reindex(store: PacsStore, writer: IndexWriter) -> ReindexReport:
    """Re-read every file; drop index rows whose files are gone."""
    report = ReindexReport()
    index_files(store, writer, store.walk(), report)
    report.removed_rows = _drop_rows_without_files(store, writer)
    return report


def _drop_rows_without_files(store: PacsStore, writer: IndexWriter) -> int:
    with writer.db.engine.begin() as conn:
        rows = conn.execute(select(Instance.sop_instance_uid, Instance.series_uid, Instance.path)).all()
        gone = [(uid, series) for uid, series, relative in rows if not store.path(relative).exists()]
        uids = [uid for uid, _ in gone]
        for start in range(0, len(uids), BATCH):
            conn.execute(delete(Instance).where(Instance.sop_instance_uid.in_(uids[start : start + BATCH])))  # type: ignore[attr-defined]
        affected = {series for _, series in gone}
        if affected:
            refresh_series_counts(conn, affected, utcnow())
            has_instances = exists().where(Instance.series_uid == Series.series_uid)
            empty = list(conn.execute(select(Series.series_uid).where(Series.series_uid.in_(affected), ~has_instances)).scalars())  # type: ignore[attr-defined]
            forget_series(conn, empty)
            conn.execute(delete(Series).where(Series.series_uid.in_(empty)))  # type: ignore[attr-defined]
    return len(gone)


def recover(store: PacsStore, writer: IndexWriter, since: float) -> ReindexReport:
    """After an unclean stop: index files linked into series folders changed since the last heartbeat.

    A file is linked before its index row is committed; a crash between the two leaves a
    stored, never-acknowledged instance that the index does not know yet.
    """
    report = ReindexReport()
    removed = store.clean_incoming()
    if removed:
        log.info("removed %d partial files left by the previous run", removed)
    index_files(store, writer, unindexed_since(store, writer, since), report)
    return report


def unindexed_since(store: PacsStore, writer: IndexWriter, since: float) -> list[Path]:
    """Files in series folders changed since `since` that the index does not know."""
    missing: list[Path] = []
    with writer.db.engine.connect() as conn:
        for directory in store.series_dirs_changed_since(since):
            known = set(conn.execute(select(Instance.path).where(Instance.series_uid == directory.name)).scalars())
            for path in directory.glob("*.dcm"):
                if path.relative_to(store.root).as_posix() not in known:
                    missing.append(path)
    return missing


def catch_up(store: PacsStore, writer: IndexWriter, since: float) -> int:
    """After a receiver worker died: index what it stored (and acknowledged) but could not hand over, through the writer's thread.

    Unlike `recover`, parts under `.incoming` are left alone: other associations are writing them.
    Returns how many files were indexed.
    """
    futures = []
    for path in unindexed_since(store, writer, since):
        try:
            futures.append(writer.submit(read_instance(store, path), linger=True))
        except Exception:
            log.exception("a stored file could not be read for the index")  # a reindex lists it
    for future in futures:
        future.result(timeout=120)
    return len(futures)
