"""Reading uploads safely: zip archives checked before anything is extracted, and upload folders.

An uploaded zip comes from anyone with a login, so before a single byte is extracted every
entry is checked: no absolute paths, no `..` (zip-slip), no symbolic links, and limits on
the entry count, the total uncompressed size and the compression ratio (zip bombs). A
refused archive names the entry and the rule; nothing of it is imported.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

MAX_ENTRIES = 500_000
MAX_TOTAL_BYTES = 200 * 1024**3  # uncompressed
MAX_ENTRY_BYTES = 16 * 1024**3
MAX_RATIO = 200  # uncompressed / compressed, for entries larger than RATIO_FLOOR
RATIO_FLOOR = 1024 * 1024


class ArchiveRefused(ValueError):
    """An upload that is not imported, with the reason for the person who uploaded it."""


@dataclass(frozen=True)
class Limits:
    entries: int = MAX_ENTRIES
    total_bytes: int = MAX_TOTAL_BYTES
    entry_bytes: int = MAX_ENTRY_BYTES
    ratio: float = MAX_RATIO


@dataclass(frozen=True)
class Member:
    """One file of an upload (a zip entry or a file in an uploaded folder)."""

    name: str  # relative POSIX path
    size: int
    _zip: zipfile.ZipFile | None = None
    _info: zipfile.ZipInfo | None = None
    _path: Path | None = None

    def open(self) -> BinaryIO:
        if self._zip is not None and self._info is not None:
            return self._zip.open(self._info)  # type: ignore[return-value]
        assert self._path is not None
        return self._path.open("rb")

    def read(self) -> bytes:
        with self.open() as handle:
            return handle.read()


def check_zip(archive: zipfile.ZipFile, label: str, limits: Limits = Limits()) -> list[zipfile.ZipInfo]:
    """The archive's file entries, or ArchiveRefused naming the first unsafe entry."""
    infos = archive.infolist()
    if len(infos) > limits.entries:
        raise ArchiveRefused(f"{label}: {len(infos)} entries, more than the limit of {limits.entries} (zip bomb?)")
    total = 0
    files = []
    for info in infos:
        name = info.filename
        if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
            raise ArchiveRefused(f"{label}: entry {name!r} has an absolute path; refused")
        if ".." in PurePosixPath(name.replace("\\", "/")).parts:
            raise ArchiveRefused(f"{label}: entry {name!r} points outside the archive ('..', zip-slip); refused")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveRefused(f"{label}: entry {name!r} is a symbolic link; links are refused")
        if info.is_dir():
            continue
        if info.file_size > limits.entry_bytes:
            raise ArchiveRefused(f"{label}: entry {name!r} unpacks to {info.file_size} bytes, more than the limit of {limits.entry_bytes}")
        if info.file_size > RATIO_FLOOR and info.file_size > limits.ratio * max(info.compress_size, 1):
            raise ArchiveRefused(
                f"{label}: entry {name!r} unpacks {info.file_size / max(info.compress_size, 1):.0f}-fold, "
                f"more than the limit of {limits.ratio:.0f} (zip bomb?); refused"
            )
        total += info.file_size
        if total > limits.total_bytes:
            raise ArchiveRefused(f"{label}: unpacks to more than the limit of {limits.total_bytes} bytes (zip bomb?); refused")
        files.append(info)
    return files


def open_zip(path: Path, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ArchiveRefused(f"{label} is not a readable zip archive: {exc}") from exc


@contextmanager
def members(source: Path, label: str, limits: Limits = Limits()) -> Iterator[list[Member]]:
    """The files of an upload: a zip archive (checked whole first) or a folder (links refused).

    A context manager: a zip stays open while its members are read.
    """
    if source.is_dir():
        found = []
        for path in sorted(source.rglob("*")):
            if path.is_symlink():
                raise ArchiveRefused(f"{label}: {path.relative_to(source)} is a symbolic link; links are refused")
            if path.is_file():
                found.append(Member(path.relative_to(source).as_posix(), path.stat().st_size, _path=path))
        yield found
        return
    with open_zip(source, label) as archive:
        yield [Member(info.filename.replace("\\", "/"), info.file_size, _zip=archive, _info=info) for info in check_zip(archive, label, limits)]


def extract(source: Path, target: Path, label: str, limits: Limits = Limits()) -> Path:
    """An upload as a folder: a checked zip extracted into `target`, or the uploaded folder itself."""
    if source.is_dir():
        for path in source.rglob("*"):
            if path.is_symlink():
                raise ArchiveRefused(f"{label}: {path.relative_to(source)} is a symbolic link; links are refused")
        return source
    target.mkdir(parents=True, exist_ok=True)
    with members(source, label, limits) as found:
        for member in found:
            out = target / member.name
            out.parent.mkdir(parents=True, exist_ok=True)
            with member.open() as reader, out.open("wb") as writer:
                while chunk := reader.read(1024 * 1024):
                    writer.write(chunk)
    return target
