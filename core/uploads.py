"""The upload area: files users put on the server for import DAGs to read (`data_dir/uploads`).

Uploads arrive in chunks so a 5 GB file never sits in memory and a dropped connection
resumes where it stopped: chunk bytes are appended to a hidden partial file at the offset
the client names; only when the declared total size is reached is the partial file renamed
to its final name (a reader never sees half a file under a final name). Paths are
relative, checked component by component, and can never leave the upload folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

PARTIAL_DIR = ".partial"
COPY_BUFFER = 4 * 1024 * 1024
PARTIAL_MAX_AGE = 24 * 3600  # seconds an unfinished upload waits for its next chunk (Kaapana's rule too)
MAX_PATH_LENGTH = 1024
# Bytes of one name in the path: file systems allow 255, and a partial upload's name adds ".part".
MAX_NAME_BYTES = 250


class UploadError(ValueError):
    """A request the upload area refuses; the message says why."""


class UploadConflict(UploadError):
    """A path that collides with what the upload area holds (a file where a folder would have to be, or the reverse)."""


class OffsetMismatch(UploadError):
    """A chunk that does not continue the partial file; `offset` is where the client must resume."""

    def __init__(self, offset: int, given: int) -> None:
        super().__init__(f"the upload continues at byte {offset}, not {given}")
        self.offset = offset


@dataclass(frozen=True)
class UploadedFile:
    path: str
    size: int
    modified: datetime

    def describe(self) -> dict[str, object]:
        return {"path": self.path, "name": PurePosixPath(self.path).name, "size": self.size, "modified": self.modified.isoformat()}


@dataclass(frozen=True)
class ChunkResult:
    path: str
    offset: int  # bytes received so far
    total: int | None
    complete: bool

    def describe(self) -> dict[str, object]:
        return {"path": self.path, "offset": self.offset, "size": self.offset, "total": self.total, "complete": self.complete}


def clean_path(path: str) -> str:
    """A relative POSIX path inside the upload area, or UploadError saying what is wrong with it."""
    text = (path or "").replace("\\", "/").strip()
    if not text:
        raise UploadError("the upload path is empty")
    if len(text) > MAX_PATH_LENGTH:
        raise UploadError(f"the upload path is longer than {MAX_PATH_LENGTH} characters")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UploadError(f"the upload path {path!r} is absolute; give a path relative to the upload area")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts:
        raise UploadError("the upload path is empty")
    for part in parts:
        if part == "..":
            raise UploadError(f"the upload path {path!r} leaves the upload area ('..')")
        if part.startswith("."):
            raise UploadError(f"the upload path {path!r} has a hidden component {part!r}")
        if any(ord(c) < 32 for c in part):
            raise UploadError(f"the upload path {path!r} contains control characters")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise UploadError(f"a name in the upload path is longer than {MAX_NAME_BYTES} bytes ({part[:40]}…); choose a shorter name")
    return "/".join(parts)


class UploadArea:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.partial_root = root / PARTIAL_DIR

    def file(self, path: str) -> Path:
        """The final location of an uploaded file (which need not exist)."""
        relative = clean_path(path)
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise UploadError(f"the upload path {path!r} leaves the upload area")
        return target

    def _partial(self, path: str) -> Path:
        return self.partial_root / (clean_path(path) + ".part")

    def received(self, path: str) -> int:
        """Bytes of a partial upload received so far (0 when none is under way)."""
        partial = self._partial(path)
        return partial.stat().st_size if partial.exists() else 0

    def write_chunk(self, path: str, source: BinaryIO, offset: int = 0, total: int | None = None) -> ChunkResult:
        """Append `source` at `offset` of the upload `path`; completes it when `total` bytes are in.

        Without `total` the chunk is the whole file. A chunk at offset 0 starts the upload
        afresh; any other offset must equal the bytes received so far.
        """
        with self.chunk_writer(path, offset, total) as handle:
            shutil.copyfileobj(source, handle, COPY_BUFFER)
        return self.finish_chunk(path, total)

    @contextmanager
    def chunk_writer(self, path: str, offset: int = 0, total: int | None = None) -> Iterator[BinaryIO]:
        """A file handle positioned at `offset` of the partial upload; checks the offset and the total on the way out."""
        relative = clean_path(path)
        target = self.file(relative)
        if offset < 0 or (total is not None and total < 0):
            raise UploadError("offset and total must not be negative")
        if target.is_dir():
            raise UploadConflict(f"{relative} is a folder in the upload area; a file cannot take its name")
        self._check_folders(relative)
        partial = self._partial(relative)
        partial.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.exists() else 0
        if offset != 0 and offset != have:
            raise OffsetMismatch(have, offset)
        with partial.open("r+b" if offset else "wb") as handle:
            handle.seek(offset)
            yield handle  # type: ignore[misc]
            handle.truncate()
            size = handle.tell()
            if total is not None and size > total:
                handle.truncate(offset)
                raise UploadError(f"the chunk ends at byte {size}, beyond the declared total of {total}")

    def finish_chunk(self, path: str, total: int | None) -> ChunkResult:
        """After a chunk: rename the partial file to its final name once it holds `total` bytes (or no total was given)."""
        relative = clean_path(path)
        partial = self._partial(relative)
        size = partial.stat().st_size
        if total is None or size == total:
            target = self.file(relative)
            self._check_folders(relative)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partial, target)
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:  # the area changed since the chunk began
                raise UploadConflict(f"{relative} collides with a file or folder that is now in the upload area") from exc
            return ChunkResult(relative, size, size, True)
        return ChunkResult(relative, size, total, False)

    def _check_folders(self, relative: str) -> None:
        """UploadConflict when a folder the upload needs is a file in the upload area (`a.zip/b` while `a.zip` is a file)."""
        parents = PurePosixPath(relative).parents
        for folder in reversed([p for p in parents if str(p) != "."]):
            if (self.root / folder).is_file():
                raise UploadConflict(f"{folder} is a file in the upload area, so {relative} cannot be put under it")

    def purge_partials(self, max_age: float = PARTIAL_MAX_AGE, now: float | None = None) -> list[str]:
        """Delete unfinished uploads that got no chunk for `max_age` seconds; returns their paths."""
        if not self.partial_root.exists():
            return []
        now = time.time() if now is None else now
        purged = []
        for path in sorted(self.partial_root.rglob("*.part")):
            if now - path.stat().st_mtime > max_age:
                path.unlink(missing_ok=True)
                purged.append(path.relative_to(self.partial_root).as_posix()[: -len(".part")])
        return purged

    def list(self) -> list[UploadedFile]:
        """Every complete upload, by path."""
        if not self.root.exists():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                stat = full.stat()
                found.append(UploadedFile(full.relative_to(self.root).as_posix(), stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return sorted(found, key=lambda f: f.path)

    def delete(self, path: str) -> bool:
        """Delete an upload (and any partial upload of that path); False when there was neither."""
        target = self.file(path)
        partial = self._partial(path)
        found = False
        if partial.exists():
            partial.unlink()
            found = True
        if target.is_file():
            target.unlink()
            found = True
        elif target.is_dir() and target != self.root.resolve():
            shutil.rmtree(target)
            found = True
        # leave no empty folders behind
        for folder in list(target.parents):
            if folder == self.root.resolve() or not folder.is_relative_to(self.root.resolve()):
                break
            try:
                folder.rmdir()
            except OSError:
                break
        return found
