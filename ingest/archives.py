"""Reading uploads safely: zip archives checked before anything is extracted, and upload folders.

An uploaded zip comes from anyone with a login, so before a single byte is extracted every
entry is checked: no absolute paths, no `..` (zip-slip), no symbolic links, and limits on
the entry count, the total uncompressed size and the compression ratio, of each entry and
of the archive as a whole (a zip bomb of many small entries passes any per-entry rule). A
refused archive names the entry and the rule; nothing of it is imported.

The sizes in a zip's headers are the sender's word, so they are checked again while the
bytes come out: every entry and the archive together are counted as they are read or
extracted, and reading stops at the limit. An extraction that fails for any reason removes
what it wrote.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ingest.import_limits import unpacked_bytes_limit

MAX_ENTRIES = 500_000
MAX_ENTRY_BYTES = 16 * 1024**3
MAX_RATIO = 200  # uncompressed / compressed, for entries larger than RATIO_FLOOR and archives larger than ARCHIVE_RATIO_FLOOR
RATIO_FLOOR = 1024 * 1024
ARCHIVE_RATIO_FLOOR = 64 * 1024 * 1024  # an archive that unpacks to less is never refused for its ratio: it cannot hurt
DISK_MARGIN = 1024**3  # an extraction leaves at least this much of the disk free
COPY_BUFFER = 1024 * 1024
# What a damaged or hostile zip raises while it is read (CRC mismatch, truncated data, unknown compression, a password).
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


class ArchiveRefused(ValueError):
    """An upload that is not imported, with the reason for the person who uploaded it."""


@dataclass(frozen=True)
class Limits:
    """How far an upload may unpack; `total_bytes` defaults to VIREO_IMPORT_MAX_UNPACKED_BYTES."""

    entries: int = MAX_ENTRIES
    total_bytes: int = field(default_factory=unpacked_bytes_limit)
    entry_bytes: int = MAX_ENTRY_BYTES
    ratio: float = MAX_RATIO


class UnpackBudget:
    """Bytes actually unpacked from one archive so far, against its limits (the headers may lie)."""

    def __init__(self, label: str, limits: Limits) -> None:
        self.label = label
        self.limits = limits
        self.total = 0

    def take(self, name: str, entry_so_far: int, declared: int, count: int) -> None:
        """Account for `count` more bytes of entry `name`; ArchiveRefused once a limit is passed."""
        self.total += count
        if entry_so_far > declared:
            raise ArchiveRefused(f"{self.label}: entry {name!r} unpacks to more than the {declared} bytes its header says (a forged zip?); refused")
        if entry_so_far > self.limits.entry_bytes:
            raise ArchiveRefused(f"{self.label}: entry {name!r} unpacks to more than the limit of {self.limits.entry_bytes} bytes; refused")
        if self.total > self.limits.total_bytes:
            raise ArchiveRefused(f"{self.label}: unpacks to more than the limit of {self.limits.total_bytes} bytes (zip bomb?); refused")


@dataclass(frozen=True)
class Member:
    """One file of an upload (a zip entry or a file in an uploaded folder)."""

    name: str  # relative POSIX path
    size: int
    _zip: zipfile.ZipFile | None = None
    _info: zipfile.ZipInfo | None = None
    _path: Path | None = None
    _budget: UnpackBudget | None = None

    def open(self) -> BinaryIO:
        if self._zip is not None and self._info is not None:
            return self._zip.open(self._info)  # type: ignore[return-value]
        assert self._path is not None
        return self._path.open("rb")

    def chunks(self) -> Iterator[bytes]:
        """The member's bytes in pieces, counted against the archive's limits as they come."""
        done = 0
        try:
            with self.open() as handle:
                while piece := handle.read(COPY_BUFFER):
                    done += len(piece)
                    if self._budget is not None:
                        self._budget.take(self.name, done, self.size, len(piece))
                    yield piece
        except READ_ERRORS as exc:
            raise ArchiveRefused(f"entry {self.name!r} cannot be unpacked: {_plain(exc)}") from None

    def read(self) -> bytes:
        return b"".join(self.chunks())


def _plain(exc: BaseException) -> str:
    """A read error as a reason for people (zlib's and zipfile's messages name no server paths)."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def check_zip(archive: zipfile.ZipFile, label: str, limits: Limits | None = None) -> list[zipfile.ZipInfo]:
    """The archive's file entries, or ArchiveRefused naming the first unsafe entry."""
    limits = limits or Limits()
    infos = archive.infolist()
    if len(infos) > limits.entries:
        raise ArchiveRefused(f"{label}: {len(infos)} entries, more than the limit of {limits.entries} (zip bomb?)")
    total = compressed = 0
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
        compressed += info.compress_size
        if total > limits.total_bytes:
            raise ArchiveRefused(f"{label}: unpacks to more than the limit of {limits.total_bytes} bytes (zip bomb?); refused")
        files.append(info)
    if total > ARCHIVE_RATIO_FLOOR and total > limits.ratio * max(compressed, 1):
        raise ArchiveRefused(
            f"{label}: its {len(files)} files unpack {total / max(compressed, 1):.0f}-fold together, "
            f"more than the limit of {limits.ratio:.0f} (zip bomb?); refused"
        )
    return files


def open_zip(path: Path, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveRefused(f"{label} is not a readable zip archive: {_plain(exc)}") from exc


@contextmanager
def members(source: Path, label: str, limits: Limits | None = None) -> Iterator[list[Member]]:
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
    limits = limits or Limits()
    budget = UnpackBudget(label, limits)
    with open_zip(source, label) as archive:
        yield [Member(info.filename.replace("\\", "/"), info.file_size, _zip=archive, _info=info, _budget=budget)
               for info in check_zip(archive, label, limits)]


def extract(source: Path, target: Path, label: str, limits: Limits | None = None) -> Path:
    """An upload as a folder: a checked zip extracted into `target`, or the uploaded folder itself.

    Whatever goes wrong (a refused entry, a forged size, a full disk, an abort), `target` is
    removed again: a failed import leaves nothing unpacked behind.
    """
    if source.is_dir():
        for path in source.rglob("*"):
            if path.is_symlink():
                raise ArchiveRefused(f"{label}: {path.relative_to(source)} is a symbolic link; links are refused")
        return source
    target.mkdir(parents=True, exist_ok=True)
    try:
        with members(source, label, limits) as found:
            _check_free_space(target, sum(member.size for member in found), label)
            for member in found:
                out = target / member.name
                out.parent.mkdir(parents=True, exist_ok=True)
                with out.open("wb") as writer:
                    for piece in member.chunks():
                        writer.write(piece)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _check_free_space(target: Path, needed: int, label: str) -> None:
    free = shutil.disk_usage(target).free
    if needed > free - DISK_MARGIN:
        raise ArchiveRefused(
            f"{label}: unpacks to {needed} bytes, but the disk has only {max(free - DISK_MARGIN, 0)} bytes to spare; refused"
        )


def remove_extracted(source: Path, extracted: Path) -> None:
    """Delete an extraction made by `extract` (never the upload itself, when it was a folder)."""
    if extracted != source and extracted.exists():
        shutil.rmtree(extracted, ignore_errors=True)

