"""DAGs the workflow benchmark runs (copied into the benchmark Vireo's DAGs folder)."""

from __future__ import annotations

import time

from core.workflows.dag import Dag, DagInput, Step


def _nothing(ctx):  # type: ignore[no-untyped-def]
    pass


def _sleep(ctx):  # type: ignore[no-untyped-def]
    for _ in range(600):
        time.sleep(0.1)


bench_noop = Dag("bench-noop", "Does nothing, once per series.", [Step("nothing", _nothing)], input=DagInput.SERIES)
bench_noop_once = Dag("bench-noop-once", "Does nothing.", [Step("nothing", _nothing)], input=DagInput.NONE)
bench_sleep = Dag("bench-sleep", "Sleeps a minute.", [Step("sleep", _sleep)], input=DagInput.NONE)
