"""ingest.side_process: work in a forked child, its failure reported to the parent, and no fork in a threaded process.

The forking cases run in a fresh interpreter: the test process itself may have threads left by
other tests, and then (rightly) nothing forks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, sys
from pathlib import Path
from ingest.side_process import SideProcessFailed, run_beside

marker = Path(sys.argv[1])
run_beside(lambda: marker.write_text(str(os.getpid())), "writing")()
assert int(marker.read_text()) != os.getpid(), "the work ran in this process"

def broken():
    raise ValueError("slice 12 could not be written")

wait = run_beside(broken, "writing the image slices")
try:
    wait()
except SideProcessFailed as exc:
    print(exc)
"""


def test_work_runs_in_a_child_and_its_failure_reaches_the_parent(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "pid")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "writing the image slices failed: ValueError: slice 12 could not be written"


def test_a_threaded_process_runs_the_work_itself(tmp_path: Path) -> None:
    from ingest.side_process import run_beside

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        marker = tmp_path / "pid"
        run_beside(lambda: marker.write_text(str(os.getpid())), "writing")()
        assert int(marker.read_text()) == os.getpid()  # forking beside another thread is unsafe: done here, first
    finally:
        stop.set()
        other.join()
