"""`python -m core.workflows.job_host <fd> [module…]`: a job host on a Dask worker.

The same single-threaded worker loop as the local executor's (`local_executor._worker_main`):
it imports the DAG code once and forks each job into a process group of its own, talking
over the socket `fd`. A Dask task hands it a job and relays what comes back; a fresh Python
per job would cost more start-up than most jobs run.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from core.workflows.local_executor import _worker_main


def main() -> None:
    _worker_main(Connection(int(sys.argv[1])), ["core.workflows.runner", *sys.argv[2:]])


if __name__ == "__main__":
    main()
