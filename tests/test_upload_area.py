"""The upload area's rules without a server: path checks, chunk order, completion, purge of abandoned chunks."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from core.uploads import OffsetMismatch, UploadArea, UploadError, clean_path


def test_paths_are_relative_and_stay_inside(tmp_path: Path) -> None:
    assert clean_path("a\\b/./c.zip") == "a/b/c.zip"
    for bad in ("", "/abs", "C:/x", "../x", "a/../../x", ".hidden", "a/\x01b"):
        with pytest.raises(UploadError):
            clean_path(bad)
    area = UploadArea(tmp_path / "uploads")
    (tmp_path / "outside").mkdir()
    (tmp_path / "uploads").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "uploads" / "link")
    with pytest.raises(UploadError, match="leaves the upload area"):
        area.file("link/x.bin")


def test_chunks_complete_in_order_and_abandoned_ones_are_purged(tmp_path: Path) -> None:
    area = UploadArea(tmp_path / "uploads")
    assert area.write_chunk("f.bin", io.BytesIO(b"abc"), 0, 6).complete is False
    with pytest.raises(OffsetMismatch) as mismatch:
        area.write_chunk("f.bin", io.BytesIO(b"xyz"), 5, 6)
    assert mismatch.value.offset == 3
    assert area.list() == []
    done = area.write_chunk("f.bin", io.BytesIO(b"def"), 3, 6)
    assert done.complete and (tmp_path / "uploads" / "f.bin").read_bytes() == b"abcdef"
    assert [f.path for f in area.list()] == ["f.bin"]

    area.write_chunk("old/g.bin", io.BytesIO(b"12"), 0, 10)
    area.write_chunk("new/h.bin", io.BytesIO(b"12"), 0, 10)
    stale = tmp_path / "uploads" / ".partial" / "old" / "g.bin.part"
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    assert area.purge_partials() == ["old/g.bin"]
    assert area.received("old/g.bin") == 0 and area.received("new/h.bin") == 2
    assert area.delete("new/h.bin") and area.received("new/h.bin") == 0
