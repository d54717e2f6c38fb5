"""`python -m core.workflows.job_process`: one job in a fresh process (how Dask workers run jobs).

The job's spec arrives as JSON on stdin; reports go out as JSON lines on the file
descriptor named by `VIREO_REPORT_FD` (stdout and stderr belong to the step logs).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from core.workflows.context import JobSpec
from core.workflows.runner import own_process_group, run_job


def main() -> None:
    spec = JobSpec(**json.loads(sys.stdin.read()))
    channel = os.fdopen(int(os.environ["VIREO_REPORT_FD"]), "w", buffering=1)
    cancelled = own_process_group()

    def report(kind: str, data: dict[str, Any]) -> None:
        try:
            channel.write(json.dumps({"kind": kind, "data": data}) + "\n")
        except (OSError, ValueError):
            pass

    try:
        run_job(spec, report, cancelled, redirect_fds=True)
    finally:
        channel.close()
        os._exit(0)


if __name__ == "__main__":
    main()
