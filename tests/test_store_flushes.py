"""The PACS store's flushes, in the order the kernel sees them (strace on a real store of a real instance).

Success may be sent only once an instance's bytes and its final name are on disk, and a final
name must never point at bytes that are not written. On Linux (O_TMPFILE parts) that is:
the part's bytes waited for (sync_file_range with WAIT_AFTER), then the link, then one fsync of
the file, which commits the link with it; no directory fsync, no second journal commit.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.factories import write_series

STORE_ONE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from core.pacs_store import PacsStore
    from pydicom import dcmread
    store = PacsStore(Path(sys.argv[1]))
    content = Path(sys.argv[2]).read_bytes()
    ds = dcmread(sys.argv[2])
    print("MARK", flush=True)
    stored = store.store(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, content)
    print("STORED", stored.relative_path, flush=True)
""")


def flushes(tmp_path: Path, source: Path) -> list[str]:
    """The store's syscalls that order bytes and names, after the instance was read (strace -e of a real process)."""
    trace = tmp_path / "trace.txt"
    subprocess.run(
        ["strace", "-f", "-o", str(trace), "-e", "trace=write,sync_file_range,fdatasync,fsync,linkat,link,openat",
         sys.executable, "-c", STORE_ONE, str(tmp_path / "pacs"), str(source)],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120,
    )
    lines = trace.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if 'write(1, "MARK' in line)
    return [re.sub(r"^\d+\s+", "", line) for line in lines[start + 1 :]]


def test_an_instance_is_written_out_linked_then_flushed_once(tmp_path: Path) -> None:
    source = write_series(tmp_path / "src", slices=1, rows=128, columns=128, patient_id="FLUSH", seed=5).paths[0]
    calls = flushes(tmp_path, source)
    part = next(line for line in calls if "O_TMPFILE" in line)
    fd = re.search(r"= (\d+)$", part).group(1)  # type: ignore[union-attr]
    link = next(i for i, line in enumerate(calls) if line.startswith("linkat(") and f'"{fd}"' in line)
    waited = [i for i, line in enumerate(calls) if line.startswith(f"sync_file_range({fd},") and "SYNC_FILE_RANGE_WAIT_AFTER" in line]
    assert waited and waited[-1] < link, "the bytes are written out before the final name exists"
    after = calls[link + 1 :]
    assert [line for line in after if line.startswith(("fsync(", "fdatasync("))] == [next(line for line in after if line.startswith("fsync("))]
    assert after[[line.startswith("fsync(") for line in after].index(True)].startswith(f"fsync({fd})"), "one fsync, of the file itself"
    assert not [line for line in calls[:link] if line.startswith((f"fsync({fd})", f"fdatasync({fd})"))], "no journal commit of its own before the link"
    assert "STORED" in (tmp_path / "trace.txt").read_text()


def test_the_stored_file_is_the_instance(tmp_path: Path) -> None:
    from pydicom import dcmread

    from core.pacs_store import PacsStore

    source = write_series(tmp_path / "src", slices=1, rows=64, columns=64, patient_id="FLUSH2", seed=6).paths[0]
    ds = dcmread(source)
    store = PacsStore(tmp_path / "pacs")
    stored = store.store(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, source.read_bytes())
    assert stored.created and (tmp_path / "pacs" / stored.relative_path).read_bytes() == source.read_bytes()
    again = store.store(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, b"other bytes")
    assert not again.created and (tmp_path / "pacs" / stored.relative_path).read_bytes() == source.read_bytes()
    assert not list((tmp_path / "pacs" / ".incoming").iterdir())


if sys.platform != "linux":  # O_TMPFILE and sync_file_range are Linux's
    pytestmark = pytest.mark.skip(reason="Linux only")
