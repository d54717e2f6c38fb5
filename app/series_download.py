"""Series as a zip of their DICOM files, streamed: the archive is never held in memory or on disk.

Kaapana's download builds the zip in memory and refuses more than 256 MB; here the files go
out as they are read, so a selection of any size can be downloaded.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator

from sqlalchemy import select

from app.runtime import current_services
from core.models import Instance

CHUNK = 1 << 20


class _Spool:
    """A write-only file for zipfile whose bytes the generator hands out as they come."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def instance_paths(series_uids: list[str]) -> list[str]:
    """Relative PACS paths of every instance of these series (StudyUID/SeriesUID/SOPInstanceUID.dcm)."""
    paths: list[str] = []
    with current_services().db.engine.connect() as conn:
        for start in range(0, len(series_uids), 500):
            chunk = series_uids[start : start + 500]
            query = select(Instance.path).where(Instance.series_uid.in_(chunk)).order_by(Instance.series_uid, Instance.instance_number)  # type: ignore[attr-defined, arg-type]
            paths.extend(conn.execute(query).scalars())
    return paths


def zip_stream(relative_paths: list[str]) -> Iterator[bytes]:
    store = current_services().store
    spool = _Spool()
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[arg-type]
        for relative in relative_paths:
            source = store.path(relative)
            try:
                handle = open(source, "rb")
            except FileNotFoundError:
                continue  # deleted meanwhile: the rest still downloads
            with handle, archive.open(relative, "w", force_zip64=True) as entry:
                while block := handle.read(CHUNK):
                    entry.write(block)
                    yield spool.take()
            yield spool.take()
    yield spool.take()
